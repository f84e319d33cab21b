package mipv6

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// IPv6 header layout, RFC 8200 §3.
const (
	ipv6HeaderLen  = 40
	ipv6PayloadLen = 4
	ipv6NextHeader = 6
	ipv6HopLimit   = 7
	ipv6Src        = 8
	ipv6Dst        = 24

	defaultHopLimit = 64
)

// OptHomeAddress is the option type of the Home Address destination option,
// RFC 6275 §6.3. Its two high-order bits (11) make a node that does not
// understand it discard the packet and answer with an ICMP Parameter
// Problem, which is why a kernel without MIP6 drops Binding Updates.
const OptHomeAddress = 0xC9

// RoutingType2 is the Routing Type of the type 2 routing header, RFC 6275
// §6.4.
const RoutingType2 = 2

const (
	// homeAddressDstOptsLen is a Destination Options header holding only
	// PadN(2) and the Home Address option at offset 6, the 8n+6 alignment
	// of RFC 6275 §6.3: 2 + 4 + 18 octets.
	homeAddressDstOptsLen = 24
	// rh2Len is the whole type 2 routing header (Hdr Ext Len 2), RFC 6275
	// §6.4.
	rh2Len = 24
)

// MobilityPacket is an IPv6 packet carrying a Mobility Header as found by
// ParseMobilityPacket: the addresses that RFC 6275 defines around the
// Mobility Header and the header itself.
type MobilityPacket struct {
	Src, Dst netip.Addr // IPv6 header, RFC 8200 §3
	// HomeAddress is the Home Address destination option (RFC 6275 §6.3);
	// the zero Addr when the packet carries none.
	HomeAddress netip.Addr
	// RoutingAddress is the address of the type 2 routing header (RFC
	// 6275 §6.4); the zero Addr when the packet carries none.
	RoutingAddress netip.Addr
	// MH is the Mobility Header, trimmed to its Header Len. It aliases the
	// packet. Its checksum has been verified with the pseudo-header of RFC
	// 6275 §6.1.1 (see PseudoSrc and PseudoDst).
	MH MobilityHeader
}

// PseudoSrc returns the checksum pseudo-header source of RFC 6275 §6.1.1:
// the home address when the packet carries a Home Address option, else the
// IPv6 source.
func (p *MobilityPacket) PseudoSrc() netip.Addr {
	if p.HomeAddress.IsValid() {
		return p.HomeAddress
	}
	return p.Src
}

// PseudoDst returns the checksum pseudo-header destination of RFC 6275
// §6.1.1: the final destination, i.e. the type 2 routing header's address
// when present (RFC 8200 §8.1, RFC 6275 §6.4), else the IPv6 destination.
func (p *MobilityPacket) PseudoDst() netip.Addr {
	if p.RoutingAddress.IsValid() {
		return p.RoutingAddress
	}
	return p.Dst
}

// ParseMobilityPacket parses pkt, an IPv6 packet starting at the IPv6
// header, up to its Mobility Header: it walks the Hop-by-Hop, Routing and
// Destination Options headers (RFC 8200 §4), records a Home Address option
// and a type 2 routing header, checks the Mobility Header with
// ParseMobilityHeader and verifies its checksum (RFC 6275 §6.1.1), the
// first check of §9.2. The message type is checked only as far as
// ParseMobilityHeader does, and the mobility options not at all: that is
// for the caller, which knows what it expects.
//
// Errors wrap the package's sentinels: ErrNotIPv6 (also for a packet shorter
// than an IPv6 header, together with ErrTruncated), ErrNotMobility and
// ErrFragment for packets that carry no Mobility Header this package
// parses, ErrChecksum, and the others for malformed headers. Octets after
// the Mobility Header within the IPv6 payload are rejected (ErrBadLength):
// Payload Proto 59 says nothing follows, and the checksum would be
// ambiguous. Link-layer padding after the payload is ignored. It does not
// allocate on success.
func ParseMobilityPacket(pkt []byte) (MobilityPacket, error) {
	p, err := walkHeaders(pkt)
	if err != nil {
		return MobilityPacket{}, err
	}
	if got, want := p.MH.Checksum(), MHChecksum(p.PseudoSrc(), p.PseudoDst(), p.MH); got != want {
		return MobilityPacket{}, fmt.Errorf("mobility header checksum %#04x, computed %#04x: %w", got, want, ErrChecksum)
	}
	return p, nil
}

// walkHeaders is ParseMobilityPacket without the checksum check, which
// tests need to repair packets they edit.
func walkHeaders(pkt []byte) (MobilityPacket, error) {
	var p MobilityPacket
	if len(pkt) < ipv6HeaderLen {
		if len(pkt) > 0 && pkt[0]>>4 != 6 {
			return p, fmt.Errorf("IP version %d: %w", pkt[0]>>4, ErrNotIPv6)
		}
		return p, fmt.Errorf("IPv6 header: %d octets: %w: %w", len(pkt), ErrNotIPv6, ErrTruncated)
	}
	if pkt[0]>>4 != 6 {
		return p, fmt.Errorf("IP version %d: %w", pkt[0]>>4, ErrNotIPv6)
	}
	plen := int(binary.BigEndian.Uint16(pkt[ipv6PayloadLen:]))
	if plen == 0 {
		// Either a jumbogram (RFC 2675) or nothing after the header;
		// neither can carry a Mobility Header we parse.
		return p, fmt.Errorf("IPv6 payload length 0: %w", ErrBadLength)
	}
	if ipv6HeaderLen+plen > len(pkt) {
		return p, fmt.Errorf("IPv6 payload length %d, have %d octets: %w", plen, len(pkt)-ipv6HeaderLen, ErrTruncated)
	}
	// Link layers pad short frames; the payload length is authoritative.
	pkt = pkt[:ipv6HeaderLen+plen]
	p.Src = netip.AddrFrom16([16]byte(pkt[ipv6Src:]))
	p.Dst = netip.AddrFrom16([16]byte(pkt[ipv6Dst:]))
	nh := pkt[ipv6NextHeader]
	off := ipv6HeaderLen
	for {
		if nh == IPProtoMH {
			mh, err := ParseMobilityHeader(pkt[off:])
			if err != nil {
				return MobilityPacket{}, err
			}
			if rest := len(pkt) - off - len(mh); rest != 0 {
				return MobilityPacket{}, fmt.Errorf("%d octets after the %d-octet mobility header: %w", rest, len(mh), ErrBadLength)
			}
			p.MH = mh
			return p, nil
		}
		switch nh {
		case IPProtoHopByHop, IPProtoDstOpts, IPProtoRouting:
		case IPProtoFragment:
			return MobilityPacket{}, fmt.Errorf("fragment header at offset %d: %w", off, ErrFragment)
		default:
			return MobilityPacket{}, fmt.Errorf("next header %d at offset %d: %w", nh, off, ErrNotMobility)
		}
		if len(pkt)-off < 2 {
			return MobilityPacket{}, fmt.Errorf("extension header %d at offset %d: %w", nh, off, ErrTruncated)
		}
		n := (int(pkt[off+1]) + 1) * 8
		if n > len(pkt)-off {
			return MobilityPacket{}, fmt.Errorf("extension header %d at offset %d: length %d, have %d: %w", nh, off, n, len(pkt)-off, ErrTruncated)
		}
		ext := pkt[off : off+n]
		var err error
		switch nh {
		case IPProtoHopByHop:
			// RFC 8200 §4.1: only immediately after the IPv6 header.
			if off != ipv6HeaderLen {
				return MobilityPacket{}, fmt.Errorf("hop-by-hop header at offset %d: %w", off, ErrBadExtHeader)
			}
			err = p.walkOptions(ext, false)
		case IPProtoDstOpts:
			err = p.walkOptions(ext, true)
		case IPProtoRouting:
			err = p.walkRouting(ext)
		}
		if err != nil {
			return MobilityPacket{}, fmt.Errorf("extension header %d at offset %d: %w", nh, off, err)
		}
		nh = ext[0]
		off += n
	}
}

// walkOptions checks the TLV options of a Hop-by-Hop or Destination Options
// header (RFC 8200 §4.2) and records a Home Address option (RFC 6275 §6.3)
// when dst is set. An unrecognized option whose action bits demand discard
// makes the packet unacceptable, as it would be for any receiving node.
func (p *MobilityPacket) walkOptions(ext []byte, dst bool) error {
	opts := ext[2:]
	for i := 0; i < len(opts); {
		typ := opts[i]
		if typ == 0 { // Pad1
			i++
			continue
		}
		if i+2 > len(opts) {
			return fmt.Errorf("option %#02x: no length octet: %w", typ, ErrBadExtHeader)
		}
		n := int(opts[i+1])
		if i+2+n > len(opts) {
			return fmt.Errorf("option %#02x: length %d overruns header: %w", typ, n, ErrBadExtHeader)
		}
		switch {
		case typ == 1: // PadN
		case typ == OptHomeAddress && dst:
			if n != 16 {
				return fmt.Errorf("home address option length %d, want 16: %w", n, ErrBadLength)
			}
			if p.HomeAddress.IsValid() {
				return fmt.Errorf("second home address option: %w", ErrBadExtHeader)
			}
			p.HomeAddress = netip.AddrFrom16([16]byte(opts[i+2:]))
		case typ>>6 != 0:
			return fmt.Errorf("unrecognized option %#02x requires discard: %w", typ, ErrBadExtHeader)
		}
		i += 2 + n
	}
	return nil
}

// walkRouting checks a routing header (RFC 8200 §4.4) and records the
// address of a type 2 routing header, which RFC 6275 §6.4 fixes at Hdr Ext
// Len 2, Segments Left 1. A routing header after a type 2 routing header is
// refused: RFC 8200 §4.1 expects one routing header, and a second one would
// leave the final destination, which the checksum covers, in doubt.
func (p *MobilityPacket) walkRouting(ext []byte) error {
	if len(ext) < 4 {
		return fmt.Errorf("routing header: %w", ErrTruncated)
	}
	if p.RoutingAddress.IsValid() {
		return fmt.Errorf("second routing header: %w", ErrBadRoutingHeader)
	}
	typ, left := ext[2], ext[3]
	if typ != RoutingType2 {
		// RFC 8200 §4.4: an unrecognized type with Segments Left 0 is
		// ignored; anything else means we are not the destination.
		if left != 0 {
			return fmt.Errorf("routing type %d with segments left %d: %w", typ, left, ErrBadRoutingHeader)
		}
		return nil
	}
	if ext[1] != 2 || left != 1 {
		return fmt.Errorf("type 2 routing header with hdr ext len %d, segments left %d: %w", ext[1], left, ErrBadRoutingHeader)
	}
	p.RoutingAddress = netip.AddrFrom16([16]byte(ext[8:24]))
	return nil
}

// appendIPv6Header appends an IPv6 header (RFC 8200 §3) with a zero payload
// length, which finishPacket fills in.
func appendIPv6Header(b []byte, nh uint8, src, dst netip.Addr) []byte {
	l := len(b)
	b = append(b, make([]byte, ipv6HeaderLen)...)
	h := b[l:]
	h[0] = 6 << 4
	h[ipv6NextHeader] = nh
	h[ipv6HopLimit] = defaultHopLimit
	s, d := src.As16(), dst.As16()
	copy(h[ipv6Src:], s[:])
	copy(h[ipv6Dst:], d[:])
	return b
}

// appendHomeAddressDstOpts appends a Destination Options header holding the
// Home Address option at the 8n+6 alignment of RFC 6275 §6.3.
func appendHomeAddressDstOpts(b []byte, nh uint8, hoa netip.Addr) []byte {
	l := len(b)
	b = append(b, make([]byte, homeAddressDstOptsLen)...)
	h := b[l:]
	h[0] = nh
	h[1] = homeAddressDstOptsLen/8 - 1
	h[2] = 1 // PadN with 2 octets of data brings the option to offset 6
	h[3] = 2
	h[6] = OptHomeAddress
	h[7] = 16
	a := hoa.As16()
	copy(h[8:], a[:])
	return b
}

// appendRH2 appends a type 2 routing header carrying hoa with Segments
// Left 1, RFC 6275 §6.4.
func appendRH2(b []byte, nh uint8, hoa netip.Addr) []byte {
	l := len(b)
	b = append(b, make([]byte, rh2Len)...)
	h := b[l:]
	h[0] = nh
	h[1] = rh2Len/8 - 1
	h[2] = RoutingType2
	h[3] = 1
	a := hoa.As16()
	copy(h[8:], a[:])
	return b
}
