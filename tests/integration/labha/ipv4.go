package labha

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/kgswitch/kgswitch/netpkt"
)

// The pure half of the Home Agent's IPv4 data plane for Dual-Stack MIPv6
// (RFC 5555, IPv6 care-of address): what it sends on the home link for a
// bound IPv4 home address, and what it carries to and from the care-of
// address. The I/O (a TUN route per address, proxy ARP, the raw socket for
// next header 4) is in ha_linux.go, bind4 and readTunnel4.

// EncapsulateIPv4 appends to b the IPv4-in-IPv6 packet that carries IPv4
// packet inner from the Home Agent ha to care-of address coa (RFC 5555,
// RFC 2473 §3): outer hop limit 64, next header 4, as Encapsulate does
// for IPv6. The inner packet is left as it is; its TTL was already
// decremented when the Home Agent's kernel forwarded it.
func EncapsulateIPv4(b []byte, ha, coa netip.Addr, inner []byte) []byte {
	b = appendIPv6Header(b, len(inner), netpkt.ProtoIPv4, TunnelHopLimit, ha, coa)
	return append(b, inner...)
}

// CheckReverseIPv4 applies CheckReverse's rules to an IPv4 packet
// reverse-tunnelled with next header 4: a valid IPv4 header (what a router
// checks, RFC 1812 §5.2.2), sent to the Home Agent ha from the care-of
// address of the binding that holds its source as IPv4 home address.
// lookup returns that binding. It returns the inner source.
func CheckReverseIPv4(outerSrc, outerDst, ha netip.Addr, inner []byte, lookup func(netip.Addr) (Binding, bool)) (netip.Addr, error) {
	p, err := netpkt.ParseIPv4(inner)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("inner packet: %w: %w", err, ErrReverseTunnel)
	}
	if len(p) != len(inner) {
		return netip.Addr{}, fmt.Errorf("inner packet: total length %d, %d octets: %w", len(p), len(inner), ErrReverseTunnel)
	}
	if outerDst != ha {
		return netip.Addr{}, fmt.Errorf("outer destination %v is not the home agent: %w", outerDst, ErrReverseTunnel)
	}
	hoa4 := p.Src()
	b, ok := lookup(hoa4)
	if !ok {
		return hoa4, fmt.Errorf("no binding for inner source %v: %w", hoa4, ErrNoTunnel)
	}
	if outerSrc != b.CareOf {
		return hoa4, fmt.Errorf("outer source %v, binding for %v has care-of address %v: %w", outerSrc, hoa4, b.CareOf, ErrNoTunnel)
	}
	return hoa4, nil
}

// ARP fields (RFC 826) of an Ethernet/IPv4 ARP packet.
const (
	arpHTypeEthernet = 1
	arpRequest       = 1
	arpLen           = 28
	ethHeaderLen     = 14
)

// GratuitousARP returns the Ethernet frame with which a Home Agent starts
// defending IPv4 home address a on the home link with its own MAC mac (as
// RFC 5944 §4.6 has a Mobile IPv4 Home Agent do): a broadcast ARP request
// whose sender and target protocol addresses are both a (an ARP
// Announcement, RFC 5227 §3), so that every host that cached the mobile
// node's MAC for a replaces it (RFC 826: the sender's pair is merged
// before the target is looked at).
func GratuitousARP(a netip.Addr, mac net.HardwareAddr) ([]byte, error) {
	if !a.Is4() || len(mac) != 6 {
		return nil, fmt.Errorf("labha: gratuitous ARP for %v from %v: want an IPv4 address and an Ethernet MAC", a, mac)
	}
	ip := a.As4()
	f := make([]byte, 0, ethHeaderLen+arpLen)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, mac...)
	f = append(f, netpkt.EtherTypeARP>>8, netpkt.EtherTypeARP&0xff)
	f = append(f, 0, arpHTypeEthernet, netpkt.EtherTypeIPv4>>8, netpkt.EtherTypeIPv4&0xff, 6, 4, 0, arpRequest)
	f = append(f, mac...)
	f = append(f, ip[:]...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	return append(f, ip[:]...), nil
}

// LookupIPv4 returns the binding that holds IPv4 home address a.
func (c *Cache) LookupIPv4(a netip.Addr) (Binding, bool) {
	hoa, ok := c.ipv4[a]
	if !ok {
		return Binding{}, false
	}
	return c.Lookup(hoa)
}
