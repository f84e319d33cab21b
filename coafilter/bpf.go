package coafilter

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/net/bpf"
)

// Offsets in an Ethernet frame carrying IPv6 (no VLAN tag: the kernel
// strips it before AF_PACKET sees the frame of a VLAN device, and kgswitch
// reads the NIC the care-of address is on).
const (
	offEtherType = 12
	offIP        = 14
	offNextHdr   = offIP + 6
	offDst       = offIP + 24
	offPayload   = offIP + 40
)

// IP protocol numbers the program decides on.
const (
	protoIPv4    = 4
	protoIPv6    = 41
	protoRouting = 43
	protoESP     = 50
	protoICMPv6  = 58
	protoDstOpts = 60
	protoMH      = 135
)

// accept is how many bytes of an accepted frame reach the socket: all.
const accept = 0x40000

// Program returns the socket filter for the care-of NIC: it accepts the
// IPv6 packets to coa that are kgswitch's, as the OVS layouts' flows divert
// them to it, and nothing else (above all not the host's own traffic, which
// would cost a copy per packet):
//
//   - IPv6 or IPv4 in IPv6 (tunnel packets from the Home Agents);
//   - Mobility Header, directly, after a type 2 routing header (a Binding
//     Ack to the care-of address carries the home address there) or after
//     one destination options header (OVS's nw_proto skips it too);
//   - ESP (signalling under IPsec; the control loop opens it with its SAs
//     or drops it);
//   - anything else after a type 2 routing header: a Home Agent's own
//     packets to a guest (RFC 6275 §9.3.2), which the host kernel would
//     refuse;
//   - ICMPv6 Destination Unreachable without a routing header: a Home
//     Agent refusing a tunnelled packet is the first sign it lost the
//     binding. The host kernel gets these too; the datapath keeps only
//     the ones about kgswitch's tunnels (datapath/tunnelerror.go).
//
// The source is not checked here: the datapath checks it against the
// guest's Home Agent, as it does for what OVS diverts.
func Program(coa netip.Addr) ([]bpf.RawInstruction, error) {
	return bpf.Assemble(instructions(coa))
}

// instructions is Program before assembly; tests run it in x/net/bpf's VM.
func instructions(coa netip.Addr) []bpf.Instruction {
	a := coa.As16()
	w := func(i int) uint32 { return binary.BigEndian.Uint32(a[4*i:]) }
	// Jumps are relative; the labels below are counted by hand and checked
	// by the tests, which run every kind of packet through the program.
	return []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: offEtherType, Size: 2},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x86dd, SkipTrue: 23}, // -> drop (25)
		/* 2 */ bpf.LoadAbsolute{Off: offDst, Size: 4},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: w(0), SkipTrue: 21},
		/* 4 */ bpf.LoadAbsolute{Off: offDst + 4, Size: 4},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: w(1), SkipTrue: 19},
		/* 6 */ bpf.LoadAbsolute{Off: offDst + 8, Size: 4},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: w(2), SkipTrue: 17},
		/* 8 */ bpf.LoadAbsolute{Off: offDst + 12, Size: 4},
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: w(3), SkipTrue: 15},
		/* 10 */ bpf.LoadAbsolute{Off: offNextHdr, Size: 1},
		/* 11 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoIPv6, SkipTrue: 14}, // -> accept (26)
		/* 12 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoIPv4, SkipTrue: 13},
		/* 13 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoMH, SkipTrue: 12},
		/* 14 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoESP, SkipTrue: 11},
		/* 15 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoICMPv6, SkipTrue: 3}, // -> 19
		/* 16 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoRouting, SkipTrue: 4}, // -> 21
		/* 17 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoDstOpts, SkipTrue: 5}, // -> 23
		/* 18 */ bpf.Jump{Skip: 6}, // -> drop
		// ICMPv6: Destination Unreachable only.
		/* 19 */ bpf.LoadAbsolute{Off: offPayload, Size: 1},
		/* 20 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 1, SkipTrue: 5, SkipFalse: 4},
		// Routing header: type 2 only.
		/* 21 */ bpf.LoadAbsolute{Off: offPayload + 2, Size: 1},
		/* 22 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 2, SkipTrue: 3, SkipFalse: 2},
		// Destination options: its Next Header must be the Mobility Header.
		/* 23 */ bpf.LoadAbsolute{Off: offPayload, Size: 1},
		/* 24 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoMH, SkipTrue: 1},
		/* 25 */ bpf.RetConstant{Val: 0},
		/* 26 */ bpf.RetConstant{Val: accept},
	}
}
