package netpkt

import (
	"encoding/hex"
	"net/netip"
	"testing"
)

// The header of RFC 1071's worked example as Wikipedia quotes it: 192.168.0.1
// -> 192.168.0.199, UDP, TTL 64, DF, whose checksum is 0xb861.
const knownIPv4 = "4500007300004000" + "4011b861c0a80001c0a800c7"

func knownHeader(t *testing.T) []byte {
	t.Helper()
	h, err := hex.DecodeString(knownIPv4)
	if err != nil {
		t.Fatal(err)
	}
	return append(h, make([]byte, 0x73-IPv4Len)...)
}

func TestParseIPv4Known(t *testing.T) {
	b := append(knownHeader(t), 0, 0, 0, 0) // Ethernet padding
	p, err := ParseIPv4(b)
	if err != nil {
		t.Fatalf("got error %v, want none", err)
	}
	if len(p) != 0x73 || p.HeaderLen() != 20 || p.TotalLength() != 0x73 || !p.DontFragment() || p.MoreFragments() ||
		p.FragmentOffset() != 0 || p.TTL() != 64 || p.Protocol() != ProtoUDP || p.ID() != 0 ||
		p.Src() != netip.MustParseAddr("192.168.0.1") || p.Dst() != netip.MustParseAddr("192.168.0.199") ||
		len(p.Options()) != 0 || len(p.Payload()) != 0x73-20 {
		t.Errorf("got header %x (length %d), fields not as written", []byte(p[:20]), len(p))
	}
	again := append([]byte(nil), p[:20]...)
	IPv4(again).SetChecksum()
	if again[10] != 0xb8 || again[11] != 0x61 {
		t.Errorf("got checksum = %x, want = b861", again[10:12])
	}
	if got := InternetChecksum(append(append([]byte(nil), p[:10]...), append([]byte{0, 0}, p[12:20]...)...)); got != 0xb861 {
		t.Errorf("got InternetChecksum = %#04x, want = 0xb861", got)
	}
}

func TestParseIPv4Refuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"short", func(b []byte) []byte { return b[:19] }},
		{"version 6", func(b []byte) []byte { b[0] = 0x65; return b }},
		{"header length 16", func(b []byte) []byte { b[0] = 0x44; return b }},
		{"header longer than total", func(b []byte) []byte { b[0] = 0x46; b[2], b[3] = 0, 20; return b }},
		{"total longer than packet", func(b []byte) []byte { return b[:0x72] }},
		{"checksum", func(b []byte) []byte { b[8]--; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseIPv4(tc.edit(knownHeader(t))); err == nil {
				t.Errorf("got no error, want one")
			}
		})
	}
}

// DecrementTTL's incremental update must agree with a full recomputation, the
// checksum's wrap-arounds included.
func TestDecrementTTL(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")
	for ttl := 2; ttl < 256; ttl++ {
		for _, id := range []uint16{0, 1, 0x7fff, 0xfeff, 0xffff} {
			b := make([]byte, 24)
			PutIPv4(b, len(b), ttl%2 == 0, uint8(ttl), ProtoUDP, src, dst)
			b[4], b[5] = byte(id>>8), byte(id)
			IPv4(b).SetChecksum()
			IPv4(b).DecrementTTL()
			want := append([]byte(nil), b...)
			IPv4(want).SetChecksum()
			if b[8] != uint8(ttl-1) || b[10] != want[10] || b[11] != want[11] {
				t.Fatalf("ttl %d id %#x: got TTL %d checksum %x, want = %d %x", ttl, id, b[8], b[10:12], ttl-1, want[10:12])
			}
			if _, err := ParseIPv4(b); err != nil {
				t.Fatalf("ttl %d id %#x: %v", ttl, id, err)
			}
		}
	}
}

// A known vector: a UDP datagram 10.0.0.1:1234 -> 10.0.0.2:5678 carrying
// "hi", whose checksum an independent RFC 1071 sum (a few lines of Python
// over pseudo-header, header and data) gives as 0x686e.
func TestChecksum4Known(t *testing.T) {
	udp := []byte{0x04, 0xd2, 0x16, 0x2e, 0, 10, 0, 0, 'h', 'i'}
	if got := Checksum4(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), ProtoUDP, udp); got != 0x686e {
		t.Errorf("got checksum = %#04x, want = 0x686e", got)
	}
}
