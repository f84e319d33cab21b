package mipv6

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// seedPackets returns every kind of packet this package encodes, as fuzz
// corpus seeds.
func seedPackets() [][]byte {
	bu := testBU()
	buOpts := bu
	buOpts.AlternateCareOf = altCoA
	buOpts.NonceIndices = NonceIndices{Present: true, Home: 1, CareOf: 2}
	ba := testBA()
	baOpts := ba
	baOpts.RefreshInterval = 30
	baOpts.Status = StatusNotHomeSubnet
	bu4 := buOpts
	bu4.IPv4HomeAddress = IPv4HomeAddress{Address: vmIPv4, PrefixLen: 32}
	ba4 := baOpts
	ba4.IPv4Ack = IPv4AddressAck{Present: true, Status: IPv4StatusProhibited, Address: vmIPv4}
	return [][]byte{
		AppendBUPacket(nil, bu4),
		AppendBAPacket(nil, ba4),
		AppendBUPacket(nil, bu),
		AppendBUPacket(nil, buOpts),
		AppendBAPacket(nil, ba),
		AppendBAPacket(nil, baOpts),
		AppendBindingErrorPacket(nil, BEPacket{Src: haAddr, Dst: coa, Status: BEStatusUnknownBinding, HomeAddress: hoa}),
		AppendBRRPacket(nil, BRRPacket{Src: haAddr, Dst: hoa}),
		insertExt(AppendBUPacket(nil, bu), IPProtoHopByHop, []byte{0, 0, 5, 2, 0, 0, 1, 0}),
		insertExt(AppendBUPacket(nil, bu), IPProtoFragment, make([]byte, 8)),
	}
}

// addSeeds adds seedPackets and scapy's golden packets, which bring
// options this package does not encode.
func addSeeds(f *testing.F) {
	for _, p := range seedPackets() {
		f.Add(p)
	}
	for _, g := range loadGolden(f) {
		p, err := hex.DecodeString(g.Hex)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
}

// checkErr fails unless a decoder error wraps one of the package's
// sentinels, so that callers can always classify it.
func checkErr(t *testing.T, err error) {
	t.Helper()
	for _, s := range []error{ErrTruncated, ErrBadLength, ErrChecksum, ErrUnknownType, ErrWrongType,
		ErrPayloadProto, ErrNotIPv6, ErrNotMobility, ErrFragment, ErrBadExtHeader, ErrBadRoutingHeader,
		ErrBadOption, ErrNoHomeAddress} {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("got error = %v, want one wrapping a package sentinel", err)
}

func FuzzParseBUPacket(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, err := ParseBUPacket(pkt)
		if err != nil {
			checkErr(t, err)
			return
		}
		// Binding Authorization Data is decoded only.
		p.BindingAuthData = false
		got, err := ParseBUPacket(AppendBUPacket(nil, p))
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", p, err)
		}
		if diff := cmp.Diff(p, got, addrCmp); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	})
}

func FuzzParseBAPacket(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, err := ParseBAPacket(pkt)
		if err != nil {
			checkErr(t, err)
			return
		}
		got, err := ParseBAPacket(AppendBAPacket(nil, p))
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", p, err)
		}
		if diff := cmp.Diff(p, got, addrCmp); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	})
}

func FuzzParseBindingErrorPacket(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, err := ParseBindingErrorPacket(pkt)
		if err != nil {
			checkErr(t, err)
			return
		}
		got, err := ParseBindingErrorPacket(AppendBindingErrorPacket(nil, p))
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", p, err)
		}
		if diff := cmp.Diff(p, got, addrCmp); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	})
}

func FuzzParseBRRPacket(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, err := ParseBRRPacket(pkt)
		if err != nil {
			checkErr(t, err)
			return
		}
		got, err := ParseBRRPacket(AppendBRRPacket(nil, p))
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", p, err)
		}
		if diff := cmp.Diff(p, got, addrCmp); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	})
}

// rebuildMobilityPacket encodes p again the way this package lays packets
// out: IPv6 header, type 2 routing header, Destination Options header with
// the Home Address option (RFC 8200 §4.1 order), then the Mobility Header
// unchanged, whose checksum stays valid because the pseudo-header
// addresses are the same.
func rebuildMobilityPacket(p MobilityPacket) []byte {
	first := uint8(IPProtoMH)
	if p.HomeAddress.IsValid() {
		first = IPProtoDstOpts
	}
	if p.RoutingAddress.IsValid() {
		first = IPProtoRouting
	}
	b := appendIPv6Header(nil, first, p.Src, p.Dst)
	if p.RoutingAddress.IsValid() {
		nh := uint8(IPProtoMH)
		if p.HomeAddress.IsValid() {
			nh = IPProtoDstOpts
		}
		b = appendRH2(b, nh, p.RoutingAddress)
	}
	if p.HomeAddress.IsValid() {
		b = appendHomeAddressDstOpts(b, IPProtoMH, p.HomeAddress)
	}
	b = append(b, p.MH...)
	binary.BigEndian.PutUint16(b[ipv6PayloadLen:], uint16(len(b)-ipv6HeaderLen))
	return b
}

func FuzzParseMobilityPacket(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, err := ParseMobilityPacket(pkt)
		if err != nil {
			checkErr(t, err)
			return
		}
		if p.MH.HeaderLen() != len(p.MH) {
			t.Fatalf("got MH of %d octets with header len %d", len(p.MH), p.MH.HeaderLen())
		}
		got, err := ParseMobilityPacket(rebuildMobilityPacket(p))
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", p, err)
		}
		if diff := cmp.Diff(p, got, addrCmp); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	})
}

// FuzzParseMobilityHeader feeds bare Mobility Headers (and options) to the
// views: once ParseMobilityHeader accepts a header, no accessor of the view
// for its type may panic.
func FuzzParseMobilityHeader(f *testing.F) {
	for _, p := range seedPackets() {
		for _, off := range []int{40, 64, 72} {
			if off < len(p) {
				f.Add(p[off:])
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMobilityHeader(b)
		if err != nil {
			checkErr(t, err)
			return
		}
		if m.HeaderLen() != len(m) || len(m)%8 != 0 || m.PayloadProto() != IPProtoNone {
			t.Fatalf("got header len %d, slice %d, proto %d", m.HeaderLen(), len(m), m.PayloadProto())
		}
		_ = m.Checksum()
		d := m.MessageData()
		var opts []byte
		switch m.Type() {
		case TypeBindingUpdate:
			u := BindingUpdate(d)
			_, _, _ = u.Sequence(), u.Flags(), u.Lifetime()
			opts = u.Options()
		case TypeBindingAck:
			a := BindingAck(d)
			_, _, _, _ = a.Status(), a.Flags(), a.Sequence(), a.Lifetime()
			opts = a.Options()
		case TypeBindingError:
			e := BindingError(d)
			_, _ = e.Status(), e.HomeAddress()
			opts = e.Options()
		case TypeBindingRefreshRequest:
			opts = BindingRefreshRequest(d).Options()
		}
		errFE := ForEachOption(opts, func(uint8, []byte) error { return nil })
		if errFE != nil && !errors.Is(errFE, ErrBadOption) {
			t.Fatalf("got ForEachOption error = %v, want ErrBadOption", errFE)
		}
		// parseOptions adds fixed-length checks on top of ForEachOption's
		// framing, so it may only fail where framing is fine for a
		// length reason, and must fail where framing fails.
		if _, err := parseOptions(opts); errFE != nil && err == nil {
			t.Fatalf("parseOptions accepted options ForEachOption rejects: %x", opts)
		}
	})
}

// FuzzIPv4Options feeds mobility options to the decoders of RFC 5555's IPv4
// Home Address and IPv4 Address Acknowledgement options: whatever they
// accept, encoded again in a Binding Update and an Ack, decodes to the same
// values.
func FuzzIPv4Options(f *testing.F) {
	for _, o := range [][]byte{
		{OptIPv4HomeAddress, 6, 32 << 2, 0, 192, 0, 2, 10},
		{OptPad1, OptIPv4HomeAddress, 6, 0xff, 0xff, 0, 0, 0, 0},
		{OptIPv4AddressAck, 6, 129, 0xff, 192, 0, 2, 10},
		{OptIPv4HomeAddress, 6, 0x80, 0, 1, 2, 3, 4, OptIPv4AddressAck, 6, 0, 0x80, 1, 2, 3, 4},
		{OptIPv4HomeAddress, 4, 0x80, 0, 1, 2},
	} {
		f.Add(o)
	}
	f.Fuzz(func(t *testing.T, opts []byte) {
		o, err := parseOptions(opts)
		if err != nil {
			if !errors.Is(err, ErrBadOption) {
				t.Fatalf("got parseOptions error = %v, want ErrBadOption", err)
			}
			return
		}
		if a := o.ipv4Home.Address; a.IsValid() && !a.Is4() {
			t.Fatalf("got IPv4 home address %v, want an IPv4 address", a)
		}
		if o.ipv4Home.PrefixLen > 63 || o.ipv4Ack.PrefixLen > 63 {
			t.Fatalf("got prefix lengths %d, %d, want 6-bit values", o.ipv4Home.PrefixLen, o.ipv4Ack.PrefixLen)
		}
		bu := testBU()
		bu.IPv4HomeAddress = o.ipv4Home
		gotBU, err := ParseBUPacket(AppendBUPacket(nil, bu))
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", bu, err)
		}
		if gotBU.IPv4HomeAddress != o.ipv4Home {
			t.Errorf("got IPv4 home address %+v after a round trip, want %+v", gotBU.IPv4HomeAddress, o.ipv4Home)
		}
		ba := testBA()
		ba.IPv4Ack = o.ipv4Ack
		gotBA, err := ParseBAPacket(AppendBAPacket(nil, ba))
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", ba, err)
		}
		if gotBA.IPv4Ack != o.ipv4Ack {
			t.Errorf("got IPv4 ack %+v after a round trip, want %+v", gotBA.IPv4Ack, o.ipv4Ack)
		}
	})
}
