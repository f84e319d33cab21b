package mipv6

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// mhFixedLen is the Mobility Header prefix plus the fixed message data of a
// Binding Update or Acknowledgement: 6 + 6 octets (RFC 6275 §6.1.7, §6.1.8).
const mhFixedLen = mhData + 6

// BUPacket is a whole Binding Update packet as a mobile node (here: the
// foreign host acting for its VM) sends it to the Home Agent: IPv6, a
// Destination Options header with the Home Address option (RFC 6275 §6.3)
// and a Mobility Header Binding Update (§6.1.7, §11.7.1).
type BUPacket struct {
	Src, Dst    netip.Addr // outer: care-of address -> Home Agent
	HomeAddress netip.Addr // Home Address destination option (type 0xC9)
	Sequence    uint16
	Flags       uint16
	Lifetime    uint16 // 4-second units

	// AlternateCareOf is the Alternate Care-of Address option (§6.2.5);
	// the zero Addr means absent.
	AlternateCareOf netip.Addr
	// NonceIndices is the Nonce Indices option (§6.2.6), used with return
	// routability, not in home registrations.
	NonceIndices NonceIndices
	// BindingAuthData reports a Binding Authorization Data option
	// (§6.2.7). It is decoded only: AppendBUPacket never writes one.
	BindingAuthData bool
	// IPv4HomeAddress is the IPv4 Home Address option of Dual-Stack
	// Mobile IPv6 (RFC 5555 §3.1.1); absent unless Address is an IPv4
	// address.
	IPv4HomeAddress IPv4HomeAddress
}

// AppendBUPacket appends p as an IPv6 packet to b and returns the extended
// slice (RFC 6275 §11.7.1): IPv6 header (hop limit 64, next header 60), a
// Destination Options header with the Home Address option at 8n+6, and a
// Binding Update with the IPv4 Home Address (RFC 5555 §3.1.1), Nonce
// Indices and Alternate Care-of Address options when set, in that order,
// padded to a multiple of 8 octets (§6.1.1). The checksum
// uses the home address as pseudo-header source and Dst as destination. It
// does not allocate when b has room for the packet (80 octets without
// options).
func AppendBUPacket(b []byte, p BUPacket) []byte {
	start := len(b)
	b = appendIPv6Header(b, IPProtoDstOpts, p.Src, p.Dst)
	b = appendHomeAddressDstOpts(b, IPProtoMH, p.HomeAddress)
	mh := len(b)
	b = appendMHPrefix(b, TypeBindingUpdate)
	u := BindingUpdate(b[mh+mhData:])
	u.SetSequence(p.Sequence)
	u.SetFlags(p.Flags)
	u.SetLifetime(p.Lifetime)
	if p.IPv4HomeAddress.Address.Is4() {
		// First: the options start at a multiple of 4 octets, so the
		// option needs no padding before it.
		b = appendIPv4HomeAddress(b, mh, p.IPv4HomeAddress)
	}
	if p.NonceIndices.Present {
		b = appendPad(b, mh, 2, 0) // 2n, §6.2.6
		b = append(b, OptNonceIndices, optLenNonceIndices,
			byte(p.NonceIndices.Home>>8), byte(p.NonceIndices.Home),
			byte(p.NonceIndices.CareOf>>8), byte(p.NonceIndices.CareOf))
	}
	if p.AlternateCareOf.IsValid() {
		b = appendPad(b, mh, 8, 6) // 8n+6, §6.2.5
		a := p.AlternateCareOf.As16()
		b = append(b, OptAlternateCareOf, optLenAltCareOf)
		b = append(b, a[:]...)
	}
	return finishMH(b, start, mh, p.HomeAddress, p.Dst)
}

// ParseBUPacket parses a Binding Update packet (RFC 6275 §9.5.1) with
// ParseMobilityPacket, requires a Home Address option and decodes the
// options of §6.2.4-§6.2.7 and the first IPv4 Home Address option (RFC 5555
// §3.1.1), skipping unknown ones. It does not allocate on
// success.
func ParseBUPacket(pkt []byte) (BUPacket, error) {
	h, err := ParseMobilityPacket(pkt)
	if err != nil {
		return BUPacket{}, fmt.Errorf("binding update: %w", err)
	}
	if t := h.MH.Type(); t != TypeBindingUpdate {
		return BUPacket{}, fmt.Errorf("binding update: got MH type %d: %w", t, ErrWrongType)
	}
	if !h.HomeAddress.IsValid() {
		return BUPacket{}, fmt.Errorf("binding update: %w", ErrNoHomeAddress)
	}
	u := BindingUpdate(h.MH.MessageData())
	o, err := parseOptions(u.Options())
	if err != nil {
		return BUPacket{}, fmt.Errorf("binding update: %w", err)
	}
	return BUPacket{
		Src:             h.Src,
		Dst:             h.Dst,
		HomeAddress:     h.HomeAddress,
		Sequence:        u.Sequence(),
		Flags:           u.Flags(),
		Lifetime:        u.Lifetime(),
		AlternateCareOf: o.altCareOf,
		NonceIndices:    o.nonces,
		BindingAuthData: o.hasAuthData,
		IPv4HomeAddress: o.ipv4Home,
	}, nil
}

// BAPacket is a whole Binding Acknowledgement packet as a Home Agent sends
// it to a mobile node away from home: IPv6 to the care-of address, a type 2
// routing header carrying the home address (RFC 6275 §6.4, §9.5.4) and a
// Mobility Header Binding Acknowledgement (§6.1.8).
type BAPacket struct {
	Src, Dst        netip.Addr // Home Agent -> care-of address
	HomeAddress     netip.Addr // carried in the type 2 routing header (segments left 1)
	Status          uint8
	Flags           uint8
	Sequence        uint16
	Lifetime        uint16 // 4-second units
	RefreshInterval uint16 // Binding Refresh Advice option, 0 = absent (4-second units)
	// IPv4Ack is the IPv4 Address Acknowledgement option of Dual-Stack
	// Mobile IPv6 (RFC 5555 §3.2.1). A value, not a pointer, so that
	// ParseBAPacket stays allocation-free.
	IPv4Ack IPv4AddressAck
}

// AppendBAPacket appends p as an IPv6 packet to b and returns the extended
// slice: IPv6 header (next header 43), a type 2 routing header carrying the
// home address, and a Binding Acknowledgement with a Binding Refresh Advice
// option (§6.2.4) when RefreshInterval is not zero, padded to a multiple of
// 8 octets. The checksum uses Src as pseudo-header source and the home
// address, the final destination, as destination. A BA to a mobile node at
// home (Dst equal to HomeAddress, the answer to a de-registration from the
// home link, §11.5.4) needs no routing header and gets none, as UMIP's mip6d
// sends it. It does not allocate when b has room for the packet (80 octets).
func AppendBAPacket(b []byte, p BAPacket) []byte {
	start := len(b)
	mh := 0
	if p.Dst == p.HomeAddress {
		b = appendIPv6Header(b, IPProtoMH, p.Src, p.Dst)
		mh = len(b)
	} else {
		b = appendIPv6Header(b, IPProtoRouting, p.Src, p.Dst)
		b = appendRH2(b, IPProtoMH, p.HomeAddress)
		mh = len(b)
	}
	b = appendMHPrefix(b, TypeBindingAck)
	a := BindingAck(b[mh+mhData:])
	a.SetStatus(p.Status)
	a.SetFlags(p.Flags)
	a.SetSequence(p.Sequence)
	a.SetLifetime(p.Lifetime)
	if p.IPv4Ack.Present {
		b = appendIPv4AddressAck(b, mh, p.IPv4Ack)
	}
	if p.RefreshInterval != 0 {
		b = appendPad(b, mh, 2, 0) // 2n, §6.2.4
		b = append(b, OptBindingRefreshAdvice, optLenRefreshAdvice,
			byte(p.RefreshInterval>>8), byte(p.RefreshInterval))
	}
	return finishMH(b, start, mh, p.Src, p.HomeAddress)
}

// ParseBAPacket parses a Binding Acknowledgement packet (RFC 6275 §11.7.3)
// with ParseMobilityPacket and decodes a Binding Refresh Advice option and
// the first IPv4 Address Acknowledgement option (RFC 5555 §3.2.1), skipping
// unknown options. The home address is the type 2 routing header's;
// without one the BA went to a mobile node at home and the home address is
// the destination. It does not allocate on success.
func ParseBAPacket(pkt []byte) (BAPacket, error) {
	h, err := ParseMobilityPacket(pkt)
	if err != nil {
		return BAPacket{}, fmt.Errorf("binding ack: %w", err)
	}
	if t := h.MH.Type(); t != TypeBindingAck {
		return BAPacket{}, fmt.Errorf("binding ack: got MH type %d: %w", t, ErrWrongType)
	}
	hoa := h.RoutingAddress
	if !hoa.IsValid() {
		hoa = h.Dst
	}
	a := BindingAck(h.MH.MessageData())
	o, err := parseOptions(a.Options())
	if err != nil {
		return BAPacket{}, fmt.Errorf("binding ack: %w", err)
	}
	return BAPacket{
		Src:             h.Src,
		Dst:             h.Dst,
		HomeAddress:     hoa,
		Status:          a.Status(),
		Flags:           a.Flags(),
		Sequence:        a.Sequence(),
		Lifetime:        a.Lifetime(),
		RefreshInterval: o.refreshInterval,
		IPv4Ack:         o.ipv4Ack,
	}, nil
}

// BEPacket is a whole Binding Error packet, RFC 6275 §6.1.9. It is sent
// directly to the source of the offending packet, without a Home Address
// option or routing header (§9.3.3).
type BEPacket struct {
	Src, Dst    netip.Addr
	Status      uint8      // BEStatusUnknownBinding or BEStatusUnrecognizedMHType
	HomeAddress netip.Addr // from the offending packet's Home Address option, or ::
}

// beMHLen is a Binding Error without options: 6 + 2 + 16 octets, already a
// multiple of 8 (RFC 6275 §6.1.9).
const beMHLen = mhData + 2 + 16

// AppendBindingErrorPacket appends p as an IPv6 packet to b (IPv6 header with
// next header 135, then the Binding Error, RFC 6275 §6.1.9) and returns the
// extended slice.
func AppendBindingErrorPacket(b []byte, p BEPacket) []byte {
	start := len(b)
	b = appendIPv6Header(b, IPProtoMH, p.Src, p.Dst)
	mh := len(b)
	b = appendMHPrefix(b, TypeBindingError)
	b = append(b, make([]byte, beMHLen-mhFixedLen)...)
	e := BindingError(b[mh+mhData:])
	e.SetStatus(p.Status)
	e.SetHomeAddress(p.HomeAddress)
	return finishMH(b, start, mh, p.Src, p.Dst)
}

// ParseBindingErrorPacket parses a Binding Error packet (RFC 6275 §6.1.9,
// §11.3.6) with ParseMobilityPacket and checks the options' framing. It
// does not allocate on success.
func ParseBindingErrorPacket(pkt []byte) (BEPacket, error) {
	h, err := ParseMobilityPacket(pkt)
	if err != nil {
		return BEPacket{}, fmt.Errorf("binding error: %w", err)
	}
	if t := h.MH.Type(); t != TypeBindingError {
		return BEPacket{}, fmt.Errorf("binding error: got MH type %d: %w", t, ErrWrongType)
	}
	e := BindingError(h.MH.MessageData())
	if _, err := parseOptions(e.Options()); err != nil {
		return BEPacket{}, fmt.Errorf("binding error: %w", err)
	}
	return BEPacket{Src: h.Src, Dst: h.Dst, Status: e.Status(), HomeAddress: e.HomeAddress()}, nil
}

// BRRPacket is a whole Binding Refresh Request packet, RFC 6275 §6.1.2. Like
// every Mobility Header message but the Binding Acknowledgement it carries
// no type 2 routing header (§6.1); a Home Agent's request to a node away
// from home reaches it through the tunnel.
type BRRPacket struct {
	Src, Dst netip.Addr
}

// AppendBRRPacket appends p as an IPv6 packet to b (IPv6 header with next
// header 135, then an 8-octet Binding Refresh Request, RFC 6275 §6.1.2) and
// returns the extended slice.
func AppendBRRPacket(b []byte, p BRRPacket) []byte {
	start := len(b)
	b = appendIPv6Header(b, IPProtoMH, p.Src, p.Dst)
	mh := len(b)
	b = append(b, make([]byte, MHMinLen)...)
	b[mh+mhPayloadProto] = IPProtoNone
	b[mh+mhType] = TypeBindingRefreshRequest
	return finishMH(b, start, mh, p.Src, p.Dst)
}

// ParseBRRPacket parses a Binding Refresh Request packet (RFC 6275 §6.1.2,
// §11.7.4) with ParseMobilityPacket and checks the options' framing. Dst is
// the IPv6 destination field. It does not allocate on success.
func ParseBRRPacket(pkt []byte) (BRRPacket, error) {
	h, err := ParseMobilityPacket(pkt)
	if err != nil {
		return BRRPacket{}, fmt.Errorf("binding refresh request: %w", err)
	}
	if t := h.MH.Type(); t != TypeBindingRefreshRequest {
		return BRRPacket{}, fmt.Errorf("binding refresh request: got MH type %d: %w", t, ErrWrongType)
	}
	if _, err := parseOptions(BindingRefreshRequest(h.MH.MessageData()).Options()); err != nil {
		return BRRPacket{}, fmt.Errorf("binding refresh request: %w", err)
	}
	return BRRPacket{Src: h.Src, Dst: h.Dst}, nil
}

// appendMHPrefix appends the Mobility Header prefix with Payload Proto 59
// and the given type, plus 6 zero octets of message data (RFC 6275
// §6.1.1); finishMH sets Header Len and Checksum.
func appendMHPrefix(b []byte, typ uint8) []byte {
	l := len(b)
	b = append(b, make([]byte, mhFixedLen)...)
	b[l+mhPayloadProto] = IPProtoNone
	b[l+mhType] = typ
	return b
}

// finishMH pads the Mobility Header that starts at b[mh:] to a multiple of
// 8 octets (RFC 6275 §6.1.1, §9.2), sets its Header Len and checksum (with
// the given pseudo-header addresses) and the IPv6 payload length of the
// packet that starts at b[start:].
func finishMH(b []byte, start, mh int, src, dst netip.Addr) []byte {
	b = appendPad(b, mh, 8, 0)
	m := MobilityHeader(b[mh:])
	m[mhHeaderLen] = byte(len(m)/8 - 1)
	m.SetChecksum(0)
	m.SetChecksum(MHChecksum(src, dst, m))
	binary.BigEndian.PutUint16(b[start+ipv6PayloadLen:], uint16(len(b)-start-ipv6HeaderLen))
	return b
}
