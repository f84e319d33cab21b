package esp

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/kgswitch/kgswitch/mipv6"
)

// IPProtoESP is ESP's protocol number, RFC 4303 §2.
const IPProtoESP = 50

// IPv6 header layout, RFC 8200 §3.
const (
	ipv6HeaderLen  = 40
	ipv6PayloadLen = 4
	ipv6NextHeader = 6
)

// AppendBUPacket appends to b Binding Update p protected by sa with
// sequence number seq, and returns the extended slice: IPv6 (care-of
// address to Home Agent), the Destination Options header with the Home
// Address option in clear, then ESP carrying the Mobility Header (RFC 3776
// §3.1, RFC 6275 §11.7.1). The Mobility Header is mipv6.AppendBUPacket's,
// its checksum computed with the home address as pseudo-header source. sa
// must be bound to p's home address and Home Agent (ErrSelector); the IV
// comes from rand (SA.Seal).
func AppendBUPacket(b []byte, sa *SA, seq uint32, p mipv6.BUPacket, rand io.Reader) ([]byte, error) {
	if sa.Src != p.HomeAddress || sa.Dst != p.Dst {
		return b, fmt.Errorf("binding update from %v to %v with %v: %w", p.HomeAddress, p.Dst, sa, ErrSelector)
	}
	return protect(b, mipv6.AppendBUPacket(nil, p), sa, seq, rand)
}

// ParseBUPacket checks and decrypts a Binding Update protected by sa, as a
// Home Agent receives it, and parses it with mipv6.ParseBUPacket. The home
// address and Home Agent must be sa's (ErrSelector). It returns the ESP
// sequence number for the caller's replay check.
func ParseBUPacket(pkt []byte, sa *SA) (seq uint32, p mipv6.BUPacket, err error) {
	clear, seq, err := unprotect(pkt, sa)
	if err != nil {
		return 0, p, fmt.Errorf("binding update: %w", err)
	}
	if p, err = mipv6.ParseBUPacket(clear); err != nil {
		return 0, p, err
	}
	if sa.Src != p.HomeAddress || sa.Dst != p.Dst {
		return 0, mipv6.BUPacket{}, fmt.Errorf("binding update from %v to %v with %v: %w", p.HomeAddress, p.Dst, sa, ErrSelector)
	}
	return seq, p, nil
}

// AppendBAPacket appends to b Binding Acknowledgement p protected by sa
// with sequence number seq, as a Home Agent sends it: IPv6 (Home Agent to
// care-of address), the type 2 routing header with the home address in
// clear, then ESP carrying the Mobility Header (RFC 3776 §3.1). sa must be
// bound to p's Home Agent and home address (ErrSelector).
func AppendBAPacket(b []byte, sa *SA, seq uint32, p mipv6.BAPacket, rand io.Reader) ([]byte, error) {
	if sa.Src != p.Src || sa.Dst != p.HomeAddress {
		return b, fmt.Errorf("binding ack from %v to %v with %v: %w", p.Src, p.HomeAddress, sa, ErrSelector)
	}
	return protect(b, mipv6.AppendBAPacket(nil, p), sa, seq, rand)
}

// ParseBAPacket checks and decrypts a Binding Acknowledgement protected by
// sa and parses it with mipv6.ParseBAPacket, which verifies the Mobility
// Header checksum with the home address of the type 2 routing header as
// pseudo-header destination. The routing header is outside ESP, so the
// home address it names must be the one sa is bound to, and the source the
// Home Agent (ErrSelector): the check that keeps one home address's SA from
// vouching for another's Acknowledgement. It returns the ESP sequence
// number for the caller's replay check.
func ParseBAPacket(pkt []byte, sa *SA) (seq uint32, p mipv6.BAPacket, err error) {
	clear, seq, err := unprotect(pkt, sa)
	if err != nil {
		return 0, p, fmt.Errorf("binding ack: %w", err)
	}
	if p, err = mipv6.ParseBAPacket(clear); err != nil {
		return 0, p, err
	}
	if sa.Src != p.Src || sa.Dst != p.HomeAddress {
		return 0, mipv6.BAPacket{}, fmt.Errorf("binding ack from %v to %v with %v: %w", p.Src, p.HomeAddress, sa, ErrSelector)
	}
	return seq, p, nil
}

// PacketSPI returns the SPI of the ESP header in pkt, an IPv6 packet, so
// that the caller can find the SA to open it with.
func PacketSPI(pkt []byte) (uint32, error) {
	_, off, err := findESP(pkt)
	if err != nil {
		return 0, err
	}
	if len(pkt)-off < hdrLen {
		return 0, fmt.Errorf("esp header at offset %d: %w", off, ErrShort)
	}
	return binary.BigEndian.Uint32(pkt[off:]), nil
}

// protect appends clear, an IPv6 packet, to b with its upper-layer part
// moved into ESP (RFC 4303 §3.1.1): ESP goes after the Hop-by-Hop, Routing
// and Destination Options headers, except Destination Options that follow
// a routing header, which RFC 8200 §4.1 means for the final destination
// only. That is where Linux puts it, so both ends agree.
func protect(b, clear []byte, sa *SA, seq uint32, rand io.Reader) ([]byte, error) {
	nhAt, off := ipv6NextHeader, ipv6HeaderLen
	routing := false
	for nh := clear[nhAt]; nh == mipv6.IPProtoHopByHop || nh == mipv6.IPProtoRouting || (nh == mipv6.IPProtoDstOpts && !routing); nh = clear[nhAt] {
		routing = routing || nh == mipv6.IPProtoRouting
		nhAt = off
		off += (int(clear[off+1]) + 1) * 8
	}
	start := len(b)
	b = append(b, clear[:off]...)
	b[start+nhAt] = IPProtoESP
	b, err := sa.Seal(b, seq, clear[nhAt], clear[off:], rand)
	if err != nil {
		return b[:start], err
	}
	binary.BigEndian.PutUint16(b[start+ipv6PayloadLen:], uint16(len(b)-start-ipv6HeaderLen))
	return b, nil
}

// findESP walks pkt's IPv6 header and the Hop-by-Hop, Routing and
// Destination Options headers before ESP, and returns where the Next Header
// field that names ESP is and where ESP starts. The rest of the checks on
// those headers is mipv6's, once the packet is decrypted.
func findESP(pkt []byte) (nhAt, off int, err error) {
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return 0, 0, fmt.Errorf("not an IPv6 header: %w", ErrNotESP)
	}
	end := ipv6HeaderLen + int(binary.BigEndian.Uint16(pkt[ipv6PayloadLen:]))
	if end > len(pkt) {
		return 0, 0, fmt.Errorf("IPv6 payload length %d, have %d octets: %w", end-ipv6HeaderLen, len(pkt)-ipv6HeaderLen, ErrShort)
	}
	nhAt, off = ipv6NextHeader, ipv6HeaderLen
	for {
		switch pkt[nhAt] {
		case IPProtoESP:
			return nhAt, off, nil
		case mipv6.IPProtoHopByHop, mipv6.IPProtoRouting, mipv6.IPProtoDstOpts:
		default:
			return 0, 0, fmt.Errorf("next header %d at offset %d: %w", pkt[nhAt], off, ErrNotESP)
		}
		if end-off < 2 {
			return 0, 0, fmt.Errorf("extension header at offset %d: %w", off, ErrShort)
		}
		n := (int(pkt[off+1]) + 1) * 8
		if end-off < n {
			return 0, 0, fmt.Errorf("extension header at offset %d: length %d, have %d: %w", off, n, end-off, ErrShort)
		}
		nhAt, off = off, off+n
	}
}

// unprotect opens the ESP of pkt with sa and returns the packet as it was
// before protect: the headers before ESP, with ESP's Next Header in place
// of ESP's number, then the decrypted payload. Link-layer padding after the
// IPv6 payload is dropped.
func unprotect(pkt []byte, sa *SA) ([]byte, uint32, error) {
	nhAt, off, err := findESP(pkt)
	if err != nil {
		return nil, 0, err
	}
	end := ipv6HeaderLen + int(binary.BigEndian.Uint16(pkt[ipv6PayloadLen:]))
	seq, nh, payload, err := sa.Open(pkt[off:end])
	if err != nil {
		return nil, 0, err
	}
	clear := make([]byte, 0, off+len(payload))
	clear = append(clear, pkt[:off]...)
	clear = append(clear, payload...)
	clear[nhAt] = nh
	binary.BigEndian.PutUint16(clear[ipv6PayloadLen:], uint16(len(clear)-ipv6HeaderLen))
	return clear, seq, nil
}
