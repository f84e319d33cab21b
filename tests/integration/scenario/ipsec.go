package scenario

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// KeyLines returns the `ip xfrm state add` lines of the two manually keyed
// ESP SAs between guest g's home address and its Home Agent, with algorithm
// alg and keys and SPIs read from rand: first the Binding Update SA (src
// HoA dst HA), then the Acknowledgement SA (src HA dst HoA). They are the
// lines an operator installs on a Linux Home Agent, replay window 32
// included, and the ones kgswitch's key file and the lab Home Agent's
// -ipsec-keys take.
func KeyLines(g lab.Guest, alg esp.Algorithm, rand io.Reader) ([]string, error) {
	key := func(n int) (string, error) {
		k := make([]byte, n)
		if _, err := io.ReadFull(rand, k); err != nil {
			return "", err
		}
		return "0x" + hex.EncodeToString(k), nil
	}
	var lines []string
	var spis []uint32
	for _, ends := range [][2]string{{g.HoA.String(), g.Home.HAAddr.String()}, {g.Home.HAAddr.String(), g.HoA.String()}} {
		var b [4]byte
		if _, err := io.ReadFull(rand, b[:]); err != nil {
			return nil, err
		}
		// Above the range RFC 4303 §2.1 reserves, and distinct, so that
		// one SA never stands for the other.
		spi := binary.BigEndian.Uint32(b[:])%0xfffff000 + 0x1000
		if len(spis) == 1 && spi == spis[0] {
			spi ^= 1
		}
		spis = append(spis, spi)
		enc, err := key(alg.EncKeyLen())
		if err != nil {
			return nil, err
		}
		auth, err := key(alg.AuthKeyLen())
		if err != nil {
			return nil, err
		}
		var algo string
		switch alg {
		case esp.AESCBCHMACSHA256:
			algo = fmt.Sprintf("enc 'cbc(aes)' %s auth-trunc 'hmac(sha256)' %s 128", enc, auth)
		case esp.AESGCM16:
			algo = fmt.Sprintf("aead 'rfc4106(gcm(aes))' %s 128", enc)
		case esp.NullHMACSHA256:
			algo = fmt.Sprintf(`enc cipher_null "" auth-trunc 'hmac(sha256)' %s 128`, auth)
		case esp.AESCBCHMACSHA1:
			algo = fmt.Sprintf("enc 'cbc(aes)' %s auth-trunc 'hmac(sha1)' %s 96", enc, auth)
		default:
			return nil, fmt.Errorf("scenario: no ip xfrm line for %v", alg)
		}
		lines = append(lines, fmt.Sprintf("ip xfrm state add src %s dst %s proto esp spi %#x replay-window 32 mode transport %s",
			ends[0], ends[1], spi, algo))
	}
	return lines, nil
}

// WriteKeyFile writes KeyLines for g with random keys to a file in dir,
// mode 0600 as esp.ParseKeyFile wants it, checks that esp.ParseKeyFile
// reads both SAs back, and returns its path and lines. kgswitch and the lab
// Home Agent (StartHomeAgentOf with "-ipsec-keys", path) can share it.
func WriteKeyFile(dir string, g lab.Guest, alg esp.Algorithm) (string, []string, error) {
	lines, err := KeyLines(g, alg, rand.Reader)
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "ipsec-"+g.Node+".keys")
	// Removed first: WriteFile keeps the mode of a file that exists.
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return "", nil, err
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return "", nil, err
	}
	if sas, err := esp.ParseKeyFile(path); err != nil || len(sas) != 2 {
		return "", nil, fmt.Errorf("scenario: key file %s reads back as %d SAs, %v", path, len(sas), err)
	}
	return path, lines, nil
}

// WriteKeyFile is WriteKeyFile in the lab's directory.
func (e *Env) WriteKeyFile(g lab.Guest, alg esp.Algorithm) (string, []string, error) {
	return WriteKeyFile(e.Lab.Dir, g, alg)
}
