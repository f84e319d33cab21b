package datapath

import (
	"errors"
	"net/netip"

	"github.com/kgswitch/kgswitch/netpkt"
)

// tunnelHopLimit is the outer hop limit of IP6IP6 packets, as a Linux ip6_tunnel
// and UMIP's Home Agent use (RFC 2473 §6.3 leaves it to the entry point).
const tunnelHopLimit = 64

// encapsulate writes an outer IPv6 header (RFC 2473 §3, no Tunnel Encapsulation
// Limit option: a Home Agent sends none and expects none) into the 40 bytes
// before inner, which must start at offset off >= 40 of buf, and returns the
// whole tunnel packet. No byte of the inner packet moves. The inner packet's
// version says what the tunnel carries: IPv6, or IPv4 (RFC 5555 §4.2), so
// that a hold releases both kinds alike.
func encapsulate(buf []byte, off, innerLen int, src, dst netip.Addr) []byte {
	outer := buf[off-netpkt.IPv6Len : off+innerLen]
	next := uint8(netpkt.ProtoIPv6)
	if buf[off]>>4 == 4 {
		next = netpkt.ProtoIPv4
	}
	netpkt.PutIPv6(outer, innerLen, next, tunnelHopLimit, src, dst)
	return outer
}

// Reasons a tunnel packet is not decapsulated.
var (
	errNotTunnel   = errors.New("not an IP6IP6 packet")
	errInnerBroken = errors.New("malformed inner packet")
)

// decapsulate checks an IP6IP6 packet and returns its inner packet, trimmed to
// the inner header's payload length. Extension headers before the inner packet
// are not accepted: neither a Home Agent nor kgswitch puts any there.
func decapsulate(outer netpkt.IPv6) (netpkt.IPv6, error) {
	if outer.NextHeader() != netpkt.ProtoIPv6 {
		return nil, errNotTunnel
	}
	inner, err := netpkt.ParseIPv6(outer.Payload())
	if err != nil {
		return nil, errInnerBroken
	}
	return inner, nil
}
