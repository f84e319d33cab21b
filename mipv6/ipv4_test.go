package mipv6

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// vmIPv4 is the lab guest's IPv4 home address.
var vmIPv4 = netip.MustParseAddr("192.0.2.10")

// findOption returns the MH offset of the first option of type typ in a
// Binding Update or Acknowledgement, or -1.
func findOption(mh MobilityHeader, typ uint8) int {
	opts := mh[mhFixedLen:]
	for i := 0; i < len(opts); {
		if opts[i] == OptPad1 {
			i++
			continue
		}
		if opts[i] == typ {
			return mhFixedLen + i
		}
		i += 2 + int(opts[i+1])
	}
	return -1
}

// TestIPv4HomeAddressOptionEncoding checks the option's octets against the
// layout of RFC 5555 §3.1.1, written out by hand.
func TestIPv4HomeAddressOptionEncoding(t *testing.T) {
	tests := []struct {
		name string
		h    IPv4HomeAddress
		want []byte // type, length, data
	}{
		{"single address", IPv4HomeAddress{Address: vmIPv4, PrefixLen: 32},
			[]byte{29, 6, 32 << 2, 0, 192, 0, 2, 10}},
		{"dynamic request", IPv4HomeAddress{Address: netip.IPv4Unspecified(), PrefixLen: 32},
			[]byte{29, 6, 0x80, 0, 0, 0, 0, 0}},
		{"prefix request", IPv4HomeAddress{Address: netip.IPv4Unspecified(), PrefixLen: 24, RequestPrefix: true},
			[]byte{29, 6, 24<<2 | 0x02, 0, 0, 0, 0, 0}},
		{"largest prefix length field", IPv4HomeAddress{Address: netip.MustParseAddr("255.255.255.255"), PrefixLen: 63, RequestPrefix: true},
			[]byte{29, 6, 0xfe, 0, 255, 255, 255, 255}},
		{"invalid prefix length zero, sent as given", IPv4HomeAddress{Address: vmIPv4},
			[]byte{29, 6, 0, 0, 192, 0, 2, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testBU()
			p.IPv4HomeAddress = tt.h
			mh := MobilityHeader(AppendBUPacket(nil, p)[64:])
			i := findOption(mh, OptIPv4HomeAddress)
			if i < 0 {
				t.Fatalf("got no IPv4 Home Address option in %x", mh)
			}
			if got := mh[i : i+8]; !bytes.Equal(got, tt.want) {
				t.Errorf("got option %x, want %x", got, tt.want)
			}
			v := IPv4HomeAddressOption(mh[i+2 : i+8])
			if got := (IPv4HomeAddress{Address: v.Address(), PrefixLen: v.PrefixLen(), RequestPrefix: v.RequestPrefix()}); got != tt.h {
				t.Errorf("got view %+v, want %+v", got, tt.h)
			}
		})
	}
}

// TestIPv4AddressAckOptionEncoding checks the option's octets against the
// layout of RFC 5555 §3.2.1, written out by hand.
func TestIPv4AddressAckOptionEncoding(t *testing.T) {
	tests := []struct {
		name string
		k    IPv4AddressAck
		want []byte
	}{
		{"success", IPv4AddressAck{Present: true, Status: IPv4StatusSuccess, PrefixLen: 32, Address: vmIPv4},
			[]byte{30, 6, 0, 32 << 2, 192, 0, 2, 10}},
		{"prohibited", IPv4AddressAck{Present: true, Status: IPv4StatusProhibited, Address: vmIPv4},
			[]byte{30, 6, 129, 0, 192, 0, 2, 10}},
		{"prefix unauthorized, largest prefix length field", IPv4AddressAck{Present: true, Status: IPv4StatusPrefixUnauthorized, PrefixLen: 63, Address: netip.IPv4Unspecified()},
			[]byte{30, 6, 133, 0xfc, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testBA()
			p.IPv4Ack = tt.k
			mh := MobilityHeader(AppendBAPacket(nil, p)[64:])
			i := findOption(mh, OptIPv4AddressAck)
			if i < 0 {
				t.Fatalf("got no IPv4 Address Acknowledgement option in %x", mh)
			}
			if got := mh[i : i+8]; !bytes.Equal(got, tt.want) {
				t.Errorf("got option %x, want %x", got, tt.want)
			}
			v := IPv4AddressAckOption(mh[i+2 : i+8])
			if got := (IPv4AddressAck{Present: true, Status: v.Status(), PrefixLen: v.PrefixLen(), Address: v.Address()}); got != tt.k {
				t.Errorf("got view %+v, want %+v", got, tt.k)
			}
		})
	}
}

// TestIPv4OptionsRoundTrip encodes Binding Updates and Acks with the
// Dual-Stack options alone and beside the others, and parses them back:
// each option at its alignment (4n for RFC 5555's), the Mobility Header a
// multiple of 8 octets.
func TestIPv4OptionsRoundTrip(t *testing.T) {
	home := IPv4HomeAddress{Address: vmIPv4, PrefixLen: 32}
	bus := []struct {
		name  string
		mod   func(*BUPacket)
		mhLen int
	}{
		{"IPv4 home address", func(p *BUPacket) { p.IPv4HomeAddress = home }, 24},
		{"dynamic IPv4 request", func(p *BUPacket) {
			p.IPv4HomeAddress = IPv4HomeAddress{Address: netip.IPv4Unspecified(), PrefixLen: 32}
		}, 24},
		{"IPv4 and nonce indices", func(p *BUPacket) {
			p.IPv4HomeAddress = home
			p.NonceIndices = NonceIndices{Present: true, Home: 3, CareOf: 4}
		}, 32},
		{"IPv4, nonce indices and alternate care-of", func(p *BUPacket) {
			p.IPv4HomeAddress = home
			p.NonceIndices = NonceIndices{Present: true, Home: 3, CareOf: 4}
			p.AlternateCareOf = altCoA
		}, 48},
		{"IPv4 and alternate care-of", func(p *BUPacket) {
			p.IPv4HomeAddress = home
			p.AlternateCareOf = altCoA
		}, 40},
	}
	for _, tt := range bus {
		t.Run("BU "+tt.name, func(t *testing.T) {
			p := testBU()
			tt.mod(&p)
			b := AppendBUPacket(nil, p)
			mh := MobilityHeader(b[64:])
			if len(mh) != tt.mhLen || mh.HeaderLen() != len(mh) {
				t.Errorf("got MH of %d octets, header len %d, want %d", len(mh), mh.HeaderLen(), tt.mhLen)
			}
			if i := findOption(mh, OptIPv4HomeAddress); i%4 != 0 {
				t.Errorf("got IPv4 Home Address option at MH offset %d, want 4n", i)
			}
			if i := findOption(mh, OptAlternateCareOf); i >= 0 && i%8 != 6 {
				t.Errorf("got Alternate Care-of Address option at MH offset %d, want 8n+6", i)
			}
			got, err := ParseBUPacket(b)
			if err != nil {
				t.Fatalf("got ParseBUPacket error = %v, want nil", err)
			}
			if diff := cmp.Diff(p, got, addrCmp); diff != "" {
				t.Errorf("got ParseBUPacket diff (-want +got):\n%s", diff)
			}
		})
	}
	ack := IPv4AddressAck{Present: true, Status: IPv4StatusSuccess, PrefixLen: 32, Address: vmIPv4}
	bas := []struct {
		name  string
		mod   func(*BAPacket)
		mhLen int
	}{
		{"IPv4 accepted", func(p *BAPacket) { p.IPv4Ack = ack }, 24},
		{"IPv4 refused", func(p *BAPacket) {
			p.IPv4Ack = IPv4AddressAck{Present: true, Status: IPv4StatusIncorrectHome, Address: vmIPv4}
		}, 24},
		{"IPv4 and refresh advice", func(p *BAPacket) { p.IPv4Ack = ack; p.RefreshInterval = 75 }, 24},
		{"IPv4 with the binding refused", func(p *BAPacket) {
			p.Status = StatusProhibited
			p.IPv4Ack = IPv4AddressAck{Present: true, Status: IPv4StatusUnspecified, Address: netip.IPv4Unspecified()}
		}, 24},
	}
	for _, tt := range bas {
		t.Run("BA "+tt.name, func(t *testing.T) {
			p := testBA()
			tt.mod(&p)
			b := AppendBAPacket(nil, p)
			mh := MobilityHeader(b[64:])
			if len(mh) != tt.mhLen || mh.HeaderLen() != len(mh) {
				t.Errorf("got MH of %d octets, header len %d, want %d", len(mh), mh.HeaderLen(), tt.mhLen)
			}
			if i := findOption(mh, OptIPv4AddressAck); i%4 != 0 {
				t.Errorf("got IPv4 Address Acknowledgement option at MH offset %d, want 4n", i)
			}
			got, err := ParseBAPacket(b)
			if err != nil {
				t.Fatalf("got ParseBAPacket error = %v, want nil", err)
			}
			if diff := cmp.Diff(p, got, addrCmp); diff != "" {
				t.Errorf("got ParseBAPacket diff (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIPv4HomeAddressNotIPv4 checks that an address that is not IPv4 is no
// IPv4 Home Address option: the Binding Update is the clear one, octet for
// octet.
func TestIPv4HomeAddressNotIPv4(t *testing.T) {
	p := testBU()
	p.IPv4HomeAddress = IPv4HomeAddress{Address: hoa, PrefixLen: 32}
	if got, want := AppendBUPacket(nil, p), AppendBUPacket(nil, testBU()); !bytes.Equal(got, want) {
		t.Errorf("got %x, want the Binding Update without options %x", got, want)
	}
}

// withOptions replaces the options of the Binding Update or Ack built by
// build with opts (already padded to 8n+4, the MH fixed part being 12
// octets) and fixes lengths and checksum.
func withOptions(t *testing.T, pkt []byte, opts []byte, pseudoSrc, pseudoDst netip.Addr) []byte {
	t.Helper()
	if (mhFixedLen+len(opts))%8 != 0 {
		t.Fatalf("options of %d octets leave the MH unaligned", len(opts))
	}
	b := append(append([]byte(nil), pkt[:64+mhFixedLen]...), opts...)
	m := MobilityHeader(b[64:])
	m[mhHeaderLen] = byte(len(m)/8 - 1)
	m.SetChecksum(0)
	m.SetChecksum(MHChecksum(pseudoSrc, pseudoDst, m))
	b[4], b[5] = byte((len(b)-40)>>8), byte(len(b)-40)
	return b
}

// TestParseIPv4Options covers what a sender other than kgswitch may put on
// the wire: options anywhere (alignment is the sender's duty, RFC 6275
// §6.2), reserved bits set, two options, wrong lengths.
func TestParseIPv4Options(t *testing.T) {
	bu := AppendBUPacket(nil, testBU())
	ba := AppendBAPacket(nil, testBA())
	home := IPv4HomeAddress{Address: vmIPv4, PrefixLen: 32}
	t.Run("BU unaligned, reserved bits set", func(t *testing.T) {
		opts := []byte{OptPad1, 29, 6, 32<<2 | 0x01, 0xff, 192, 0, 2, 10, OptPad1, OptPad1, OptPad1}
		got, err := ParseBUPacket(withOptions(t, bu, opts, hoa, haAddr))
		if err != nil {
			t.Fatalf("got ParseBUPacket error = %v, want nil", err)
		}
		if got.IPv4HomeAddress != home {
			t.Errorf("got IPv4 home address %+v, want %+v", got.IPv4HomeAddress, home)
		}
	})
	t.Run("BU two options, the first kept", func(t *testing.T) {
		opts := []byte{29, 6, 32 << 2, 0, 192, 0, 2, 10, 29, 6, 24<<2 | 0x02, 0, 0, 0, 0, 0, OptPadN, 2, 0, 0}
		got, err := ParseBUPacket(withOptions(t, bu, opts, hoa, haAddr))
		if err != nil {
			t.Fatalf("got ParseBUPacket error = %v, want nil", err)
		}
		if got.IPv4HomeAddress != home {
			t.Errorf("got IPv4 home address %+v, want %+v", got.IPv4HomeAddress, home)
		}
	})
	t.Run("BA reserved bits set", func(t *testing.T) {
		opts := []byte{30, 6, 0, 32<<2 | 0x03, 192, 0, 2, 10, OptPadN, 2, 0, 0}
		got, err := ParseBAPacket(withOptions(t, ba, opts, haAddr, hoa))
		if err != nil {
			t.Fatalf("got ParseBAPacket error = %v, want nil", err)
		}
		want := IPv4AddressAck{Present: true, PrefixLen: 32, Address: vmIPv4}
		if got.IPv4Ack != want {
			t.Errorf("got IPv4 ack %+v, want %+v", got.IPv4Ack, want)
		}
	})
	for _, tt := range []struct {
		name string
		pkt  []byte
		bu   bool
	}{
		{"BU option too short", withOptions(t, bu, []byte{29, 4, 0x80, 0, 192, 0, OptPadN, 4, 0, 0, 0, 0}, hoa, haAddr), true},
		{"BU option too long", withOptions(t, bu, []byte{29, 10, 0x80, 0, 192, 0, 2, 10, 0, 0, 0, 0}, hoa, haAddr), true},
		{"BA option too short", withOptions(t, ba, []byte{30, 2, 0, 0x80, OptPadN, 6, 0, 0, 0, 0, 0, 0}, haAddr, hoa), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.bu {
				_, err = ParseBUPacket(tt.pkt)
			} else {
				_, err = ParseBAPacket(tt.pkt)
			}
			if !errors.Is(err, ErrBadOption) {
				t.Errorf("got error = %v, want ErrBadOption", err)
			}
		})
	}
}

// TestIPv4OptionsNoAllocs keeps the parsers allocation-free with the
// Dual-Stack options, as the Binding Ack handling on the control loop
// expects.
func TestIPv4OptionsNoAllocs(t *testing.T) {
	p := testBU()
	p.IPv4HomeAddress = IPv4HomeAddress{Address: vmIPv4, PrefixLen: 32}
	bu := AppendBUPacket(nil, p)
	a := testBA()
	a.IPv4Ack = IPv4AddressAck{Present: true, PrefixLen: 32, Address: vmIPv4}
	ba := AppendBAPacket(nil, a)
	buf := make([]byte, 0, 128)
	for name, f := range map[string]func(){
		"ParseBUPacket":  func() { _, _ = ParseBUPacket(bu) },
		"ParseBAPacket":  func() { _, _ = ParseBAPacket(ba) },
		"AppendBUPacket": func() { buf = AppendBUPacket(buf[:0], p) },
		"AppendBAPacket": func() { buf = AppendBAPacket(buf[:0], a) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("got %s allocations = %v, want 0", name, n)
		}
	}
}

func TestIPv4StatusString(t *testing.T) {
	for s, want := range map[uint8]string{
		0:   "success",
		128: "failure, reason unspecified",
		129: "administratively prohibited",
		130: "incorrect IPv4 home address",
		131: "invalid IPv4 address",
		132: "dynamic IPv4 home address assignment not available",
		133: "prefix allocation unauthorized",
		134: "status 134",
	} {
		if got := IPv4StatusString(s); got != want {
			t.Errorf("got IPv4StatusString(%d) = %q, want %q", s, got, want)
		}
	}
}
