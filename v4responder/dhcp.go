package v4responder

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/kgswitch/kgswitch/netpkt"
)

// UDP ports of DHCP (RFC 2131 §4.1).
const (
	serverPort = 67
	clientPort = 68
)

const (
	// dhcpFixedLen is the fixed part of a DHCP message and the magic cookie
	// (RFC 2131 §2, RFC 2132 §2).
	dhcpFixedLen = 240
	// bootpMinLen is the size of a BOOTP message (RFC 951 §3: a 64-octet
	// vendor area); replies are padded to it because some clients and
	// relays still drop shorter ones (RFC 1542 §2.1).
	bootpMinLen = 300
	// broadcastFlag is the B bit of the flags field (RFC 2131 §2).
	broadcastFlag = 0x8000
)

// dhcpRequest is what the responder reads of a client message.
type dhcpRequest struct {
	msg       *layers.DHCPv4
	typ       layers.DHCPMsgType
	serverID  netip.Addr // option 54, when present
	requested netip.Addr // option 50, when present
	params    []byte     // option 55, the parameter request list
	ciaddr    netip.Addr
}

// respondDHCP answers a DHCPv4 client message from guest as its home DHCP
// server would for its one lease, the declared address (RFC 2131 §4.3):
// DHCPDISCOVER gets a DHCPOFFER of it; a DHCPREQUEST for it, in any state
// (selecting, init-reboot, renewing, rebinding), a DHCPACK, and for any other
// address a DHCPNAK; DHCPINFORM a DHCPACK with parameters and no lease;
// DHCPDECLINE and DHCPRELEASE nothing. The lease is the declared address
// itself, so the responder holds no state: a guest that renews abroad, comes
// home and renews there gets the same answer from both.
//
// IPv4 frames that are not UDP to port 67 give ErrNotRequest: other IPv4
// traffic is the datapath's.
func (r *Responder) respondDHCP(out []byte, eth netpkt.Ethernet, guest Guest) ([]byte, Decision, error) {
	udpPayload, err := dhcpPayload(eth.Payload())
	if err != nil {
		return out, 0, err
	}
	req, err := parseDHCP(udpPayload)
	if err != nil {
		return out, 0, err
	}
	m := req.msg
	if m.Operation != layers.DHCPOpRequest {
		return out, IgnoredNotRequest, nil
	}
	if !bytes.Equal(eth.Src(), guest.MAC) || m.HardwareType != layers.LinkTypeEthernet ||
		m.HardwareLen != 6 || !bytes.Equal(m.ClientHWAddr, guest.MAC) {
		return out, IgnoredOtherSender, nil
	}
	if req.typ == 0 {
		return out, IgnoredBOOTP, nil
	}
	switch req.typ {
	case layers.DHCPMsgTypeDiscover:
		return r.dhcpReply(out, req, guest, layers.DHCPMsgTypeOffer, Offered)
	case layers.DHCPMsgTypeRequest:
		if req.serverID.IsValid() && req.serverID != r.link.serverID() {
			return out, IgnoredOtherServer, nil
		}
		// The address asked for: option 50 when selecting or rebooting,
		// ciaddr when renewing or rebinding (RFC 2131 §4.3.2).
		want := req.requested
		if !want.IsValid() {
			want = req.ciaddr
		}
		if want != guest.Addr {
			return r.dhcpReply(out, req, guest, layers.DHCPMsgTypeNak, Nacked)
		}
		return r.dhcpReply(out, req, guest, layers.DHCPMsgTypeAck, Acked)
	case layers.DHCPMsgTypeInform:
		// §4.3.5: the client already has its address; one that is not
		// the guest's is not one kgswitch speaks for.
		if req.ciaddr != guest.Addr {
			return out, IgnoredOtherSender, nil
		}
		return r.dhcpReply(out, req, guest, layers.DHCPMsgTypeAck, Informed)
	case layers.DHCPMsgTypeDecline:
		return out, Declined, nil
	case layers.DHCPMsgTypeRelease:
		return out, Released, nil
	}
	return out, IgnoredNotRequest, nil
}

// dhcpPayload returns the UDP payload of an IPv4 packet to the DHCP server
// port, after the checks a host makes before delivering it (RFC 1122
// §3.2.1.1-2, §4.1.3.4).
func dhcpPayload(p []byte) ([]byte, error) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return nil, malformed("IPv4 header of %d bytes, version %d", len(p), version(p))
	}
	var ip layers.IPv4
	var df feedback
	if err := ip.DecodeFromBytes(p, &df); err != nil || df.truncated {
		return nil, malformed("IPv4: %v (truncated %v)", err, df.truncated)
	}
	if ip.Protocol != layers.IPProtocolUDP {
		return nil, ErrNotRequest
	}
	if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
		// A DHCP client message fits in 576 bytes (RFC 2131 §2); a
		// fragment is nothing kgswitch reassembles.
		return nil, ErrNotRequest
	}
	if sum(0, ip.Contents) != 0xffff {
		return nil, malformed("IPv4 header checksum")
	}
	var udp layers.UDP
	if err := udp.DecodeFromBytes(ip.Payload, &df); err != nil || df.truncated || udp.Length == 0 {
		return nil, malformed("UDP: %v (truncated %v)", err, df.truncated)
	}
	if udp.DstPort != serverPort {
		return nil, ErrNotRequest
	}
	seg := ip.Payload[:udp.Length]
	if udp.Checksum != 0 && udpSum(addr4(ip.SrcIP), addr4(ip.DstIP), seg) != 0xffff {
		return nil, malformed("UDP checksum")
	}
	return udp.Payload, nil
}

func version(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	return int(p[0] >> 4)
}

// parseDHCP decodes a DHCP message and the options the responder reads.
func parseDHCP(b []byte) (*dhcpRequest, error) {
	// gopacket's decoder slices chaddr by hlen without bounding it to the
	// field's 16 bytes, so that is checked first.
	if len(b) < dhcpFixedLen {
		return nil, malformed("DHCP message of %d bytes, want at least %d", len(b), dhcpFixedLen)
	}
	if b[2] > 16 {
		return nil, malformed("DHCP hardware address length %d, at most 16", b[2])
	}
	m := &layers.DHCPv4{}
	var df feedback
	if err := m.DecodeFromBytes(b, &df); err != nil || df.truncated {
		return nil, malformed("DHCP: %v", err)
	}
	req := &dhcpRequest{msg: m, ciaddr: addr4(m.ClientIP)}
	for _, o := range m.Options {
		switch o.Type {
		case layers.DHCPOptMessageType:
			if len(o.Data) != 1 || o.Data[0] == 0 {
				return nil, malformed("DHCP message type option of %d bytes", len(o.Data))
			}
			req.typ = layers.DHCPMsgType(o.Data[0])
		case layers.DHCPOptServerID:
			if len(o.Data) != 4 {
				return nil, malformed("DHCP server identifier of %d bytes", len(o.Data))
			}
			req.serverID = addr4(o.Data)
		case layers.DHCPOptRequestIP:
			if len(o.Data) != 4 {
				return nil, malformed("DHCP requested address of %d bytes", len(o.Data))
			}
			req.requested = addr4(o.Data)
		case layers.DHCPOptParamsRequest:
			req.params = o.Data
		}
	}
	return req, nil
}

// dhcpReply appends the reply of type typ to req (RFC 2131 §4.3, fields per
// Table 3, addressing per §4.1).
func (r *Responder) dhcpReply(out []byte, req *dhcpRequest, guest Guest, typ layers.DHCPMsgType, d Decision) ([]byte, Decision, error) {
	m := req.msg
	serverID := r.link.serverID()
	reply := &layers.DHCPv4{
		Operation:    layers.DHCPOpReply,
		HardwareType: layers.LinkTypeEthernet,
		HardwareLen:  6,
		Xid:          m.Xid,
		Flags:        m.Flags,
		ClientIP:     net.IPv4zero,
		YourClientIP: net.IPv4zero,
		NextServerIP: net.IPv4zero,
		RelayAgentIP: m.RelayAgentIP,
		ClientHWAddr: guest.MAC,
	}
	opts := []layers.DHCPOption{
		layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(typ)}),
		layers.NewDHCPOption(layers.DHCPOptServerID, serverID.AsSlice()),
	}
	if typ == layers.DHCPMsgTypeAck {
		reply.ClientIP = m.ClientIP
	}
	if typ != layers.DHCPMsgTypeNak {
		if d != Informed {
			// §4.3.5: an answer to DHCPINFORM carries no address and
			// no lease times.
			reply.YourClientIP = guest.Addr.AsSlice()
			lease := uint32(r.link.LeaseTime / time.Second)
			opts = append(opts,
				layers.NewDHCPOption(layers.DHCPOptLeaseTime, be32(lease)),
				// §4.4.5: T1 half the lease, T2 seven eighths.
				layers.NewDHCPOption(layers.DHCPOptT1, be32(lease/2)),
				layers.NewDHCPOption(layers.DHCPOptT2, be32(uint32(uint64(lease)*7/8))),
			)
		}
		opts = append(opts, r.parameters(req.params)...)
	}
	reply.Options = opts

	// §4.1: a DHCPNAK is broadcast; a client with an address (renewing,
	// rebinding, informing) is answered at it; one that asked for
	// broadcast gets broadcast; otherwise unicast to the address offered.
	// The Ethernet destination is the guest's MAC in every case: the
	// answer goes to the guest's port alone.
	dst := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	switch {
	case typ == layers.DHCPMsgTypeNak:
	case req.ciaddr.IsValid() && !req.ciaddr.IsUnspecified():
		dst = req.ciaddr
	case m.Flags&broadcastFlag == 0:
		dst = guest.Addr
	}
	ip := &layers.IPv4{
		Version:  4,
		TTL:      64,
		Protocol: layers.IPProtocolUDP,
		SrcIP:    serverID.AsSlice(),
		DstIP:    dst.AsSlice(),
	}
	udp := &layers.UDP{SrcPort: serverPort, DstPort: clientPort}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return out, 0, fmt.Errorf("v4responder: %w", err)
	}
	eth := &layers.Ethernet{SrcMAC: r.macFor(serverID), DstMAC: guest.MAC, EthernetType: layers.EthernetTypeIPv4}
	ls := []gopacket.SerializableLayer{eth, ip, udp, reply}
	if n := int(reply.Len()); n < bootpMinLen {
		ls = append(ls, gopacket.Payload(make([]byte, bootpMinLen-n)))
	}
	out, err := serialize(out, ls...)
	if err != nil {
		return out, 0, fmt.Errorf("v4responder: encode DHCP %v: %w", typ, err)
	}
	return out, d, nil
}

// parameters returns the configured parameter options: those the client asked
// for first, in the order it asked (RFC 2132 §9.8), then the others, as OVN's
// DHCP does — a client that did not ask ignores them.
func (r *Responder) parameters(requested []byte) []layers.DHCPOption {
	var all []layers.DHCPOption
	mask := net.CIDRMask(r.link.Subnet.Bits(), 32)
	all = append(all,
		layers.NewDHCPOption(layers.DHCPOptSubnetMask, mask),
		layers.NewDHCPOption(layers.DHCPOptRouter, r.link.Gateway.AsSlice()))
	if len(r.link.DNS) > 0 {
		var b []byte
		for _, a := range r.link.DNS {
			b = append(b, a.AsSlice()...)
		}
		all = append(all, layers.NewDHCPOption(layers.DHCPOptDNS, b))
	}
	if r.link.DomainName != "" {
		all = append(all, layers.NewDHCPOption(layers.DHCPOptDomainName, []byte(r.link.DomainName)))
	}
	if r.link.MTU != 0 {
		all = append(all, layers.NewDHCPOption(layers.DHCPOptInterfaceMTU, be16(uint16(r.link.MTU))))
	}
	rank := func(o layers.DHCPOption) int {
		if i := slices.Index(requested, byte(o.Type)); i >= 0 {
			return i
		}
		return len(requested)
	}
	slices.SortStableFunc(all, func(a, b layers.DHCPOption) int { return rank(a) - rank(b) })
	return all
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// sum folds the one's-complement sum of b into s (RFC 1071).
func sum(s uint32, b []byte) uint16 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// udpSum is the one's-complement sum of a UDP datagram and its IPv4
// pseudo-header (RFC 768); 0xffff when the checksum is right.
func udpSum(src, dst netip.Addr, seg []byte) uint16 {
	s4, d4 := src.As4(), dst.As4()
	var p [12]byte
	copy(p[0:4], s4[:])
	copy(p[4:8], d4[:])
	p[9] = uint8(layers.IPProtocolUDP)
	binary.BigEndian.PutUint16(p[10:12], uint16(len(seg)))
	return sum(uint32(sum(0, p[:])), seg)
}
