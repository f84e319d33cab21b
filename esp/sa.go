package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"net/netip"
)

// Algorithm is one of the ESP transforms this package implements: an
// encryption algorithm and an integrity algorithm, or one combined-mode
// algorithm. They are the ones a Linux Home Agent offers for manually keyed
// SAs.
type Algorithm uint8

const (
	// AESCBCHMACSHA256 is AES-CBC with a 128-bit key (RFC 3602) and
	// HMAC-SHA-256-128 with a 256-bit key (RFC 4868).
	AESCBCHMACSHA256 Algorithm = iota + 1
	// AESGCM16 is AES-GCM with a 128-bit key, a 4-octet salt and a 16-octet
	// ICV (RFC 4106); Linux calls it rfc4106(gcm(aes)) with a 160-bit key
	// and a 128-bit ICV.
	AESGCM16
	// NullHMACSHA256 is no encryption (RFC 2410) with HMAC-SHA-256-128
	// (RFC 4868): integrity without confidentiality, which is what
	// signalling needs.
	NullHMACSHA256
	// AESCBCHMACSHA1 is AES-CBC with a 128-bit key (RFC 3602) and
	// HMAC-SHA1-96 with a 160-bit key (RFC 2404).
	AESCBCHMACSHA1
)

// params are an Algorithm's sizes in octets.
type params struct {
	name    string
	encKey  int // including GCM's salt
	authKey int
	iv      int
	block   int // cipher block size; 1 for NULL and GCM
	icv     int
}

var algorithms = [...]params{
	AESCBCHMACSHA256: {"aes-cbc-128/hmac-sha256-128", 16, 32, aes.BlockSize, aes.BlockSize, 16},
	AESGCM16:         {"aes-gcm-128/icv-16", 16 + gcmSalt, 0, gcmIV, 1, 16},
	NullHMACSHA256:   {"null/hmac-sha256-128", 0, 32, 0, 1, 16},
	AESCBCHMACSHA1:   {"aes-cbc-128/hmac-sha1-96", 16, 20, aes.BlockSize, aes.BlockSize, 12},
}

// RFC 4106 §3.1, §4: the 8-octet explicit IV on the wire and the 4-octet
// salt, from the end of the key material, that precedes it in the nonce.
const (
	gcmIV   = 8
	gcmSalt = 4
)

func (a Algorithm) params() (params, bool) {
	if a == 0 || int(a) >= len(algorithms) {
		return params{}, false
	}
	return algorithms[a], true
}

// String returns a short name such as "aes-cbc-128/hmac-sha256-128".
func (a Algorithm) String() string {
	if p, ok := a.params(); ok {
		return p.name
	}
	return fmt.Sprintf("algorithm %d", uint8(a))
}

// EncKeyLen returns the length in octets of the encryption key material a
// (for AESGCM16 the key and salt together), 0 for NullHMACSHA256.
func (a Algorithm) EncKeyLen() int { p, _ := a.params(); return p.encKey }

// AuthKeyLen returns the length in octets of the integrity key, 0 for
// AESGCM16, whose integrity comes with the encryption key.
func (a Algorithm) AuthKeyLen() int { p, _ := a.params(); return p.authKey }

// SA is one manually keyed ESP security association in transport mode
// (RFC 4301 §4.1, §4.4.2.1): its SPI, the addresses it is bound to, its
// algorithm and, hidden, its keys. The zero SA is unusable; NewSA and
// ParseKeyFile make SAs. An SA holds no sequence number: the sender counts
// and the receiver keeps its replay window. It is safe for concurrent use.
//
// Its keys are in no exported field and behind a pointer, so no fmt verb
// prints them, even for an SA nested in another value.
type SA struct {
	SPI uint32
	// Src and Dst are the addresses the SA is bound to: the home address
	// and the Home Agent for Binding Updates, the reverse for Binding
	// Acknowledgements (RFC 3776 §5.2), never the care-of address.
	Src, Dst netip.Addr
	// Algorithm is the one NewSA was given and keyed; changing it
	// changes what String says, not how the SA seals and opens.
	Algorithm Algorithm

	k *keys
}

// keys is what an SA needs to seal and open, derived once from the keys.
type keys struct {
	p       params
	block   cipher.Block // AES-CBC
	aead    cipher.AEAD  // AES-GCM
	salt    [gcmSalt]byte
	authKey []byte
	hash    func() hash.Hash
}

// NewSA returns an SA with copies of the given keys, which must have the
// lengths the algorithm needs (Algorithm.EncKeyLen, AuthKeyLen; empty
// where that is 0). Errors wrap ErrKey and never contain the keys.
func NewSA(spi uint32, src, dst netip.Addr, alg Algorithm, encKey, authKey []byte) (SA, error) {
	p, ok := alg.params()
	if !ok {
		return SA{}, fmt.Errorf("esp: unknown algorithm %d", uint8(alg))
	}
	if len(encKey) != p.encKey {
		return SA{}, fmt.Errorf("%v encryption key: %d bits, want %d: %w", alg, 8*len(encKey), 8*p.encKey, ErrKey)
	}
	if len(authKey) != p.authKey {
		return SA{}, fmt.Errorf("%v integrity key: %d bits, want %d: %w", alg, 8*len(authKey), 8*p.authKey, ErrKey)
	}
	k := &keys{p: p, authKey: append([]byte(nil), authKey...)}
	switch alg {
	case AESCBCHMACSHA256, AESCBCHMACSHA1:
		b, err := aes.NewCipher(encKey)
		if err != nil {
			return SA{}, fmt.Errorf("%v: %w", alg, ErrKey)
		}
		k.block = b
	case AESGCM16:
		b, err := aes.NewCipher(encKey[:len(encKey)-gcmSalt])
		if err != nil {
			return SA{}, fmt.Errorf("%v: %w", alg, ErrKey)
		}
		if k.aead, err = cipher.NewGCM(b); err != nil {
			return SA{}, fmt.Errorf("%v: %v", alg, err)
		}
		copy(k.salt[:], encKey[len(encKey)-gcmSalt:])
	}
	switch alg {
	case AESCBCHMACSHA256, NullHMACSHA256:
		k.hash = sha256.New
	case AESCBCHMACSHA1:
		k.hash = sha1.New
	}
	return SA{SPI: spi, Src: src, Dst: dst, Algorithm: alg, k: k}, nil
}

// String describes the SA without its keys, e.g. "esp spi 0x00001000
// 2001:db8:2000::10 -> 2001:db8:2000::1 aes-gcm-128/icv-16".
func (sa SA) String() string {
	return fmt.Sprintf("esp spi %#08x %v -> %v %v", sa.SPI, sa.Src, sa.Dst, sa.Algorithm)
}

// Format writes String for every verb, %#v and %x among them, so that no
// verb prints the keys.
func (sa SA) Format(f fmt.State, _ rune) { io.WriteString(f, sa.String()) }

// ESP header and trailer layout, RFC 4303 §2.
const (
	hdrLen     = 8 // SPI, Sequence Number
	trailerLen = 2 // Pad Length, Next Header
)

// Seal appends to dst the ESP header, IV, encrypted payload and trailer and
// the ICV that carry payload, an upper-layer message (for Mobile IPv6
// signalling the Mobility Header) whose protocol number is nextHeader, with
// sequence number seq (RFC 4303 §2, §3.3): the IPv6 payload that follows
// the headers left in clear in transport mode. The padding is the default
// 1, 2, 3, ... that brings the encrypted part to a multiple of the block
// size and of 4 octets (§2.4). The IV is read from rand: a random CBC IV
// (RFC 3602 §3), or GCM's 8-octet explicit IV (RFC 4106 §3.1), random
// rather than counted so that a sender that restarts its sequence numbers
// with the same keys never reuses a nonce; at signalling rates a collision
// within the 2^32 packets an SA may carry is negligible. seq 0 is refused
// (ErrSequence): RFC 4303 §3.3.3 starts at 1.
func (sa *SA) Seal(dst []byte, seq uint32, nextHeader uint8, payload []byte, rand io.Reader) ([]byte, error) {
	if sa.k == nil {
		return dst, fmt.Errorf("esp: Seal with a zero SA")
	}
	if seq == 0 {
		return dst, fmt.Errorf("esp: Seal: %w", ErrSequence)
	}
	p := sa.k.p
	align := 4
	if p.block > align {
		align = p.block // 16, a multiple of 4
	}
	padLen := (align - (len(payload)+trailerLen)%align) % align
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, sa.SPI)
	dst = binary.BigEndian.AppendUint32(dst, seq)
	ivAt := len(dst)
	dst = append(dst, make([]byte, p.iv)...)
	if _, err := io.ReadFull(rand, dst[ivAt:]); err != nil {
		return dst[:start], fmt.Errorf("esp: reading the IV: %w", err)
	}
	ptAt := len(dst)
	dst = append(dst, payload...)
	for i := 1; i <= padLen; i++ {
		dst = append(dst, byte(i))
	}
	dst = append(dst, byte(padLen), nextHeader)
	switch {
	case sa.k.aead != nil:
		nonce := sa.k.nonce(dst[ivAt:ptAt])
		// Sealed in place: the plaintext is replaced by ciphertext and tag,
		// with the SPI and sequence number as additional data (RFC 4106 §5).
		dst = sa.k.aead.Seal(dst[:ptAt], nonce[:], dst[ptAt:], dst[start:ivAt])
	case sa.k.block != nil:
		cipher.NewCBCEncrypter(sa.k.block, dst[ivAt:ptAt]).CryptBlocks(dst[ptAt:], dst[ptAt:])
	}
	if sa.k.hash != nil {
		m := hmac.New(sa.k.hash, sa.k.authKey)
		m.Write(dst[start:])
		dst = m.Sum(dst)[:len(dst)+p.icv] // truncated, RFC 2404 §2, RFC 4868 §2.1.1
	}
	return dst, nil
}

// nonce is RFC 4106 §4: salt, then the explicit IV.
func (k *keys) nonce(iv []byte) [gcmSalt + gcmIV]byte {
	var n [gcmSalt + gcmIV]byte
	copy(n[:], k.salt[:])
	copy(n[gcmSalt:], iv)
	return n
}

// Open checks and decrypts pkt, which starts at the ESP header and runs to
// the end of the IPv6 payload, and returns its sequence number, the Next
// Header of the payload and the payload (RFC 4303 §3.4). Authentication
// comes first (§3.4.4; for GCM together with decryption, RFC 4106 §5): a
// packet that fails it, whichever bit was changed, is neither decrypted nor
// looked into further (ErrAuth), and the comparison takes constant time.
// Then the SPI must be the SA's (ErrSPI);
// sequence number 0 is refused (ErrSequence); the replay check, which needs
// the receiver's window, is the caller's. The payload does not alias pkt.
// A Next Header of 59 is a dummy packet (§2.6) the caller drops.
func (sa *SA) Open(pkt []byte) (seq uint32, nextHeader uint8, payload []byte, err error) {
	if sa.k == nil {
		return 0, 0, nil, fmt.Errorf("esp: Open with a zero SA")
	}
	p := sa.k.p
	minCT := trailerLen
	if p.block > 1 {
		minCT = p.block
	}
	if len(pkt) < hdrLen+p.iv+minCT+p.icv {
		return 0, 0, nil, fmt.Errorf("esp: %d octets, %v needs at least %d: %w", len(pkt), sa.Algorithm, hdrLen+p.iv+minCT+p.icv, ErrShort)
	}
	seq = binary.BigEndian.Uint32(pkt[4:])
	iv := pkt[hdrLen : hdrLen+p.iv]
	ct := pkt[hdrLen+p.iv : len(pkt)-p.icv]
	var pt []byte
	switch {
	case sa.k.aead != nil:
		nonce := sa.k.nonce(iv)
		pt, err = sa.k.aead.Open(nil, nonce[:], pkt[hdrLen+p.iv:], pkt[:hdrLen])
		if err != nil {
			return 0, 0, nil, fmt.Errorf("esp: SPI %#08x sequence %d: %w", sa.SPI, seq, ErrAuth)
		}
	default:
		m := hmac.New(sa.k.hash, sa.k.authKey)
		m.Write(pkt[:len(pkt)-p.icv])
		if !hmac.Equal(m.Sum(nil)[:p.icv], pkt[len(pkt)-p.icv:]) {
			return 0, 0, nil, fmt.Errorf("esp: SPI %#08x sequence %d: %w", sa.SPI, seq, ErrAuth)
		}
		if sa.k.block != nil {
			if len(ct)%p.block != 0 {
				return 0, 0, nil, fmt.Errorf("esp: %d octets of ciphertext: %w", len(ct), ErrBlockSize)
			}
			pt = make([]byte, len(ct))
			cipher.NewCBCDecrypter(sa.k.block, iv).CryptBlocks(pt, ct)
		} else {
			pt = append([]byte(nil), ct...)
		}
	}
	// Only now: the ICV covers the SPI, so a changed SPI fails as any
	// other change does, and a packet that passes but names another SPI
	// was sealed with these keys under another SA.
	if spi := binary.BigEndian.Uint32(pkt); spi != sa.SPI {
		return 0, 0, nil, fmt.Errorf("esp: SPI %#08x, SA's %#08x: %w", spi, sa.SPI, ErrSPI)
	}
	if seq == 0 {
		return 0, 0, nil, fmt.Errorf("esp: SPI %#08x: %w", sa.SPI, ErrSequence)
	}
	padLen := int(pt[len(pt)-2])
	nextHeader = pt[len(pt)-1]
	if padLen+trailerLen > len(pt) {
		return 0, 0, nil, fmt.Errorf("esp: pad length %d, %d octets decrypted: %w", padLen, len(pt), ErrPadding)
	}
	payload = pt[:len(pt)-trailerLen-padLen]
	for i, b := range pt[len(payload) : len(pt)-trailerLen] {
		if int(b) != i+1 {
			return 0, 0, nil, fmt.Errorf("esp: padding octet %d is %d: %w", i+1, b, ErrPadding)
		}
	}
	return seq, nextHeader, payload, nil
}
