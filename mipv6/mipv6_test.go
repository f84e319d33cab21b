package mipv6

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Lab addresses from DESIGN.md.
var (
	coa    = netip.MustParseAddr("2001:db8:3000::3")
	haAddr = netip.MustParseAddr("2001:db8:2000::1")
	hoa    = netip.MustParseAddr("2001:db8:2000::10")
	altCoA = netip.MustParseAddr("2001:db8:3000::33")
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func testBU() BUPacket {
	return BUPacket{Src: coa, Dst: haAddr, HomeAddress: hoa, Sequence: 0x1234, Flags: FlagA | FlagH, Lifetime: 150}
}

func testBA() BAPacket {
	return BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Status: StatusAccepted, Sequence: 0x1234, Lifetime: 150}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refChecksum is a deliberately naive RFC 1071 checksum over an explicitly
// assembled RFC 8200 §8.1 pseudo-header, to check MHChecksum independently.
func refChecksum(src, dst netip.Addr, mh []byte) uint16 {
	var buf []byte
	s, d := src.As16(), dst.As16()
	buf = append(buf, s[:]...)
	buf = append(buf, d[:]...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(mh)))
	buf = append(buf, 0, 0, 0, IPProtoMH)
	m := append([]byte(nil), mh...)
	for i := 4; i < 6 && i < len(m); i++ {
		m[i] = 0 // the Checksum field counts as zero
	}
	buf = append(buf, m...)
	if len(buf)%2 == 1 {
		buf = append(buf, 0)
	}
	var sum uint32
	for i := 0; i < len(buf); i += 2 {
		sum += uint32(buf[i])<<8 | uint32(buf[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func TestAppendBUPacketLayout(t *testing.T) {
	got := AppendBUPacket(nil, testBU())
	want := mustHex(t, `
		60000000 0028 3c 40
		20010db8300000000000000000000003
		20010db8200000000000000000000001
		87 02 0102 0000 c9 10 20010db8200000000000000000000010
		3b 01 05 00 0000 1234 c000 0096 0102 0000`)
	if len(got) != len(want) {
		t.Fatalf("got len = %d, want %d", len(got), len(want))
	}
	mh := got[64:]
	wantSum := refChecksum(hoa, haAddr, mh)
	binary.BigEndian.PutUint16(want[64+4:], wantSum)
	if !bytes.Equal(got, want) {
		t.Errorf("got AppendBUPacket =\n%x\nwant\n%x", got, want)
	}
	// The pseudo-header source must be the home address, not the care-of
	// address in the IPv6 header (RFC 6275 §6.1.1).
	if wrong := refChecksum(coa, haAddr, mh); wrong == wantSum {
		t.Fatalf("test vector cannot tell the pseudo-header sources apart")
	}
}

func TestAppendBAPacketLayout(t *testing.T) {
	got := AppendBAPacket(nil, testBA())
	want := mustHex(t, `
		60000000 0028 2b 40
		20010db8200000000000000000000001
		20010db8300000000000000000000003
		87 02 02 01 00000000 20010db8200000000000000000000010
		3b 01 06 00 0000 00 00 1234 0096 0102 0000`)
	if len(got) != len(want) {
		t.Fatalf("got len = %d, want %d", len(got), len(want))
	}
	mh := got[64:]
	wantSum := refChecksum(haAddr, hoa, mh)
	binary.BigEndian.PutUint16(want[64+4:], wantSum)
	if !bytes.Equal(got, want) {
		t.Errorf("got AppendBAPacket =\n%x\nwant\n%x", got, want)
	}
	if wrong := refChecksum(haAddr, coa, mh); wrong == wantSum {
		t.Fatalf("test vector cannot tell the pseudo-header destinations apart")
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	prefix := []byte{0xde, 0xad, 0xbe, 0xef}
	b := AppendBAPacket(append([]byte(nil), prefix...), testBA())
	if !bytes.Equal(b[:4], prefix) {
		t.Fatalf("got prefix = %x, want %x", b[:4], prefix)
	}
	got, err := ParseBAPacket(b[4:])
	if err != nil {
		t.Fatalf("ParseBAPacket: %v", err)
	}
	if diff := cmp.Diff(testBA(), got, addrCmp); diff != "" {
		t.Errorf("ParseBAPacket (-want +got):\n%s", diff)
	}
}

func TestBUPacketRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*BUPacket)
		mhLen  int
		optOff int // offset of the first non-pad option in the MH, or 0
	}{
		{name: "plain", mod: func(*BUPacket) {}, mhLen: 16},
		{name: "deregistration", mod: func(p *BUPacket) { p.Lifetime = 0; p.Flags = FlagH }, mhLen: 16},
		{name: "all flags", mod: func(p *BUPacket) { p.Flags = 0xffff; p.Sequence = 0xffff; p.Lifetime = 0xffff }, mhLen: 16},
		{name: "mobile router", mod: func(p *BUPacket) { p.Flags |= FlagR }, mhLen: 16},
		{name: "alternate care-of", mod: func(p *BUPacket) { p.AlternateCareOf = altCoA }, mhLen: 32, optOff: 14},
		{name: "nonce indices", mod: func(p *BUPacket) {
			p.NonceIndices = NonceIndices{Present: true, Home: 7, CareOf: 0xfffe}
		}, mhLen: 24, optOff: 12},
		{name: "nonce indices and alternate care-of", mod: func(p *BUPacket) {
			p.NonceIndices = NonceIndices{Present: true, Home: 1, CareOf: 2}
			p.AlternateCareOf = altCoA
		}, mhLen: 40, optOff: 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testBU()
			tt.mod(&p)
			b := AppendBUPacket(nil, p)
			mh := MobilityHeader(b[64:])
			if got := len(mh); got != tt.mhLen {
				t.Errorf("got MH length = %d, want %d", got, tt.mhLen)
			}
			if got := mh.HeaderLen(); got != len(mh) {
				t.Errorf("got HeaderLen() = %d, want %d", got, len(mh))
			}
			if tt.optOff != 0 && mh[tt.optOff] == OptPadN {
				t.Errorf("got PadN at MH offset %d, want an option", tt.optOff)
			}
			if p.AlternateCareOf.IsValid() {
				i := bytes.IndexByte(mh[12:], OptAlternateCareOf) + 12
				if i%8 != 6 {
					t.Errorf("got alternate care-of option at MH offset %d, want 8n+6", i)
				}
			}
			got, err := ParseBUPacket(b)
			if err != nil {
				t.Fatalf("ParseBUPacket: %v", err)
			}
			if diff := cmp.Diff(p, got, addrCmp); diff != "" {
				t.Errorf("ParseBUPacket (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBAPacketRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*BAPacket)
	}{
		{name: "accepted", mod: func(*BAPacket) {}},
		{name: "refresh advice", mod: func(p *BAPacket) { p.RefreshInterval = 75 }},
		{name: "prefix discovery", mod: func(p *BAPacket) { p.Status = StatusAcceptedPrefixDiscovery }},
		{name: "out of window", mod: func(p *BAPacket) { p.Status = StatusSequenceOutOfWindow; p.Lifetime = 0 }},
		{name: "flags", mod: func(p *BAPacket) { p.Flags = BAFlagK | BAFlagR; p.Status = 255; p.Sequence = 0xffff }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testBA()
			tt.mod(&p)
			b := AppendBAPacket(nil, p)
			if got := len(b) - 64; got != 16 {
				t.Errorf("got MH length = %d, want 16", got)
			}
			got, err := ParseBAPacket(b)
			if err != nil {
				t.Fatalf("ParseBAPacket: %v", err)
			}
			if diff := cmp.Diff(p, got, addrCmp); diff != "" {
				t.Errorf("ParseBAPacket (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBindingErrorRoundTrip(t *testing.T) {
	for _, p := range []BEPacket{
		{Src: haAddr, Dst: coa, Status: BEStatusUnknownBinding, HomeAddress: hoa},
		{Src: haAddr, Dst: coa, Status: BEStatusUnrecognizedMHType, HomeAddress: netip.IPv6Unspecified()},
	} {
		b := AppendBindingErrorPacket(nil, p)
		if got, want := len(b), 40+24; got != want {
			t.Errorf("got len = %d, want %d", got, want)
		}
		if got, want := MobilityHeader(b[40:]).Checksum(), refChecksum(haAddr, coa, b[40:]); got != want {
			t.Errorf("got checksum = %#04x, want %#04x", got, want)
		}
		got, err := ParseBindingErrorPacket(b)
		if err != nil {
			t.Fatalf("ParseBindingErrorPacket: %v", err)
		}
		if diff := cmp.Diff(p, got, addrCmp); diff != "" {
			t.Errorf("ParseBindingErrorPacket (-want +got):\n%s", diff)
		}
	}
}

func TestBRRRoundTrip(t *testing.T) {
	p := BRRPacket{Src: haAddr, Dst: hoa}
	b := AppendBRRPacket(nil, p)
	if got, want := len(b), 48; got != want {
		t.Errorf("got len = %d, want %d", got, want)
	}
	got, err := ParseBRRPacket(b)
	if err != nil {
		t.Fatalf("ParseBRRPacket: %v", err)
	}
	if diff := cmp.Diff(p, got, addrCmp); diff != "" {
		t.Errorf("ParseBRRPacket (-want +got):\n%s", diff)
	}
	if _, err := ParseBUPacket(b); !errors.Is(err, ErrWrongType) {
		t.Errorf("got ParseBUPacket(BRR) error = %v, want ErrWrongType", err)
	}
}

// refix recomputes the Mobility Header checksum of a packet edited by a
// test, using whatever Home Address option and type 2 routing header it now
// carries, so that tests reach the check they aim at.
func refix(t *testing.T, pkt []byte) []byte {
	t.Helper()
	h, err := walkHeaders(pkt)
	if err != nil {
		t.Fatalf("refix: %v", err)
	}
	h.MH.SetChecksum(MHChecksum(h.PseudoSrc(), h.PseudoDst(), h.MH))
	return pkt
}

// insertExt inserts an extension header ext (its Next Header octet is
// overwritten) right after the IPv6 header and fixes the payload length.
func insertExt(pkt []byte, nh uint8, ext []byte) []byte {
	out := append([]byte(nil), pkt[:40]...)
	e := append([]byte(nil), ext...)
	e[0] = out[6]
	out[6] = nh
	out = append(out, e...)
	out = append(out, pkt[40:]...)
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

func TestParseBUPacketErrors(t *testing.T) {
	good := AppendBUPacket(nil, testBU())
	const mh = 64 // MH offset in good
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	// A Hop-by-Hop header after another extension header (RFC 8200 §4.1).
	hbhSecond := append([]byte(nil), good[:40]...)
	hbhSecond[6] = IPProtoDstOpts
	hbhSecond = append(hbhSecond, IPProtoHopByHop, 0, 1, 4, 0, 0, 0, 0)
	hbhSecond = append(hbhSecond, IPProtoDstOpts, 0, 1, 4, 0, 0, 0, 0)
	hbhSecond = append(hbhSecond, good[40:]...)
	binary.BigEndian.PutUint16(hbhSecond[4:], uint16(len(hbhSecond)-40))
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short IPv6 header", good[:39], ErrTruncated},
		{"IPv4", edit(func(b []byte) []byte { b[0] = 0x45; return b }), ErrNotIPv6},
		{"payload length beyond packet", good[:len(good)-1], ErrTruncated},
		{"payload length zero", edit(func(b []byte) []byte { b[4], b[5] = 0, 0; return b }), ErrBadLength},
		{"no next header", edit(func(b []byte) []byte { b[40] = IPProtoNone; return b }), ErrNotMobility},
		{"ESP", edit(func(b []byte) []byte { b[6] = 50; return b }), ErrNotMobility},
		{"fragment", insertExt(good, IPProtoFragment, make([]byte, 8)), ErrFragment},
		{"hop-by-hop not first", hbhSecond, ErrBadExtHeader},
		{"extension header overruns", edit(func(b []byte) []byte { b[41] = 9; return b }), ErrTruncated},
		{"dst option overruns", edit(func(b []byte) []byte { b[43] = 9; return b }), ErrBadExtHeader},
		{"home address option length", edit(func(b []byte) []byte {
			b[47] = 14          // Home Address option of 14 octets,
			b[62], b[63] = 0, 0 // followed by two Pad1.
			return b
		}), ErrBadLength},
		{"unknown dst option with discard action", edit(func(b []byte) []byte { b[42] = 0x80; return b }), ErrBadExtHeader},
		{"no home address option", edit(func(b []byte) []byte {
			b[46] = 0x1e // an unknown skippable option instead of the HAO
			return refix(t, b)
		}), ErrNoHomeAddress},
		{"bad checksum", edit(func(b []byte) []byte { b[mh+4] ^= 0xff; return b }), ErrChecksum},
		{"checksum over care-of address", edit(func(b []byte) []byte {
			m := MobilityHeader(b[mh:])
			m.SetChecksum(MHChecksum(coa, haAddr, m))
			return b
		}), ErrChecksum},
		{"payload proto", edit(func(b []byte) []byte { b[mh] = IPProtoICMPv6; return b }), ErrPayloadProto},
		{"unknown MH type", edit(func(b []byte) []byte { b[mh+2] = 8; return b }), ErrUnknownType},
		{"wrong MH type", edit(func(b []byte) []byte { b[mh+2] = TypeBindingAck; return refix(t, b) }), ErrWrongType},
		{"header len beyond packet", edit(func(b []byte) []byte { b[mh+1] = 2; return b }), ErrTruncated},
		{"header len too short for BU", edit(func(b []byte) []byte {
			b[mh+1] = 0
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40-8))
			return b[:len(b)-8]
		}), ErrBadLength},
		{"option overruns", edit(func(b []byte) []byte { b[mh+13] = 3; return refix(t, b) }), ErrBadOption},
		{"alternate care-of length", edit(func(b []byte) []byte { b[mh+12] = OptAlternateCareOf; return refix(t, b) }), ErrBadOption},
		{"nonce indices length", edit(func(b []byte) []byte { b[mh+12] = OptNonceIndices; return refix(t, b) }), ErrBadOption},
		{"type 2 routing header segments left 0", insertExt(good, IPProtoRouting, rh2(0, 0)), ErrBadRoutingHeader},
		{"type 0 routing header segments left 1", insertExt(good, IPProtoRouting, mustHex(t, "00 00 00 01 00000000")), ErrBadRoutingHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBUPacket(tt.pkt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error = %v, want %v", err, tt.want)
			}
			if got != (BUPacket{}) {
				t.Errorf("got packet = %+v on error, want zero", got)
			}
		})
	}
}

func rh2(segLeft uint8, a byte) []byte {
	b := make([]byte, 24)
	b[1], b[2], b[3] = 2, RoutingType2, segLeft
	b[8], b[23] = 0x20, a
	return b
}

func TestParseBUPacketTolerates(t *testing.T) {
	good := AppendBUPacket(nil, testBU())
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"link-layer padding after payload", append(append([]byte(nil), good...), 0, 0, 0, 0)},
		{"hop-by-hop router alert first", insertExt(good, IPProtoHopByHop, []byte{0, 0, 5, 2, 0, 0, 1, 0})},
		{"processed type 0 routing header", insertExt(good, IPProtoRouting, mustHex(t, "00 00 00 00 00000000"))},
		{"pad1 options", insertExt(good, IPProtoDstOpts, []byte{0, 0, 0, 0, 0, 0, 0, 0})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBUPacket(tt.pkt)
			if err != nil {
				t.Fatalf("ParseBUPacket: %v", err)
			}
			if diff := cmp.Diff(testBU(), got, addrCmp); diff != "" {
				t.Errorf("ParseBUPacket (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseBUPacketUnknownAndAuthOptions(t *testing.T) {
	p := testBU()
	b := AppendBUPacket(nil, p)
	// Replace the 4-octet PadN with an unknown option, then add a Binding
	// Authorization Data option, fixing all lengths.
	b = b[:len(b)-4]
	b = append(b, 0x7f, 2, 0xaa, 0xbb, 0, 0, OptBindingAuthData, 12)
	b = append(b, make([]byte, 12)...)
	mh := b[64:]
	for len(mh)%8 != 0 {
		b = append(b, OptPad1)
		mh = b[64:]
	}
	mh[1] = byte(len(mh)/8 - 1)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	b = refix(t, b)
	got, err := ParseBUPacket(b)
	if err != nil {
		t.Fatalf("ParseBUPacket: %v", err)
	}
	p.BindingAuthData = true
	if diff := cmp.Diff(p, got, addrCmp); diff != "" {
		t.Errorf("ParseBUPacket (-want +got):\n%s", diff)
	}
}

func TestParseBAPacketErrors(t *testing.T) {
	good := AppendBAPacket(nil, testBA())
	const mh = 64
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"no routing header", AppendBindingErrorPacket(nil, BEPacket{Src: haAddr, Dst: coa}), ErrWrongType},
		{"segments left 0", edit(func(b []byte) []byte { b[43] = 0; return b }), ErrBadRoutingHeader},
		{"segments left 2", edit(func(b []byte) []byte { b[43] = 2; return b }), ErrBadRoutingHeader},
		{"hdr ext len 4", edit(func(b []byte) []byte {
			b[41] = 4
			b = append(b[:64], append(make([]byte, 16), b[64:]...)...)
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
			return b
		}), ErrBadRoutingHeader},
		{"two type 2 routing headers", insertExt(good, IPProtoRouting, rh2(1, 0x10)), ErrBadRoutingHeader},
		{"checksum with care-of destination", edit(func(b []byte) []byte {
			m := MobilityHeader(b[mh:])
			m.SetChecksum(MHChecksum(haAddr, coa, m))
			return b
		}), ErrChecksum},
		{"refresh advice length", edit(func(b []byte) []byte { b[mh+12], b[mh+13] = OptBindingRefreshAdvice, 1; return refix(t, b) }), ErrBadOption},
		{"BU", AppendBUPacket(nil, testBU()), ErrWrongType},
		{"truncated MH", good[:mh+6], ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBAPacket(tt.pkt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error = %v, want %v", err, tt.want)
			}
			if got != (BAPacket{}) {
				t.Errorf("got packet = %+v on error, want zero", got)
			}
		})
	}
}

func TestParseBindingErrorPacketErrors(t *testing.T) {
	good := AppendBindingErrorPacket(nil, BEPacket{Src: haAddr, Dst: coa, Status: 1, HomeAddress: hoa})
	short := append([]byte(nil), good...)
	short[41] = 1 // Header Len 16 octets < 24 required (RFC 6275 §9.2)
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 1
	for _, tt := range []struct {
		name string
		pkt  []byte
		want error
	}{
		{"header len too short", short, ErrBadLength},
		{"bad checksum", bad, ErrChecksum},
		{"BA", AppendBAPacket(nil, testBA()), ErrWrongType},
	} {
		if _, err := ParseBindingErrorPacket(tt.pkt); !errors.Is(err, tt.want) {
			t.Errorf("%s: got error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestParseMobilityHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    error
		wantLen int
	}{
		{"BRR", "3b 00 00 00 0000 0000", nil, 8},
		{"BRR with trailing octets", "3b 00 00 00 0000 0000 ffff", nil, 8},
		{"BU", "3b 01 05 00 0000 0001 c000 0010 0102 0000", nil, 16},
		{"BU header len 0", "3b 00 05 00 0000 0001 c000", ErrBadLength, 0},
		{"BA header len 0", "3b 00 06 00 0000 0001 c000", ErrBadLength, 0},
		{"BE header len 1", "3b 01 07 00 0000 0000 0000 0000 0000 0000 0000", ErrBadLength, 0},
		{"HoTI", "3b 01 01 00 0000 0000 0102030405060708 0000", nil, 16},
		{"HoT header len 1", "3b 01 03 00 0000 0000 0102030405060708 0000", ErrBadLength, 0},
		{"type 8", "3b 00 08 00 0000 0000", ErrUnknownType, 0},
		{"payload proto 6", "06 00 00 00 0000 0000", ErrPayloadProto, 0},
		{"seven octets", "3b 00 00 00 0000 00", ErrTruncated, 0},
		{"header len overruns", "3b 01 00 00 0000 0000", ErrTruncated, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMobilityHeader(mustHex(t, tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error = %v, want %v", err, tt.want)
			}
			if len(m) != tt.wantLen {
				t.Errorf("got len = %d, want %d", len(m), tt.wantLen)
			}
		})
	}
}

func TestViews(t *testing.T) {
	b := AppendBAPacket(nil, BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Status: 134, Flags: BAFlagK, Sequence: 9, Lifetime: 3, RefreshInterval: 2})
	m, err := ParseMobilityHeader(b[64:])
	if err != nil {
		t.Fatal(err)
	}
	if m.PayloadProto() != IPProtoNone || m.Type() != TypeBindingAck || m.HeaderLen() != 16 {
		t.Errorf("got proto, type, len = %d, %d, %d, want 59, 6, 16", m.PayloadProto(), m.Type(), m.HeaderLen())
	}
	a := BindingAck(m.MessageData())
	if a.Status() != 134 || a.Flags() != BAFlagK || a.Sequence() != 9 || a.Lifetime() != 3 {
		t.Errorf("got BA = %d %#x %d %d, want 134 0x80 9 3", a.Status(), a.Flags(), a.Sequence(), a.Lifetime())
	}
	if got, want := a.Options(), []byte{OptBindingRefreshAdvice, 2, 0, 2}; !bytes.Equal(got, want) {
		t.Errorf("got options = %x, want %x", got, want)
	}
	var mh [16]byte
	u := BindingUpdate(mh[6:])
	u.SetSequence(0xabcd)
	u.SetFlags(FlagA | FlagK)
	u.SetLifetime(0x0102)
	if u.Sequence() != 0xabcd || u.Flags() != 0x9000 || u.Lifetime() != 0x0102 || len(u.Options()) != 4 {
		t.Errorf("got BU = %#x %#x %#x %d, want 0xabcd 0x9000 0x102 4", u.Sequence(), u.Flags(), u.Lifetime(), len(u.Options()))
	}
	be := make(BindingError, 18)
	be.SetStatus(2)
	be.SetHomeAddress(hoa)
	if be.Status() != 2 || be.HomeAddress() != hoa || len(be.Options()) != 0 {
		t.Errorf("got BE = %d %v, want 2 %v", be.Status(), be.HomeAddress(), hoa)
	}
	if got := len(BindingRefreshRequest(make([]byte, 2)).Options()); got != 0 {
		t.Errorf("got BRR options len = %d, want 0", got)
	}
	if got := MobilityHeader(make([]byte, 5)).MessageData(); got != nil {
		t.Errorf("got MessageData of 5 octets = %x, want nil", got)
	}
}

func TestMHChecksum(t *testing.T) {
	for _, mh := range [][]byte{
		nil,
		{0x3b},
		{0x3b, 0, 5, 0, 0xff},
		mustHex(t, "3b 01 05 00 abcd 1234 c000 0096 0102 0000"),
		mustHex(t, "3b 00 00 00 0000 0000 ff"),
		bytes.Repeat([]byte{0xff}, 4096),
	} {
		if got, want := MHChecksum(coa, hoa, mh), refChecksum(coa, hoa, mh); got != want {
			t.Errorf("got MHChecksum(%x) = %#04x, want %#04x", mh, got, want)
		}
	}
}

func TestForEachOption(t *testing.T) {
	type opt struct {
		Typ  uint8
		Data string
	}
	tests := []struct {
		name string
		in   string
		want []opt
		err  error
	}{
		{"empty", "", nil, nil},
		{"padding only", "00 01 00 01 02 0000 00", nil, nil},
		{"refresh advice", "00 02 02 0010", []opt{{2, "0010"}}, nil},
		{"unknown and zero length", "7f 00 03 01 aa", []opt{{0x7f, ""}, {3, "aa"}}, nil},
		{"no length octet", "02", nil, ErrBadOption},
		{"overrun", "02 03 0000", nil, ErrBadOption},
		{"padN overrun", "01 05 0000", nil, ErrBadOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []opt
			err := ForEachOption(mustHex(t, tt.in), func(typ uint8, data []byte) error {
				got = append(got, opt{typ, hex.EncodeToString(data)})
				return nil
			})
			if !errors.Is(err, tt.err) {
				t.Fatalf("got error = %v, want %v", err, tt.err)
			}
			if tt.err == nil {
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("options (-want +got):\n%s", diff)
				}
			}
		})
	}
	stop := errors.New("stop")
	calls := 0
	err := ForEachOption(mustHex(t, "02 02 0001 03 00"), func(uint8, []byte) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("got error, calls = %v, %d, want stop, 1", err, calls)
	}
}

func TestAppendPad(t *testing.T) {
	for start := 0; start < 3; start++ {
		for pre := 0; pre < 16; pre++ {
			for _, al := range []struct{ n, x int }{{8, 0}, {8, 6}, {2, 0}, {8, 2}} {
				b := append(make([]byte, start), bytes.Repeat([]byte{0xee}, pre)...)
				b = appendPad(b, start, al.n, al.x)
				if got := (len(b) - start) % al.n; got != al.x {
					t.Fatalf("start %d pre %d %dn+%d: got length mod = %d", start, pre, al.n, al.x, got)
				}
				if err := ForEachOption(b[start+pre:], func(typ uint8, _ []byte) error {
					return errors.New("padding yielded an option")
				}); err != nil {
					t.Fatalf("start %d pre %d %dn+%d: padding %x: %v", start, pre, al.n, al.x, b[start+pre:], err)
				}
			}
		}
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		s       uint8
		want    string
		success bool
	}{
		{StatusAccepted, "accepted", true},
		{StatusAcceptedPrefixDiscovery, "accepted, prefix discovery necessary", true},
		{2, "status 2", true},
		{127, "status 127", true},
		{StatusUnspecified, "reason unspecified", false},
		{StatusProhibited, "administratively prohibited", false},
		{StatusInsufficientResources, "insufficient resources", false},
		{StatusHomeRegistrationNotSupported, "home registration not supported", false},
		{StatusNotHomeSubnet, "not home subnet", false},
		{StatusNotHomeAgent, "not home agent for this mobile node", false},
		{StatusDADFailed, "DAD failed", false},
		{StatusSequenceOutOfWindow, "sequence number out of window", false},
		{StatusExpiredHomeNonce, "expired home nonce index", false},
		{StatusExpiredCareOfNonce, "expired care-of nonce index", false},
		{StatusExpiredNonces, "expired nonces", false},
		{139, "registration type change disallowed", false},
		{140, "mobile router operation not permitted", false},
		{141, "invalid prefix", false},
		{142, "not authorized for prefix", false},
		{143, "forwarding setup failed", false},
		{144, "status 144", false},
		{255, "status 255", false},
	}
	for _, tt := range tests {
		if got := StatusString(tt.s); got != tt.want {
			t.Errorf("got StatusString(%d) = %q, want %q", tt.s, got, tt.want)
		}
		if got := StatusSuccess(tt.s); got != tt.success {
			t.Errorf("got StatusSuccess(%d) = %v, want %v", tt.s, got, tt.success)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	bu, ba := testBU(), testBA()
	ba.RefreshInterval = 10
	buf := make([]byte, 0, 256)
	buPkt := AppendBUPacket(nil, bu)
	baPkt := AppendBAPacket(nil, ba)
	bePkt := AppendBindingErrorPacket(nil, BEPacket{Src: haAddr, Dst: coa, Status: BEStatusUnknownBinding, HomeAddress: hoa})
	brrPkt := AppendBRRPacket(nil, BRRPacket{Src: haAddr, Dst: hoa})
	tests := []struct {
		name string
		f    func()
	}{
		{"AppendBUPacket", func() { buf = AppendBUPacket(buf[:0], bu) }},
		{"AppendBAPacket", func() { buf = AppendBAPacket(buf[:0], ba) }},
		{"ParseBUPacket", func() { _, _ = ParseBUPacket(buPkt) }},
		{"ParseBAPacket", func() { _, _ = ParseBAPacket(baPkt) }},
		{"ParseMobilityPacket(BU)", func() { _, _ = ParseMobilityPacket(buPkt) }},
		{"ParseMobilityPacket(BA)", func() { _, _ = ParseMobilityPacket(baPkt) }},
		{"ParseBindingErrorPacket", func() { _, _ = ParseBindingErrorPacket(bePkt) }},
		{"ParseBRRPacket", func() { _, _ = ParseBRRPacket(brrPkt) }},
	}
	for _, tt := range tests {
		if got := testing.AllocsPerRun(100, tt.f); got != 0 {
			t.Errorf("got %s allocs = %v, want 0", tt.name, got)
		}
	}
}

func TestParseMobilityPacket(t *testing.T) {
	bu := AppendBUPacket(nil, testBU())
	ba := AppendBAPacket(nil, testBA())
	be := AppendBindingErrorPacket(nil, BEPacket{Src: haAddr, Dst: coa, Status: BEStatusUnknownBinding, HomeAddress: hoa})
	brr := AppendBRRPacket(nil, BRRPacket{Src: haAddr, Dst: hoa})
	// A BU without Home Address option: the checksum's pseudo-header
	// source is then the IPv6 source (RFC 6275 §6.1.1).
	noHAO := func() []byte {
		b := append([]byte(nil), bu[:40]...)
		b[6] = IPProtoMH
		b = append(b, bu[64:]...)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		return refix(t, b)
	}()
	tests := []struct {
		name    string
		pkt     []byte
		want    MobilityPacket
		wantOff int // offset of the Mobility Header in pkt
	}{
		{"BU with home address option", bu, MobilityPacket{Src: coa, Dst: haAddr, HomeAddress: hoa}, 64},
		{"BU without home address option", noHAO, MobilityPacket{Src: coa, Dst: haAddr}, 40},
		{"BA with type 2 routing header", ba, MobilityPacket{Src: haAddr, Dst: coa, RoutingAddress: hoa}, 64},
		{"binding error", be, MobilityPacket{Src: haAddr, Dst: coa}, 40},
		{"binding refresh request", brr, MobilityPacket{Src: haAddr, Dst: hoa}, 40},
		{"link-layer padding", append(append([]byte(nil), ba...), 0, 0), MobilityPacket{Src: haAddr, Dst: coa, RoutingAddress: hoa}, 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMobilityPacket(tt.pkt)
			if err != nil {
				t.Fatalf("got ParseMobilityPacket error = %v, want nil", err)
			}
			mh := got.MH
			got.MH = nil
			if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
				t.Errorf("got ParseMobilityPacket diff (-want +got):\n%s", diff)
			}
			wantMH := tt.pkt[tt.wantOff : 40+int(binary.BigEndian.Uint16(tt.pkt[4:]))]
			if !bytes.Equal(mh, wantMH) {
				t.Errorf("got MH = %x, want %x", mh, wantMH)
			}
			if len(mh) > 0 && &mh[0] != &tt.pkt[tt.wantOff] {
				t.Errorf("got MH copied, want it to alias the packet")
			}
		})
	}
}

func TestParseMobilityPacketErrors(t *testing.T) {
	good := AppendBAPacket(nil, testBA())
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		pkt  []byte
		want []error // the error must wrap each
	}{
		{"empty", nil, []error{ErrNotIPv6, ErrTruncated}},
		{"short IPv6 header", good[:39], []error{ErrNotIPv6, ErrTruncated}},
		{"short IPv4 header", []byte{0x45, 0, 0, 20}, []error{ErrNotIPv6}},
		{"IPv4", edit(func(b []byte) []byte { b[0] = 0x45; return b }), []error{ErrNotIPv6}},
		{"UDP", func() []byte {
			b := appendIPv6Header(nil, 17, coa, haAddr)
			b = append(b, 0, 1, 0, 2, 0, 8, 0, 0)
			binary.BigEndian.PutUint16(b[4:], 8)
			return b
		}(), []error{ErrNotMobility}},
		{"fragment", insertExt(good, IPProtoFragment, make([]byte, 8)), []error{ErrFragment}},
		{"bad checksum", edit(func(b []byte) []byte { b[64+4] ^= 1; return b }), []error{ErrChecksum}},
		{"checksum over the IPv6 destination", edit(func(b []byte) []byte {
			m := MobilityHeader(b[64:])
			m.SetChecksum(MHChecksum(haAddr, coa, m))
			return b
		}), []error{ErrChecksum}},
		{"octets after the mobility header", edit(func(b []byte) []byte {
			b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
			return b
		}), []error{ErrBadLength}},
		{"unknown MH type", edit(func(b []byte) []byte { b[64+2] = 200; return b }), []error{ErrUnknownType}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMobilityPacket(tt.pkt)
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("got error = %v, want one wrapping %v", err, w)
				}
			}
			if got.MH != nil || got.Src.IsValid() {
				t.Errorf("got packet = %+v on error, want zero", got)
			}
		})
	}
}

// A BA answering a de-registration from the home link goes to the home address
// itself, with no routing header (RFC 6275 §11.5.4; UMIP's mip6d does so).
func TestBAToMobileNodeAtHome(t *testing.T) {
	hoa := netip.MustParseAddr("2001:db8:2000::10")
	ha := netip.MustParseAddr("2001:db8:2000::1")
	want := BAPacket{Src: ha, Dst: hoa, HomeAddress: hoa, Status: StatusAccepted, Sequence: 77}
	pkt := AppendBAPacket(nil, want)
	if pkt[6] != IPProtoMH || len(pkt) != 40+16 {
		t.Fatalf("got next header %d, %d octets, want the Mobility Header right after the IPv6 header (56 octets)", pkt[6], len(pkt))
	}
	got, err := ParseBAPacket(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
