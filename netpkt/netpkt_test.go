package netpkt

import (
	"net/netip"
	"testing"
)

func TestChecksumVerifies(t *testing.T) {
	src := netip.MustParseAddr("fe80::1")
	dst := netip.MustParseAddr("ff02::1")
	for _, n := range []int{0, 1, 7, 8, 63, 1400} {
		p := make([]byte, 4+n)
		for i := range p {
			p[i] = byte(i*7 + 3)
		}
		p[2], p[3] = 0, 0
		c := Checksum(src, dst, ProtoICMPv6, p)
		p[2], p[3] = byte(c>>8), byte(c)
		if !VerifyChecksum(src, dst, ProtoICMPv6, p) {
			t.Errorf("payload %d bytes: checksum %#04x does not verify", n, c)
		}
		p[len(p)-1] ^= 0x40
		if VerifyChecksum(src, dst, ProtoICMPv6, p) {
			t.Errorf("payload %d bytes: corrupted payload verifies", n)
		}
	}
}

// A known vector: an ICMPv6 echo request ::1 -> ::1, id 1 seq 1, no data, whose
// checksum scapy computes as 0x7fb9.
func TestChecksumKnown(t *testing.T) {
	src := netip.MustParseAddr("::1")
	dst := netip.MustParseAddr("::1")
	p := []byte{128, 0, 0, 0, 0, 1, 0, 1}
	if got := Checksum(src, dst, ProtoICMPv6, p); got != 0x7fb9 {
		t.Errorf("got checksum = %#04x, want 0x7fb9", got)
	}
}

func TestParseIPv6(t *testing.T) {
	hdr := make([]byte, IPv6Len+8)
	PutIPv6(hdr, 8, ProtoICMPv6, 64, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"))
	padded := append(append([]byte(nil), hdr...), 0, 0, 0, 0)
	v4 := append([]byte(nil), hdr...)
	v4[0] = 0x45
	for _, tt := range []struct {
		name    string
		b       []byte
		wantLen int
		wantErr bool
	}{
		{"exact", hdr, IPv6Len + 8, false},
		{"ethernet padding trimmed", padded, IPv6Len + 8, false},
		{"short", hdr[:39], 0, true},
		{"payload overruns", hdr[:IPv6Len+4], 0, true},
		{"IPv4", v4, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseIPv6(tt.b)
			if (err != nil) != tt.wantErr || len(p) != tt.wantLen {
				t.Fatalf("got len %d err %v, want len %d error %v", len(p), err, tt.wantLen, tt.wantErr)
			}
			if err == nil && (p.Src() != netip.MustParseAddr("2001:db8::1") || p.Dst() != netip.MustParseAddr("2001:db8::2") || p.HopLimit() != 64 || p.NextHeader() != ProtoICMPv6) {
				t.Errorf("got fields %v %v %d %d", p.Src(), p.Dst(), p.HopLimit(), p.NextHeader())
			}
		})
	}
}

func TestSolicitedNodeAndMAC(t *testing.T) {
	sn := SolicitedNode(netip.MustParseAddr("2001:db8:2000::12:3456"))
	if want := netip.MustParseAddr("ff02::1:ff12:3456"); sn != want {
		t.Errorf("got %v, want %v", sn, want)
	}
	if got := MulticastMAC(sn).String(); got != "33:33:ff:12:34:56" {
		t.Errorf("got %v, want 33:33:ff:12:34:56", got)
	}
}

func FuzzParseIPv6(f *testing.F) {
	hdr := make([]byte, IPv6Len+8)
	PutIPv6(hdr, 8, ProtoICMPv6, 64, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"))
	f.Add(hdr)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseIPv6(b)
		if err != nil {
			return
		}
		if len(p) != IPv6Len+p.PayloadLength() || len(p) > len(b) {
			t.Fatalf("view length %d disagrees with payload length %d (input %d)", len(p), p.PayloadLength(), len(b))
		}
		_ = p.Src()
		_ = p.Dst()
	})
}
