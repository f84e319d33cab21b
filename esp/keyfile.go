package esp

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ParseKeyFile reads the manually keyed SAs of the key file at path with
// ParseKeys. It refuses a file that group or others may read or write
// (mode & 0o077 != 0), checked on the opened file: keys that others can
// read are no longer secret, and keys that others can write are not the
// operator's.
func ParseKeyFile(path string) ([]SA, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %#o lets group or others at the keys; chmod 600 it", path, perm)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	return ParseKeys(path, data)
}

// ParseKeys parses manually keyed ESP SAs, one statement each, in either of
// the forms Linux operators write them:
//
//	ip xfrm state add src ADDR dst ADDR proto esp spi SPI mode transport ALGO...
//	add ADDR ADDR esp SPI -m transport -E EALGO KEY [-A AALGO KEY];
//
// The first is ip-xfrm(8): "ip" and "-6" may be left out (as in an
// `ip -batch` file), a line ending in a backslash continues on the next,
// mode defaults to transport as it does there, reqid and replay-window are
// accepted and ignored, and ALGO is one of
//
//	enc cbc(aes) KEY128 auth-trunc hmac(sha256) KEY256 128
//	enc cbc(aes) KEY128 auth-trunc hmac(sha1) KEY160 96  (or: auth hmac(sha1) KEY160)
//	enc cipher_null "" auth-trunc hmac(sha256) KEY256 128
//	aead rfc4106(gcm(aes)) KEY160 128
//
// (the kernel's compat names aes, sha256, sha1 and cipher_null too). The
// second is setkey(8), running to the semicolon: -m transport is required
// (its default, any, says nothing), and the algorithms are -E aes-cbc (or
// rijndael-cbc) with -A hmac-sha1, or -E aes-gcm-16 alone. A KEY is 0x and
// hex digits, or else the octets of the word itself, as both tools take
// it. Blank lines and # comments are skipped.
//
// Anything else is refused with "name:line: reason": another keyword or
// tool, another algorithm (hmac(sha256) under plain auth, and setkey's
// hmac-sha256, because Linux truncates those to 96 bits, which RFC 4868
// does not define), a key of the wrong length, a mode other than transport,
// an address not IPv6, a reserved SPI (below 256, RFC 4303 §2.1), and a
// second SA with the same destination and SPI. Errors name the word at
// fault by position or keyword, never by its text, so that no key, however
// misplaced, ends up in an error.
func ParseKeys(name string, data []byte) ([]SA, error) {
	stmts, err := statements(name, string(data))
	if err != nil {
		return nil, err
	}
	type id struct {
		dst netip.Addr
		spi uint32
	}
	seen := map[id]int{}
	var sas []SA
	for _, st := range stmts {
		var sa SA
		var err error
		if st.words[0].text == "add" {
			sa, err = parseSetkey(st.words)
		} else {
			sa, err = parseXfrm(st.words)
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, st.line, err)
		}
		k := id{sa.Dst, sa.SPI}
		if l, ok := seen[k]; ok {
			return nil, fmt.Errorf("%s:%d: SPI %#x to %v is already the SA of line %d", name, st.line, sa.SPI, sa.Dst, l)
		}
		seen[k] = st.line
		sas = append(sas, sa)
	}
	return sas, nil
}

// word is one word of a statement; quoted tells whether any of it was
// quoted, which matters to setkey's keys only.
type word struct {
	text   string
	quoted bool
	end    bool // an unquoted ; ending a setkey statement
}

type statement struct {
	line  int
	words []word
}

// statements splits the file into statements: ip xfrm lines, joined where
// a line ends in a backslash, and setkey statements, which run to a
// semicolon.
func statements(name, text string) ([]statement, error) {
	var out []statement
	var cur *statement
	setkey := false
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		cont := strings.HasSuffix(line, "\\")
		line = strings.TrimSuffix(line, "\\")
		ws, err := splitWords(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if cur == nil {
			if len(ws) == 0 {
				if cont {
					return nil, fmt.Errorf("%s:%d: continuation of nothing", name, n)
				}
				continue
			}
			out = append(out, statement{line: n})
			cur = &out[len(out)-1]
			setkey = ws[0].text == "add"
		}
		cur.words = append(cur.words, ws...)
		if setkey {
			for j, w := range cur.words {
				if w.end {
					if j != len(cur.words)-1 {
						return nil, fmt.Errorf("%s:%d: one setkey statement per line", name, n)
					}
					cur.words = cur.words[:j]
					cur = nil
					break
				}
			}
			continue
		}
		if !cont {
			cur = nil
		}
	}
	if cur != nil {
		if setkey {
			return nil, fmt.Errorf("%s:%d: setkey statement without its closing semicolon", name, cur.line)
		}
		return nil, fmt.Errorf("%s:%d: the last line ends in a backslash", name, cur.line)
	}
	return out, nil
}

// splitWords splits a line into words as a shell would for these files:
// at white space, with single- or double-quoted parts taken whole (without
// their quotes; a word of only "" is empty), and a # that starts a word
// starting a comment.
func splitWords(line string) ([]word, error) {
	var ws []word
	for i := 0; i < len(line); {
		switch line[i] {
		case ' ', '\t':
			i++
			continue
		case '#':
			return ws, nil
		}
		var w word
		var b strings.Builder
		bareSemicolon := false
		for i < len(line) && line[i] != ' ' && line[i] != '\t' {
			bareSemicolon = false
			if q := line[i]; q == '"' || q == '\'' {
				j := strings.IndexByte(line[i+1:], q)
				if j < 0 {
					return nil, errors.New("unterminated quote")
				}
				b.WriteString(line[i+1 : i+1+j])
				w.quoted = true
				i += j + 2
				continue
			}
			bareSemicolon = line[i] == ';'
			b.WriteByte(line[i])
			i++
		}
		w.text = b.String()
		if bareSemicolon {
			// setkey's end of statement, written against the last word
			// or apart.
			if w.text = strings.TrimSuffix(w.text, ";"); w.text != "" || w.quoted {
				ws = append(ws, w)
			}
			w = word{text: ";", end: true}
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// xfrmKeywords are ip-xfrm(8)'s state keywords, named in errors when they
// are not supported here: a known keyword is no key.
var xfrmKeywords = map[string]bool{
	"sel": true, "mark": true, "seq": true, "replay-seq": true, "replay-oseq": true,
	"replay-seq-hi": true, "replay-oseq-hi": true, "flag": true, "limit": true, "encap": true,
	"coa": true, "ctx": true, "extra-flag": true, "output-mark": true, "if_id": true,
	"offload": true, "comp": true, "tfcpad": true, "lifetime": true, "policy": true,
	"delete": true, "deleteall": true, "flush": true, "list": true, "get": true, "count": true,
	"monitor": true, "route2": true, "hao": true, "ah": true, "ipcomp": true, "tunnel": true,
	"beet": true, "ro": true, "in_trigger": true,
}

// keyword describes word i for an error: its text when it is a keyword,
// else only its position.
func keyword(ws []word, i int, vocabulary map[string]bool) string {
	if !ws[i].quoted && vocabulary[ws[i].text] {
		return fmt.Sprintf("%q", ws[i].text)
	}
	return fmt.Sprintf("word %d", i+1)
}

// algo is an algorithm clause as written, before it is matched to an
// Algorithm.
type algo struct {
	kind  string // enc, auth, auth-trunc, aead
	name  string // canonical kernel name
	key   []byte
	trunc int // bits; auth-trunc and aead only
}

// Kernel algorithm names and their compat aliases (Linux
// net/xfrm/xfrm_algo.c), as ip xfrm passes them on.
var kernelNames = map[string]string{
	"cbc(aes)": "cbc(aes)", "aes": "cbc(aes)",
	"ecb(cipher_null)": "ecb(cipher_null)", "cipher_null": "ecb(cipher_null)",
	"hmac(sha256)": "hmac(sha256)", "sha256": "hmac(sha256)",
	"hmac(sha1)": "hmac(sha1)", "sha1": "hmac(sha1)",
	"rfc4106(gcm(aes))": "rfc4106(gcm(aes))",
}

func parseXfrm(ws []word) (SA, error) {
	i := 0
	if ws[i].text == "ip" {
		i++
		for i < len(ws) && (ws[i].text == "-6" || ws[i].text == "-family" && i+1 < len(ws) && ws[i+1].text == "inet6") {
			if ws[i].text == "-family" {
				i++
			}
			i++
		}
	}
	for _, want := range []string{"xfrm", "state"} {
		if i >= len(ws) || ws[i].text != want {
			return SA{}, errors.New(`want "ip xfrm state add" or a setkey "add" statement`)
		}
		i++
	}
	if i >= len(ws) || (ws[i].text != "add" && ws[i].text != "update") {
		return SA{}, errors.New(`only "ip xfrm state add" (or update) gives keys`)
	}
	i++
	var src, dst netip.Addr
	var spi uint32
	var proto bool
	var algos []algo
	seen := map[string]bool{}
	for i < len(ws) {
		kw := ws[i].text
		if !xfrmArgs[kw] {
			if xfrmKeywords[kw] {
				return SA{}, fmt.Errorf("%q is not supported here", kw)
			}
			return SA{}, fmt.Errorf("word %d is no keyword of ip xfrm state add", i+1)
		}
		if seen[kw] {
			return SA{}, fmt.Errorf("%q given twice", kw)
		}
		seen[kw] = true
		arg := func(what string) (word, error) {
			i++
			if i >= len(ws) {
				return word{}, fmt.Errorf("%q without its %s", kw, what)
			}
			return ws[i], nil
		}
		var err error
		switch kw {
		case "src", "dst":
			var w word
			if w, err = arg("address"); err != nil {
				return SA{}, err
			}
			a, perr := netip.ParseAddr(w.text)
			if perr != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
				return SA{}, fmt.Errorf("%s: word %d is no IPv6 address", kw, i+1)
			}
			if kw == "src" {
				src = a
			} else {
				dst = a
			}
		case "proto":
			var w word
			if w, err = arg("protocol"); err != nil {
				return SA{}, err
			}
			if w.text != "esp" {
				return SA{}, fmt.Errorf("proto %s: only esp", keyword(ws, i, xfrmKeywords))
			}
			proto = true
		case "spi":
			var w word
			if w, err = arg("value"); err != nil {
				return SA{}, err
			}
			if spi, err = parseSPI(w.text); err != nil {
				return SA{}, err
			}
		case "mode":
			var w word
			if w, err = arg("value"); err != nil {
				return SA{}, err
			}
			if w.text != "transport" {
				return SA{}, fmt.Errorf("mode %s: only transport, where the Home Address option and type 2 routing header stay outside ESP", keyword(ws, i, xfrmKeywords))
			}
		case "reqid", "replay-window":
			var w word
			if w, err = arg("number"); err != nil {
				return SA{}, err
			}
			if _, perr := strconv.ParseUint(w.text, 0, 32); perr != nil {
				return SA{}, fmt.Errorf("%s: word %d is no number", kw, i+1)
			}
		case "enc", "auth", "auth-trunc", "aead":
			a := algo{kind: kw}
			var w word
			if w, err = arg("algorithm"); err != nil {
				return SA{}, err
			}
			n, ok := kernelNames[w.text]
			if !ok {
				return SA{}, fmt.Errorf("%s: word %d is no algorithm supported here", kw, i+1)
			}
			a.name = n
			if w, err = arg("key"); err != nil {
				return SA{}, err
			}
			// The quotes were the shell's: a quoted 0x... is hex too.
			if a.key, err = parseKey(w.text, true); err != nil {
				return SA{}, fmt.Errorf("%s %s key: %w", kw, a.name, err)
			}
			if kw == "auth-trunc" || kw == "aead" {
				if w, err = arg("length in bits"); err != nil {
					return SA{}, err
				}
				t, perr := strconv.ParseUint(w.text, 10, 16)
				if perr != nil {
					return SA{}, fmt.Errorf("%s %s: word %d is no length in bits", kw, a.name, i+1)
				}
				a.trunc = int(t)
			}
			algos = append(algos, a)
		}
		i++
	}
	switch {
	case !src.IsValid() || !dst.IsValid():
		return SA{}, errors.New("src and dst are required")
	case !proto:
		return SA{}, errors.New("proto esp is required")
	case !seen["spi"]:
		return SA{}, errors.New("spi is required")
	}
	alg, enc, auth, err := xfrmAlgorithm(algos)
	if err != nil {
		return SA{}, err
	}
	return newSA(spi, src, dst, alg, enc, auth)
}

// xfrmArgs are the keywords parseXfrm understands.
var xfrmArgs = map[string]bool{
	"src": true, "dst": true, "proto": true, "spi": true, "mode": true, "reqid": true,
	"replay-window": true, "enc": true, "auth": true, "auth-trunc": true, "aead": true,
}

// xfrmAlgorithm matches the algorithm clauses of an ip xfrm line to an
// Algorithm, and returns its keys.
func xfrmAlgorithm(as []algo) (Algorithm, []byte, []byte, error) {
	var enc, auth, aead *algo
	for i := range as {
		switch as[i].kind {
		case "enc":
			enc = &as[i]
		case "auth", "auth-trunc":
			if auth != nil {
				return 0, nil, nil, errors.New("auth and auth-trunc together")
			}
			auth = &as[i]
		case "aead":
			aead = &as[i]
		}
	}
	if aead != nil {
		if enc != nil || auth != nil {
			return 0, nil, nil, errors.New("aead goes alone, without enc or auth")
		}
		if aead.name != "rfc4106(gcm(aes))" || aead.trunc != 128 {
			return 0, nil, nil, fmt.Errorf("aead %s with a %d-bit ICV: only rfc4106(gcm(aes)) with 128", aead.name, aead.trunc)
		}
		return AESGCM16, aead.key, nil, nil
	}
	if enc == nil || auth == nil {
		return 0, nil, nil, errors.New("want enc and auth-trunc, or aead: ESP without integrity would let anyone forge signalling")
	}
	bits := auth.trunc
	if auth.kind == "auth" {
		// Linux's default truncation for both (xfrm_algo.c): 96 bits,
		// also for hmac(sha256), whose RFC 4868 length is 128.
		bits = 96
	}
	switch {
	case enc.name == "cbc(aes)" && auth.name == "hmac(sha256)" && bits == 128:
		return AESCBCHMACSHA256, enc.key, auth.key, nil
	case enc.name == "cbc(aes)" && auth.name == "hmac(sha1)" && bits == 96:
		return AESCBCHMACSHA1, enc.key, auth.key, nil
	case enc.name == "ecb(cipher_null)" && auth.name == "hmac(sha256)" && bits == 128:
		return NullHMACSHA256, enc.key, auth.key, nil
	case auth.name == "hmac(sha256)" && bits == 96:
		return 0, nil, nil, errors.New("hmac(sha256) truncated to 96 bits (what plain auth gives on Linux) is not RFC 4868's; use auth-trunc hmac(sha256) KEY 128")
	}
	return 0, nil, nil, fmt.Errorf("enc %s with %s %s %d is not supported: see esp.ParseKeys", enc.name, auth.kind, auth.name, bits)
}

// setkeyAlgorithms maps setkey(8)'s algorithm names to the kernel's.
var setkeyAlgorithms = map[string]string{
	"aes-cbc": "cbc(aes)", "rijndael-cbc": "cbc(aes)", "aes-gcm-16": "rfc4106(gcm(aes))",
	"hmac-sha1": "hmac(sha1)", "hmac-sha256": "hmac(sha256)", "null": "ecb(cipher_null)",
}

// setkeyWords are setkey(8) words named in errors when they are not
// supported here.
var setkeyWords = map[string]bool{
	"ah": true, "ipcomp": true, "esp-old": true, "ah-old": true, "tcp": true, "tunnel": true, "any": true,
	"-r": true, "-u": true, "-f": true, "-lh": true, "-ls": true, "-C": true, "-4": true, "-6": true, "-n": true,
	"spdadd": true, "delete": true, "deleteall": true, "flush": true, "spdflush": true, "get": true, "dump": true,
}

// parseSetkey parses `add SRC DST esp SPI -m transport -E EALGO KEY [-A
// AALGO KEY]`, without its semicolon.
func parseSetkey(ws []word) (SA, error) {
	if len(ws) < 5 {
		return SA{}, errors.New("setkey add: want add SRC DST esp SPI")
	}
	var addrs [2]netip.Addr
	for j := range addrs {
		a, err := netip.ParseAddr(ws[1+j].text)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return SA{}, fmt.Errorf("setkey add: word %d is no IPv6 address", 2+j)
		}
		addrs[j] = a
	}
	if ws[3].text != "esp" {
		return SA{}, fmt.Errorf("setkey add: protocol %s: only esp", keyword(ws, 3, setkeyWords))
	}
	spi, err := parseSPI(ws[4].text)
	if err != nil {
		return SA{}, fmt.Errorf("setkey add: %w", err)
	}
	var mode bool
	var enc, auth *algo
	for i := 5; i < len(ws); i++ {
		flag := ws[i].text
		if ws[i].quoted || (flag != "-m" && flag != "-E" && flag != "-A") {
			if !ws[i].quoted && setkeyWords[flag] {
				return SA{}, fmt.Errorf("setkey add: %q is not supported here", flag)
			}
			return SA{}, fmt.Errorf("setkey add: word %d is not -m, -E or -A", i+1)
		}
		if i+1 >= len(ws) {
			return SA{}, fmt.Errorf("setkey add: %s without its value", flag)
		}
		i++
		switch flag {
		case "-m":
			if ws[i].text != "transport" {
				return SA{}, fmt.Errorf("setkey add: -m %s: only transport, where the Home Address option and type 2 routing header stay outside ESP", keyword(ws, i, setkeyWords))
			}
			mode = true
		case "-E", "-A":
			if (flag == "-E" && enc != nil) || (flag == "-A" && auth != nil) {
				return SA{}, fmt.Errorf("setkey add: %s given twice", flag)
			}
			n, ok := setkeyAlgorithms[ws[i].text]
			if !ok || ws[i].quoted {
				return SA{}, fmt.Errorf("setkey add: %s: word %d is no algorithm supported here", flag, i+1)
			}
			if i+1 >= len(ws) {
				return SA{}, fmt.Errorf("setkey add: %s %s without its key", flag, ws[i].text)
			}
			// setkey takes a double-quoted key as its octets.
			key, err := parseKey(ws[i+1].text, !ws[i+1].quoted)
			if err != nil {
				return SA{}, fmt.Errorf("setkey add: %s %s key: %w", flag, ws[i].text, err)
			}
			a := &algo{kind: flag, name: n, key: key}
			if flag == "-E" {
				enc = a
			} else {
				auth = a
			}
			i++
		}
	}
	if !mode {
		return SA{}, errors.New("setkey add: -m transport is required")
	}
	var alg Algorithm
	switch {
	case enc == nil:
		return SA{}, errors.New("setkey add: -E is required")
	case enc.name == "rfc4106(gcm(aes))" && auth == nil:
		alg = AESGCM16
	case enc.name == "cbc(aes)" && auth != nil && auth.name == "hmac(sha1)":
		alg = AESCBCHMACSHA1
	case auth != nil && auth.name == "hmac(sha256)":
		return SA{}, errors.New("setkey add: -A hmac-sha256 is truncated to 96 bits on Linux, which RFC 4868 does not define; use ip xfrm's auth-trunc hmac(sha256) KEY 128")
	case auth == nil:
		return SA{}, errors.New("setkey add: -A is required with this -E: ESP without integrity would let anyone forge signalling")
	default:
		return SA{}, errors.New("setkey add: algorithms not supported: see esp.ParseKeys")
	}
	var authKey []byte
	if auth != nil {
		authKey = auth.key
	}
	return newSA(spi, addrs[0], addrs[1], alg, enc.key, authKey)
}

// newSA is NewSA with the error worded for the key file.
func newSA(spi uint32, src, dst netip.Addr, alg Algorithm, enc, auth []byte) (SA, error) {
	p, _ := alg.params()
	if len(enc) != p.encKey {
		return SA{}, fmt.Errorf("%v: encryption key of %d bits, want %d", alg, 8*len(enc), 8*p.encKey)
	}
	if len(auth) != p.authKey {
		return SA{}, fmt.Errorf("%v: integrity key of %d bits, want %d", alg, 8*len(auth), 8*p.authKey)
	}
	return NewSA(spi, src, dst, alg, enc, auth)
}

// parseSPI parses an SPI in hex (0x...) or decimal and refuses the
// reserved values 0-255 (RFC 4303 §2.1).
func parseSPI(s string) (uint32, error) {
	var v uint64
	var err error
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		v, err = strconv.ParseUint(h, 16, 32)
	} else {
		v, err = strconv.ParseUint(s, 10, 32)
	}
	if err != nil {
		return 0, errors.New("spi is no 32-bit number")
	}
	if v < 256 {
		return 0, fmt.Errorf("spi %d is reserved (RFC 4303 §2.1)", v)
	}
	return uint32(v), nil
}

// parseKey decodes key material as ip xfrm and setkey do: 0x and hex
// digits (if hexOK), or else the word's own octets. Its errors never quote
// it.
func parseKey(w string, hexOK bool) ([]byte, error) {
	if h, ok := strings.CutPrefix(w, "0x"); ok && hexOK && h != "" {
		k, err := hex.DecodeString(h)
		if err != nil {
			return nil, errors.New("not an even number of hex digits after 0x")
		}
		return k, nil
	}
	return []byte(w), nil
}
