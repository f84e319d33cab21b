package labha

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/mdlayher/ndp"
)

// TunnelHopLimit is the outer hop limit of tunnelled packets; mip6d's
// ip6tnl devices use the default hop limit, 64.
const TunnelHopLimit = 64

// TunnelOverhead is what IP6IP6 encapsulation adds: one IPv6 header and no
// Tunnel Encapsulation Limit option (RFC 2473 §5.1 allows leaving it out,
// and mip6d does).
const TunnelOverhead = ipv6HeaderLen

// rh2Len is the length of a type 2 routing header, RFC 6275 §6.4.
const rh2Len = 24

// Errors of the data-plane checks.
var (
	// ErrNotIPv6 means a packet does not start with a complete IPv6 header.
	ErrNotIPv6 = errors.New("labha: not an IPv6 packet")
	// ErrReverseTunnel means a reverse-tunnelled packet does not match its
	// binding (RFC 6275 §10.4.5).
	ErrReverseTunnel = errors.New("labha: reverse-tunnelled packet rejected")
	// ErrNoTunnel means no binding's tunnel takes a reverse-tunnelled
	// packet: no binding for its inner source, or one with another care-of
	// address. A Home Agent's kernel answers it with TunnelUnreachable.
	ErrNoTunnel = fmt.Errorf("%w: no tunnel for it", ErrReverseTunnel)
)

// appendIPv6Header appends an IPv6 header (RFC 8200 §3) with traffic class
// and flow label zero.
func appendIPv6Header(b []byte, payloadLen int, nh, hopLimit uint8, src, dst netip.Addr) []byte {
	s, d := src.As16(), dst.As16()
	b = append(b, 0x60, 0, 0, 0, byte(payloadLen>>8), byte(payloadLen), nh, hopLimit)
	b = append(b, s[:]...)
	return append(b, d[:]...)
}

// addrs returns the source and destination of IPv6 packet pkt, which must
// hold at least a header.
func addrs(pkt []byte) (src, dst netip.Addr) {
	return netip.AddrFrom16([16]byte(pkt[ipv6Src : ipv6Src+16])), netip.AddrFrom16([16]byte(pkt[ipv6Dst : ipv6Dst+16]))
}

// checkIPv6 verifies that pkt is one whole IPv6 packet.
func checkIPv6(pkt []byte) error {
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return ErrNotIPv6
	}
	if n := int(binary.BigEndian.Uint16(pkt[ipv6PayLen:])); ipv6HeaderLen+n != len(pkt) {
		return fmt.Errorf("payload length %d, packet has %d octets after the header: %w", n, len(pkt)-ipv6HeaderLen, ErrNotIPv6)
	}
	return nil
}

// Encapsulate appends to b the IP6IP6 packet that carries inner from the
// Home Agent ha to care-of address coa (RFC 6275 §10.4.1, RFC 2473 §3):
// outer hop limit 64, next header 41, no Tunnel Encapsulation Limit option.
// The inner packet is left as it is; its hop limit was already decremented
// when the Home Agent's kernel forwarded it.
func Encapsulate(b []byte, ha, coa netip.Addr, inner []byte) []byte {
	b = appendIPv6Header(b, len(inner), mipv6.IPProtoIPv6, TunnelHopLimit, ha, coa)
	return append(b, inner...)
}

// Decapsulate splits an IP6IP6 packet (RFC 2473 §3) without extension
// headers into its outer addresses and the inner packet.
func Decapsulate(pkt []byte) (outerSrc, outerDst netip.Addr, inner []byte, err error) {
	if err := checkIPv6(pkt); err != nil {
		return netip.Addr{}, netip.Addr{}, nil, err
	}
	if pkt[ipv6NextHdr] != mipv6.IPProtoIPv6 {
		return netip.Addr{}, netip.Addr{}, nil, fmt.Errorf("next header %d, want 41: %w", pkt[ipv6NextHdr], ErrReverseTunnel)
	}
	outerSrc, outerDst = addrs(pkt)
	return outerSrc, outerDst, pkt[ipv6HeaderLen:], nil
}

// CheckReverse applies the Home Agent's rules to a reverse-tunnelled packet
// (RFC 6275 §10.4.5, and mip6d's ip6tnl endpoints): the outer source must
// be the registered care-of address of the inner source's binding and the
// outer destination the Home Agent's address. lookup returns the binding
// for a home address. It returns the inner source (the home address).
func CheckReverse(outerSrc, outerDst, ha netip.Addr, inner []byte, lookup func(netip.Addr) (Binding, bool)) (netip.Addr, error) {
	if err := checkIPv6(inner); err != nil {
		return netip.Addr{}, fmt.Errorf("inner packet: %w", err)
	}
	if outerDst != ha {
		return netip.Addr{}, fmt.Errorf("outer destination %v is not the home agent: %w", outerDst, ErrReverseTunnel)
	}
	hoa, _ := addrs(inner)
	b, ok := lookup(hoa)
	if !ok {
		return hoa, fmt.Errorf("no binding for inner source %v: %w", hoa, ErrNoTunnel)
	}
	if outerSrc != b.CareOf {
		return hoa, fmt.Errorf("outer source %v, binding for %v has care-of address %v: %w", outerSrc, hoa, b.CareOf, ErrNoTunnel)
	}
	return hoa, nil
}

// minMTU is the IPv6 minimum link MTU, which bounds an ICMPv6 error (RFC
// 4443 §2.4(c)).
const minMTU = 1280

// TunnelUnreachable appends to b what a Home Agent's kernel sends back for a
// tunnelled packet no tunnel takes (docs/home-agents.md: a restarted Home
// Agent): an ICMPv6 Destination Unreachable, code 4 (port unreachable: no
// handler for next header 41, as Linux's tunnel6 answers), from ha to the
// outer source coa, quoting the tunnel packet as far as the minimum MTU
// allows. The raw socket hands over only the inner packet, so the outer
// header is rebuilt; its hop limit is the one kgswitch sends, 64.
func TunnelUnreachable(b []byte, ha, coa netip.Addr, inner []byte) []byte {
	quote := min(ipv6HeaderLen+len(inner), minMTU-ipv6HeaderLen-8)
	b = appendIPv6Header(b, 8+quote, mipv6.IPProtoICMPv6, 64, ha, coa)
	msg := len(b)
	b = append(b, icmpDestUnreachable, icmpPortUnreachable, 0, 0, 0, 0, 0, 0)
	b = appendIPv6Header(b, len(inner), mipv6.IPProtoIPv6, TunnelHopLimit, coa, ha)
	b = append(b, inner[:quote-ipv6HeaderLen]...)
	binary.BigEndian.PutUint16(b[msg+2:], netpkt.Checksum(ha, coa, mipv6.IPProtoICMPv6, b[msg:]))
	return b
}

// ICMPv6 Destination Unreachable and its port-unreachable code (RFC 4443 §3.1).
const (
	icmpDestUnreachable = 1
	icmpPortUnreachable = 4
)

// InsertRH2 appends to b packet pkt, which the Home Agent itself originated
// for home address hoa, rewritten to reach the mobile node directly: the
// destination becomes care-of address coa and a type 2 routing header with
// hoa, Segments Left 1, follows the IPv6 header (RFC 6275 §6.4, §9.3.2).
// Upper-layer checksums stay valid because they cover the final
// destination, hoa. pkt must be a whole IPv6 packet whose destination is
// hoa.
func InsertRH2(b, pkt []byte, coa netip.Addr) ([]byte, error) {
	if err := checkIPv6(pkt); err != nil {
		return b, err
	}
	_, hoa := addrs(pkt)
	h := hoa.As16()
	c := coa.As16()
	start := len(b)
	b = append(b, pkt[:ipv6HeaderLen]...)
	binary.BigEndian.PutUint16(b[start+ipv6PayLen:], uint16(len(pkt)-ipv6HeaderLen+rh2Len))
	b[start+ipv6NextHdr] = mipv6.IPProtoRouting
	copy(b[start+ipv6Dst:], c[:])
	b = append(b, pkt[ipv6NextHdr], 2, 2, 1, 0, 0, 0, 0)
	b = append(b, h[:]...)
	return append(b, pkt[ipv6HeaderLen:]...), nil
}

// multicastMAC returns the Ethernet address of IPv6 multicast group g,
// RFC 2464 §7.
func multicastMAC(g netip.Addr) net.HardwareAddr {
	a := g.As16()
	return net.HardwareAddr{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// allNodes is the link-local all-nodes multicast group, RFC 4291 §2.7.1.
var allNodes = netip.MustParseAddr("ff02::1")

// ndPacket builds the IPv6 packet carrying NDP message m (RFC 4861 §4):
// hop limit 255 and the ICMPv6 checksum filled in.
func ndPacket(m ndp.Message, src, dst netip.Addr) ([]byte, error) {
	icmp, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		return nil, err
	}
	b := appendIPv6Header(make([]byte, 0, ipv6HeaderLen+len(icmp)), len(icmp), mipv6.IPProtoICMPv6, ndp.HopLimit, src, dst)
	return append(b, icmp...), nil
}

// DADProbe returns the Neighbor Solicitation that checks whether target is
// in use on the link (RFC 4862 §5.4.2): from the unspecified address to the
// solicited-node group of target, without Source Link-Layer Address
// option, and the Ethernet destination for it.
func DADProbe(target netip.Addr) ([]byte, net.HardwareAddr, error) {
	group, err := ndp.SolicitedNodeMulticast(target)
	if err != nil {
		return nil, nil, err
	}
	pkt, err := ndPacket(&ndp.NeighborSolicitation{TargetAddress: target}, netip.IPv6Unspecified(), group)
	return pkt, multicastMAC(group), err
}

// ProxyAdvertisement returns the unsolicited Neighbor Advertisement a Home
// Agent sends when it starts defending home address target (RFC 6275
// §10.4.1, RFC 4861 §7.2.6), as mip6d sends it: from src to all-nodes,
// with the Home Agent's MAC as Target Link-Layer Address, Router flag set,
// and neither Solicited nor Override flag. Without Override a neighbour
// that still caches the mobile node's MAC keeps it (RFC 4861 §7.2.5) until
// unreachability detection gives up on it.
func ProxyAdvertisement(src, target netip.Addr, mac net.HardwareAddr) ([]byte, net.HardwareAddr, error) {
	na := &ndp.NeighborAdvertisement{
		Router:        true,
		TargetAddress: target,
		Options: []ndp.Option{&ndp.LinkLayerAddress{
			Direction: ndp.Target,
			Addr:      mac,
		}},
	}
	pkt, err := ndPacket(na, src, allNodes)
	return pkt, multicastMAC(allNodes), err
}

// DADConflict reports whether IPv6 packet pkt, seen on the home link while
// the Home Agent runs DAD for target, shows target to be in use: a Neighbor
// Advertisement for target (RFC 4862 §5.4.4). Like mip6d's ndisc_do_dad it
// looks at Neighbor Advertisements only, whatever their hop limit.
func DADConflict(pkt []byte, target netip.Addr) bool {
	if checkIPv6(pkt) != nil || pkt[ipv6NextHdr] != mipv6.IPProtoICMPv6 {
		return false
	}
	m, err := ndp.ParseMessage(pkt[ipv6HeaderLen:])
	if err != nil {
		return false
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	return ok && na.TargetAddress == target
}

// baPacket is the Binding Acknowledgement of decision d from Home Agent ha
// (RFC 6275 §6.1.8, §10.3.1): to the care-of address with a type 2 routing
// header for the home address, or, to a mobile node at home (care-of
// address the home address), straight to it without one, as mip6d sends
// it.
func baPacket(ha netip.Addr, d Decision) mipv6.BAPacket {
	return mipv6.BAPacket{
		Src:         ha,
		Dst:         d.CareOf,
		HomeAddress: d.HomeAddress,
		Status:      d.Ack.Status,
		Sequence:    d.Ack.Sequence,
		Lifetime:    d.Ack.Lifetime,
		IPv4Ack:     d.Ack.IPv4,
	}
}
