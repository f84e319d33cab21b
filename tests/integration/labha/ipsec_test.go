package labha

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// SPIs of the test SAs: lab.HoA's Binding Update and Acknowledgement SAs,
// and lab.VM2.HoA's.
const (
	spiBU  = 0x1001
	spiBA  = 0x1002
	spiBU2 = 0x2001
	spiBA2 = 0x2002
)

// testSA returns an SA with keys derived from spi, so that two SAs with
// one SPI have the same keys.
func testSA(t testing.TB, alg esp.Algorithm, spi uint32, src, dst netip.Addr) esp.SA {
	t.Helper()
	key := func(n int, salt byte) []byte {
		k := make([]byte, n)
		for i := range k {
			k[i] = byte(spi) + salt + byte(i)
		}
		return k
	}
	sa, err := esp.NewSA(spi, src, dst, alg, key(alg.EncKeyLen(), 0), key(alg.AuthKeyLen(), 0x80))
	if err != nil {
		t.Fatalf("got NewSA error = %v, want nil", err)
	}
	return sa
}

// testSAs are lab.HoA's and lab.VM2.HoA's SA pairs with the Home Agent.
func testSAs(t testing.TB, alg esp.Algorithm) []esp.SA {
	return []esp.SA{
		testSA(t, alg, spiBU, lab.HoA, lab.HAAddr), testSA(t, alg, spiBA, lab.HAAddr, lab.HoA),
		testSA(t, alg, spiBU2, lab.VM2.HoA, lab.HAAddr), testSA(t, alg, spiBA2, lab.HAAddr, lab.VM2.HoA),
	}
}

func testKeyring(t testing.TB, alg esp.Algorithm) *Keyring {
	t.Helper()
	k, err := NewKeyring(lab.HAAddr, testSAs(t, alg))
	if err != nil {
		t.Fatalf("got NewKeyring error = %v, want nil", err)
	}
	return k
}

// protectedBU is a home registration for lab.HoA from lab.CareOfAddr,
// protected by sa with ESP sequence number espSeq.
func protectedBU(t testing.TB, sa esp.SA, espSeq uint32, p mipv6.BUPacket) []byte {
	t.Helper()
	pkt, err := esp.AppendBUPacket(nil, &sa, espSeq, p, rand.Reader)
	if err != nil {
		t.Fatalf("got esp.AppendBUPacket error = %v, want nil", err)
	}
	return pkt
}

// sealClear protects clear, an IPv6 packet with a Destination Options
// header before its upper-layer message, with sa whatever its addresses and
// content: ESP after the Destination Options header, as esp.AppendBUPacket
// puts it, for packets esp.AppendBUPacket would not build.
func sealClear(t testing.TB, sa esp.SA, espSeq uint32, clear []byte) []byte {
	t.Helper()
	if clear[ipv6NextHdr] != mipv6.IPProtoDstOpts {
		t.Fatalf("got next header %d, want destination options", clear[ipv6NextHdr])
	}
	off := ipv6HeaderLen + (int(clear[ipv6HeaderLen+1])+1)*8
	pkt := append([]byte(nil), clear[:off]...)
	pkt[ipv6HeaderLen] = esp.IPProtoESP
	pkt, err := sa.Seal(pkt, espSeq, clear[ipv6HeaderLen], clear[off:], rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint16(pkt[ipv6PayLen:], uint16(len(pkt)-ipv6HeaderLen))
	return pkt
}

func homeBU(seq uint16) mipv6.BUPacket {
	return mipv6.BUPacket{Src: lab.CareOfAddr, Dst: lab.HAAddr, HomeAddress: lab.HoA, Sequence: seq, Flags: home, Lifetime: 15}
}

// buESPAt is where ESP starts in a protected Binding Update: after the
// IPv6 header and the 24-octet Destination Options header with the Home
// Address option (RFC 6275 §6.3, at 8n+6).
const buESPAt = ipv6HeaderLen + 24

var allAlgorithms = []esp.Algorithm{esp.AESCBCHMACSHA256, esp.AESGCM16, esp.NullHMACSHA256, esp.AESCBCHMACSHA1}

// TestProtectedRegistration follows one home registration under ESP
// through the Home Agent's pure parts: the Binding Update opened with
// lab.HoA's inbound SA, the binding cache's decision, and the
// Acknowledgement protected with its outbound SA, which the mobile node's
// end opens with the same SA.
func TestProtectedRegistration(t *testing.T) {
	for _, alg := range allAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			sas := testSAs(t, alg)
			k := testKeyring(t, alg)
			c := NewCache(CacheConfig{Prefix: lab.HomePrefix})
			for i, espSeq := range []uint32{1, 2, 7} {
				r, gotSeq, err := k.ParseRequest(protectedBU(t, sas[0], espSeq, homeBU(uint16(10+i))))
				if err != nil {
					t.Fatalf("got ParseRequest error = %v, want nil", err)
				}
				want := Request{CareOf: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: uint16(10 + i), Flags: home, Lifetime: 15}
				if diff := cmp.Diff(want, r, addrCmp); diff != "" || gotSeq != espSeq {
					t.Fatalf("got ParseRequest sequence %d, diff (-want +got):\n%s; want sequence %d", gotSeq, diff, espSeq)
				}
				d := c.HandleBU(r, t0)
				if d.Verdict == RunDAD {
					d = c.CompleteDAD(d.HomeAddress, false, t0)
				}
				pkt, baSeq, err := k.AppendBA(nil, baPacket(lab.HAAddr, d), rand.Reader)
				if err != nil {
					t.Fatalf("got AppendBA error = %v, want nil", err)
				}
				// The Home Agent's own numbers count from 1 on its run,
				// whatever the mobile node's are.
				if baSeq != uint32(i+1) {
					t.Errorf("got Acknowledgement ESP sequence %d, want %d", baSeq, i+1)
				}
				if pkt[ipv6NextHdr] != mipv6.IPProtoRouting || pkt[ipv6HeaderLen] != esp.IPProtoESP {
					t.Errorf("got next headers %d, %d; want routing header, then ESP", pkt[ipv6NextHdr], pkt[ipv6HeaderLen])
				}
				openSeq, ba, err := esp.ParseBAPacket(pkt, &sas[1])
				if err != nil {
					t.Fatalf("got esp.ParseBAPacket error = %v, want nil", err)
				}
				wantBA := mipv6.BAPacket{Src: lab.HAAddr, Dst: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: uint16(10 + i), Lifetime: 15}
				if diff := cmp.Diff(wantBA, ba, addrCmp); diff != "" || openSeq != baSeq {
					t.Errorf("got esp.ParseBAPacket sequence %d, diff (-want +got):\n%s; want sequence %d", openSeq, diff, baSeq)
				}
			}
		})
	}
}

// TestProtectedAckAtHome checks the Acknowledgement of a de-registration
// sent from the home address: to the home address, no routing header, ESP
// straight after the IPv6 header.
func TestProtectedAckAtHome(t *testing.T) {
	sas := testSAs(t, esp.AESCBCHMACSHA256)
	k := testKeyring(t, esp.AESCBCHMACSHA256)
	d := Decision{Verdict: Reply, HomeAddress: lab.HoA, CareOf: lab.HoA, Ack: Ack{Sequence: 9}}
	pkt, _, err := k.AppendBA(nil, baPacket(lab.HAAddr, d), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, dst := addrs(pkt); dst != lab.HoA || pkt[ipv6NextHdr] != esp.IPProtoESP {
		t.Errorf("got destination %v, next header %d; want %v, ESP", dst, pkt[ipv6NextHdr], lab.HoA)
	}
	if _, ba, err := esp.ParseBAPacket(pkt, &sas[1]); err != nil || ba.Sequence != 9 {
		t.Errorf("got esp.ParseBAPacket = %+v, %v; want sequence 9, nil", ba, err)
	}
}

// TestClearHomeAddress checks that a home address without SAs keeps clear
// signalling next to protected ones.
func TestClearHomeAddress(t *testing.T) {
	k := testKeyring(t, esp.AESGCM16)
	other := netip.MustParseAddr("2001:db8:2000::99")
	p := homeBU(3)
	p.HomeAddress = other
	r, espSeq, err := k.ParseRequest(buPacket(p))
	if err != nil || r.HomeAddress != other || espSeq != 0 {
		t.Fatalf("got ParseRequest = %+v, %d, %v; want the request in clear", r, espSeq, err)
	}
	pkt, baSeq, err := k.AppendBA(nil, baPacket(lab.HAAddr, Decision{HomeAddress: other, CareOf: lab.CareOfAddr, Ack: Ack{Sequence: 3}}), rand.Reader)
	if err != nil || baSeq != 0 {
		t.Fatalf("got AppendBA sequence %d, error = %v; want 0, nil", baSeq, err)
	}
	if ba, err := mipv6.ParseBAPacket(pkt); err != nil || ba.HomeAddress != other {
		t.Errorf("got mipv6.ParseBAPacket = %+v, %v; want a clear Acknowledgement for %v", ba, err, other)
	}
	if k.Protected(other) || !k.Protected(lab.HoA) {
		t.Errorf("got Protected(%v) = %v, Protected(%v) = %v; want false, true", other, k.Protected(other), lab.HoA, k.Protected(lab.HoA))
	}
}

// TestSilentDrops checks every Binding Update that IPsec drops: each fails
// with its sentinel, and its reason is the one logged.
func TestSilentDrops(t *testing.T) {
	alg := esp.AESCBCHMACSHA256
	sas := testSAs(t, alg)
	good := protectedBU(t, sas[0], 1, homeBU(1))
	badICV := bytes.Clone(good)
	badICV[len(badICV)-1] ^= 1
	badCiphertext := bytes.Clone(good)
	badCiphertext[len(badCiphertext)-20] ^= 1
	// A Binding Update for lab.VM2.HoA sealed with lab.HoA's SPI and keys:
	// it passes the integrity check, but the SA is another home address's.
	stolen := testSA(t, alg, spiBU, lab.VM2.HoA, lab.HAAddr)
	vm2 := homeBU(1)
	vm2.HomeAddress = lab.VM2.HoA
	// Sealed right, but the Mobility Header checksum inside is wrong.
	badChecksum := buPacket(homeBU(1))
	badChecksum[len(badChecksum)-1] ^= 0x55
	// The Home Address option is outside the ICV: changing it passes ESP,
	// and the checksum, whose pseudo-header has the home address, fails.
	otherHAO := bytes.Clone(good)
	copy(otherHAO[ipv6HeaderLen+8:], lab.VM2.HoA.AsSlice())
	noHAO := homeBU(1)
	noHAO.Src = lab.HoA // from home: without the option, the source is the home address
	tests := []struct {
		name    string
		pkt     []byte
		wantErr error
		reason  string
	}{
		{"clear BU for a protected home address", buPacket(homeBU(1)), ErrUnprotected, ReasonUnprotected},
		{"clear BU without HAO from a protected home address", withoutHAO(t, buPacket(noHAO)), ErrUnprotected, ReasonUnprotected},
		{"unknown SPI", protectedBU(t, testSA(t, alg, 0x9999, lab.HoA, lab.HAAddr), 1, homeBU(1)), ErrUnknownSPI, ReasonUnknownSPI},
		{"the Acknowledgement SA's SPI", protectedBU(t, testSA(t, alg, spiBA, lab.HoA, lab.HAAddr), 1, homeBU(1)), ErrUnknownSPI, ReasonUnknownSPI},
		{"bad ICV", badICV, esp.ErrAuth, ReasonIntegrity},
		{"changed ciphertext", badCiphertext, esp.ErrAuth, ReasonIntegrity},
		{"other keys under the SPI", protectedBU(t, testSA(t, esp.AESCBCHMACSHA1, spiBU, lab.HoA, lab.HAAddr), 1, homeBU(1)), esp.ErrAuth, ReasonIntegrity},
		{"another home address's SA", protectedBU(t, stolen, 1, vm2), esp.ErrSelector, ReasonSelector},
		{"bad MH checksum", sealClear(t, sas[0], 1, badChecksum), ErrChecksum, ""},
		{"home address option changed", otherHAO, ErrChecksum, ""},
		{"ESP header cut short", good[:buESPAt+6], esp.ErrShort, ReasonMalformedESP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := testKeyring(t, alg)
			_, _, err := k.ParseRequest(tt.pkt)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got ParseRequest error = %v, want %v", err, tt.wantErr)
			}
			reason := DropReason(err)
			if tt.reason != "" && reason != tt.reason {
				t.Errorf("got DropReason = %q, want %q", reason, tt.reason)
			}
			if tt.reason == "" && !strings.Contains(reason, "checksum") {
				t.Errorf("got DropReason = %q, want the checksum error", reason)
			}
		})
	}
}

// TestReplayedBU checks the replay window on the inbound SA, and what moves
// it: only Binding Updates that passed the integrity check, including
// those the Mobility Header then fails.
func TestReplayedBU(t *testing.T) {
	alg := esp.NullHMACSHA256
	sas := testSAs(t, alg)
	k := testKeyring(t, alg)
	// The mobile node's forged or mangled packets with high numbers.
	forged := protectedBU(t, sas[0], 500, homeBU(1))
	forged[len(forged)-1] ^= 1
	badChecksum := buPacket(homeBU(1))
	badChecksum[len(badChecksum)-1] ^= 0x55
	for _, s := range []struct {
		espSeq  uint32
		pkt     []byte // nil: a good Binding Update with espSeq
		wantErr error
	}{
		{espSeq: 5},
		{espSeq: 5, wantErr: ErrReplay},
		{espSeq: 3},                     // late, within the window
		{espSeq: 3, wantErr: ErrReplay}, // and only once
		{espSeq: 40},                    // a gap
		{espSeq: 8, wantErr: ErrReplay}, // 40 - 32: out of the window
		{espSeq: 9},                     // the lowest still in it
		{espSeq: 500, pkt: forged, wantErr: esp.ErrAuth},
		{espSeq: 10}, // the forgery moved nothing
		{espSeq: 100, pkt: sealClear(t, sas[0], 100, badChecksum), wantErr: ErrChecksum},
		{espSeq: 100, wantErr: ErrReplay}, // authenticated, so recorded
		{espSeq: 60, wantErr: ErrReplay},  // below 100 - 32
	} {
		pkt := s.pkt
		if pkt == nil {
			pkt = protectedBU(t, sas[0], s.espSeq, homeBU(1))
		}
		_, got, err := k.ParseRequest(pkt)
		if !errors.Is(err, s.wantErr) || (err == nil) != (s.wantErr == nil) {
			t.Fatalf("ESP sequence %d: got ParseRequest error = %v, want %v", s.espSeq, err, s.wantErr)
		}
		if err == nil && got != s.espSeq {
			t.Errorf("got ESP sequence %d, want %d", got, s.espSeq)
		}
	}
	// Sequence number 0 never comes from a sender (RFC 4303 §3.3.3), and
	// the window refuses it before the integrity check, as Linux does.
	zero := protectedBU(t, sas[0], 1000, homeBU(1))
	binary.BigEndian.PutUint32(zero[buESPAt+4:], 0)
	if _, _, err := k.ParseRequest(zero); !errors.Is(err, ErrReplay) {
		t.Errorf("got ParseRequest error = %v for ESP sequence 0, want ErrReplay", err)
	}
	// The other home address's SA has its own window.
	vm2 := homeBU(1)
	vm2.HomeAddress = lab.VM2.HoA
	if _, _, err := k.ParseRequest(protectedBU(t, sas[2], 5, vm2)); err != nil {
		t.Errorf("got ParseRequest error = %v for another SA's sequence 5, want nil", err)
	}
}

func TestNewKeyring(t *testing.T) {
	alg := esp.NullHMACSHA256
	sa := func(spi uint32, src, dst netip.Addr) esp.SA { return testSA(t, alg, spi, src, dst) }
	bu, ba := sa(spiBU, lab.HoA, lab.HAAddr), sa(spiBA, lab.HAAddr, lab.HoA)
	for _, tc := range []struct {
		name string
		sas  []esp.SA
		want string // in the error; "" for none
	}{
		{"none", nil, ""},
		{"a pair", []esp.SA{ba, bu}, ""},
		{"two pairs", testSAs(t, alg), ""},
		{"no Acknowledgement SA", []esp.SA{bu}, "no Acknowledgement SA"},
		{"no Binding Update SA", []esp.SA{ba}, "no Binding Update SA"},
		{"two Binding Update SAs", []esp.SA{bu, ba, sa(0x3000, lab.HoA, lab.HAAddr)}, "already has Binding Update SA"},
		{"two Acknowledgement SAs", []esp.SA{bu, ba, sa(0x3000, lab.HAAddr, lab.HoA)}, "already has Acknowledgement SA"},
		{"one inbound SPI twice", []esp.SA{bu, ba, sa(spiBU, lab.VM2.HoA, lab.HAAddr), sa(spiBA2, lab.HAAddr, lab.VM2.HoA)}, "SPI already taken"},
		{"another Home Agent's", []esp.SA{bu, ba, sa(0x3000, lab.HoA, lab.HAAddr2)}, "neither from nor to"},
		{"to itself", []esp.SA{sa(0x3000, lab.HAAddr, lab.HAAddr)}, "to itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKeyring(lab.HAAddr, tc.sas)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got NewKeyring error = %v, want nil", err)
				}
				if got := len(k.HomeAddresses()); got != len(tc.sas)/2 {
					t.Errorf("got %d home addresses, want %d", got, len(tc.sas)/2)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got NewKeyring error = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestAckSequenceExhausted checks that an SA whose numbers ran out sends
// nothing rather than wrap.
func TestAckSequenceExhausted(t *testing.T) {
	k := testKeyring(t, esp.NullHMACSHA256)
	k.homes[lab.HoA].seq = ^uint32(0) - 1
	d := Decision{HomeAddress: lab.HoA, CareOf: lab.CareOfAddr}
	if _, s, err := k.AppendBA(nil, baPacket(lab.HAAddr, d), rand.Reader); err != nil || s != ^uint32(0) {
		t.Fatalf("got AppendBA sequence %d, error = %v; want the last one, nil", s, err)
	}
	if b, _, err := k.AppendBA([]byte{1}, baPacket(lab.HAAddr, d), rand.Reader); err == nil || !bytes.Equal(b, []byte{1}) {
		t.Errorf("got AppendBA %x, error = %v past the last sequence number; want b unchanged and an error", b, err)
	}
}

// FuzzKeyringParseRequest feeds arbitrary packets to a keyring: whatever it
// drops, it drops with an error the event log can name, and whatever it
// takes is a Binding Update for a home address it may take one for.
func FuzzKeyringParseRequest(f *testing.F) {
	sas := testSAs(f, esp.NullHMACSHA256)
	f.Add(protectedBU(f, sas[0], 1, homeBU(1)))
	f.Add(buPacket(homeBU(1)))
	other := homeBU(1)
	other.HomeAddress = netip.MustParseAddr("2001:db8:2000::99")
	f.Add(buPacket(other))
	f.Add(sealClear(f, sas[0], 3, buPacket(homeBU(2))))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		k := testKeyring(t, esp.NullHMACSHA256)
		r, espSeq, err := k.ParseRequest(pkt)
		if err != nil {
			for _, s := range []error{ErrNotBU, ErrMalformed, ErrChecksum, ErrUnprotected, ErrUnknownSPI, ErrReplay,
				esp.ErrAuth, esp.ErrSelector, esp.ErrShort, esp.ErrBlockSize, esp.ErrPadding, esp.ErrSPI, esp.ErrNotESP} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("got ParseRequest error = %v, want one wrapping a sentinel", err)
		}
		hoa := r.HomeAddress
		if !hoa.IsValid() {
			hoa = r.CareOf
		}
		if k.Protected(hoa) != (espSeq != 0) {
			t.Errorf("got a request for %v with ESP sequence %d, want ESP exactly for protected home addresses", hoa, espSeq)
		}
	})
}
