package netpkt

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// knownARP is a broadcast ARP request as the wire has it: who has
// 192.0.2.10? tell 192.0.2.1 at 42:0d:24:0b:af:8c.
const knownARP = "0001080006040001" + "420d240baf8c" + "c0000201" + "000000000000" + "c000020a"

func TestParseARP(t *testing.T) {
	known, err := hex.DecodeString(knownARP)
	if err != nil {
		t.Fatal(err)
	}
	with := func(i int, v byte) []byte {
		b := append([]byte(nil), known...)
		b[i] = v
		return b
	}
	for _, tt := range []struct {
		name    string
		b       []byte
		wantErr error
	}{
		{"request", known, nil},
		{"Ethernet padding", append(append([]byte(nil), known...), make([]byte, 18)...), nil},
		{"truncated", known[:ARPLen-1], ErrShort},
		{"hardware type not Ethernet", with(1, 6), errNotARP4},
		{"protocol not IPv4", with(2, 0x86), errNotARP4},
		{"hardware length 8", with(4, 8), errNotARP4},
		{"protocol length 16", with(5, 16), errNotARP4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseARP(tt.b)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v, want = %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if len(a) != ARPLen || a.Op() != ARPRequest || a.SenderMAC().String() != "42:0d:24:0b:af:8c" ||
				a.SenderAddr() != netip.MustParseAddr("192.0.2.1") || a.TargetMAC().String() != "00:00:00:00:00:00" ||
				a.TargetAddr() != netip.MustParseAddr("192.0.2.10") {
				t.Errorf("got %d bytes, op %d, %v/%v -> %v/%v; want the request as written", len(a), a.Op(),
					a.SenderMAC(), a.SenderAddr(), a.TargetMAC(), a.TargetAddr())
			}
		})
	}
}

// Whatever ParseARP accepts, gopacket decodes to the same fields.
func FuzzParseARP(f *testing.F) {
	known, _ := hex.DecodeString(knownARP)
	f.Add(known)
	f.Add(known[:20])
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseARP(b)
		if err != nil {
			return
		}
		if len(a) != ARPLen {
			t.Fatalf("got a view of %d bytes, want = %d", len(a), ARPLen)
		}
		p := gopacket.NewPacket(b, layers.LayerTypeARP, gopacket.NoCopy)
		g, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
		if !ok {
			t.Fatalf("gopacket refused what ParseARP accepted: %v", p.ErrorLayer())
		}
		if g.Operation != a.Op() || string(g.SourceHwAddress) != string(a.SenderMAC()) || string(g.DstHwAddress) != string(a.TargetMAC()) ||
			string(g.SourceProtAddress) != string(a.SenderAddr().AsSlice()) || string(g.DstProtAddress) != string(a.TargetAddr().AsSlice()) {
			t.Fatalf("got %+v from gopacket, fields differ from the view % x", g, []byte(a))
		}
	})
}
