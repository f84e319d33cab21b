package labha

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/kgswitch/kgswitch/mipv6"
)

// Errors of ParseRequest. A Home Agent drops such packets silently
// (RFC 6275 §9.2, §9.5.1), so they only matter for the event log and tests.
var (
	// ErrNotBU means the packet is not an IPv6 packet carrying a Binding
	// Update (another protocol, another MH type, a fragment).
	ErrNotBU = errors.New("labha: not a binding update")
	// ErrMalformed means a header on the way to the Binding Update is
	// malformed.
	ErrMalformed = errors.New("labha: malformed binding update packet")
	// ErrChecksum means the Mobility Header checksum is wrong.
	ErrChecksum = errors.New("labha: bad mobility header checksum")
)

// IPv6 header layout, RFC 8200 §3.
const (
	ipv6HeaderLen = 40
	ipv6PayLen    = 4
	ipv6NextHdr   = 6
	ipv6HopLimit  = 7
	ipv6Src       = 8
	ipv6Dst       = 24
)

// optHomeAddress is the Home Address destination option type, RFC 6275 §6.3.
const optHomeAddress = 0xC9

// ParseRequest decodes pkt, an IPv6 packet starting at the IPv6 header, as
// a Binding Update sent to a Home Agent (RFC 6275 §9.5.1, §10.3.1). It
// returns the request and the packet's destination address. Unlike
// mipv6.ParseBUPacket it accepts a packet without a Home Address option
// (the care-of address then stands for the home address, as in mip6d) and
// reports the mobility options a home registration must not carry. The
// Mobility Header checksum is verified with the home address (or, without
// the option, the source address) as pseudo-header source (§6.1.1).
func ParseRequest(pkt []byte) (Request, netip.Addr, error) {
	var r Request
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return r, netip.Addr{}, fmt.Errorf("no IPv6 header: %w", ErrNotBU)
	}
	plen := int(binary.BigEndian.Uint16(pkt[ipv6PayLen:]))
	if ipv6HeaderLen+plen > len(pkt) {
		return r, netip.Addr{}, fmt.Errorf("payload length %d exceeds %d octets: %w", plen, len(pkt)-ipv6HeaderLen, ErrMalformed)
	}
	src := netip.AddrFrom16([16]byte(pkt[ipv6Src : ipv6Src+16]))
	dst := netip.AddrFrom16([16]byte(pkt[ipv6Dst : ipv6Dst+16]))
	r.CareOf = src
	b := pkt[ipv6HeaderLen : ipv6HeaderLen+plen]
	nh := pkt[ipv6NextHdr]
	for first := true; ; first = false {
		switch nh {
		case mipv6.IPProtoMH:
			return finishRequest(r, dst, b)
		case mipv6.IPProtoHopByHop, mipv6.IPProtoDstOpts, mipv6.IPProtoRouting:
			if nh == mipv6.IPProtoHopByHop && !first {
				return r, dst, fmt.Errorf("hop-by-hop header not first: %w", ErrMalformed)
			}
			if len(b) < 8 {
				return r, dst, fmt.Errorf("extension header %d truncated: %w", nh, ErrMalformed)
			}
			n := (int(b[1]) + 1) * 8
			if n > len(b) {
				return r, dst, fmt.Errorf("extension header %d: %d octets, have %d: %w", nh, n, len(b), ErrMalformed)
			}
			if nh == mipv6.IPProtoDstOpts {
				hoa, err := homeAddressOption(b[2:n])
				if err != nil {
					return r, dst, err
				}
				if hoa.IsValid() {
					if r.HomeAddress.IsValid() {
						return r, dst, fmt.Errorf("two home address options: %w", ErrMalformed)
					}
					r.HomeAddress = hoa
				}
			}
			nh, b = b[0], b[n:]
		default:
			return r, dst, fmt.Errorf("next header %d: %w", nh, ErrNotBU)
		}
	}
}

// homeAddressOption scans the options of a Destination Options header
// (RFC 8200 §4.2) for a Home Address option and returns its value, or the
// zero Addr.
func homeAddressOption(opts []byte) (netip.Addr, error) {
	var hoa netip.Addr
	for i := 0; i < len(opts); {
		if opts[i] == 0 { // Pad1
			i++
			continue
		}
		if i+2 > len(opts) || i+2+int(opts[i+1]) > len(opts) {
			return netip.Addr{}, fmt.Errorf("destination option %#x overruns header: %w", opts[i], ErrMalformed)
		}
		data := opts[i+2 : i+2+int(opts[i+1])]
		if opts[i] == optHomeAddress {
			if len(data) != 16 || hoa.IsValid() {
				return netip.Addr{}, fmt.Errorf("home address option: %w", ErrMalformed)
			}
			hoa = netip.AddrFrom16([16]byte(data))
		}
		i += 2 + len(data)
	}
	return hoa, nil
}

// finishRequest decodes the Mobility Header mh of a packet to dst.
func finishRequest(r Request, dst netip.Addr, mh []byte) (Request, netip.Addr, error) {
	m, err := mipv6.ParseMobilityHeader(mh)
	if err != nil {
		return r, dst, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if m.Type() != mipv6.TypeBindingUpdate {
		return r, dst, fmt.Errorf("mobility header type %d: %w", m.Type(), ErrNotBU)
	}
	pseudoSrc := r.CareOf
	if r.HomeAddress.IsValid() {
		pseudoSrc = r.HomeAddress
	}
	// The pseudo-header length is the upper-layer length, i.e. everything
	// after the extension headers (RFC 8200 §8.1), not just Header Len.
	if len(mh) != len(m) {
		return r, dst, fmt.Errorf("%d octets after a %d-octet mobility header: %w", len(mh)-len(m), len(m), ErrMalformed)
	}
	if want := mipv6.MHChecksum(pseudoSrc, dst, m); m.Checksum() != want {
		return r, dst, fmt.Errorf("checksum %#04x, want %#04x: %w", m.Checksum(), want, ErrChecksum)
	}
	bu := mipv6.BindingUpdate(m.MessageData())
	r.Sequence = bu.Sequence()
	r.Flags = bu.Flags()
	r.Lifetime = bu.Lifetime()
	err = mipv6.ForEachOption(bu.Options(), func(typ uint8, _ []byte) error {
		switch typ {
		case mipv6.OptNonceIndices:
			r.NonceIndices = true
		case mipv6.OptBindingAuthData:
			r.AuthData = true
		}
		return nil
	})
	if err != nil {
		return r, dst, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return r, dst, nil
}
