package datapath

import "github.com/kgswitch/kgswitch/netpkt"

// A Home Agent that restarted has forgotten its bindings, and its kernel
// answers every tunnelled packet from a care-of address it has no tunnel for
// with an ICMPv6 Destination Unreachable (docs/home-agents.md). That is the
// first sign kgswitch can get that a binding is lost, long before its next
// refresh: the datapath recognises these errors and tells the control loop,
// which re-registers at once. Nothing authenticates an ICMPv6 error, so it is
// only a hint (rate-limited, never a teardown); the Home Agent's Ack decides.

// icmpDestUnreachable is the ICMPv6 type of Destination Unreachable (RFC 4443 §3.1).
const icmpDestUnreachable = 1

// tunnelRefused returns the guest whose tunnelled packet the ICMPv6 error in
// ip (sent to the care-of address without a routing header) is about, when
// it is a Destination Unreachable from that guest's Home Agent about a packet
// kgswitch tunnelled to it: outer source the care-of address, outer
// destination the Home Agent, IP6IP6 or IPv4 in IPv6, inner source the
// guest's home address (IPv6 or IPv4).
// The invoking packet may be truncated, but holds both headers (RFC 4443
// §2.4(c): as much as fits in the minimum MTU).
func tunnelRefused(f *FIB, ip netpkt.IPv6) *Guest {
	msg := ip.Payload()
	if ip.NextHeader() != netpkt.ProtoICMPv6 || len(msg) < 8+netpkt.IPv6Len+netpkt.IPv4Len || msg[0] != icmpDestUnreachable {
		return nil
	}
	if !netpkt.VerifyChecksum(ip.Src(), ip.Dst(), netpkt.ProtoICMPv6, msg) {
		return nil
	}
	outer := netpkt.IPv6(msg[8:])
	if outer[0]>>4 != 6 || outer.Src() != f.coa {
		return nil
	}
	inner := outer[netpkt.IPv6Len:]
	var g *Guest
	switch {
	case outer.NextHeader() == netpkt.ProtoIPv6 && len(inner) >= netpkt.IPv6Len && inner[0]>>4 == 6:
		g = f.byHoA[netpkt.IPv6(inner).Src()]
	case outer.NextHeader() == netpkt.ProtoIPv4 && inner[0]>>4 == 4:
		g = f.byHoA4[netpkt.IPv4(inner).Src()]
	}
	if g == nil || outer.Dst() != g.HomeAgent || ip.Src() != g.HomeAgent {
		return nil
	}
	return g
}

// hint tells the control loop that g's Home Agent refused a tunnelled
// packet. A full channel drops the hint: the next refused packet repeats it.
func (d *Datapath) hint(g *Guest) {
	g.Link.Counters.TunnelRefused.Add(1)
	select {
	case d.refused <- g.Key:
	default:
	}
}
