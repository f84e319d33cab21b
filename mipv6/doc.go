// Package mipv6 encodes and decodes the Mobile IPv6 wire format of RFC 6275:
// the Mobility Header and its messages (Binding Update, Binding
// Acknowledgement, Binding Error, Binding Refresh Request), mobility options,
// the Home Address destination option and the type 2 routing header.
//
// The package does no I/O. Message types are byte-slice views in the style of
// gVisor's header package, so inspecting a packet neither copies nor
// allocates; the packet-level helpers (AppendBUPacket, ParseBAPacket, ...)
// build and parse whole IPv6 packets without allocating when the caller's
// buffer has room. ParseMobilityPacket is the one walker of the IPv6 header
// chain they share; a receiver that needs more than they keep (a Home Agent
// accepting a Binding Update without Home Address option, say) uses it and
// the views directly.
package mipv6
