package mipv6

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Mobility Header field offsets, RFC 6275 §6.1.1.
const (
	mhPayloadProto = 0
	mhHeaderLen    = 1
	mhType         = 2
	mhChecksum     = 4
	mhData         = 6

	// MHMinLen is the smallest Mobility Header: Header Len counts 8-octet
	// units beyond the first 8 octets (RFC 6275 §6.1.1).
	MHMinLen = 8
)

// Fixed message-data lengths (after the 6-octet MH prefix) of each message
// type; RFC 6275 §9.2 discards a Mobility Header shorter than this.
var mhMinData = [...]int{
	TypeBindingRefreshRequest: 2,      // §6.1.2: Reserved
	TypeHoTI:                  2 + 8,  // §6.1.3: Reserved, Home Init Cookie
	TypeCoTI:                  2 + 8,  // §6.1.4: Reserved, Care-of Init Cookie
	TypeHoT:                   2 + 16, // §6.1.5: Nonce Index, Cookie, Keygen Token
	TypeCoT:                   2 + 16, // §6.1.6
	TypeBindingUpdate:         6,      // §6.1.7: Sequence, flags, Lifetime
	TypeBindingAck:            6,      // §6.1.8: Status, flags, Sequence, Lifetime
	TypeBindingError:          2 + 16, // §6.1.9: Status, Reserved, Home Address
}

// MobilityHeader is a view of a Mobility Header, RFC 6275 §6.1.1. Its
// accessors assume the slice has passed ParseMobilityHeader (or was built by
// this package); on shorter slices they may panic.
type MobilityHeader []byte

// PayloadProto returns the Payload Proto field, which RFC 6275 §6.1.1
// requires to be 59 (IPProtoNone).
func (m MobilityHeader) PayloadProto() uint8 { return m[mhPayloadProto] }

// HeaderLen returns the total length of the Mobility Header in octets,
// derived from the Header Len field (8-octet units excluding the first 8
// octets), RFC 6275 §6.1.1.
func (m MobilityHeader) HeaderLen() int { return (int(m[mhHeaderLen]) + 1) * 8 }

// Type returns the MH Type field, RFC 6275 §6.1.1.
func (m MobilityHeader) Type() uint8 { return m[mhType] }

// Checksum returns the Checksum field, RFC 6275 §6.1.1.
func (m MobilityHeader) Checksum() uint16 { return binary.BigEndian.Uint16(m[mhChecksum:]) }

// SetChecksum sets the Checksum field, RFC 6275 §6.1.1.
func (m MobilityHeader) SetChecksum(c uint16) { binary.BigEndian.PutUint16(m[mhChecksum:], c) }

// MessageData returns the message-specific data that follows the Checksum
// field up to HeaderLen (RFC 6275 §6.1.1), bounded by the slice length.
func (m MobilityHeader) MessageData() []byte {
	end := min(m.HeaderLen(), len(m))
	if end < mhData {
		return nil
	}
	return m[mhData:end]
}

// ParseMobilityHeader checks that b starts with a well-formed Mobility Header
// (RFC 6275 §6.1.1, §9.2): b holds the length announced by Header Len, the
// Payload Proto is 59, the MH Type is defined by RFC 6275 and the header is
// long enough for that type. It returns b trimmed to the header. It does not
// verify the checksum, which needs the addresses (see MHChecksum), nor the
// mobility options (see ForEachOption).
func ParseMobilityHeader(b []byte) (MobilityHeader, error) {
	if len(b) < MHMinLen {
		return nil, fmt.Errorf("mobility header: %d octets, need %d: %w", len(b), MHMinLen, ErrTruncated)
	}
	m := MobilityHeader(b)
	n := m.HeaderLen()
	if n > len(b) {
		return nil, fmt.Errorf("mobility header: header len says %d octets, have %d: %w", n, len(b), ErrTruncated)
	}
	m = m[:n]
	if p := m.PayloadProto(); p != IPProtoNone {
		return nil, fmt.Errorf("mobility header: payload proto %d: %w", p, ErrPayloadProto)
	}
	t := m.Type()
	if int(t) >= len(mhMinData) {
		return nil, fmt.Errorf("mobility header: type %d: %w", t, ErrUnknownType)
	}
	if need := mhData + mhMinData[t]; n < need {
		return nil, fmt.Errorf("mobility header: type %d needs %d octets, header len gives %d: %w", t, need, n, ErrBadLength)
	}
	return m, nil
}

// MHChecksum returns the Mobility Header checksum of mh (RFC 6275 §6.1.1):
// the Internet checksum over the IPv6 pseudo-header of RFC 8200 §8.1 (src,
// dst, upper-layer length len(mh), next header 135) and mh, with mh's
// Checksum field taken as zero. Per §6.1.1, src is the home address when the
// packet carries a Home Address option and dst is the final destination
// (the type 2 routing header's address when present).
func MHChecksum(src, dst netip.Addr, mh []byte) uint16 {
	s, d := src.As16(), dst.As16()
	var sum uint64
	sum += sum16(s[:])
	sum += sum16(d[:])
	sum += uint64(len(mh)>>16) + uint64(len(mh)&0xffff)
	sum += IPProtoMH
	if len(mh) > mhChecksum {
		sum += sum16(mh[:mhChecksum])
		if len(mh) > mhData {
			sum += sum16(mh[mhData:])
		}
	} else {
		sum += sum16(mh)
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// sum16 adds b as big-endian 16-bit words, the last odd octet padded with
// zero (RFC 1071). Every caller passes an even offset, so word alignment
// matches the checksummed whole.
func sum16(b []byte) uint64 {
	var s uint64
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint16(b)) + uint64(binary.BigEndian.Uint16(b[2:])) +
			uint64(binary.BigEndian.Uint16(b[4:])) + uint64(binary.BigEndian.Uint16(b[6:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

// BindingUpdate is a view of a Binding Update's message data, starting at
// the Sequence Number, RFC 6275 §6.1.7.
type BindingUpdate []byte

// Sequence returns the Sequence Number, RFC 6275 §6.1.7.
func (u BindingUpdate) Sequence() uint16 { return binary.BigEndian.Uint16(u[0:]) }

// SetSequence sets the Sequence Number, RFC 6275 §6.1.7.
func (u BindingUpdate) SetSequence(v uint16) { binary.BigEndian.PutUint16(u[0:], v) }

// Flags returns the 16 bits after the Sequence Number (FlagA, FlagH, ... and
// the reserved bits), RFC 6275 §6.1.7.
func (u BindingUpdate) Flags() uint16 { return binary.BigEndian.Uint16(u[2:]) }

// SetFlags sets the 16 bits after the Sequence Number, RFC 6275 §6.1.7.
func (u BindingUpdate) SetFlags(v uint16) { binary.BigEndian.PutUint16(u[2:], v) }

// Lifetime returns the requested lifetime in 4-second units, RFC 6275
// §6.1.7.
func (u BindingUpdate) Lifetime() uint16 { return binary.BigEndian.Uint16(u[4:]) }

// SetLifetime sets the lifetime in 4-second units, RFC 6275 §6.1.7.
func (u BindingUpdate) SetLifetime(v uint16) { binary.BigEndian.PutUint16(u[4:], v) }

// Options returns the mobility options, RFC 6275 §6.1.7, §6.2.
func (u BindingUpdate) Options() []byte { return u[6:] }

// BindingAck is a view of a Binding Acknowledgement's message data,
// starting at the Status field, RFC 6275 §6.1.8.
type BindingAck []byte

// Status returns the Status field, RFC 6275 §6.1.8.
func (a BindingAck) Status() uint8 { return a[0] }

// SetStatus sets the Status field, RFC 6275 §6.1.8.
func (a BindingAck) SetStatus(v uint8) { a[0] = v }

// Flags returns the octet after Status: BAFlagK (RFC 6275 §6.1.8), BAFlagR
// (RFC 3963 §4.2) and reserved bits.
func (a BindingAck) Flags() uint8 { return a[1] }

// SetFlags sets the octet after Status, RFC 6275 §6.1.8.
func (a BindingAck) SetFlags(v uint8) { a[1] = v }

// Sequence returns the Sequence Number, RFC 6275 §6.1.8.
func (a BindingAck) Sequence() uint16 { return binary.BigEndian.Uint16(a[2:]) }

// SetSequence sets the Sequence Number, RFC 6275 §6.1.8.
func (a BindingAck) SetSequence(v uint16) { binary.BigEndian.PutUint16(a[2:], v) }

// Lifetime returns the granted lifetime in 4-second units, RFC 6275 §6.1.8.
func (a BindingAck) Lifetime() uint16 { return binary.BigEndian.Uint16(a[4:]) }

// SetLifetime sets the granted lifetime in 4-second units, RFC 6275 §6.1.8.
func (a BindingAck) SetLifetime(v uint16) { binary.BigEndian.PutUint16(a[4:], v) }

// Options returns the mobility options, RFC 6275 §6.1.8, §6.2.
func (a BindingAck) Options() []byte { return a[6:] }

// BindingError is a view of a Binding Error's message data, starting at the
// Status field, RFC 6275 §6.1.9.
type BindingError []byte

// Status returns the Status field (BEStatusUnknownBinding,
// BEStatusUnrecognizedMHType), RFC 6275 §6.1.9.
func (e BindingError) Status() uint8 { return e[0] }

// SetStatus sets the Status field, RFC 6275 §6.1.9.
func (e BindingError) SetStatus(v uint8) { e[0] = v }

// HomeAddress returns the Home Address field: the home address from the
// offending packet's Home Address option, or unspecified, RFC 6275 §6.1.9.
func (e BindingError) HomeAddress() netip.Addr { return netip.AddrFrom16([16]byte(e[2:18])) }

// SetHomeAddress sets the Home Address field, RFC 6275 §6.1.9.
func (e BindingError) SetHomeAddress(a netip.Addr) { a16 := a.As16(); copy(e[2:18], a16[:]) }

// Options returns the mobility options, RFC 6275 §6.1.9.
func (e BindingError) Options() []byte { return e[18:] }

// BindingRefreshRequest is a view of a Binding Refresh Request's message
// data, starting at the Reserved field, RFC 6275 §6.1.2.
type BindingRefreshRequest []byte

// Options returns the mobility options, RFC 6275 §6.1.2.
func (r BindingRefreshRequest) Options() []byte { return r[2:] }
