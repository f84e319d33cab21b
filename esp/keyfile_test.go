package esp

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Keys of the key-file tests, as hex; no error may contain them.
var (
	kAES    = "0x" + hex.EncodeToString(testKey(0xa0, 16))
	kSHA256 = "0x" + hex.EncodeToString(testKey(0xb0, 32))
	kSHA1   = "0x" + hex.EncodeToString(testKey(0xc0, 20))
	kGCM    = "0x" + hex.EncodeToString(testKey(0xd0, 20))
)

// wantSA is an SA as a key-file line should give it, keys included.
type wantSA struct {
	spi           uint32
	src, dst      string
	alg           Algorithm
	encKey, authK []byte
}

func (w wantSA) sa(t *testing.T) SA {
	t.Helper()
	sa, err := NewSA(w.spi, mustAddr(w.src), mustAddr(w.dst), w.alg, w.encKey, w.authK)
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// sameSA fails unless got is want, keys included: what one seals the other
// opens, both ways.
func sameSA(t *testing.T, got, want SA) {
	t.Helper()
	if got.SPI != want.SPI || got.Src != want.Src || got.Dst != want.Dst || got.Algorithm != want.Algorithm {
		t.Fatalf("got SA %v, want %v", got, want)
	}
	for _, c := range [][2]SA{{got, want}, {want, got}} {
		pkt, err := c[0].Seal(nil, 1, 135, []byte("binding update"), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, p, err := c[1].Open(pkt); err != nil || string(p) != "binding update" {
			t.Fatalf("got Open = %q, %v across the parsed SA and the expected one, want the payload: keys differ", p, err)
		}
	}
}

func TestParseKeys(t *testing.T) {
	const ha, mn = "2001:db8:2000::1", "2001:db8:2000::10"
	aes, sha256k, sha1k, gcm := testKey(0xa0, 16), testKey(0xb0, 32), testKey(0xc0, 20), testKey(0xd0, 20)
	for _, c := range []struct {
		name string
		text string
		want []wantSA
	}{
		{"aes-cbc and hmac-sha256, both directions", fmt.Sprintf(`
# Binding Updates, then Acks (RFC 3776 §5.2)
ip xfrm state add src %[1]s dst %[2]s proto esp spi 0x1000 mode transport enc "cbc(aes)" %[3]s auth-trunc "hmac(sha256)" %[4]s 128
ip xfrm state add src %[2]s dst %[1]s proto esp spi 0x2000 mode transport enc 'cbc(aes)' %[3]s auth-trunc 'hmac(sha256)' %[4]s 128
`, mn, ha, kAES, kSHA256),
			[]wantSA{{0x1000, mn, ha, AESCBCHMACSHA256, aes, sha256k}, {0x2000, ha, mn, AESCBCHMACSHA256, aes, sha256k}}},
		{"aead gcm, ip -6, reqid, replay-window, decimal spi", fmt.Sprintf(
			"ip -6 xfrm state add src %s dst %s proto esp spi 4097 reqid 7 replay-window 32 mode transport aead 'rfc4106(gcm(aes))' %s 128\n", mn, ha, kGCM),
			[]wantSA{{4097, mn, ha, AESGCM16, gcm, nil}}},
		{"cipher_null with an empty key, batch form, continued lines", fmt.Sprintf(
			"xfrm state add src %s dst %s \\\n   proto esp spi 0x1000 \\\n   enc cipher_null \"\" auth-trunc sha256 %s 128 # no confidentiality\n", mn, ha, kSHA256),
			[]wantSA{{0x1000, mn, ha, NullHMACSHA256, nil, sha256k}}},
		{"aes-cbc and hmac-sha1-96 by auth-trunc, compat names, update", fmt.Sprintf(
			"ip xfrm state update src %s dst %s proto esp spi 0x1000 mode transport enc aes %s auth-trunc sha1 %s 96\n", mn, ha, kAES, kSHA1),
			[]wantSA{{0x1000, mn, ha, AESCBCHMACSHA1, aes, sha1k}}},
		{"hmac-sha1 by plain auth, mode left to its default", fmt.Sprintf(
			"ip xfrm state add src %s dst %s proto esp spi 0x1000 enc cbc(aes) %s auth hmac(sha1) %s\r\n", mn, ha, kAES, kSHA1),
			[]wantSA{{0x1000, mn, ha, AESCBCHMACSHA1, aes, sha1k}}},
		{"a key given as its octets", fmt.Sprintf(
			"ip xfrm state add src %s dst %s proto esp spi 0x1000 aead rfc4106(gcm(aes)) \"0123456789abcdefsalt\" 128\n", mn, ha),
			[]wantSA{{0x1000, mn, ha, AESGCM16, []byte("0123456789abcdefsalt"), nil}}},
		{"setkey", fmt.Sprintf(`
add %[1]s %[2]s esp 0x1000 -m transport -E rijndael-cbc %[3]s -A hmac-sha1 %[4]s;
add %[2]s %[1]s esp 0x2000
	-m transport
	-E aes-cbc %[3]s -A hmac-sha1 "%[5]s" ;
add %[1]s %[2]s esp 0x1001 -m transport -E aes-gcm-16 %[6]s;
`, mn, ha, kAES, kSHA1, "0123456789abcdefghij", kGCM),
			[]wantSA{{0x1000, mn, ha, AESCBCHMACSHA1, aes, sha1k}, {0x2000, ha, mn, AESCBCHMACSHA1, aes, []byte("0123456789abcdefghij")},
				{0x1001, mn, ha, AESGCM16, gcm, nil}}},
		{"nothing", "\n# only comments\n\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseKeys("keys", []byte(c.text))
			if err != nil {
				t.Fatalf("got ParseKeys error = %v, want nil", err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d SAs %v, want %d", len(got), got, len(c.want))
			}
			for i, w := range c.want {
				sameSA(t, got[i], w.sa(t))
			}
		})
	}
}

func TestParseKeysRefuses(t *testing.T) {
	const id = "ip xfrm state add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 0x1000"
	good := id + " mode transport enc cbc(aes) " + kAES + " auth-trunc hmac(sha256) " + kSHA256 + " 128"
	for _, c := range []struct {
		name, text, want string
	}{
		{"tunnel mode", id + " mode tunnel aead rfc4106(gcm(aes)) " + kGCM + " 128", `keys:1: mode "tunnel": only transport`},
		{"beet mode", id + " mode beet aead rfc4106(gcm(aes)) " + kGCM + " 128", `keys:1: mode "beet": only transport`},
		{"ah", strings.Replace(good, "proto esp", "proto ah", 1), `keys:1: proto "ah": only esp`},
		{"no integrity", id + " enc cbc(aes) " + kAES, "keys:1: want enc and auth-trunc, or aead"},
		{"sha256 truncated to 96 bits", id + " enc cbc(aes) " + kAES + " auth sha256 " + kSHA256, "keys:1: hmac(sha256) truncated to 96 bits"},
		{"sha256 with 96 by auth-trunc", id + " enc cbc(aes) " + kAES + " auth-trunc sha256 " + kSHA256 + " 96", "keys:1: hmac(sha256) truncated to 96 bits"},
		{"sha1 with 128", id + " enc cbc(aes) " + kAES + " auth-trunc sha1 " + kSHA1 + " 128", "keys:1: enc cbc(aes) with auth-trunc hmac(sha1) 128 is not supported"},
		{"null with sha1", id + " enc cipher_null '' auth sha1 " + kSHA1, "keys:1: enc ecb(cipher_null) with auth hmac(sha1) 96 is not supported"},
		{"gcm with a 64-bit ICV", id + " aead rfc4106(gcm(aes)) " + kGCM + " 64", "keys:1: aead rfc4106(gcm(aes)) with a 64-bit ICV"},
		{"aead and enc", id + " aead rfc4106(gcm(aes)) " + kGCM + " 128 enc cbc(aes) " + kAES, "keys:1: aead goes alone"},
		{"unknown algorithm", id + " enc cbc(des3_ede) " + kAES + " auth sha1 " + kSHA1, "keys:1: enc: word 14 is no algorithm supported here"},
		{"aes-256", id + " enc cbc(aes) " + kSHA256 + " auth-trunc sha256 " + kSHA256 + " 128", "keys:1: aes-cbc-128/hmac-sha256-128: encryption key of 256 bits, want 128"},
		{"short sha256 key", id + " enc cbc(aes) " + kAES + " auth-trunc sha256 " + kSHA1 + " 128", "keys:1: aes-cbc-128/hmac-sha256-128: integrity key of 160 bits, want 256"},
		{"gcm key without salt", id + " aead rfc4106(gcm(aes)) " + kAES + " 128", "keys:1: aes-gcm-128/icv-16: encryption key of 128 bits, want 160"},
		{"null with a key", id + " enc cipher_null " + kAES + " auth-trunc sha256 " + kSHA256 + " 128", "keys:1: null/hmac-sha256-128: encryption key of 128 bits, want 0"},
		{"odd hex", id + " aead rfc4106(gcm(aes)) " + kGCM + "f 128", "keys:1: aead rfc4106(gcm(aes)) key: not an even number of hex digits"},
		{"ipv4", strings.Replace(good, "2001:db8:2000::1 ", "192.0.2.1 ", 1), "keys:1: dst: word 8 is no IPv6 address"},
		{"reserved spi", strings.Replace(good, "0x1000", "0xff", 1), "keys:1: spi 255 is reserved"},
		{"spi too big", strings.Replace(good, "0x1000", "0x100000000", 1), "keys:1: spi is no 32-bit number"},
		{"no spi", strings.Replace(good, " spi 0x1000", "", 1), "keys:1: spi is required"},
		{"no proto", strings.Replace(good, " proto esp", "", 1), "keys:1: proto esp is required"},
		{"no dst", strings.Replace(good, " dst 2001:db8:2000::1", "", 1), "keys:1: src and dst are required"},
		{"keyword twice", good + " mode transport", `keys:1: "mode" given twice`},
		{"sel", good + " sel src ::/0", `keys:1: "sel" is not supported here`},
		{"unknown word", good + " frobnicate", "keys:1: word 22 is no keyword of ip xfrm state add"},
		{"key without its length", id + " aead rfc4106(gcm(aes)) " + kGCM, `keys:1: "aead" without its length in bits`},
		{"policy", "ip xfrm policy add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto 135 dir out tmpl proto esp mode transport", `keys:1: want "ip xfrm state add"`},
		{"state delete", "ip xfrm state delete src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 0x1000", `keys:1: only "ip xfrm state add"`},
		{"other text", "\n\nhello", `keys:3: want "ip xfrm state add"`},
		{"unterminated quote", "\n" + id + ` enc "cbc(aes) ` + kAES, "keys:2: unterminated quote"},
		{"trailing backslash", good + " \\", "keys:1: the last line ends in a backslash"},
		{"duplicate SA", good + "\n\n" + good, "keys:3: SPI 0x1000 to 2001:db8:2000::1 is already the SA of line 1"},
		{"setkey tunnel", "add 2001:db8:2000::10 2001:db8:2000::1 esp 0x1000 -m tunnel -E aes-gcm-16 " + kGCM + ";", `keys:1: setkey add: -m "tunnel": only transport`},
		{"setkey mode any", "add 2001:db8:2000::10 2001:db8:2000::1 esp 0x1000 -E aes-gcm-16 " + kGCM + ";", "keys:1: setkey add: -m transport is required"},
		{"setkey sha256", "add 2001:db8:2000::10 2001:db8:2000::1 esp 0x1000 -m transport -E aes-cbc " + kAES + " -A hmac-sha256 " + kSHA256 + ";", "keys:1: setkey add: -A hmac-sha256 is truncated to 96 bits"},
		{"setkey no integrity", "add 2001:db8:2000::10 2001:db8:2000::1 esp 0x1000 -m transport -E aes-cbc " + kAES + ";", "keys:1: setkey add: -A is required"},
		{"setkey lifetime", "add 2001:db8:2000::10 2001:db8:2000::1 esp 0x1000 -m transport -lh 3600 -E aes-gcm-16 " + kGCM + ";", `keys:1: setkey add: "-lh" is not supported here`},
		{"setkey spdadd", "spdadd 2001:db8:2000::10 2001:db8:2000::1 135 -P out ipsec esp/transport//require;", `keys:1: want "ip xfrm state add"`},
		{"setkey without semicolon", "add 2001:db8:2000::10 2001:db8:2000::1 esp 0x1000 -m transport -E aes-gcm-16 " + kGCM, "keys:1: setkey statement without its closing semicolon"},
		{"setkey two statements on a line", "add ::1 ::2 esp 0x1000 -m transport -E aes-gcm-16 " + kGCM + "; add", "keys:1: one setkey statement per line"},
		{"setkey ipv4", "add 192.0.2.1 2001:db8:2000::1 esp 0x1000 -m transport -E aes-gcm-16 " + kGCM + ";", "keys:1: setkey add: word 2 is no IPv6 address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sas, err := ParseKeys("keys", []byte(c.text))
			if err == nil {
				t.Fatalf("got SAs %v, want error %q", sas, c.want)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("got error %q, want it to start with %q", err, c.want)
			}
			noKeys(t, err.Error())
		})
	}
}

// noKeys fails if s holds any of the test keys, in hex or as octets.
func noKeys(t *testing.T, s string) {
	t.Helper()
	for _, k := range []string{kAES, kSHA256, kSHA1, kGCM} {
		raw, _ := hex.DecodeString(k[2:])
		for _, bad := range []string{k[2:], strings.ToUpper(k[2:]), string(raw), k[2:18]} {
			if strings.Contains(s, bad) {
				t.Errorf("got %q, holding key material %q", s, bad)
			}
		}
	}
	for _, bad := range []string{"0123456789abcdef", "secret"} {
		if strings.Contains(s, bad) {
			t.Errorf("got %q, holding key material %q", s, bad)
		}
	}
}

// TestParseKeysMisplacedKey puts a key in the place of every word of valid
// lines in turn: whatever the parser makes of it, the error names no key.
func TestParseKeysMisplacedKey(t *testing.T) {
	lines := []string{
		"ip xfrm state add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 0x1000 mode transport enc cbc(aes) " + kAES + " auth-trunc hmac(sha256) " + kSHA256 + " 128",
		"ip xfrm state add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 0x1000 reqid 1 replay-window 32 aead rfc4106(gcm(aes)) " + kGCM + " 128",
		"add 2001:db8:2000::10 2001:db8:2000::1 esp 0x1000 -m transport -E aes-cbc " + kAES + " -A hmac-sha1 " + kSHA1 + ";",
	}
	for _, line := range lines {
		ws := strings.Fields(line)
		for i := range ws {
			for _, key := range []string{kSHA1, kSHA1[2:], "secret", `"secret"`, "0123456789abcdef"} {
				m := append([]string(nil), ws...)
				m[i] = key
				if _, err := ParseKeys("keys", []byte(strings.Join(m, " "))); err != nil {
					noKeys(t, err.Error())
				}
				m = append(m[:i+1], append([]string{key}, m[i+1:]...)...)
				if _, err := ParseKeys("keys", []byte(strings.Join(m, " "))); err != nil {
					noKeys(t, err.Error())
				}
			}
		}
	}
}

// TestNoKeysInOutput prints SAs every way fmt can, nested too.
func TestNoKeysInOutput(t *testing.T) {
	var sas []SA
	for _, alg := range allAlgorithms {
		sa, err := NewSA(0x1000, hoa, haAddr, alg, []byte("0123456789abcdefghij")[:alg.EncKeyLen()], []byte("secretsecretsecretsecretsecretse")[:alg.AuthKeyLen()])
		if err != nil {
			t.Fatal(err)
		}
		sas = append(sas, sa)
	}
	type holder struct {
		sa  SA
		ptr *SA
		SA
	}
	for _, sa := range sas {
		for _, v := range []any{sa, &sa, []SA{sa}, holder{sa, &sa, sa}, &holder{sa, &sa, sa}, map[string]SA{"x": sa}} {
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
				s := fmt.Sprintf(verb, v)
				if strings.Contains(s, "secret") || strings.Contains(s, "0123456789") ||
					strings.Contains(s, hex.EncodeToString([]byte("secret"))) || strings.Contains(s, hex.EncodeToString([]byte("0123456789"))) ||
					strings.Contains(s, "7365637265") || strings.Contains(s, "3031323334") {
					t.Errorf("%v: got %s of %T = %s, holding key material", sa.Algorithm, verb, v, s)
				}
			}
		}
	}
	if got, want := sas[1].String(), "esp spi 0x00001000 2001:db8:2000::10 -> 2001:db8:2000::1 aes-gcm-128/icv-16"; got != want {
		t.Errorf("got String() = %q, want %q", got, want)
	}
}

func TestParseKeyFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	line := "ip xfrm state add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 0x1000 aead rfc4106(gcm(aes)) " + kGCM + " 128\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	sas, err := ParseKeyFile(path)
	if err != nil || len(sas) != 1 {
		t.Fatalf("got ParseKeyFile = %v, %v; want one SA, nil", sas, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o602, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := ParseKeyFile(path)
		want := fmt.Sprintf("%s: mode %#o lets group or others at the keys", path, mode)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("mode %#o: got ParseKeyFile error = %v, want %q", mode, err, want)
		}
	}
	if _, err := ParseKeyFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("got ParseKeyFile error = %v for a directory, want not a regular file", err)
	}
	if _, err := ParseKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("got no ParseKeyFile error for a missing file, want one")
	}
	// Errors in the file name the file.
	if err := os.WriteFile(path, []byte("\n"+line+"bad\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyFile(path); err == nil || !strings.HasPrefix(err.Error(), path+":3: ") {
		t.Errorf("got ParseKeyFile error = %v, want it to start with %s:3:", err, path)
	}

}
