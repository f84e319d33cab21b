// Package esp protects Mobile IPv6 home-registration signalling with IPsec
// ESP in transport mode (RFC 4303; RFC 3776 §3.1 for where ESP goes, §5.2
// for manually keyed SAs): the Binding Updates a foreign host sends for its
// VMs and the Binding Acknowledgements the Home Agent answers with.
//
// The security associations are keyed by hand, as a Linux Home Agent (UMIP's
// mip6d over kernel XFRM) is usually configured: ParseKeyFile reads them from
// the operator's `ip xfrm state add` lines. Both are bound to the home
// address, never to the care-of address: the Binding Update SA has source
// the home address and destination the Home Agent, the Acknowledgement SA the
// reverse. On the wire the Home Address destination option (Binding Update)
// and the type 2 routing header (Acknowledgement) stay outside ESP, in clear,
// and the ESP integrity check covers ESP alone (RFC 4303 §3.1.1).
//
// SA.Seal and SA.Open turn an upper-layer message into an ESP header and
// trailer and back; AppendBUPacket, ParseBUPacket, AppendBAPacket and
// ParseBAPacket do the same for whole packets, building and checking the
// Mobility Header and the extension headers with package mipv6.
//
// The package does no I/O apart from ParseKeyFile reading the key file, and
// never reads the clock: randomness for IVs comes from the caller, and
// sequence numbers and replay windows are the caller's state. Key material
// appears in no error and in no output of the fmt package.
package esp
