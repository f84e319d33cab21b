package labha

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

func buPacket(p mipv6.BUPacket) []byte { return mipv6.AppendBUPacket(nil, p) }

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// withoutHAO removes the Destination Options header from a packet built by
// mipv6.AppendBUPacket and fixes the MH checksum for a pseudo-header source
// equal to the packet's source, as a sender without Home Address option
// would compute it.
func withoutHAO(t testing.TB, pkt []byte) []byte {
	t.Helper()
	if pkt[ipv6NextHdr] != mipv6.IPProtoDstOpts {
		t.Fatalf("got next header %d, want destination options", pkt[ipv6NextHdr])
	}
	n := (int(pkt[ipv6HeaderLen+1]) + 1) * 8
	out := append([]byte(nil), pkt[:ipv6HeaderLen]...)
	out[ipv6NextHdr] = pkt[ipv6HeaderLen]
	out = append(out, pkt[ipv6HeaderLen+n:]...)
	plen := len(out) - ipv6HeaderLen
	out[ipv6PayLen], out[ipv6PayLen+1] = byte(plen>>8), byte(plen)
	src, dst := addrs(out)
	mh := mipv6.MobilityHeader(out[ipv6HeaderLen:])
	mh.SetChecksum(mipv6.MHChecksum(src, dst, mh))
	return out
}

func TestParseRequest(t *testing.T) {
	base := mipv6.BUPacket{Src: lab.CareOfAddr, Dst: lab.HAAddr, HomeAddress: lab.HoA, Sequence: 7, Flags: home, Lifetime: 15}
	badChecksum := buPacket(base)
	badChecksum[len(badChecksum)-1] ^= 0x55 // last octet of the MH (padding)
	// Checksum computed with the care-of address instead of the home
	// address as pseudo-header source: RFC 6275 §6.1.1 violation.
	wrongPseudo := buPacket(base)
	{
		mh := mipv6.MobilityHeader(wrongPseudo[len(wrongPseudo)-16:])
		mh.SetChecksum(mipv6.MHChecksum(lab.CareOfAddr, lab.HAAddr, mh))
	}
	withIPv4 := base
	withIPv4.IPv4HomeAddress = mipv6.IPv4HomeAddress{Address: hoa4, PrefixLen: 32}
	withIPv4Zero := base
	withIPv4Zero.IPv4HomeAddress = mipv6.IPv4HomeAddress{Address: netip.IPv4Unspecified(), PrefixLen: 0, RequestPrefix: true}
	withNonce := base
	withNonce.NonceIndices = mipv6.NonceIndices{Present: true, Home: 1, CareOf: 2}
	ba := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: lab.HAAddr, Dst: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: 7})
	udp := appendIPv6Header(nil, 8, 17, 64, lab.CareOfAddr, lab.HAAddr)
	udp = append(udp, 0, 1, 0, 2, 0, 8, 0, 0)
	truncated := buPacket(base)
	truncated = truncated[:len(truncated)-8]
	// Eight octets after the Mobility Header inside the IPv6 payload: the
	// checksum's upper-layer length would be ambiguous (RFC 8200 §8.1).
	trailing := append(buPacket(base), make([]byte, 8)...)
	{
		plen := len(trailing) - ipv6HeaderLen
		trailing[ipv6PayLen], trailing[ipv6PayLen+1] = byte(plen>>8), byte(plen)
	}
	// A Fragment header between the IPv6 header and the rest.
	fragment := buPacket(base)
	{
		f := append([]byte(nil), fragment[:ipv6HeaderLen]...)
		f[ipv6NextHdr] = mipv6.IPProtoFragment
		f = append(f, fragment[ipv6NextHdr], 0, 0, 0, 0, 0, 0, 1)
		f = append(f, fragment[ipv6HeaderLen:]...)
		plen := len(f) - ipv6HeaderLen
		f[ipv6PayLen], f[ipv6PayLen+1] = byte(plen>>8), byte(plen)
		fragment = f
	}
	unknownMH := buPacket(base)
	{
		mh := mipv6.MobilityHeader(unknownMH[len(unknownMH)-16:])
		mh[2] = 42 // MH Type unknown to RFC 6275
		mh.SetChecksum(mipv6.MHChecksum(lab.HoA, lab.HAAddr, mh))
	}
	tests := []struct {
		name    string
		pkt     []byte
		want    Request
		wantDst netip.Addr
		wantErr error
	}{
		{
			name:    "home registration",
			pkt:     buPacket(base),
			want:    Request{CareOf: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: 7, Flags: home, Lifetime: 15},
			wantDst: lab.HAAddr,
		},
		{
			name:    "flags and lifetime passed through",
			pkt:     buPacket(mipv6.BUPacket{Src: lab.CareOfAddr, Dst: lab.HAAddr, HomeAddress: lab.HoA, Sequence: 0xffff, Flags: mipv6.FlagR | mipv6.FlagK, Lifetime: 0}),
			want:    Request{CareOf: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: 0xffff, Flags: mipv6.FlagR | mipv6.FlagK},
			wantDst: lab.HAAddr,
		},
		{
			name:    "no home address option",
			pkt:     withoutHAO(t, buPacket(base)),
			want:    Request{CareOf: lab.CareOfAddr, Sequence: 7, Flags: home, Lifetime: 15},
			wantDst: lab.HAAddr,
		},
		{
			name:    "nonce indices reported",
			pkt:     buPacket(withNonce),
			want:    Request{CareOf: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: 7, Flags: home, Lifetime: 15, NonceIndices: true},
			wantDst: lab.HAAddr,
		},
		{
			name:    "IPv4 home address option reported",
			pkt:     buPacket(withIPv4),
			want:    Request{CareOf: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: 7, Flags: home, Lifetime: 15, IPv4HomeAddress: withIPv4.IPv4HomeAddress},
			wantDst: lab.HAAddr,
		},
		{
			name:    "IPv4 home address option reported as sent, for the cache to refuse",
			pkt:     buPacket(withIPv4Zero),
			want:    Request{CareOf: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: 7, Flags: home, Lifetime: 15, IPv4HomeAddress: withIPv4Zero.IPv4HomeAddress},
			wantDst: lab.HAAddr,
		},
		{name: "bad checksum", pkt: badChecksum, wantErr: ErrChecksum},
		{name: "checksum over the care-of address", pkt: wrongPseudo, wantErr: ErrChecksum},
		{name: "binding ack is not a BU", pkt: ba, wantErr: ErrNotBU},
		{name: "UDP is not a BU", pkt: udp, wantErr: ErrNotBU},
		{name: "IPv4", pkt: []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, wantErr: ErrNotBU},
		{name: "truncated", pkt: truncated, wantErr: ErrMalformed},
		{name: "octets after the mobility header", pkt: trailing, wantErr: ErrMalformed},
		{name: "unknown MH type", pkt: unknownMH, wantErr: ErrMalformed},
		{name: "fragment", pkt: fragment, wantErr: ErrNotBU},
		{name: "shorter than an IPv6 header", pkt: buPacket(base)[:20], wantErr: ErrNotBU},
		{name: "empty", pkt: nil, wantErr: ErrNotBU},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, dst, err := ParseRequest(tt.pkt)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got ParseRequest error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got ParseRequest error = %v, want nil", err)
			}
			if dst != tt.wantDst {
				t.Errorf("got destination = %v, want %v", dst, tt.wantDst)
			}
			if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
				t.Errorf("got ParseRequest diff (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseRequestBindingAuthData checks the Binding Authorization Data
// option, which mipv6 does not encode, by appending it to the MH by hand.
func TestParseRequestBindingAuthData(t *testing.T) {
	pkt := buPacket(mipv6.BUPacket{Src: lab.CareOfAddr, Dst: lab.HAAddr, HomeAddress: lab.HoA, Sequence: 7, Flags: home, Lifetime: 15})
	mhOff := len(pkt) - 16 // a BU without options is 16 octets
	mh := mipv6.MobilityHeader(pkt[mhOff:])
	if mh.Type() != mipv6.TypeBindingUpdate || mh.HeaderLen() != 16 {
		t.Fatalf("got MH type %d len %d, want a 16-octet BU", mh.Type(), mh.HeaderLen())
	}
	// The BU's options start at offset 12: a PadN of 4 fills 12-15 today.
	// Replace the whole MH with 24 octets: 12 + option (2+10) = 24.
	out := append([]byte(nil), pkt[:mhOff]...)
	out = append(out, pkt[mhOff:mhOff+12]...)
	out = append(out, mipv6.OptBindingAuthData, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	out[mhOff+1] = 2 // Header Len: (2+1)*8 = 24
	plen := len(out) - ipv6HeaderLen
	out[ipv6PayLen], out[ipv6PayLen+1] = byte(plen>>8), byte(plen)
	m := mipv6.MobilityHeader(out[mhOff:])
	m.SetChecksum(mipv6.MHChecksum(lab.HoA, lab.HAAddr, m))
	got, _, err := ParseRequest(out)
	if err != nil {
		t.Fatalf("got ParseRequest error = %v, want nil", err)
	}
	if !got.AuthData || got.NonceIndices {
		t.Errorf("got AuthData = %v, NonceIndices = %v, want true, false", got.AuthData, got.NonceIndices)
	}
}

func FuzzParseRequest(f *testing.F) {
	base := mipv6.BUPacket{Src: lab.CareOfAddr, Dst: lab.HAAddr, HomeAddress: lab.HoA, Sequence: 7, Flags: home, Lifetime: 15}
	f.Add(buPacket(base))
	nonce := base
	nonce.NonceIndices = mipv6.NonceIndices{Present: true}
	f.Add(buPacket(nonce))
	f.Add(withoutHAO(f, buPacket(base)))
	f.Add(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: lab.HAAddr, Dst: lab.CareOfAddr, HomeAddress: lab.HoA}))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		r, dst, err := ParseRequest(pkt)
		if err != nil || !r.HomeAddress.IsValid() || r.AuthData {
			return
		}
		// Round trip: what was understood, built again, parses the same.
		p := mipv6.BUPacket{Src: r.CareOf, Dst: dst, HomeAddress: r.HomeAddress, Sequence: r.Sequence, Flags: r.Flags, Lifetime: r.Lifetime}
		p.NonceIndices.Present = r.NonceIndices
		r2, dst2, err := ParseRequest(buPacket(p))
		if err != nil {
			t.Fatalf("got re-parse error = %v, want nil", err)
		}
		if dst2 != dst {
			t.Fatalf("got re-parsed destination = %v, want %v", dst2, dst)
		}
		if diff := cmp.Diff(r, r2, addrCmp); diff != "" {
			t.Fatalf("got re-parse diff (-first +second):\n%s", diff)
		}
	})
}

func TestBAPacketIPv4Ack(t *testing.T) {
	for _, k := range []mipv6.IPv4AddressAck{{}, ack4(0, 32, hoa4), ack4(mipv6.IPv4StatusProhibited, 32, hoa4)} {
		d := Decision{HomeAddress: lab.HoA, CareOf: lab.CareOfAddr, Ack: Ack{Sequence: 3, Lifetime: 15, IPv4: k}}
		got, err := mipv6.ParseBAPacket(mipv6.AppendBAPacket(nil, baPacket(lab.HAAddr, d)))
		if err != nil {
			t.Fatalf("got ParseBAPacket error = %v, want nil", err)
		}
		if diff := cmp.Diff(k, got.IPv4Ack, addrCmp); diff != "" {
			t.Errorf("got IPv4Ack diff (-want +got):\n%s", diff)
		}
	}
}
