package labha

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/mdlayher/ndp"
)

var (
	testMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
)

// echoRequest returns an ICMPv6 Echo Request packet (checksum left zero; no
// test here looks at it).
func echoRequest(src, dst netip.Addr, hopLimit uint8) []byte {
	payload := []byte{128, 0, 0, 0, 0, 1, 0, 1, 'h', 'i'}
	b := appendIPv6Header(nil, len(payload), mipv6.IPProtoICMPv6, hopLimit, src, dst)
	return append(b, payload...)
}

func TestEncapsulate(t *testing.T) {
	inner := echoRequest(lab.CNAddr, lab.HoA, 63)
	pkt := Encapsulate(nil, lab.HAAddr, lab.CareOfAddr, inner)
	if len(pkt) != len(inner)+TunnelOverhead {
		t.Fatalf("got length = %d, want %d", len(pkt), len(inner)+TunnelOverhead)
	}
	if got := pkt[ipv6NextHdr]; got != 41 {
		t.Errorf("got next header = %d, want 41", got)
	}
	if got := pkt[ipv6HopLimit]; got != 64 {
		t.Errorf("got outer hop limit = %d, want 64", got)
	}
	src, dst, in, err := Decapsulate(pkt)
	if err != nil {
		t.Fatalf("got Decapsulate error = %v, want nil", err)
	}
	if src != lab.HAAddr || dst != lab.CareOfAddr {
		t.Errorf("got outer = %v -> %v, want %v -> %v", src, dst, lab.HAAddr, lab.CareOfAddr)
	}
	if !bytes.Equal(in, inner) {
		t.Errorf("got inner = %x, want %x", in, inner)
	}
	// No Tunnel Encapsulation Limit option: the inner header follows the
	// outer one directly.
	if pkt[ipv6HeaderLen]>>4 != 6 {
		t.Errorf("got octet after outer header = %#x, want an IPv6 header", pkt[ipv6HeaderLen])
	}
}

func TestDecapsulateErrors(t *testing.T) {
	good := Encapsulate(nil, lab.CareOfAddr, lab.HAAddr, echoRequest(lab.HoA, lab.CNAddr, 64))
	notTunnel := echoRequest(lab.CareOfAddr, lab.HAAddr, 64)
	short := append([]byte(nil), good[:len(good)-1]...)
	for _, pkt := range [][]byte{nil, good[:20], notTunnel, short} {
		if _, _, _, err := Decapsulate(pkt); err == nil {
			t.Errorf("got Decapsulate(%x) error = nil, want an error", pkt)
		}
	}
}

func TestCheckReverse(t *testing.T) {
	lookup := func(a netip.Addr) (Binding, bool) {
		if a == lab.HoA {
			return Binding{HomeAddress: lab.HoA, CareOf: lab.CareOfAddr}, true
		}
		return Binding{}, false
	}
	tests := []struct {
		name          string
		outerSrc, dst netip.Addr
		inner         []byte
		wantErr       bool
		// noTunnel: the Home Agent's kernel answers Destination Unreachable.
		noTunnel bool
	}{
		{"registered care-of address", lab.CareOfAddr, lab.HAAddr, echoRequest(lab.HoA, lab.CNAddr, 64), false, false},
		{"other care-of address", lab.CareOfAddrC, lab.HAAddr, echoRequest(lab.HoA, lab.CNAddr, 64), true, true},
		{"outer destination not the home agent", lab.CareOfAddr, lab.VM2.HoA, echoRequest(lab.HoA, lab.CNAddr, 64), true, false},
		{"inner source without binding", lab.CareOfAddr, lab.HAAddr, echoRequest(lab.VM2.HoA, lab.CNAddr, 64), true, true},
		{"inner not IPv6", lab.CareOfAddr, lab.HAAddr, []byte{0x45, 0, 0, 0}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hoa, err := CheckReverse(tt.outerSrc, tt.dst, lab.HAAddr, tt.inner, lookup)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got CheckReverse error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrReverseTunnel) && !errors.Is(err, ErrNotIPv6) {
				t.Errorf("got error = %v, want ErrReverseTunnel or ErrNotIPv6", err)
			}
			if errors.Is(err, ErrNoTunnel) != tt.noTunnel {
				t.Errorf("got error = %v, want ErrNoTunnel %v", err, tt.noTunnel)
			}
			if err == nil && hoa != lab.HoA {
				t.Errorf("got home address = %v, want %v", hoa, lab.HoA)
			}
		})
	}
}

// The Destination Unreachable for a tunnel packet quotes it, outer header
// rebuilt, within the minimum MTU, with a valid checksum.
func TestTunnelUnreachable(t *testing.T) {
	for _, size := range []int{0, 1300} {
		inner := echoRequest(lab.HoA, lab.CNAddr, 64)
		inner = append(inner, make([]byte, size)...)
		binary.BigEndian.PutUint16(inner[ipv6PayLen:], uint16(len(inner)-ipv6HeaderLen))
		pkt := TunnelUnreachable(nil, lab.HAAddr, lab.CareOfAddr, inner)
		if err := checkIPv6(pkt); err != nil {
			t.Fatalf("%d: %v", size, err)
		}
		if src, dst := addrs(pkt); src != lab.HAAddr || dst != lab.CareOfAddr || pkt[ipv6NextHdr] != mipv6.IPProtoICMPv6 {
			t.Fatalf("%d: got %v -> %v next header %d, want ICMPv6 from the Home Agent to the care-of address", size, src, dst, pkt[ipv6NextHdr])
		}
		msg := pkt[ipv6HeaderLen:]
		if msg[0] != 1 || msg[1] != 4 {
			t.Errorf("%d: got type %d code %d, want 1 4", size, msg[0], msg[1])
		}
		if !netpkt.VerifyChecksum(lab.HAAddr, lab.CareOfAddr, mipv6.IPProtoICMPv6, msg) {
			t.Errorf("%d: bad checksum", size)
		}
		if len(pkt) > 1280 {
			t.Errorf("%d: got %d octets, want at most the minimum MTU", size, len(pkt))
		}
		outer := msg[8:]
		if src, dst := addrs(outer); src != lab.CareOfAddr || dst != lab.HAAddr || outer[ipv6NextHdr] != 41 {
			t.Errorf("%d: quoted %v -> %v next header %d, want the tunnel packet", size, src, dst, outer[ipv6NextHdr])
		}
		if n := min(len(inner), 1280-2*ipv6HeaderLen-8); !bytes.Equal(outer[ipv6HeaderLen:], inner[:n]) {
			t.Errorf("%d: quoted inner packet differs (%d octets quoted, want %d)", size, len(outer)-ipv6HeaderLen, n)
		}
	}
}

func TestInsertRH2(t *testing.T) {
	orig := echoRequest(lab.HAAddr, lab.HoA, 64)
	pkt, err := InsertRH2(nil, orig, lab.CareOfAddr)
	if err != nil {
		t.Fatalf("got InsertRH2 error = %v, want nil", err)
	}
	if err := checkIPv6(pkt); err != nil {
		t.Fatalf("got invalid packet: %v", err)
	}
	src, dst := addrs(pkt)
	if src != lab.HAAddr || dst != lab.CareOfAddr {
		t.Errorf("got %v -> %v, want %v -> %v", src, dst, lab.HAAddr, lab.CareOfAddr)
	}
	rh := pkt[ipv6HeaderLen : ipv6HeaderLen+rh2Len]
	want := append([]byte{mipv6.IPProtoICMPv6, 2, 2, 1, 0, 0, 0, 0}, lab.HoA.AsSlice()...)
	if pkt[ipv6NextHdr] != mipv6.IPProtoRouting || !bytes.Equal(rh, want) {
		t.Errorf("got next header %d, routing header %x, want 43, %x", pkt[ipv6NextHdr], rh, want)
	}
	if !bytes.Equal(pkt[ipv6HeaderLen+rh2Len:], orig[ipv6HeaderLen:]) {
		t.Errorf("got payload %x, want %x", pkt[ipv6HeaderLen+rh2Len:], orig[ipv6HeaderLen:])
	}
	// The same transform as the Binding Acknowledgement's, minus the MH:
	// stripping restores the original payload.
	back, err := stripRH2(append([]byte(nil), pkt...))
	if err != nil {
		t.Fatalf("got stripRH2 error = %v, want nil", err)
	}
	if !bytes.Equal(back[ipv6HeaderLen:], orig[ipv6HeaderLen:]) || back[ipv6NextHdr] != orig[ipv6NextHdr] {
		t.Errorf("got stripped %x, want payload of %x", back, orig)
	}
	if _, err := InsertRH2(nil, orig[:30], lab.CareOfAddr); err == nil {
		t.Errorf("got InsertRH2 of a truncated packet error = nil, want an error")
	}
}

// TestBindingAckAtHome checks the Binding Acknowledgement sendBA sends when
// the home address is the care-of address: no routing header, valid checksum.
func TestBindingAckAtHome(t *testing.T) {
	pkt := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: lab.HAAddr, Dst: lab.CareOfAddr, HomeAddress: lab.CareOfAddr, Status: 133, Sequence: 9})
	if err := checkIPv6(pkt); err != nil {
		t.Fatalf("got invalid packet: %v", err)
	}
	if pkt[ipv6NextHdr] != mipv6.IPProtoMH {
		t.Fatalf("got next header = %d, want 135", pkt[ipv6NextHdr])
	}
	mh, err := mipv6.ParseMobilityHeader(pkt[ipv6HeaderLen:])
	if err != nil {
		t.Fatalf("got ParseMobilityHeader error = %v", err)
	}
	if want := mipv6.MHChecksum(lab.HAAddr, lab.CareOfAddr, mh); mh.Checksum() != want {
		t.Errorf("got checksum = %#x, want %#x", mh.Checksum(), want)
	}
	ba := mipv6.BindingAck(mh.MessageData())
	if ba.Status() != 133 || ba.Sequence() != 9 {
		t.Errorf("got status %d seq %d, want 133, 9", ba.Status(), ba.Sequence())
	}
}

func TestDADProbe(t *testing.T) {
	pkt, mac, err := DADProbe(lab.HoA)
	if err != nil {
		t.Fatalf("got DADProbe error = %v", err)
	}
	if want := (net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x10}); !bytes.Equal(mac, want) {
		t.Errorf("got MAC = %v, want %v", mac, want)
	}
	src, dst := addrs(pkt)
	if !src.IsUnspecified() || dst != netip.MustParseAddr("ff02::1:ff00:10") {
		t.Errorf("got %v -> %v, want :: -> ff02::1:ff00:10", src, dst)
	}
	if pkt[ipv6HopLimit] != 255 {
		t.Errorf("got hop limit = %d, want 255", pkt[ipv6HopLimit])
	}
	m, err := ndp.ParseMessage(pkt[ipv6HeaderLen:])
	if err != nil {
		t.Fatalf("got ParseMessage error = %v", err)
	}
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || ns.TargetAddress != lab.HoA || len(ns.Options) != 0 {
		t.Errorf("got %#v, want an NS for %v without options", m, lab.HoA)
	}
	if err := checkICMPv6Checksum(pkt); err != nil {
		t.Error(err)
	}
}

func TestProxyAdvertisement(t *testing.T) {
	pkt, mac, err := ProxyAdvertisement(lab.HAAddr, lab.HoA, testMAC)
	if err != nil {
		t.Fatalf("got ProxyAdvertisement error = %v", err)
	}
	if want := (net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}); !bytes.Equal(mac, want) {
		t.Errorf("got MAC = %v, want %v", mac, want)
	}
	src, dst := addrs(pkt)
	if src != lab.HAAddr || dst != allNodes {
		t.Errorf("got %v -> %v, want %v -> ff02::1", src, dst, lab.HAAddr)
	}
	m, err := ndp.ParseMessage(pkt[ipv6HeaderLen:])
	if err != nil {
		t.Fatalf("got ParseMessage error = %v", err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("got %T, want *ndp.NeighborAdvertisement", m)
	}
	// Router set, Override clear: the detail that delays the home router.
	if !na.Router || na.Override || na.Solicited || na.TargetAddress != lab.HoA {
		t.Errorf("got R=%v O=%v S=%v target %v, want R=true O=false S=false target %v", na.Router, na.Override, na.Solicited, na.TargetAddress, lab.HoA)
	}
	if len(na.Options) != 1 {
		t.Fatalf("got %d options, want 1", len(na.Options))
	}
	lla, ok := na.Options[0].(*ndp.LinkLayerAddress)
	if !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, testMAC) {
		t.Errorf("got option %#v, want target link-layer address %v", na.Options[0], testMAC)
	}
	if err := checkICMPv6Checksum(pkt); err != nil {
		t.Error(err)
	}
}

// checkICMPv6Checksum verifies the ICMPv6 checksum of pkt (RFC 4443 §2.3).
func checkICMPv6Checksum(pkt []byte) error {
	src, dst := addrs(pkt)
	body := append([]byte(nil), pkt[ipv6HeaderLen:]...)
	got := uint16(body[2])<<8 | uint16(body[3])
	body[2], body[3] = 0, 0
	s, d := src.As16(), dst.As16()
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(s[:])
	add(d[:])
	add([]byte{0, 0, byte(len(body) >> 8), byte(len(body)), 0, 0, 0, 58})
	add(body)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	if want := ^uint16(sum); got != want {
		return errors.New("bad ICMPv6 checksum")
	}
	return nil
}

func TestDADConflict(t *testing.T) {
	na := func(target netip.Addr) []byte {
		p, err := ndPacket(&ndp.NeighborAdvertisement{Override: true, TargetAddress: target}, lab.HoA, allNodes)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ns := func(src, target netip.Addr) []byte {
		p, err := ndPacket(&ndp.NeighborSolicitation{TargetAddress: target}, src, allNodes)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"NA for the target", na(lab.HoA), true},
		{"NA for another address", na(lab.VM2.HoA), false},
		// mip6d watches Neighbor Advertisements only.
		{"another node's DAD probe", ns(netip.IPv6Unspecified(), lab.HoA), false},
		{"ordinary NS for the target", ns(lab.CNAddr, lab.HoA), false},
		{"echo request", echoRequest(lab.CNAddr, lab.HoA, 64), false},
		{"garbage", []byte{1, 2, 3}, false},
	}
	for _, tt := range tests {
		if got := DADConflict(tt.pkt, lab.HoA); got != tt.want {
			t.Errorf("%s: got DADConflict = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func FuzzDecapsulate(f *testing.F) {
	f.Add(Encapsulate(nil, lab.CareOfAddr, lab.HAAddr, echoRequest(lab.HoA, lab.CNAddr, 64)))
	f.Add(echoRequest(lab.CNAddr, lab.HoA, 64))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		src, dst, inner, err := Decapsulate(pkt)
		if err != nil {
			return
		}
		again := Encapsulate(nil, src, dst, inner)
		if !bytes.Equal(again[ipv6Src:], pkt[ipv6Src:]) || again[ipv6NextHdr] != 41 {
			t.Fatalf("got re-encapsulated %x, want %x after the fixed header fields", again, pkt)
		}
		lookup := func(netip.Addr) (Binding, bool) { return Binding{CareOf: src}, true }
		_, _ = CheckReverse(src, dst, dst, inner, lookup)
	})
}

func FuzzInsertRH2(f *testing.F) {
	f.Add(echoRequest(lab.HAAddr, lab.HoA, 64))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		out, err := InsertRH2(nil, pkt, lab.CareOfAddr)
		if err != nil {
			return
		}
		if len(out) != len(pkt)+rh2Len {
			t.Fatalf("got length %d, want %d", len(out), len(pkt)+rh2Len)
		}
		_, hoa := addrs(pkt)
		if got := netip.AddrFrom16([16]byte(out[ipv6HeaderLen+8 : ipv6HeaderLen+24])); got != hoa {
			t.Fatalf("got routing header address %v, want %v", got, hoa)
		}
		back, err := stripRH2(out)
		if err != nil || !bytes.Equal(back[ipv6HeaderLen:], pkt[ipv6HeaderLen:]) {
			t.Fatalf("got stripRH2 = %x, %v, want payload of %x", back, err, pkt)
		}
	})
}

func FuzzDADConflict(f *testing.F) {
	p, _, _ := ProxyAdvertisement(lab.HAAddr, lab.HoA, testMAC)
	f.Add(p)
	p, _, _ = DADProbe(lab.HoA)
	f.Add(p)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		DADConflict(pkt, lab.HoA)
	})
}

// stripRH2 removes the type 2 routing header that directly follows the
// IPv6 header of pkt, in place. mip6d sends a Binding Acknowledgement
// without routing header when the home address is the care-of address (a
// Binding Update without Home Address option); the MH checksum does not
// change, its pseudo-header destination being that same address.
func stripRH2(pkt []byte) ([]byte, error) {
	if err := checkIPv6(pkt); err != nil || len(pkt) < ipv6HeaderLen+rh2Len || pkt[ipv6NextHdr] != mipv6.IPProtoRouting {
		return pkt, fmt.Errorf("no type 2 routing header: %w", ErrNotIPv6)
	}
	pkt[ipv6NextHdr] = pkt[ipv6HeaderLen]
	binary.BigEndian.PutUint16(pkt[ipv6PayLen:], uint16(len(pkt)-ipv6HeaderLen-rh2Len))
	copy(pkt[ipv6HeaderLen:], pkt[ipv6HeaderLen+rh2Len:])
	return pkt[:len(pkt)-rh2Len], nil
}
