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

// Mobility option types of Dual-Stack Mobile IPv6, RFC 5555 §3.1.1 and
// §3.2.1 (IANA "Mobility Options" registry).
const (
	OptIPv4HomeAddress = 29 // in Binding Updates
	OptIPv4AddressAck  = 30 // in Binding Acknowledgements
)

// Option data lengths fixed by RFC 6275 §6.2.4-§6.2.6.
const (
	optLenRefreshAdvice = 2
	optLenAltCareOf     = 16
	optLenNonceIndices  = 4
	// RFC 5555 §3.1.1 and §3.2.1: 2 octets of fields, then the IPv4 address.
	optLenIPv4HomeAddress = 6
	optLenIPv4AddressAck  = 6
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
	ipv4Home        IPv4HomeAddress
	ipv4Ack         IPv4AddressAck
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
		case OptIPv4HomeAddress:
			// RFC 5555 §3.1.1 allows a second option (an address and a
			// prefix request); kgswitch asks for one address, so only
			// the first is kept.
			want = optLenIPv4HomeAddress
			if n == want && !o.ipv4Home.Address.IsValid() {
				o.ipv4Home = IPv4HomeAddressOption(data).decode()
			}
		case OptIPv4AddressAck:
			want = optLenIPv4AddressAck
			if n == want && !o.ipv4Ack.Present {
				o.ipv4Ack = IPv4AddressAckOption(data).decode()
			}
		}
		if want >= 0 && n != want {
			return o, fmt.Errorf("mobility option %d: length %d, want %d: %w", typ, n, want, ErrBadOption)
		}
		i = end
	}
	return o, nil
}

// IPv4HomeAddress is the IPv4 Home Address mobility option of a Binding
// Update, RFC 5555 §3.1.1: the IPv4 home address the Home Agent is to bind
// to the IPv6 home address and defend on the home link.
type IPv4HomeAddress struct {
	// Address is the IPv4 home address; anything but an IPv4 address (the
	// zero Addr) means the option is absent, and 0.0.0.0 asks the Home
	// Agent to assign one.
	Address netip.Addr
	// PrefixLen is the Prefix-len field, the length of the prefix
	// allocated to the mobile node: 32 for a single address (kgswitch's
	// case, whatever the length of the home subnet). Zero is invalid
	// (§3.1.1); it is decoded as sent, for the Home Agent to refuse.
	PrefixLen uint8
	// RequestPrefix is the P flag: a mobile network prefix is requested.
	RequestPrefix bool
}

// IPv4AddressAck is the IPv4 Address Acknowledgement mobility option of a
// Binding Acknowledgement, RFC 5555 §3.2.1: the Home Agent's answer to an
// IPv4 Home Address option.
type IPv4AddressAck struct {
	Present bool  // the option is (to be) carried
	Status  uint8 // IPv4Status*: below 128 the address is bound
	// PrefixLen is the Pref-len field, the length of the prefix allocated;
	// the Home Agent sets it to zero on a refusal.
	PrefixLen uint8
	// Address is the IPv4 home address bound (on success), the one asked
	// for when it was not 0.0.0.0.
	Address netip.Addr
}

// IPv4HomeAddressOption is a view of the 6 data octets (after Type and
// Length) of an IPv4 Home Address option, RFC 5555 §3.1.1: Prefix-len (6
// bits), P (1 bit), 9 reserved bits, the IPv4 home address. Its accessors
// assume len >= 6.
type IPv4HomeAddressOption []byte

// Option field masks shared by §3.1.1 and §3.2.1: the prefix length is the
// top 6 bits of its octet.
const (
	ipv4PrefixLenShift = 2
	ipv4PrefixLenMax   = 0x3f
	ipv4HomeFlagP      = 0x02 // P: bit 6 of the Prefix-len octet
)

// PrefixLen returns the Prefix-len field.
func (o IPv4HomeAddressOption) PrefixLen() uint8 { return o[0] >> ipv4PrefixLenShift }

// RequestPrefix returns the P flag.
func (o IPv4HomeAddressOption) RequestPrefix() bool { return o[0]&ipv4HomeFlagP != 0 }

// Address returns the IPv4 home address.
func (o IPv4HomeAddressOption) Address() netip.Addr { return netip.AddrFrom4([4]byte(o[2:6])) }

func (o IPv4HomeAddressOption) decode() IPv4HomeAddress {
	return IPv4HomeAddress{Address: o.Address(), PrefixLen: o.PrefixLen(), RequestPrefix: o.RequestPrefix()}
}

// IPv4AddressAckOption is a view of the 6 data octets of an IPv4 Address
// Acknowledgement option, RFC 5555 §3.2.1: Status, Pref-len (6 bits) and 2
// reserved bits, the IPv4 home address. Its accessors assume len >= 6.
type IPv4AddressAckOption []byte

// Status returns the Status field.
func (o IPv4AddressAckOption) Status() uint8 { return o[0] }

// PrefixLen returns the Pref-len field.
func (o IPv4AddressAckOption) PrefixLen() uint8 { return o[1] >> ipv4PrefixLenShift }

// Address returns the IPv4 home address.
func (o IPv4AddressAckOption) Address() netip.Addr { return netip.AddrFrom4([4]byte(o[2:6])) }

func (o IPv4AddressAckOption) decode() IPv4AddressAck {
	return IPv4AddressAck{Present: true, Status: o.Status(), PrefixLen: o.PrefixLen(), Address: o.Address()}
}

// appendIPv4HomeAddress appends h as an IPv4 Home Address option at 4n, its
// alignment (RFC 5555 §3.1.1), counted from the Mobility Header at mh.
// Reserved bits are zero, and a PrefixLen above 63 keeps its low 6 bits.
func appendIPv4HomeAddress(b []byte, mh int, h IPv4HomeAddress) []byte {
	b = appendPad(b, mh, 4, 0)
	f := (h.PrefixLen & ipv4PrefixLenMax) << ipv4PrefixLenShift
	if h.RequestPrefix {
		f |= ipv4HomeFlagP
	}
	a := h.Address.As4()
	return append(b, OptIPv4HomeAddress, optLenIPv4HomeAddress, f, 0, a[0], a[1], a[2], a[3])
}

// appendIPv4AddressAck appends k as an IPv4 Address Acknowledgement option
// at 4n, its alignment (RFC 5555 §3.2.1), counted from the Mobility Header
// at mh. An invalid Address is sent as 0.0.0.0.
func appendIPv4AddressAck(b []byte, mh int, k IPv4AddressAck) []byte {
	b = appendPad(b, mh, 4, 0)
	var a [4]byte
	if k.Address.Is4() {
		a = k.Address.As4()
	}
	return append(b, OptIPv4AddressAck, optLenIPv4AddressAck, k.Status,
		(k.PrefixLen&ipv4PrefixLenMax)<<ipv4PrefixLenShift, a[0], a[1], a[2], a[3])
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
