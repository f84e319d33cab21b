package v4responder

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket/layers"
)

// UnsolicitedARP describes an ARP packet nobody asked for, that moves the
// entry its receivers hold for Addr to LLAddr: a receiver with an entry for
// the sender's protocol address takes the sender's hardware address for it
// before it looks at anything else (RFC 826, "Packet Reception").
type UnsolicitedARP struct {
	Addr   netip.Addr       // the sender protocol address: the IPv4 address whose entry moves
	LLAddr net.HardwareAddr // the sender hardware address: the MAC it moves to
	From   net.HardwareAddr // the frame's source MAC
	// To, when not nil, makes the packet an ARP reply to that host alone,
	// whose IPv4 address is ToAddr. nil: an ARP Announcement to every host
	// of the link.
	To     net.HardwareAddr
	ToAddr netip.Addr
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// AppendUnsolicitedARP appends the frame u describes. Broadcast, it is an ARP
// Announcement (RFC 5227 §3): a request whose sender and target protocol
// addresses are both Addr and whose target hardware address is zero, the
// form RFC 5227 recommends over a broadcast reply because every
// implementation processes requests; a Mobile IPv4 Home Agent announces a
// home address it takes over this way (RFC 5944 §4.6). kgswitch sends it on
// a home link for a dual-stack VM that left (LLAddr = the Home Agent's MAC)
// and for one back home (LLAddr = its own MAC); and, as a reply, to a guest
// back home for its gateway (LLAddr = the real gateway's MAC, where abroad it
// may have learnt kgswitch's).
func AppendUnsolicitedARP(out []byte, u UnsolicitedARP) ([]byte, error) {
	if !u.Addr.Is4() || len(u.LLAddr) != 6 || len(u.From) != 6 || (u.To != nil && (len(u.To) != 6 || !u.ToAddr.Is4())) {
		return out, fmt.Errorf("v4responder: unsolicited ARP for %v at %v from %v to %v (%v): want IPv4 addresses and Ethernet MACs",
			u.Addr, u.LLAddr, u.From, u.To, u.ToAddr)
	}
	arp := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		Operation:         layers.ARPRequest,
		SourceHwAddress:   u.LLAddr,
		SourceProtAddress: u.Addr.AsSlice(),
		DstHwAddress:      make(net.HardwareAddr, 6),
		DstProtAddress:    u.Addr.AsSlice(),
	}
	dst := broadcastMAC
	if u.To != nil {
		arp.Operation, arp.DstHwAddress, arp.DstProtAddress = layers.ARPReply, u.To, u.ToAddr.AsSlice()
		dst = u.To
	}
	out, err := serialize(out, &layers.Ethernet{SrcMAC: u.From, DstMAC: dst, EthernetType: layers.EthernetTypeARP}, arp)
	if err != nil {
		return out, fmt.Errorf("v4responder: encode unsolicited ARP: %w", err)
	}
	return out, nil
}
