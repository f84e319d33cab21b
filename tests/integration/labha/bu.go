package labha

import (
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

// IPv6 header layout, RFC 8200 §3, for the package's packet transforms.
const (
	ipv6HeaderLen = 40
	ipv6PayLen    = 4
	ipv6NextHdr   = 6
	ipv6HopLimit  = 7
	ipv6Src       = 8
	ipv6Dst       = 24
)

// ipv4HomeAddressOptLen is the data length of an IPv4 Home Address option,
// RFC 5555 §3.1.1: Prefix-len, P and reserved bits, the address.
const ipv4HomeAddressOptLen = 6

// ParseRequest decodes pkt, an IPv6 packet starting at the IPv6 header, as
// a Binding Update sent to a Home Agent (RFC 6275 §9.5.1, §10.3.1). It
// returns the request and the packet's destination address. The headers and
// the checksum are checked by mipv6.ParseMobilityPacket; unlike
// mipv6.ParseBUPacket, ParseRequest accepts a packet without a Home Address
// option (the care-of address then stands for the home address, as in
// mip6d, and the checksum's pseudo-header source is the packet's source,
// §6.1.1) and reports the mobility options a home registration must not
// carry.
func ParseRequest(pkt []byte) (Request, netip.Addr, error) {
	var r Request
	p, err := mipv6.ParseMobilityPacket(pkt)
	if err != nil {
		return r, netip.Addr{}, mobilityError(err)
	}
	if t := p.MH.Type(); t != mipv6.TypeBindingUpdate {
		return r, p.Dst, fmt.Errorf("mobility header type %d: %w", t, ErrNotBU)
	}
	r.CareOf = p.Src
	r.HomeAddress = p.HomeAddress
	bu := mipv6.BindingUpdate(p.MH.MessageData())
	r.Sequence = bu.Sequence()
	r.Flags = bu.Flags()
	r.Lifetime = bu.Lifetime()
	err = mipv6.ForEachOption(bu.Options(), func(typ uint8, data []byte) error {
		switch typ {
		case mipv6.OptNonceIndices:
			r.NonceIndices = true
		case mipv6.OptBindingAuthData:
			r.AuthData = true
		case mipv6.OptIPv4HomeAddress:
			// RFC 5555 §3.1.1 allows a second option for a prefix; the
			// first names the address.
			if len(data) != ipv4HomeAddressOptLen {
				return fmt.Errorf("IPv4 home address option of %d octets", len(data))
			}
			if !r.IPv4HomeAddress.Address.IsValid() {
				o := mipv6.IPv4HomeAddressOption(data)
				r.IPv4HomeAddress = mipv6.IPv4HomeAddress{Address: o.Address(), PrefixLen: o.PrefixLen(), RequestPrefix: o.RequestPrefix()}
			}
		}
		return nil
	})
	if err != nil {
		return Request{}, p.Dst, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return r, p.Dst, nil
}

// mobilityError sorts an error of package mipv6 under the sentinels of
// ParseRequest, so that a Binding Update that came under ESP fails the same
// way as one in clear.
func mobilityError(err error) error {
	switch {
	case errors.Is(err, mipv6.ErrNotIPv6), errors.Is(err, mipv6.ErrNotMobility), errors.Is(err, mipv6.ErrFragment),
		errors.Is(err, mipv6.ErrWrongType):
		return fmt.Errorf("%w: %w", ErrNotBU, err)
	case errors.Is(err, mipv6.ErrChecksum):
		return fmt.Errorf("%w: %w", ErrChecksum, err)
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}
