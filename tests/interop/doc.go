// Package interop checks package mipv6's wire format against two
// implementations that share no code with it: Wireshark's dissectors (tshark)
// and scapy's Mobile IPv6 classes. Its tests run those programs, so they live
// here rather than in mipv6, whose own tests stay pure and fast.
//
//   - TestCrossCheckTshark and TestCrossCheckScapy have tshark and scapy
//     decode every message kind mipv6 encodes, each Binding Update kgswitch
//     sends among them; TestCrossCheckTsharkCanFail proves the comparison can
//     fail.
//   - TestGoldenUpToDate runs mipv6/testdata/gen_golden.py with the installed
//     scapy and expects the committed mipv6/testdata/golden.json, which
//     mipv6's TestGoldenDecode and TestGoldenEncode read.
//
// They need python3 with scapy (Debian package python3-scapy) and tshark,
// not root. Without them each test fails with the reason, unless
// KGSWITCH_SKIP_INTEGRATION=1 is set, in which case it skips. Run them with
//
//	go test ./tests/interop/
package interop
