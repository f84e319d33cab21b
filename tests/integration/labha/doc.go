// Package labha is the lab Home Agent: a small Mobile IPv6 Home Agent
// (RFC 6275 §10) for the network-namespace lab, written to behave like
// UMIP's mip6d (see docs/home-agents.md), so that kgswitch's integration
// tests meet what production meets.
//
// The package is split the usual way:
//
//   - binding.go: the binding cache and the decision taken for each Binding
//     Update (status, DAD, tunnel action), pure and driven by explicit times.
//   - bu.go: the Binding Update decoder as a Home Agent sees it (Home
//     Address option present or not, mobility options, checksum).
//   - ipsec.go, replay.go: ESP on the signalling of home addresses with
//     manually keyed SAs, as a Linux Home Agent's kernel filters and
//     protects it (docs/home-agents.md section 7): the Keyring and each SA's
//     ReplayWindow, pure as well.
//   - packet.go: the pure packet transforms of the data plane (IP6IP6
//     encapsulation and its reverse check, type 2 routing header insertion)
//     and the Neighbor Discovery frames (DAD probe, unsolicited Neighbor
//     Advertisement).
//   - ipv4.go: the pure half of the IPv4 data plane (RFC 5555, IPv6 care-of
//     address): IPv4-in-IPv6 encapsulation and its reverse check, the
//     gratuitous ARP.
//   - ha_linux.go, io_linux.go: sockets, the TUN device, routes, proxy
//     neighbour (ND and, with an IPv4 home prefix, ARP) entries, and the
//     event loop.
//
// Every event is logged through log/slog with the event name as message
// (see the Event constants); cmd/labha prints them as JSON lines.
package labha
