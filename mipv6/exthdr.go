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

// headerChain is what walkHeaders learns about an IPv6 packet on the way to
// its Mobility Header.
type headerChain struct {
	src, dst netip.Addr
	hoa      netip.Addr // Home Address option, RFC 6275 §6.3
	rh2      netip.Addr // type 2 routing header address, RFC 6275 §6.4
	hasHAO   bool
	hasRH2   bool
	mh       MobilityHeader
}

// pseudoSrc returns the checksum pseudo-header source of RFC 6275 §6.1.1:
// the home address when a Home Address option is present.
func (h *headerChain) pseudoSrc() netip.Addr {
	if h.hasHAO {
		return h.hoa
	}
	return h.src
}

// pseudoDst returns the checksum pseudo-header destination: the final
// destination, i.e. the type 2 routing header's address when present (RFC
// 8200 §8.1, RFC 6275 §6.4).
func (h *headerChain) pseudoDst() netip.Addr {
	if h.hasRH2 {
		return h.rh2
	}
	return h.dst
}

// checkChecksum verifies the Mobility Header checksum, RFC 6275 §6.1.1.
func (h *headerChain) checkChecksum() error {
	if got, want := h.mh.Checksum(), MHChecksum(h.pseudoSrc(), h.pseudoDst(), h.mh); got != want {
		return fmt.Errorf("mobility header checksum %#04x, computed %#04x: %w", got, want, ErrChecksum)
	}
	return nil
}

// walkHeaders parses the IPv6 header of pkt and the extension headers after
// it (Hop-by-Hop, Routing, Destination Options; RFC 8200 §4) up to the
// Mobility Header, which it checks with ParseMobilityHeader. Fragments,
// jumbograms and other upper layers are rejected.
func walkHeaders(pkt []byte) (headerChain, error) {
	var h headerChain
	if len(pkt) < ipv6HeaderLen {
		return h, fmt.Errorf("IPv6 header: %d octets: %w", len(pkt), ErrTruncated)
	}
	if pkt[0]>>4 != 6 {
		return h, fmt.Errorf("IP version %d: %w", pkt[0]>>4, ErrNotIPv6)
	}
	plen := int(binary.BigEndian.Uint16(pkt[ipv6PayloadLen:]))
	if plen == 0 {
		// Either a jumbogram (RFC 2675) or nothing after the header;
		// neither can carry a Mobility Header we parse.
		return h, fmt.Errorf("IPv6 payload length 0: %w", ErrBadLength)
	}
	if ipv6HeaderLen+plen > len(pkt) {
		return h, fmt.Errorf("IPv6 payload length %d, have %d octets: %w", plen, len(pkt)-ipv6HeaderLen, ErrTruncated)
	}
	// Link layers pad short frames; the payload length is authoritative.
	pkt = pkt[:ipv6HeaderLen+plen]
	h.src = netip.AddrFrom16([16]byte(pkt[ipv6Src:]))
	h.dst = netip.AddrFrom16([16]byte(pkt[ipv6Dst:]))
	nh := pkt[ipv6NextHeader]
	off := ipv6HeaderLen
	for {
		if nh == IPProtoMH {
			mh, err := ParseMobilityHeader(pkt[off:])
			if err != nil {
				return h, err
			}
			h.mh = mh
			return h, nil
		}
		switch nh {
		case IPProtoHopByHop, IPProtoDstOpts, IPProtoRouting:
		case IPProtoFragment:
			return h, fmt.Errorf("fragment header at offset %d: %w", off, ErrFragment)
		default:
			return h, fmt.Errorf("next header %d at offset %d: %w", nh, off, ErrNotMobility)
		}
		if len(pkt)-off < 2 {
			return h, fmt.Errorf("extension header %d at offset %d: %w", nh, off, ErrTruncated)
		}
		n := (int(pkt[off+1]) + 1) * 8
		if n > len(pkt)-off {
			return h, fmt.Errorf("extension header %d at offset %d: length %d, have %d: %w", nh, off, n, len(pkt)-off, ErrTruncated)
		}
		ext := pkt[off : off+n]
		var err error
		switch nh {
		case IPProtoHopByHop:
			// RFC 8200 §4.1: only immediately after the IPv6 header.
			if off != ipv6HeaderLen {
				return h, fmt.Errorf("hop-by-hop header at offset %d: %w", off, ErrBadExtHeader)
			}
			err = h.walkOptions(ext, false)
		case IPProtoDstOpts:
			err = h.walkOptions(ext, true)
		case IPProtoRouting:
			err = h.walkRouting(ext)
		}
		if err != nil {
			return h, fmt.Errorf("extension header %d at offset %d: %w", nh, off, err)
		}
		nh = ext[0]
		off += n
	}
}

// walkOptions checks the TLV options of a Hop-by-Hop or Destination Options
// header (RFC 8200 §4.2) and records a Home Address option (RFC 6275 §6.3)
// when dst is set. An unrecognized option whose action bits demand discard
// makes the packet unacceptable, as it would be for any receiving node.
func (h *headerChain) walkOptions(ext []byte, dst bool) error {
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
			if h.hasHAO {
				return fmt.Errorf("second home address option: %w", ErrBadExtHeader)
			}
			h.hoa = netip.AddrFrom16([16]byte(opts[i+2:]))
			h.hasHAO = true
		case typ>>6 != 0:
			return fmt.Errorf("unrecognized option %#02x requires discard: %w", typ, ErrBadExtHeader)
		}
		i += 2 + n
	}
	return nil
}

// walkRouting checks a routing header (RFC 8200 §4.4) and records the
// address of a type 2 routing header, which RFC 6275 §6.4 fixes at Hdr Ext
// Len 2, Segments Left 1.
func (h *headerChain) walkRouting(ext []byte) error {
	if len(ext) < 4 {
		return fmt.Errorf("routing header: %w", ErrTruncated)
	}
	if h.hasRH2 {
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
	h.rh2 = netip.AddrFrom16([16]byte(ext[8:24]))
	h.hasRH2 = true
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
