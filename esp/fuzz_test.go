package esp

import (
	"bytes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/kgswitch/kgswitch/mipv6"
)

// fuzzSAs are the SAs the fuzz targets open with, one per algorithm, all
// with SPI 0x1000.
func fuzzSAs(t testing.TB) []SA {
	var sas []SA
	for _, alg := range allAlgorithms {
		sas = append(sas, testSA(t, alg, 0x1000, hoa, haAddr, 0x31))
	}
	return sas
}

// checkErr fails unless err wraps one of the sentinels callers classify
// errors by.
func checkErr(t *testing.T, err error) {
	t.Helper()
	for _, s := range []error{ErrShort, ErrSPI, ErrAuth, ErrBlockSize, ErrPadding, ErrSequence, ErrNotESP, ErrSelector,
		mipv6.ErrTruncated, mipv6.ErrBadLength, mipv6.ErrChecksum, mipv6.ErrUnknownType, mipv6.ErrWrongType,
		mipv6.ErrPayloadProto, mipv6.ErrNotIPv6, mipv6.ErrNotMobility, mipv6.ErrFragment, mipv6.ErrBadExtHeader,
		mipv6.ErrBadRoutingHeader, mipv6.ErrBadOption, mipv6.ErrNoHomeAddress} {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("got error = %v, want one wrapping a sentinel", err)
}

// FuzzOpen opens arbitrary ESP with each algorithm. What opens must be what
// Seal makes of the result with the same IV, padding aside.
func FuzzOpen(f *testing.F) {
	for _, sa := range fuzzSAs(f) {
		for _, n := range []int{0, 1, 14, 24, 40} {
			pkt, err := sa.Seal(nil, uint32(n+1), 135, testKey(byte(n), n), rand.Reader)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(pkt)
		}
	}
	sas := fuzzSAs(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		orig := bytes.Clone(pkt)
		for _, sa := range sas {
			seq, nh, payload, err := sa.Open(pkt)
			if !bytes.Equal(pkt, orig) {
				t.Fatalf("%v: got the packet changed by Open, want it untouched", sa.Algorithm)
			}
			if err != nil {
				checkErr(t, err)
				continue
			}
			p, _ := sa.Algorithm.params()
			again, err := sa.Seal(nil, seq, nh, payload, bytes.NewReader(pkt[hdrLen:hdrLen+p.iv]))
			if err != nil {
				t.Fatalf("%v: got Seal error = %v after Open, want nil", sa.Algorithm, err)
			}
			if len(again) == len(pkt) && !bytes.Equal(again, pkt) {
				t.Errorf("%v: got Seal of Open's result\n%x\nwant the packet\n%x", sa.Algorithm, again, pkt)
			}
		}
	})
}

// FuzzOpenTrailer authenticates arbitrary plaintext the way each algorithm
// would, so that what Open does after the integrity check, which a fuzzer
// could never forge its way to, gets fuzzed too.
func FuzzOpenTrailer(f *testing.F) {
	f.Add(uint8(0), uint32(1), []byte{0xee, 1, 1, 135})
	f.Add(uint8(1), uint32(0), []byte{0xee, 1, 1, 135})
	f.Add(uint8(2), uint32(5), []byte{1, 2, 3, 4, 5, 6, 6, 59})
	f.Add(uint8(3), uint32(5), bytes.Repeat([]byte{15}, 16))
	sas := fuzzSAs(f)
	f.Fuzz(func(t *testing.T, which uint8, seq uint32, pt []byte) {
		sa := sas[int(which)%len(sas)]
		k := sa.k
		pkt := binary.BigEndian.AppendUint32(nil, sa.SPI)
		pkt = binary.BigEndian.AppendUint32(pkt, seq)
		iv := testKey(which, k.p.iv)
		pkt = append(pkt, iv...)
		switch {
		case k.aead != nil:
			nonce := k.nonce(iv)
			pkt = k.aead.Seal(pkt, nonce[:], pt, pkt[:hdrLen])
		case k.block != nil:
			pt = pt[:len(pt)/k.p.block*k.p.block]
			ct := make([]byte, len(pt))
			cipher.NewCBCEncrypter(k.block, iv).CryptBlocks(ct, pt)
			pkt = append(pkt, ct...)
		default:
			pkt = append(pkt, pt...)
		}
		if k.hash != nil {
			m := hmac.New(k.hash, k.authKey)
			m.Write(pkt)
			pkt = append(pkt, m.Sum(nil)[:k.p.icv]...)
		}
		gotSeq, nh, payload, err := sa.Open(pkt)
		if err != nil {
			if errors.Is(err, ErrAuth) {
				t.Fatalf("got ErrAuth for an authentic packet: %v", err)
			}
			checkErr(t, err)
			return
		}
		padLen := len(pt) - len(payload) - trailerLen
		want := append(bytes.Clone(payload), testKey(1, padLen)...)
		want = append(want, byte(padLen), nh)
		if gotSeq != seq || seq == 0 || !bytes.Equal(want, pt) {
			t.Errorf("got Open = %d, %d, %x from plaintext %x sequence %d", gotSeq, nh, payload, pt, seq)
		}
	})
}

// FuzzParseBAPacket parses arbitrary packets as Acknowledgements: no
// panic, every error classified, and what parses builds again.
func FuzzParseBAPacket(f *testing.F) {
	sa := testSA(f, AESGCM16, 0x1000, haAddr, hoa, 0x31)
	ba, err := AppendBAPacket(nil, &sa, 1, testBA(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ba)
	f.Add(mipv6.AppendBAPacket(nil, testBA()))
	for _, g := range loadGolden(f) {
		f.Add(unhex(f, g.Hex))
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		PacketSPI(pkt)
		seq, p, err := ParseBAPacket(pkt, &sa)
		if err != nil {
			checkErr(t, err)
			return
		}
		again, err := AppendBAPacket(nil, &sa, seq, p, rand.Reader)
		if err != nil {
			t.Fatalf("got AppendBAPacket error = %v for %+v, want nil", err, p)
		}
		if s2, p2, err := ParseBAPacket(again, &sa); err != nil || s2 != seq || p2 != p {
			t.Errorf("got ParseBAPacket of the rebuilt packet = %d, %+v, %v; want %d, %+v, nil", s2, p2, err, seq, p)
		}
	})
}

// FuzzParseKeys parses arbitrary key files: no panic, every error names the
// file and line, and every SA it gives seals and opens.
func FuzzParseKeys(f *testing.F) {
	for _, s := range []string{
		"ip xfrm state add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 0x1000 mode transport enc cbc(aes) " + kAES + " auth-trunc hmac(sha256) " + kSHA256 + " 128\n",
		"ip -6 xfrm state add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 4097 reqid 7 replay-window 32 aead 'rfc4106(gcm(aes))' " + kGCM + " 128",
		"xfrm state add src ::1 dst ::2 \\\n proto esp spi 0x1000 enc cipher_null \"\" auth-trunc sha256 " + kSHA256 + " 128 # x\n",
		"ip xfrm state add src ::1 dst ::2 proto esp spi 0x1000 enc aes " + kAES + " auth sha1 " + kSHA1,
		"add ::1 ::2 esp 0x1000 -m transport -E rijndael-cbc " + kAES + " -A hmac-sha1 \"0123456789abcdefghij\";\nadd ::2 ::1 esp 0x1000\n -m transport -E aes-gcm-16 " + kGCM + " ;",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		sas, err := ParseKeys("keys", []byte(text))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "keys:") {
				t.Fatalf("got error %q, want it to start with keys:LINE:", err)
			}
			return
		}
		for _, sa := range sas {
			pkt, err := sa.Seal(nil, 1, 135, []byte("payload"), rand.Reader)
			if err != nil {
				t.Fatalf("%v: got Seal error = %v, want nil", sa, err)
			}
			if _, _, p, err := sa.Open(pkt); err != nil || string(p) != "payload" {
				t.Fatalf("%v: got Open = %q, %v; want payload, nil", sa, p, err)
			}
			if !sa.Src.Is6() || !sa.Dst.Is6() || sa.SPI < 256 {
				t.Errorf("got SA %v, want IPv6 addresses and an unreserved SPI", sa)
			}
		}
	})
}
