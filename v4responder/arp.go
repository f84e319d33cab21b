package v4responder

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket/layers"
	"github.com/kgswitch/kgswitch/netpkt"
)

// arpLen is the length of an ARP packet for IPv4 over Ethernet (RFC 826).
const arpLen = 8 + 2*6 + 2*4

// respondARP answers an ARP request as the home link would (RFC 826, "Packet
// Reception"): for the gateway and for every other host address of the home
// subnet, with the real MAC where known (GatewayMAC, Neighbors), else
// kgswitch's. The guest's own address is never answered for, and neither is
// a probe (RFC 5227 §2.1.1): the home link answers those only when the
// address is taken, which kgswitch cannot know, and silence never breaks the
// guest — as with DAD in ndresponder. Requests whose sender is not the guest
// at its declared address get no answer: kgswitch speaks for one guest only.
func (r *Responder) respondARP(out []byte, eth netpkt.Ethernet, guest Guest) ([]byte, Decision, error) {
	p := eth.Payload()
	// gopacket's ARP decoder trusts the length fields (its length arithmetic
	// is in uint8 and wraps), so only the one shape IPv4 over Ethernet has is
	// handed to it.
	if len(p) < arpLen {
		return out, 0, malformed("ARP of %d bytes, want %d", len(p), arpLen)
	}
	if ht, pt := binary.BigEndian.Uint16(p[0:2]), binary.BigEndian.Uint16(p[2:4]); ht != uint16(layers.LinkTypeEthernet) || pt != uint16(layers.EthernetTypeIPv4) || p[4] != 6 || p[5] != 4 {
		return out, 0, malformed("ARP hardware type %d, protocol %#04x, lengths %d/%d; want Ethernet, IPv4, 6/4", ht, pt, p[4], p[5])
	}
	var req layers.ARP
	var df feedback
	if err := req.DecodeFromBytes(p, &df); err != nil || df.truncated {
		return out, 0, malformed("ARP: %v", err)
	}
	if req.Operation != layers.ARPRequest {
		return out, IgnoredNotRequest, nil
	}
	spa, tpa := addr4(req.SourceProtAddress), addr4(req.DstProtAddress)
	if !bytes.Equal(eth.Src(), guest.MAC) || !bytes.Equal(req.SourceHwAddress, guest.MAC) {
		return out, IgnoredOtherSender, nil
	}
	if spa.IsUnspecified() {
		return out, IgnoredProbe, nil
	}
	if spa != guest.Addr {
		return out, IgnoredOtherSender, nil
	}
	if tpa == guest.Addr {
		return out, IgnoredOwnAddress, nil
	}
	if !r.link.isHost(tpa) {
		return out, IgnoredOffLink, nil
	}
	lladdr := r.macFor(tpa)
	// A unicast request polls the entry the guest holds (RFC 1122
	// §2.3.2.1): confirm exactly that MAC rather than move the guest's
	// entry; every frame from the guest reaches kgswitch whatever its
	// destination MAC.
	if d := eth.Dst(); d[0]&1 == 0 {
		lladdr = d
	}
	reply := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		Operation:         layers.ARPReply,
		SourceHwAddress:   lladdr,
		SourceProtAddress: tpa.AsSlice(),
		DstHwAddress:      guest.MAC,
		DstProtAddress:    spa.AsSlice(),
	}
	ethOut := &layers.Ethernet{SrcMAC: lladdr, DstMAC: guest.MAC, EthernetType: layers.EthernetTypeARP}
	out, err := serialize(out, ethOut, reply)
	if err != nil {
		return out, 0, fmt.Errorf("v4responder: encode ARP reply: %w", err)
	}
	return out, Answered, nil
}

// macFor is the MAC kgswitch gives for home-link address a.
func (r *Responder) macFor(a netip.Addr) net.HardwareAddr {
	if a == r.link.Gateway && len(r.link.GatewayMAC) == 6 {
		return r.link.GatewayMAC
	}
	if mac, ok := r.link.Neighbors[a]; ok {
		return mac
	}
	return r.mac
}
