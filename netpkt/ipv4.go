package netpkt

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Sizes, EtherTypes and protocol numbers of IPv4 (RFC 791, RFC 826).
const (
	IPv4Len       = 20 // header without options
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	ProtoICMPv4   = 1
	ProtoIPv4     = 4 // IPv4 in IPv6 (RFC 2473 §3)
	ProtoUDP      = 17
)

// IPv4 flag bits in the Flags/Fragment Offset field (RFC 791 §3.1).
const (
	IPv4DontFragment  = 0x4000
	IPv4MoreFragments = 0x2000
	ipv4OffsetMask    = 0x1fff
)

// IPv4 is a view of an IPv4 header (RFC 791 §3.1), options included, followed
// by its payload.
type IPv4 []byte

// Reasons ParseIPv4 refuses a packet.
var (
	errNotIPv4      = errors.New("netpkt: not an IPv4 header")
	errIPv4Length   = errors.New("netpkt: IPv4 header or total length inconsistent")
	errIPv4Checksum = errors.New("netpkt: IPv4 header checksum invalid")
)

// ParseIPv4 checks what a router checks of a received header (RFC 1812
// §5.2.2): version 4, a header length of at least 20 bytes, a total length
// that covers the header and fits in b, a valid header checksum. It returns
// the view trimmed to the total length (Ethernet padding dropped).
func ParseIPv4(b []byte) (IPv4, error) {
	if len(b) < IPv4Len {
		return nil, ErrShort
	}
	if b[0]>>4 != 4 {
		return nil, errNotIPv4
	}
	hl := int(b[0]&0x0f) * 4
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < IPv4Len || n < hl || n > len(b) {
		return nil, errIPv4Length
	}
	if sumFold(sumBytes(0, b[:hl])) != 0xffff {
		return nil, errIPv4Checksum
	}
	return IPv4(b[:n]), nil
}

// HeaderLen returns the header's length in bytes, options included.
func (p IPv4) HeaderLen() int { return int(p[0]&0x0f) * 4 }

// TotalLength returns the Total Length field.
func (p IPv4) TotalLength() int { return int(binary.BigEndian.Uint16(p[2:4])) }

// ID returns the Identification field.
func (p IPv4) ID() uint16 { return binary.BigEndian.Uint16(p[4:6]) }

// DontFragment reports whether the DF flag is set.
func (p IPv4) DontFragment() bool { return p[6]&0x40 != 0 }

// MoreFragments reports whether the MF flag is set.
func (p IPv4) MoreFragments() bool { return p[6]&0x20 != 0 }

// FragmentOffset returns the Fragment Offset field in 8-byte units.
func (p IPv4) FragmentOffset() int { return int(binary.BigEndian.Uint16(p[6:8]) & ipv4OffsetMask) }

// TTL returns the Time to Live field.
func (p IPv4) TTL() uint8 { return p[8] }

// Protocol returns the Protocol field.
func (p IPv4) Protocol() uint8 { return p[9] }

// Src returns the source address.
func (p IPv4) Src() netip.Addr { return netip.AddrFrom4([4]byte(p[12:16])) }

// Dst returns the destination address.
func (p IPv4) Dst() netip.Addr { return netip.AddrFrom4([4]byte(p[16:20])) }

// Options returns the header's options (aliases the packet).
func (p IPv4) Options() []byte { return p[IPv4Len:p.HeaderLen()] }

// Payload returns what follows the header.
func (p IPv4) Payload() []byte { return p[p.HeaderLen():] }

// DecrementTTL takes one from the TTL and updates the header checksum
// incrementally (RFC 1624 §3, eqn. 3), as a forwarding router does (RFC 1812
// §5.3.1) without summing the whole header again.
func (p IPv4) DecrementTTL() {
	old := binary.BigEndian.Uint16(p[8:10])
	p[8]--
	sum := uint32(^binary.BigEndian.Uint16(p[10:12])) + uint32(^old) + uint32(binary.BigEndian.Uint16(p[8:10]))
	binary.BigEndian.PutUint16(p[10:12], ^sumFold(sum))
}

// SetChecksum computes the header checksum (RFC 791 §3.1) into the header.
func (p IPv4) SetChecksum() {
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:12], ^sumFold(sumBytes(0, p[:p.HeaderLen()])))
}

// PutIPv4 writes a 20-byte IPv4 header without options into b: ID zero, DF
// set when df, checksum computed.
func PutIPv4(b []byte, totalLen int, df bool, ttl, proto uint8, src, dst netip.Addr) {
	b[0], b[1] = 0x45, 0
	binary.BigEndian.PutUint16(b[2:4], uint16(totalLen))
	b[4], b[5], b[6], b[7] = 0, 0, 0, 0
	if df {
		b[6] = 0x40
	}
	b[8], b[9] = ttl, proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	IPv4(b).SetChecksum()
}

// InternetChecksum returns the Internet checksum (RFC 1071) of b, as ICMP
// (RFC 792) and the IPv4 header use it: b's own checksum field must be zero.
func InternetChecksum(b []byte) uint16 { return ^sumFold(sumBytes(0, b)) }

// Checksum4 computes the Internet checksum of an upper-layer payload (TCP,
// UDP) with the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768). The payload's
// own checksum field must be zero.
func Checksum4(src, dst netip.Addr, proto uint8, payload []byte) uint16 {
	s, d := src.As4(), dst.As4()
	sum := sumBytes(0, s[:])
	sum = sumBytes(sum, d[:])
	sum += uint32(proto) + uint32(len(payload))
	c := ^sumFold(sumBytes(sum, payload))
	if c == 0 && proto == ProtoUDP {
		return 0xffff // RFC 768: zero means no checksum
	}
	return c
}

func sumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
