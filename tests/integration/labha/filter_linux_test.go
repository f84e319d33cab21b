package labha

import (
	"testing"

	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"golang.org/x/net/bpf"
)

// The home link's data must stay in the kernel; what a Binding Update or a
// DAD answer can start with must reach the Home Agent.
func TestSignallingFilter(t *testing.T) {
	vm, err := bpf.NewVM(mustDisassemble(t, signallingFilter))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		nextHdr uint8
		keep    bool
	}{
		{"TCP", 6, false},
		{"UDP", 17, false},
		{"IP6IP6", 41, false},
		{"fragment", 44, false},
		{"ESP", 50, true},
		{"ICMPv6 (DAD answer)", mipv6.IPProtoICMPv6, true},
		{"Destination Options (HAO)", 60, true},
		{"Mobility Header", 135, true},
		{"Hop-by-Hop", 0, true},
		{"Routing", 43, true},
	} {
		pkt := appendIPv6Header(nil, 8, tc.nextHdr, 64, lab.CNAddr, lab.HoA)
		pkt = append(pkt, make([]byte, 8)...)
		n, err := vm.Run(pkt)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := n > 0; got != tc.keep {
			t.Errorf("%s (next header %d): kept=%v, want %v", tc.name, tc.nextHdr, got, tc.keep)
		}
	}
	// A frame too short to have a Next Header is not read past its end.
	if n, err := vm.Run([]byte{0x60, 0, 0}); err != nil || n != 0 {
		t.Errorf("3-byte frame: kept %d bytes, err %v; want dropped", n, err)
	}
}

func mustDisassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	t.Helper()
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	return prog
}
