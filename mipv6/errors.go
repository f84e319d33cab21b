package mipv6

import "errors"

// Sentinel errors returned (wrapped with context) by the decoders. Test for
// them with errors.Is.
var (
	// ErrTruncated means the input ends before a header or option it
	// announces.
	ErrTruncated = errors.New("mipv6: truncated")
	// ErrBadLength means a length field is inconsistent with RFC 6275: a
	// Mobility Header shorter than its message type requires (§9.2), an
	// IPv6 payload length that disagrees with the packet, or a wrong
	// Home Address option length (§6.3).
	ErrBadLength = errors.New("mipv6: bad length")
	// ErrChecksum means the Mobility Header checksum (RFC 6275 §6.1.1) is
	// wrong.
	ErrChecksum = errors.New("mipv6: bad mobility header checksum")
	// ErrUnknownType means the MH Type is not one RFC 6275 defines; a
	// receiver answers with a Binding Error, status 2 (§9.2).
	ErrUnknownType = errors.New("mipv6: unknown mobility header type")
	// ErrWrongType means the Mobility Header is valid but carries a
	// different message than the caller asked for.
	ErrWrongType = errors.New("mipv6: unexpected mobility header type")
	// ErrPayloadProto means the MH Payload Proto field is not 59 (no next
	// header), RFC 6275 §6.1.1.
	ErrPayloadProto = errors.New("mipv6: mobility header payload proto is not 59")
	// ErrNotIPv6 means the packet does not start with an IPv6 header; a
	// packet shorter than one also wraps ErrTruncated.
	ErrNotIPv6 = errors.New("mipv6: not an IPv6 packet")
	// ErrNotMobility means the header chain ends, or reaches a header this
	// package does not walk, before a Mobility Header.
	ErrNotMobility = errors.New("mipv6: no mobility header")
	// ErrFragment means the packet is a fragment; Mobility Headers are
	// parsed only from unfragmented packets.
	ErrFragment = errors.New("mipv6: fragmented packet")
	// ErrBadExtHeader means an IPv6 extension header or its options are
	// malformed (RFC 8200 §4), e.g. a misplaced Hop-by-Hop header or two
	// Home Address options.
	ErrBadExtHeader = errors.New("mipv6: malformed extension header")
	// ErrBadRoutingHeader means a routing header that cannot be accepted:
	// a type 2 routing header whose length or Segments Left differs from
	// RFC 6275 §6.4, an unknown type with Segments Left > 0, or more than
	// one routing header.
	ErrBadRoutingHeader = errors.New("mipv6: bad routing header")
	// ErrBadOption means a mobility option is malformed (RFC 6275 §6.2).
	ErrBadOption = errors.New("mipv6: malformed mobility option")
	// ErrNoHomeAddress means a Binding Update arrived without a Home
	// Address destination option (RFC 6275 §6.3, §9.5.1).
	ErrNoHomeAddress = errors.New("mipv6: no home address option")
)
