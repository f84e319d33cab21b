package mipv6

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Mobility option types, RFC 6275 §6.2.
const (
	OptPad1                 = 0 // §6.2.2
	OptPadN                 = 1 // §6.2.3
	OptBindingRefreshAdvice = 2 // §6.2.4
	OptAlternateCareOf      = 3 // §6.2.5
	OptNonceIndices         = 4 // §6.2.6
	OptBindingAuthData      = 5 // §6.2.7
)

// Option data lengths fixed by RFC 6275 §6.2.4-§6.2.6.
const (
	optLenRefreshAdvice = 2
	optLenAltCareOf     = 16
	optLenNonceIndices  = 4
)

// ForEachOption calls fn with the type and data of each mobility option in
// opts (RFC 6275 §6.2.1), skipping Pad1 and PadN. It returns an error
// wrapping ErrBadOption when an option overruns opts, and otherwise the
// first error fn returns. Unknown option types are passed to fn, which
// should ignore them (§6.2.1: "skipped").
func ForEachOption(opts []byte, fn func(typ uint8, data []byte) error) error {
	for i := 0; i < len(opts); {
		typ := opts[i]
		if typ == OptPad1 {
			i++
			continue
		}
		if i+2 > len(opts) {
			return fmt.Errorf("mobility option %d at offset %d: no length octet: %w", typ, i, ErrBadOption)
		}
		end := i + 2 + int(opts[i+1])
		if end > len(opts) {
			return fmt.Errorf("mobility option %d at offset %d: length %d overruns %d octets: %w", typ, i, opts[i+1], len(opts)-i-2, ErrBadOption)
		}
		if typ != OptPadN {
			if err := fn(typ, opts[i+2:end]); err != nil {
				return err
			}
		}
		i = end
	}
	return nil
}

// mhOptions holds the mobility options this package interprets. It is
// filled by a loop rather than ForEachOption so that parsing needs no
// closure and stays allocation-free.
type mhOptions struct {
	refreshInterval uint16
	hasRefresh      bool
	altCareOf       netip.Addr
	nonces          NonceIndices
	hasAuthData     bool
}

// parseOptions decodes the options of RFC 6275 §6.2.4-§6.2.7 with their
// fixed lengths, skipping padding and unknown types (§6.2.1).
func parseOptions(opts []byte) (mhOptions, error) {
	var o mhOptions
	for i := 0; i < len(opts); {
		typ := opts[i]
		if typ == OptPad1 {
			i++
			continue
		}
		if i+2 > len(opts) {
			return o, fmt.Errorf("mobility option %d at offset %d: no length octet: %w", typ, i, ErrBadOption)
		}
		n := int(opts[i+1])
		end := i + 2 + n
		if end > len(opts) {
			return o, fmt.Errorf("mobility option %d at offset %d: length %d overruns %d octets: %w", typ, i, n, len(opts)-i-2, ErrBadOption)
		}
		data := opts[i+2 : end]
		want := -1
		switch typ {
		case OptBindingRefreshAdvice:
			want = optLenRefreshAdvice
			if n == want {
				o.refreshInterval = binary.BigEndian.Uint16(data)
				o.hasRefresh = true
			}
		case OptAlternateCareOf:
			want = optLenAltCareOf
			if n == want {
				o.altCareOf = netip.AddrFrom16([16]byte(data))
			}
		case OptNonceIndices:
			want = optLenNonceIndices
			if n == want {
				o.nonces = NonceIndices{
					Present: true,
					Home:    binary.BigEndian.Uint16(data),
					CareOf:  binary.BigEndian.Uint16(data[2:]),
				}
			}
		case OptBindingAuthData:
			o.hasAuthData = true
		}
		if want >= 0 && n != want {
			return o, fmt.Errorf("mobility option %d: length %d, want %d: %w", typ, n, want, ErrBadOption)
		}
		i = end
	}
	return o, nil
}

// NonceIndices is the Nonce Indices mobility option, RFC 6275 §6.2.6.
type NonceIndices struct {
	Present bool   // the option is (to be) carried
	Home    uint16 // Home Nonce Index
	CareOf  uint16 // Care-of Nonce Index
}

// appendPad appends Pad1 or PadN (RFC 6275 §6.2.2, §6.2.3; the same
// encoding as RFC 8200 §4.2 for destination options) so that the length
// after start becomes congruent to x modulo n.
func appendPad(b []byte, start, n, x int) []byte {
	k := ((x-(len(b)-start))%n + n) % n
	switch k {
	case 0:
		return b
	case 1:
		return append(b, OptPad1)
	}
	l := len(b)
	b = append(b, make([]byte, k)...)
	b[l] = OptPadN
	b[l+1] = byte(k - 2)
	return b
}
