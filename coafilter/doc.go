// Package coafilter says which packets arriving on the care-of NIC are
// kgswitch's in host layout 3 (a NIC outside OVS; see "Host layouts" in
// README.md): as a classic BPF program for the AF_PACKET socket that reads
// them, and as the nftables ruleset that keeps the host kernel from
// answering them. It builds both and does no I/O; hostio attaches and
// applies them.
//
// The two are halves of one decision and are kept side by side: what the
// kernel is kept from must reach kgswitch, or it is lost. In the OVS
// layouts the bridge's flows make both halves at once (switch/flows.go,
// globalFlows), and these mirror them.
package coafilter
