package esp

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"testing/iotest"
)

// Lab addresses from DESIGN.md.
var (
	coa    = netip.MustParseAddr("2001:db8:3000::3")
	haAddr = netip.MustParseAddr("2001:db8:2000::1")
	hoa    = netip.MustParseAddr("2001:db8:2000::10")
	hoa2   = netip.MustParseAddr("2001:db8:2000::11")
)

var allAlgorithms = []Algorithm{AESCBCHMACSHA256, AESGCM16, NullHMACSHA256, AESCBCHMACSHA1}

// testKey returns n recognisable octets: 0xa5, 0xa6, ...
func testKey(first byte, n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = first + byte(i)
	}
	return k
}

// testSA returns an SA for alg with keys from testKey starting at first.
func testSA(t testing.TB, alg Algorithm, spi uint32, src, dst netip.Addr, first byte) SA {
	t.Helper()
	sa, err := NewSA(spi, src, dst, alg, testKey(first, alg.EncKeyLen()), testKey(first+0x40, alg.AuthKeyLen()))
	if err != nil {
		t.Fatalf("got NewSA(%v) error = %v, want nil", alg, err)
	}
	return sa
}

func TestSealOpenRoundTrip(t *testing.T) {
	for _, alg := range allAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			sa := testSA(t, alg, 0x1000, hoa, haAddr, 0x11)
			p, _ := alg.params()
			for n := 0; n <= 48; n++ {
				payload := testKey(byte(n), n)
				seq := uint32(n + 1)
				pkt, err := sa.Seal([]byte("prefix"), seq, 135, payload, rand.Reader)
				if err != nil {
					t.Fatalf("got Seal error = %v, want nil", err)
				}
				if !bytes.HasPrefix(pkt, []byte("prefix")) {
					t.Fatalf("got Seal output %x, want it appended to dst", pkt)
				}
				pkt = pkt[len("prefix"):]
				if got, want := binary.BigEndian.Uint32(pkt), sa.SPI; got != want {
					t.Errorf("got SPI %#x, want %#x", got, want)
				}
				if got := binary.BigEndian.Uint32(pkt[4:]); got != seq {
					t.Errorf("got sequence %d, want %d", got, seq)
				}
				// RFC 4303 §2.4: the encrypted part fills whole blocks
				// and ends on a 4-octet boundary, with the least padding.
				enc := len(pkt) - hdrLen - p.iv - p.icv
				align := max(p.block, 4)
				if enc%align != 0 || enc-(n+trailerLen) >= align || enc < n+trailerLen {
					t.Errorf("payload %d octets: got %d octets encrypted, want the next multiple of %d", n, enc, align)
				}
				gotSeq, nh, got, err := sa.Open(pkt)
				if err != nil {
					t.Fatalf("got Open error = %v, want nil", err)
				}
				if gotSeq != seq || nh != 135 || !bytes.Equal(got, payload) {
					t.Errorf("got Open = %d, %d, %x; want %d, 135, %x", gotSeq, nh, got, seq, payload)
				}
			}
		})
	}
}

// TestPaddingOctets checks the default padding 1, 2, 3, ... of RFC 4303
// §2.4 on the one algorithm whose plaintext is on the wire.
func TestPaddingOctets(t *testing.T) {
	sa := testSA(t, NullHMACSHA256, 0x1000, hoa, haAddr, 1)
	pkt, err := sa.Seal(nil, 1, 135, []byte{0xee}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// 1 octet of payload, then 1 octet of padding to reach 4 with the trailer.
	if got, want := pkt[hdrLen:len(pkt)-16], []byte{0xee, 1, 1, 135}; !bytes.Equal(got, want) {
		t.Errorf("got payload, padding and trailer %x, want %x", got, want)
	}
}

func TestSealErrors(t *testing.T) {
	sa := testSA(t, AESCBCHMACSHA256, 0x1000, hoa, haAddr, 1)
	if _, err := sa.Seal(nil, 0, 135, nil, rand.Reader); !errors.Is(err, ErrSequence) {
		t.Errorf("got Seal(seq 0) error = %v, want ErrSequence", err)
	}
	boom := errors.New("no randomness")
	b, err := sa.Seal([]byte{1, 2}, 1, 135, nil, iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Errorf("got Seal error = %v with a failing reader, want it wrapped", err)
	}
	if !bytes.Equal(b, []byte{1, 2}) {
		t.Errorf("got Seal output %x after an error, want dst unchanged", b)
	}
	var zero SA
	if _, err := zero.Seal(nil, 1, 135, nil, rand.Reader); err == nil {
		t.Error("got no Seal error with a zero SA, want one")
	}
	if _, _, _, err := zero.Open(make([]byte, 64)); err == nil {
		t.Error("got no Open error with a zero SA, want one")
	}
}

// TestTamper flips every bit of a sealed packet in turn: each must fail
// the integrity check, whichever field it lands in.
func TestTamper(t *testing.T) {
	for _, alg := range allAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			sa := testSA(t, alg, 0x1000, hoa, haAddr, 0x21)
			pkt, err := sa.Seal(nil, 7, 135, testKey(0, 24), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 8 * len(pkt) {
				bad := bytes.Clone(pkt)
				bad[i/8] ^= 0x80 >> (i % 8)
				if _, _, _, err := sa.Open(bad); !errors.Is(err, ErrAuth) {
					t.Fatalf("bit %d flipped: got Open error = %v, want ErrAuth", i, err)
				}
			}
			// Another SA's keys, same SPI: also ErrAuth.
			other := testSA(t, alg, 0x1000, hoa, haAddr, 0x22)
			if _, _, _, err := other.Open(pkt); !errors.Is(err, ErrAuth) {
				t.Errorf("got Open error = %v with other keys, want ErrAuth", err)
			}
			if _, _, _, err := sa.Open(pkt[:len(pkt)-4]); !errors.Is(err, ErrAuth) && !errors.Is(err, ErrShort) {
				t.Errorf("got Open error = %v for a shortened packet, want ErrAuth or ErrShort", err)
			}
		})
	}
}

// nullPacket builds an ESP packet with NULL encryption and a valid
// HMAC-SHA-256-128 ICV around plaintext pt (payload, padding and trailer as
// given), so that the checks after authentication can be reached.
func nullPacket(sa SA, spi, seq uint32, pt []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, spi)
	b = binary.BigEndian.AppendUint32(b, seq)
	b = append(b, pt...)
	m := hmac.New(sha256.New, testKey(0x41, 32))
	m.Write(b)
	return append(b, m.Sum(nil)[:16]...)
}

func TestOpenErrors(t *testing.T) {
	sa := testSA(t, NullHMACSHA256, 0x1000, hoa, haAddr, 1)
	cbc := testSA(t, AESCBCHMACSHA256, 0x1000, hoa, haAddr, 1)
	cbcPkt, err := cbc.Seal(nil, 1, 135, testKey(0, 24), rand.Reader) // two blocks
	if err != nil {
		t.Fatal(err)
	}
	// A CBC packet one octet short of whole blocks, with its ICV made
	// right again.
	misaligned := append([]byte(nil), cbcPkt[:len(cbcPkt)-16-1]...)
	m := hmac.New(sha256.New, testKey(0x41, 32))
	m.Write(misaligned)
	misaligned = append(misaligned, m.Sum(nil)[:16]...)
	for _, c := range []struct {
		name string
		sa   SA
		pkt  []byte
		want error
	}{
		{"empty", sa, nil, ErrShort},
		{"header and ICV only", sa, nullPacket(sa, 0x1000, 1, nil), ErrShort},
		{"CBC shorter than a block", cbc, cbcPkt[:8+16+15+16], ErrShort},
		{"CBC not whole blocks", cbc, misaligned, ErrBlockSize},
		{"another SPI", sa, nullPacket(sa, 0x1001, 1, []byte{1, 2, 0, 135}), ErrSPI},
		{"sequence 0", sa, nullPacket(sa, 0x1000, 0, []byte{1, 2, 0, 135}), ErrSequence},
		{"pad length beyond the payload", sa, nullPacket(sa, 0x1000, 1, []byte{1, 2, 3, 135}), ErrPadding},
		{"padding not 1, 2", sa, nullPacket(sa, 0x1000, 1, []byte{2, 1, 2, 135}), ErrPadding},
		{"padding zeros", sa, nullPacket(sa, 0x1000, 1, []byte{0, 0, 2, 135}), ErrPadding},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, _, _, err := c.sa.Open(c.pkt); !errors.Is(err, c.want) {
				t.Errorf("got Open error = %v, want %v", err, c.want)
			}
		})
	}
	// Longer padding than needed is allowed (RFC 4303 §2.4: up to 255).
	seq, nh, payload, err := sa.Open(nullPacket(sa, 0x1000, 9, []byte{0xee, 0xff, 1, 2, 3, 4, 5, 6, 6, 59}))
	if err != nil || seq != 9 || nh != 59 || !bytes.Equal(payload, []byte{0xee, 0xff}) {
		t.Errorf("got Open = %d, %d, %x, %v; want 9, 59, eeff, nil", seq, nh, payload, err)
	}
}

func TestOpenDoesNotAlias(t *testing.T) {
	for _, alg := range allAlgorithms {
		sa := testSA(t, alg, 0x1000, hoa, haAddr, 1)
		pkt, err := sa.Seal(nil, 1, 135, testKey(0, 16), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		orig := bytes.Clone(pkt)
		_, _, payload, err := sa.Open(pkt)
		if err != nil {
			t.Fatal(err)
		}
		for i := range payload {
			payload[i] = 0
		}
		if !bytes.Equal(pkt, orig) {
			t.Errorf("%v: got the packet changed through Open's payload or by Open, want it untouched", alg)
		}
	}
}

func TestNewSAKeyLengths(t *testing.T) {
	for _, alg := range allAlgorithms {
		e, a := alg.EncKeyLen(), alg.AuthKeyLen()
		for _, c := range [][2]int{{e + 1, a}, {e, a + 1}, {max(e-1, 0), a + 2}} {
			if _, err := NewSA(0x1000, hoa, haAddr, alg, make([]byte, c[0]), make([]byte, c[1])); !errors.Is(err, ErrKey) {
				t.Errorf("%v with keys of %d and %d octets: got NewSA error = %v, want ErrKey", alg, c[0], c[1], err)
			}
		}
	}
	if _, err := NewSA(0x1000, hoa, haAddr, Algorithm(0), nil, nil); err == nil {
		t.Error("got no NewSA error for algorithm 0, want one")
	}
}
