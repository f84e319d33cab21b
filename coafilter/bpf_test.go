package coafilter

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

var (
	coa   = netip.MustParseAddr("2001:db8:3000::3")
	ha    = netip.MustParseAddr("2001:db8:1::1")
	other = netip.MustParseAddr("2001:db8:3000::4")
)

// frame builds an Ethernet frame with an IPv6 header from src to dst whose
// first next header is nh, then payload.
func frame(src, dst netip.Addr, nh uint8, payload ...byte) []byte {
	f := make([]byte, 14+40, 14+40+len(payload))
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	f[14] = 0x60
	binary.BigEndian.PutUint16(f[18:], uint16(len(payload)))
	f[20], f[21] = nh, 64
	s, d := src.As16(), dst.As16()
	copy(f[22:], s[:])
	copy(f[38:], d[:])
	return append(f, payload...)
}

// rh2 is a type 2 routing header carrying hoa, followed by next.
func rh2(next uint8, rest ...byte) []byte {
	h := make([]byte, 24)
	h[0], h[1], h[2], h[3] = next, 2, 2, 1
	a := netip.MustParseAddr("2001:db8:1::10").As16()
	copy(h[8:], a[:])
	return append(h, rest...)
}

// dstOpts is a destination options header of (extLen+1)*8 octets (PadN),
// followed by next.
func dstOpts(next uint8, extLen int, rest ...byte) []byte {
	h := make([]byte, (extLen+1)*8)
	h[0], h[1], h[2], h[3] = next, byte(extLen), 1, byte(len(h)-4)
	return append(h, rest...)
}

func TestProgram(t *testing.T) {
	mh := []byte{59, 1, 6, 0, 0, 0, 0, 0} // a Binding Ack's first octets
	for _, tc := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"IPv6 in IPv6", frame(ha, coa, 41, make([]byte, 40)...), true},
		{"IPv4 in IPv6", frame(ha, coa, 4, make([]byte, 20)...), true},
		{"Mobility Header", frame(ha, coa, 135, mh...), true},
		{"ESP", frame(ha, coa, 50, make([]byte, 16)...), true},
		{"Mobility Header after a type 2 routing header", frame(ha, coa, 43, rh2(135, mh...)...), true},
		{"ESP after a type 2 routing header", frame(ha, coa, 43, rh2(50, make([]byte, 16)...)...), true},
		{"Home Agent's echo reply to a guest", frame(ha, coa, 43, rh2(58, 129, 0, 0, 0)...), true},
		{"type 0 routing header", frame(ha, coa, 43, append([]byte{58, 2, 0, 1}, make([]byte, 20)...)...), false},
		{"Mobility Header after destination options", frame(ha, coa, 60, dstOpts(135, 0, mh...)...), true},
		{"Mobility Header after 16 octets of destination options", frame(ha, coa, 60, dstOpts(135, 1, mh...)...), true},
		{"TCP after destination options", frame(ha, coa, 60, dstOpts(6, 0, make([]byte, 20)...)...), false},
		{"Destination Unreachable", frame(ha, coa, 58, 1, 3, 0, 0), true},
		{"echo request to the host", frame(ha, coa, 58, 128, 0, 0, 0), false},
		{"Neighbor Solicitation for the host", frame(other, coa, 58, 135, 0, 0, 0), false},
		{"TCP to the host", frame(other, coa, 6, make([]byte, 20)...), false},
		{"UDP to the host", frame(other, coa, 17, make([]byte, 8)...), false},
		{"tunnel packet to another address", frame(ha, other, 41, make([]byte, 40)...), false},
		{"tunnel packet to an address differing in its first word", frame(ha, netip.MustParseAddr("2001:db9:3000::3"), 41, make([]byte, 40)...), false},
		{"tunnel packet from the host", frame(coa, ha, 41, make([]byte, 40)...), false},
		{"IPv4", func() []byte { f := frame(ha, coa, 41); binary.BigEndian.PutUint16(f[12:], 0x0800); return f }(), false},
		{"ARP", func() []byte { f := make([]byte, 42); binary.BigEndian.PutUint16(f[12:], 0x0806); return f }(), false},
		{"truncated IPv6 header", frame(ha, coa, 41)[:30], false},
		{"truncated routing header", frame(ha, coa, 43, 135, 2), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, err := bpf.NewVM(instructions(coa))
			if err != nil {
				t.Fatal(err)
			}
			n, err := vm.Run(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			// The kernel cuts what the program returns to the frame's
			// length; x/net's VM does not.
			if n != 0 && n < len(tc.frame) {
				t.Errorf("accepted %d bytes of %d, want the whole frame or none", n, len(tc.frame))
			}
			if got := n > 0; got != tc.want {
				t.Errorf("accepted %d bytes of %d, want accepted %v", n, len(tc.frame), tc.want)
			}
		})
	}
}

// TestProgramAssembles: the kernel gets what the VM ran.
func TestProgramAssembles(t *testing.T) {
	raw, err := Program(coa)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(instructions(coa)); len(raw) != want {
		t.Errorf("got %d raw instructions, want %d", len(raw), want)
	}
}

// FuzzProgram: no frame makes the program fail, and none it accepts is
// for another address.
func FuzzProgram(f *testing.F) {
	f.Add(frame(ha, coa, 60, dstOpts(135, 1)...))
	f.Add(frame(ha, coa, 43, rh2(135)...))
	vm, err := bpf.NewVM(instructions(coa))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := vm.Run(b)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 && (len(b) < 54 || netip.AddrFrom16([16]byte(b[38:54])) != coa) {
			t.Errorf("accepted a frame not for %v: %x", coa, b)
		}
	})
}
