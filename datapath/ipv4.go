package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/kgswitch/kgswitch/netpkt"
)

// A guest with an IPv4 home address keeps it abroad (Dual-Stack MIPv6, RFC
// 5555): its IPv4 packets cross the same tunnel as its IPv6 ones, IPv4 in
// IPv6 (next header 4). At home its gateway forwarded them; abroad kgswitch
// stands in for that gateway, as the V4 responder does for ARP (its answers
// lead the guest's frames here), so the guest's IPv4 for other subnets is
// forwarded as that router would: TTL checked and decremented, packets too
// big for the tunnel fragmented or refused with Fragmentation Needed (RFC
// 1812 §5.3.1, §4.2.2.7), nothing broadcast. What stays on the home subnet
// was never routed at home and keeps its TTL. The way back is the link's:
// the Home Agent, a router, decremented already.

// V4Responder answers a guest's ARP and DHCPv4 messages as its IPv4 home
// link would (the gateway's and neighbours' MACs, the guest's own lease).
// The datapath goroutine calls it; it must not keep frame or out.
type V4Responder interface {
	// Respond is given frame, an ARP frame or an IPv4 UDP frame to port 67
	// or 68 from the guest, and appends the frame to send back to out.
	// answered is false for what the home link would not answer either;
	// err is for what is malformed.
	Respond(out, frame []byte) (reply []byte, answered bool, err error)
}

// maxICMPv4 bounds an ICMP error with the packet it quotes (RFC 1812
// §4.3.2.3: no more than 576 bytes).
const maxICMPv4 = 576

// ICMP types and codes kgswitch sends as the guest's gateway.
const (
	icmp4DestUnreachable = 3
	icmp4FragNeeded      = 4 // code of Destination Unreachable (RFC 1191 §4)
	icmp4TimeExceeded    = 11
)

// dhcpServerPort and dhcpClientPort are BOOTP's (RFC 2131 §4.1).
const (
	dhcpServerPort = 67
	dhcpClientPort = 68
)

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// fromGuest4 handles an ARP or IPv4 frame from g, which has an IPv4 home
// address: ARP and DHCP go to its responder, broadcasts and multicasts stay
// on the pseudo home link, its unicast from its home address goes to a
// guest of its home subnet here or through the tunnel, and the rest is
// dropped and counted.
func (d *Datapath) fromGuest4(f *FIB, g *Guest, buf []byte, n int, out []byte) []byte {
	frame := buf[headroom : headroom+n]
	eth := netpkt.Ethernet(frame)
	if eth.EtherType() == netpkt.EtherTypeARP {
		return d.answer4(g, frame, out)
	}
	ip, err := netpkt.ParseIPv4(eth.Payload())
	if err != nil {
		g.Link.Counters.Drop(DropMalformed)
		return out
	}
	if isDHCP(ip) {
		// Before the source check: a DISCOVER comes from 0.0.0.0.
		return d.answer4(g, frame[:netpkt.EthernetLen+len(ip)], out)
	}
	src, dst := ip.Src(), ip.Dst()
	subnet := g.HomeAddr4.Masked()
	switch {
	case dst.IsMulticast() || dst == limitedBroadcast || isSubnetBroadcast(subnet, dst):
		g.Link.Counters.Drop(DropAbsorbed)
		return out
	case src != g.HomeAddr4.Addr():
		g.Link.Counters.Drop(DropBadSource)
		return out
	case martian4(dst):
		g.Link.Counters.Drop(DropMartian)
		return out
	case dst.IsLinkLocalUnicast():
		g.Link.Counters.Drop(DropLinkLocal)
		return out
	}
	if peer := f.byHoA4[dst]; peer != nil && peer.HomeAddr4.Masked() == subnet {
		// Neighbours on the home subnet: straight across, as at home.
		netpkt.PutEthernet(frame, peer.MAC[:], f.routerMAC, netpkt.EtherTypeIPv4)
		d.queuePort(frame[:netpkt.EthernetLen+len(ip)], &g.Link.Counters, countLocal, len(ip))
		return out
	}
	routed := !subnet.Contains(dst)
	if routed && ip.TTL() <= 1 {
		g.Link.Counters.Drop(DropTTLExpired)
		return d.sendICMPv4Error(f, g, ip, icmp4TimeExceeded, 0, 0, out)
	}
	if !g.Tunnel4 {
		// Held only while the IPv6 binding is being set up: the Ack that
		// ends it says whether IPv4 is bound. Once IPv6 tunnels without
		// IPv4, the Home Agent refused (or is still to answer for) the IPv4
		// home address and would drop what reached it.
		if !g.Tunnel && g.Hold != nil && len(ip) <= f.mtu {
			if routed {
				ip.DecrementTTL()
			}
			d.holdFromGuest(g.Hold, g, buf, ip)
			return out
		}
		g.Link.Counters.Drop(DropNotBound)
		return out
	}
	if len(ip) > f.mtu+netpkt.IPv6Len && d.segmentTCP4(f, g, ip, routed) {
		// Bigger than any link: a segmentation offload's work, which
		// Fragmentation Needed would not undo (see segmentTCP).
		return out
	}
	if len(ip) > f.mtu && ip.DontFragment() {
		// As Linux's forwarding does, the error quotes the packet as it
		// arrived, before its TTL is decremented.
		g.Link.Counters.Drop(DropTooBig)
		return d.sendICMPv4Error(f, g, ip, icmp4DestUnreachable, icmp4FragNeeded, f.mtu, out)
	}
	if routed {
		ip.DecrementTTL()
	}
	if len(ip) > f.mtu {
		d.fragment4(f, g, ip)
		return out
	}
	pkt := encapsulate(buf, headroom+netpkt.EthernetLen, len(ip), f.coa, g.HomeAgent)
	d.queueUplink(pkt, g.HomeAgent, &g.Link.Counters, len(ip))
	return out
}

// answer4 hands an ARP or DHCP frame from g to its responder and sends the
// answer, as fromGuest does with Neighbor Solicitations.
func (d *Datapath) answer4(g *Guest, frame, out []byte) []byte {
	if g.V4 == nil {
		g.Link.Counters.Drop(DropARPDHCPIgnored)
		return out
	}
	reply, answered, err := g.V4.Respond(out, frame)
	switch {
	case err != nil:
		g.Link.Counters.Drop(DropMalformed)
		return out
	case !answered:
		g.Link.Counters.Drop(DropARPDHCPIgnored)
		return out
	}
	if err := d.conn.WriteFrame(reply); err != nil {
		g.Link.Counters.Drop(DropWriteError)
	} else {
		g.Link.Counters.V4Answered.Add(1)
	}
	return reply[:0]
}

// isDHCP reports whether ip is UDP to a BOOTP port (RFC 2131 §4.1): a
// client's DHCP message, broadcast or (a renewal) unicast to its server.
func isDHCP(ip netpkt.IPv4) bool {
	udp := ip.Payload()
	if ip.Protocol() != netpkt.ProtoUDP || ip.FragmentOffset() != 0 || len(udp) < 8 {
		return false
	}
	port := binary.BigEndian.Uint16(udp[2:4])
	return port == dhcpServerPort || port == dhcpClientPort
}

// isSubnetBroadcast reports whether a is the directed broadcast address of
// subnet (RFC 919): all host bits set, on subnets that have host bits to set.
func isSubnetBroadcast(subnet netip.Prefix, a netip.Addr) bool {
	if subnet.Bits() >= 31 || !subnet.Contains(a) {
		return false
	}
	b := a.As4()
	host := ^uint32(0) >> subnet.Bits()
	return binary.BigEndian.Uint32(b[:])&host == host
}

// martian4 reports whether a is an IPv4 address no router forwards to or
// from (RFC 1812 §5.3.7, §4.2.2.11): this network (0/8), loopback (127/8)
// or reserved (240/4, the limited broadcast among them).
func martian4(a netip.Addr) bool {
	b := a.As4()
	return b[0] == 0 || b[0] == 127 || b[0] >= 240
}

// sendICMPv4Error answers ip, a packet from g, with an ICMP error from its
// gateway, unless RFC 1812 §4.3.2.7 forbids it: never about an ICMP error
// or a fragment other than the first, and not without a gateway address.
// mtu is the next-hop MTU of a Fragmentation Needed (RFC 1191 §4).
func (d *Datapath) sendICMPv4Error(f *FIB, g *Guest, ip netpkt.IPv4, typ, code uint8, mtu int, out []byte) []byte {
	if !g.Gateway4.IsValid() || ip.FragmentOffset() != 0 || isICMPv4Error(ip) {
		return out
	}
	out = appendICMPv4Error(out, ip, typ, code, mtu, g.MAC[:], f.routerMAC, g.Gateway4)
	if err := d.conn.WriteFrame(out); err != nil {
		g.Link.Counters.Drop(DropWriteError)
	}
	return out[:0]
}

// isICMPv4Error reports whether ip carries an ICMP error message (RFC 1812
// §4.3.2.7): Destination Unreachable, Source Quench, Redirect, Time
// Exceeded or Parameter Problem.
func isICMPv4Error(ip netpkt.IPv4) bool {
	if ip.Protocol() != netpkt.ProtoICMPv4 || len(ip.Payload()) == 0 {
		return false
	}
	switch ip.Payload()[0] {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// appendICMPv4Error appends to out an Ethernet frame to guestMAC carrying an
// ICMP error (RFC 792) of type typ and code from the gateway address from
// about invoking, quoting as much of it as fits in 576 bytes (RFC 1812
// §4.3.2.3); mtu fills the Next-Hop MTU field (RFC 1191 §4), 0 elsewhere.
func appendICMPv4Error(out []byte, invoking netpkt.IPv4, typ, code uint8, mtu int, guestMAC, routerMAC net.HardwareAddr, from netip.Addr) []byte {
	quote := min(len(invoking), maxICMPv4-netpkt.IPv4Len-8)
	n := len(out)
	out = append(out, make([]byte, netpkt.EthernetLen+netpkt.IPv4Len+8)...)
	netpkt.PutEthernet(out[n:], guestMAC, routerMAC, netpkt.EtherTypeIPv4)
	netpkt.PutIPv4(out[n+netpkt.EthernetLen:], netpkt.IPv4Len+8+quote, true, 64, netpkt.ProtoICMPv4, from, invoking.Src())
	icmp := out[n+netpkt.EthernetLen+netpkt.IPv4Len:]
	icmp[0], icmp[1], icmp[2], icmp[3] = typ, code, 0, 0
	binary.BigEndian.PutUint32(icmp[4:8], uint32(mtu))
	out = append(out, invoking[:quote]...)
	icmp = out[n+netpkt.EthernetLen+netpkt.IPv4Len:]
	binary.BigEndian.PutUint16(icmp[2:4], netpkt.InternetChecksum(icmp))
	return out
}

// fragment4 tunnels ip, an IPv4 packet from g without DF that the tunnel
// cannot carry whole, as fragments that fit it (RFC 791 §3.2): every
// fragment's data but the last's a multiple of 8 bytes, offsets counted
// from the packet's own (it may be a fragment already), MF on all but the
// packet's last, options without the copied flag in the first fragment
// only, each header's checksum computed anew. The Home Agent forwards the
// fragments; their destination reassembles them. The fragments are built
// in the datapath's scratch space, like segmentTCP's segments.
func (d *Datapath) fragment4(f *FIB, g *Guest, ip netpkt.IPv4) {
	data := ip.Payload()
	base := ip.FragmentOffset()
	if base*8+len(data) > 0xffff {
		g.Link.Counters.Drop(DropMalformed)
		return
	}
	var laterHdr [60]byte
	copy(laterHdr[:], ip[:netpkt.IPv4Len])
	later := laterHdr[:netpkt.IPv4Len+copiedOptions(laterHdr[netpkt.IPv4Len:], ip.Options())]
	hdr := []byte(ip[:ip.HeaderLen()])
	if (f.mtu-len(hdr))&^7 <= 0 {
		g.Link.Counters.Drop(DropTooBig)
		return
	}
	if d.seg == nil {
		d.seg = make([]byte, segScratch)
	}
	// What is queued goes first, and the scratch space is free.
	d.flushUplink()
	flags := binary.BigEndian.Uint16(ip[6:8]) &^ (netpkt.IPv4MoreFragments | 0x1fff)
	off := 0
	for p := 0; p < len(data); {
		chunk := min((f.mtu-len(hdr))&^7, len(data)-p)
		size := netpkt.IPv6Len + len(hdr) + chunk
		if off+size > len(d.seg) || d.toUplink.full() {
			d.flushUplink()
			off = 0
		}
		pkt := d.seg[off : off+size]
		off += size
		inner := pkt[netpkt.IPv6Len:]
		copy(inner, hdr)
		copy(inner[len(hdr):], data[p:p+chunk])
		inner[0] = 0x40 | byte(len(hdr)/4)
		binary.BigEndian.PutUint16(inner[2:4], uint16(len(hdr)+chunk))
		fo := flags | uint16(base+p/8)
		if p+chunk < len(data) || ip.MoreFragments() {
			fo |= netpkt.IPv4MoreFragments
		}
		binary.BigEndian.PutUint16(inner[6:8], fo)
		netpkt.IPv4(inner).SetChecksum()
		encapsulate(pkt, netpkt.IPv6Len, len(inner), f.coa, g.HomeAgent)
		d.queueUplink(pkt, g.HomeAgent, &g.Link.Counters, len(inner))
		p += chunk
		hdr = later
	}
	d.flushUplink()
}

// copiedOptions writes into dst the options of opts whose copied flag is
// set (RFC 791 §3.1: those every fragment carries), padded to a multiple of
// 4 bytes with End of Option List, and returns their length. A malformed
// option ends the list: what follows it cannot be told apart.
func copiedOptions(dst, opts []byte) int {
	n := 0
	for i := 0; i < len(opts); {
		typ := opts[i]
		if typ == 0 { // End of Option List
			break
		}
		if typ == 1 { // No Operation
			i++
			continue
		}
		if i+1 >= len(opts) {
			break
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			break
		}
		if typ&0x80 != 0 {
			n += copy(dst[n:], opts[i:i+l])
		}
		i += l
	}
	for n%4 != 0 {
		dst[n] = 0
		n++
	}
	return n
}

// fromTunnel4 delivers an IPv4 packet the Home Agent tunnelled to the
// care-of address (next header 4) to the guest whose IPv4 home address it
// is for, as an Ethernet frame of type IPv4, after the checks fromTunnel
// makes of IPv6.
func (d *Datapath) fromTunnel4(f *FIB, buf []byte, outer netpkt.IPv6) {
	inner, err := netpkt.ParseIPv4(outer.Payload())
	if err != nil {
		d.global.Drop(DropMalformed)
		return
	}
	g := f.byHoA4[inner.Dst()]
	if g == nil {
		d.global.Drop(DropUnknownHome)
		return
	}
	if outer.Src() != g.HomeAgent {
		g.Link.Counters.Drop(DropBadTunnelSource)
		return
	}
	if r := tunnelRefusal4(g, inner); r >= 0 {
		g.Link.Counters.Drop(r)
		return
	}
	d.deliverInner(f, g, buf, len(inner), netpkt.EtherTypeIPv4)
}

// tunnelRefusal4 is tunnelRefusal for IPv4: only what a router could have
// forwarded to the guest, and only while the Home Agent may tunnel IPv4 to
// it: its IPv4 home address bound, or a registration on its way that has
// not yet stood (the Home Agent may tunnel before its Ack, which may accept
// IPv4). A refresh of a binding whose IPv4 was refused asks nothing new.
func tunnelRefusal4(g *Guest, inner netpkt.IPv4) DropReason {
	if !g.Tunnel4 && (g.Tunnel || !g.Registering) {
		return DropNotBound
	}
	src := inner.Src()
	if src.IsLinkLocalUnicast() || src.IsMulticast() {
		return DropTunnelLinkLocal
	}
	if martian4(src) {
		return DropMartian
	}
	return -1
}
