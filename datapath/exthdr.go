package datapath

import (
	"encoding/binary"

	"github.com/kgswitch/kgswitch/netpkt"
)

// IPv6 extension headers the datapath looks through (RFC 8200 §4).
const (
	protoHopByHop = 0
	protoFragment = 44
	protoDestOpts = 60
)

// maxExtHeaders bounds the walk: no real packet carries more, and a crafted
// one must not cost more.
const maxExtHeaders = 8

// upper is what follows an IPv6 packet's extension headers.
type upper struct {
	proto   uint8
	payload []byte // nil for a fragment after the first: no upper header in it
	// routing is the type of the last routing header met, or -1.
	routing int
}

// upperLayer walks ip's extension headers to its upper-layer header, the
// one its receiver acts on: what the datapath must refuse (Neighbor
// Discovery from the tunnel, a guest's Mobility Header) could hide behind
// options. ok is false for a header chain that is cut short or too long.
func upperLayer(ip netpkt.IPv6) (u upper, ok bool) {
	u.proto, u.payload, u.routing = ip.NextHeader(), ip.Payload(), -1
	for range maxExtHeaders {
		b := u.payload
		switch u.proto {
		case protoHopByHop, protoDestOpts, protoRouting:
			if len(b) < 8 {
				return u, false
			}
			n := (int(b[1]) + 1) * 8
			if n > len(b) {
				return u, false
			}
			if u.proto == protoRouting {
				u.routing = int(b[2])
			}
			u.proto, u.payload = b[0], b[n:]
		case protoFragment:
			if len(b) < 8 {
				return u, false
			}
			if binary.BigEndian.Uint16(b[2:4])&^7 != 0 {
				u.proto, u.payload = b[0], nil
				return u, true
			}
			u.proto, u.payload = b[0], b[8:]
		default:
			return u, true
		}
	}
	return u, false
}

// isNDMessage reports whether an ICMPv6 message is Neighbor Discovery (RFC
// 4861 §4: Router Solicitation to Redirect), which is valid only with hop
// limit 255, from a node on the same link.
func isNDMessage(u upper) bool {
	return u.proto == netpkt.ProtoICMPv6 && len(u.payload) > 0 && u.payload[0] >= 133 && u.payload[0] <= 137
}

// tunnelRefusal says why a packet that came through the tunnel (or straight
// from the Home Agent) must not reach guest g, or -1 when it may: only what a
// router on the guest's home link could have forwarded to it, and only to a
// guest the Home Agent may tunnel to here.
func tunnelRefusal(g *Guest, inner netpkt.IPv6) DropReason {
	if !g.Tunnel && !g.Registering {
		return DropNotBound
	}
	if inner.Src().IsLinkLocalUnicast() || inner.Src().IsMulticast() {
		return DropTunnelLinkLocal
	}
	u, ok := upperLayer(inner)
	if !ok {
		return DropMalformed
	}
	if isNDMessage(u) {
		return DropTunnelND
	}
	return -1
}

// guestRefusal says why a packet the guest sends from its home address must
// not go to the Home Agent, or -1 when it may: a Home Agent takes a Mobility
// Header or a routing header of type 0 (deprecated, RFC 5095) or 2 (only a
// correspondent sends one to a mobile node) from a mobile node's home address
// as the mobile node's own signalling.
func guestRefusal(ip netpkt.IPv6) DropReason {
	u, ok := upperLayer(ip)
	switch {
	case !ok:
		return DropMalformed
	case u.proto == protoMH:
		return DropGuestMobility
	case u.routing == 0 || u.routing == 2:
		return DropGuestRoutingHeader
	}
	return -1
}
