// Package interop checks package mipv6's wire format, package esp's
// protection of it, package v4responder's ARP and DHCP answers, and the
// Dual-Stack datapath's IPv4-in-IPv6 packets against
// implementations that share no code with them: Wireshark's dissectors
// (tshark) and scapy's Mobile IPv6, ARP and DHCP classes and
// SecurityAssociation. Its tests run those programs, so they live here rather
// than in those packages, whose own tests stay pure and fast.
//
//   - TestCrossCheckTshark and TestCrossCheckScapy have tshark and scapy
//     decode every message kind mipv6 encodes, each Binding Update kgswitch
//     sends among them; TestCrossCheckTsharkCanFail proves the comparison can
//     fail.
//   - TestGoldenUpToDate runs mipv6/testdata/gen_golden.py with the installed
//     scapy and expects the committed mipv6/testdata/golden.json, which
//     mipv6's TestGoldenDecode and TestGoldenEncode read.
//   - TestESPCrossCheckScapy and TestESPCrossCheckTshark have scapy and
//     tshark, given the keys, authenticate and decrypt the Binding Updates
//     kgswitch sends and Acknowledgements, protected by package esp with each
//     algorithm, and decode the Mobility Header inside.
//   - TestESPGoldenUpToDate runs esp/testdata/gen_golden.py and expects the
//     committed esp/testdata/golden.json, which esp's TestGoldenBuild and
//     TestGoldenParse read.
//   - TestV4LinkCrossCheckScapy and TestV4LinkCrossCheckTshark have scapy
//     and tshark decode v4responder's ARP replies and DHCP OFFER, ACK (to a
//     selecting, a renewing and an informing guest) and NAK, field by field,
//     and verify their IPv4 and UDP checksums.
//   - TestV4UnsolicitedCrossCheck has both decode the unsolicited ARP a home
//     host sends for a dual-stack VM (announcement, reply to the guest).
//   - TestTunnel4CrossCheckScapy and TestTunnel4CrossCheckTshark drive the
//     real datapath (package datapath, on in-memory fakes) with a dual-stack
//     guest's IPv4 and have both decode what it sends, field by field, every
//     checksum verified: the guest's UDP and ICMP echo tunnelled IPv4 in
//     IPv6 to its Home Agent (RFC 5555, RFC 2473), a packet without DF
//     fragmented to the tunnel MTU and reassembled by both, a packet from
//     the Home Agent decapsulated to the guest, and the Fragmentation Needed
//     and Time Exceeded it sends as the guest's gateway;
//     TestTunnel4CrossCheckCanFail proves a bad checksum is caught.
//
// They need python3 with scapy and cryptography (Debian packages
// python3-scapy, python3-cryptography) and tshark, not root. Without them each test fails with the reason, unless
// KGSWITCH_SKIP_INTEGRATION=1 is set, in which case it skips. Run them with
//
//	go test ./tests/interop/
package interop
