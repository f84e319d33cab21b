package interop

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
)

// The ESP cross-checks: package esp's protected Binding Updates and
// Acknowledgements opened by scapy's SecurityAssociation and by
// Wireshark's ESP dissector with the same keys, and scapy's own vectors
// regenerated.

const (
	espGoldenGenerator = "../../esp/testdata/gen_golden.py"
	espGoldenFile      = "../../esp/testdata/golden.json"
)

// TestESPGoldenUpToDate runs esp's generator with the installed scapy and
// expects the committed file, as TestGoldenUpToDate does for mipv6.
func TestESPGoldenUpToDate(t *testing.T) {
	requireScapyIPsec(t)
	out := filepath.Join(t.TempDir(), "golden.json")
	cmd := exec.Command(python3(), espGoldenGenerator, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", espGoldenGenerator, err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(espGoldenFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got generator output differing from %s; run `go generate ./esp/` and review the diff:\n%s",
			espGoldenFile, firstDiff(string(want), string(got)))
	}
}

func requireScapyIPsec(t *testing.T) {
	t.Helper()
	requireIntegration(t, "python3 with scapy and cryptography", "the Debian packages python3-scapy and python3-cryptography", func() error {
		out, err := exec.Command(python3(), "-c", "import scapy.layers.inet6, scapy.layers.ipsec, cryptography").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -c 'import scapy.layers.ipsec, cryptography': %v: %s", python3(), err, bytes.TrimSpace(out))
		}
		return nil
	})
}

// espAlgorithm is an esp.Algorithm with the names scapy and Wireshark give
// it.
type espAlgorithm struct {
	alg                         esp.Algorithm
	scapyCrypt, scapyAuth       string // scapy.layers.ipsec CRYPT_ALGOS, AUTH_ALGOS
	wiresharkEnc, wiresharkAuth string // the esp_sa UAT's value strings (Wireshark 4.0)
	align                       int    // what the encrypted part is padded to, RFC 4303 §2.4
}

var espAlgorithms = []espAlgorithm{
	{esp.AESCBCHMACSHA256, "AES-CBC", "SHA2-256-128", "AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]", 16},
	{esp.AESGCM16, "AES-GCM", "", "AES-GCM with 16 octet ICV [RFC4106]", "NULL", 4},
	{esp.NullHMACSHA256, "NULL", "SHA2-256-128", "NULL", "HMAC-SHA-256-128 [RFC4868]", 4},
	{esp.AESCBCHMACSHA1, "AES-CBC", "HMAC-SHA1-96", "AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]", 16},
}

// espCase is one packet package esp protected, with what it was built
// from.
type espCase struct {
	name    string
	a       espAlgorithm
	spi     uint32
	encKey  []byte
	authKey []byte
	seq     uint32
	bu      *mipv6.BUPacket // or
	ba      *mipv6.BAPacket
	pkt     []byte
}

func randomKey(t *testing.T, n int) []byte {
	t.Helper()
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// espCases protects, with each algorithm and fresh random keys, the Binding
// Updates kgswitch sends for a VM (registration, refresh and the
// de-registration from the home link) and two Acknowledgements.
func espCases(t *testing.T) []espCase {
	t.Helper()
	reg, refresh, dereg := kgswitchBUs(t)
	refused := mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Status: mipv6.StatusSequenceOutOfWindow, Flags: mipv6.BAFlagK, Sequence: 0x42}
	advice := testBA()
	advice.RefreshInterval = 75
	var cases []espCase
	for i, a := range espAlgorithms {
		spi := uint32(0x1000 + i)
		enc, auth := randomKey(t, a.alg.EncKeyLen()), randomKey(t, a.alg.AuthKeyLen())
		buSA, err := esp.NewSA(spi, hoa, haAddr, a.alg, enc, auth)
		if err != nil {
			t.Fatal(err)
		}
		baEnc, baAuth := randomKey(t, a.alg.EncKeyLen()), randomKey(t, a.alg.AuthKeyLen())
		baSA, err := esp.NewSA(spi+0x1000, haAddr, hoa, a.alg, baEnc, baAuth)
		if err != nil {
			t.Fatal(err)
		}
		for j, bu := range []mipv6.BUPacket{reg, refresh, dereg} {
			seq := uint32(j + 1)
			pkt, err := esp.AppendBUPacket(nil, &buSA, seq, bu, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			cases = append(cases, espCase{fmt.Sprintf("%v BU %d", a.alg, j+1), a, spi, enc, auth, seq, &bu, nil, pkt})
		}
		for j, ba := range []mipv6.BAPacket{advice, refused} {
			seq := uint32(j + 1)
			pkt, err := esp.AppendBAPacket(nil, &baSA, seq, ba, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			cases = append(cases, espCase{fmt.Sprintf("%v BA %d", a.alg, j+1), a, spi + 0x1000, baEnc, baAuth, seq, nil, &ba, pkt})
		}
	}
	return cases
}

// espScapyScript opens each packet with scapy's SecurityAssociation (the
// integrity check, then decryption; esp/testdata/gen_golden.py's open_esp,
// since scapy's own decrypt mis-parses transport mode after extension
// headers), decodes the clear packet with scapy's Mobile IPv6 classes and
// has scapy compute the Mobility Header checksum itself. It also flips the
// last ICV bit and expects scapy to refuse the packet.
const espScapyScript = `
import json, sys
sys.path.insert(0, sys.argv[1])
from gen_golden import open_esp
from scapy.all import raw
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, HAO, Pad1, PadN, MIP6MH_BU, MIP6MH_BA, MIP6OptBRAdvice
from scapy.layers.ipsec import ESP, SecurityAssociation, IPSecIntegrityError

def check(c):
    wire = bytes.fromhex(c["hex"])
    s = SecurityAssociation(ESP, spi=c["spi"], crypt_algo=c["crypt"], crypt_key=bytes.fromhex(c["enc_key"]) or None,
                            auth_algo=c["auth"] or None, auth_key=bytes.fromhex(c["auth_key"]) or None)
    p = IPv6(wire)
    out = {"before_esp": p[ESP].underlayer.__class__.__name__, "esp_spi": p[ESP].spi, "esp_seq": p[ESP].seq}
    clear = IPv6(open_esp(s, wire))
    bad = bytearray(wire)
    bad[-1] ^= 1
    try:
        open_esp(s, bytes(bad))
        out["tamper_refused"] = False
    except IPSecIntegrityError:
        out["tamper_refused"] = True
    out.update(src=clear.src, dst=clear.dst)
    out["hoa"] = [o.hoa for o in clear[IPv6ExtHdrDestOpt].options if isinstance(o, HAO)] if IPv6ExtHdrDestOpt in clear else []
    out["rh2"] = clear[IPv6ExtHdrRouting].addresses if IPv6ExtHdrRouting in clear else []
    cls = MIP6MH_BU if MIP6MH_BU in clear else MIP6MH_BA
    mh = clear[cls]
    if cls is MIP6MH_BU:
        out.update(type="BU", seq=mh.seq, flags=(int(mh.flags) << 9) | mh.reserved, lifetime=mh.mhtime)
    else:
        out.update(type="BA", status=mh.status, flags=(int(mh.flags) << 5) | mh.res2, seq=mh.seq, lifetime=mh.mhtime)
    out["refresh"] = [o.rinter for o in mh.options if isinstance(o, MIP6OptBRAdvice)]
    out["cksum"] = mh.cksum
    # Encode again with the checksum left to scapy (see crosscheck_test.go).
    q = clear.copy()
    del q.plen
    if IPv6ExtHdrDestOpt in q:
        q[IPv6ExtHdrDestOpt].options = [o for o in q[IPv6ExtHdrDestOpt].options if isinstance(o, HAO)]
        del q[IPv6ExtHdrDestOpt].len
    m = q[cls]
    m.options = [o for o in m.options if not isinstance(o, (Pad1, PadN))]
    del m.len
    del m.cksum
    out["scapy_cksum"] = IPv6(raw(q))[cls].cksum
    return out

print(json.dumps([check(c) for c in json.load(sys.stdin)]))
`

// TestESPCrossCheckScapy has scapy authenticate and decrypt every Binding
// Update kgswitch sends and two Acknowledgements, with each algorithm and
// fresh random keys and IVs: scapy must find ESP where RFC 3776 and Linux
// put it (after the Destination Options header or the type 2 routing
// header), accept the ICV, refuse a flipped bit, decode the fields the
// packet was built from, and compute the same Mobility Header checksum,
// with the home address in the pseudo-header, as package mipv6 did.
func TestESPCrossCheckScapy(t *testing.T) {
	requireScapyIPsec(t)
	cases := espCases(t)
	type in struct {
		Hex     string `json:"hex"`
		SPI     uint32 `json:"spi"`
		Crypt   string `json:"crypt"`
		Auth    string `json:"auth"`
		EncKey  string `json:"enc_key"`
		AuthKey string `json:"auth_key"`
	}
	var ins []in
	for _, c := range cases {
		ins = append(ins, in{hex.EncodeToString(c.pkt), c.spi, c.a.scapyCrypt, c.a.scapyAuth, hex.EncodeToString(c.encKey), hex.EncodeToString(c.authKey)})
	}
	stdin, err := json.Marshal(ins)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python3(), "-c", espScapyScript, filepath.Dir(espGoldenGenerator))
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scapy: %v: %s", err, stderr.String())
	}
	var decoded []map[string]any
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &decoded); err != nil {
		t.Fatalf("scapy output %q: %v", out, err)
	}
	if len(decoded) != len(cases) {
		t.Fatalf("got %d scapy decodings, want %d", len(decoded), len(cases))
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := decoded[i]
			wantField(t, m, "esp_spi", c.spi)
			wantField(t, m, "esp_seq", c.seq)
			wantField(t, m, "tamper_refused", true)
			var mh mipv6.MobilityHeader
			if c.bu != nil {
				p := *c.bu
				wantField(t, m, "before_esp", "IPv6ExtHdrDestOpt")
				for k, v := range map[string]any{"type": "BU", "src": p.Src, "dst": p.Dst, "hoa": []netip.Addr{p.HomeAddress},
					"rh2": []netip.Addr(nil), "seq": p.Sequence, "flags": p.Flags, "lifetime": p.Lifetime} {
					wantField(t, m, k, v)
				}
				mh = mipv6.MobilityHeader(mipv6.AppendBUPacket(nil, p)[64:])
			} else {
				p := *c.ba
				wantField(t, m, "before_esp", "IPv6ExtHdrRouting")
				var refresh []int
				if p.RefreshInterval != 0 {
					refresh = []int{int(p.RefreshInterval)}
				}
				for k, v := range map[string]any{"type": "BA", "src": p.Src, "dst": p.Dst, "hoa": []netip.Addr(nil),
					"rh2": []netip.Addr{p.HomeAddress}, "status": p.Status, "flags": p.Flags, "seq": p.Sequence,
					"lifetime": p.Lifetime, "refresh": refresh} {
					wantField(t, m, k, v)
				}
				mh = mipv6.MobilityHeader(mipv6.AppendBAPacket(nil, p)[64:])
			}
			wantField(t, m, "cksum", int(mh.Checksum()))
			wantField(t, m, "scapy_cksum", int(mh.Checksum()))
		})
	}
}

// wantESPField keeps the fields TestESPCrossCheckTshark compares: those of
// the clear headers and Mobility Header as in TestCrossCheckTshark, and
// those of ESP that do not depend on the random keys and IV.
func wantESPField(name string) bool {
	switch name {
	case "esp.spi", "esp.sequence", "esp.icv_good", "esp.icv_bad", "esp.contained_data", "esp.pad", "esp.pad_len", "esp.protocol":
		return true
	}
	return wantTsharkField(name)
}

// mhFields returns the Mobility Header's part of a field list of
// TestCrossCheckTshark's.
func mhFields(w []tsField) []tsField {
	for i, f := range w {
		if strings.HasPrefix(f.Name, "mip6.") {
			return w[i:]
		}
	}
	return nil
}

// wantESPFields is what tshark must show of c: the clear headers, ESP with
// a correct ICV and the default padding, and in it the Mobility Header as
// TestCrossCheckTshark expects it in clear.
func wantESPFields(c espCase) []tsField {
	var w, mh []tsField
	var clear []byte
	if c.bu != nil {
		clear = mipv6.AppendBUPacket(nil, *c.bu)
		w = wantIPv6("eth:ethertype:ipv6:ipv6.dstopts:esp:mipv6", c.bu.Src, c.bu.Dst, c.pkt)
		hao := wantHAO(c.bu.HomeAddress)
		hao[0] = field("ipv6.dstopts.nxt", esp.IPProtoESP)
		w = append(w, hao...)
		mh = mhFields(wantBUFields(*c.bu, clear))
	} else {
		clear = mipv6.AppendBAPacket(nil, *c.ba)
		w = wantIPv6("eth:ethertype:ipv6:ipv6.routing:esp:mipv6", c.ba.Src, c.ba.Dst, c.pkt)
		rh := wantRH2(c.ba.HomeAddress)
		rh[0] = field("ipv6.routing.nxt", esp.IPProtoESP)
		w = append(w, rh...)
		mh = mhFields(wantBAFields(*c.ba, clear))
	}
	payload := clear[64:]
	padLen := (c.a.align - (len(payload)+2)%c.a.align) % c.a.align
	pad := make([]byte, padLen)
	for i := range pad {
		pad[i] = byte(i + 1)
	}
	w = append(w,
		field("esp.spi", fmt.Sprintf("0x%08x", c.spi)),
		field("esp.sequence", c.seq),
		field("esp.icv_good", 1),
		field("esp.icv_bad", 0),
		field("esp.contained_data", colonHex(payload...)),
	)
	if padLen > 0 {
		w = append(w, field("esp.pad", colonHex(pad...)))
	}
	w = append(w, field("esp.pad_len", padLen), field("esp.protocol", "0x87"))
	return append(w, mh...)
}

// TestESPCrossCheckTshark gives Wireshark's ESP dissector the keys of each
// SA (its esp_sa table, by SPI) and has it authenticate and decrypt every
// packet of TestESPCrossCheckScapy: each ICV must be correct, the padding
// RFC 4303's default, the next header the Mobility Header, and the
// Mobility Header, dissected from the decrypted data, must show the fields
// the packet was built from. A copy of the first packet with a flipped ICV
// bit must be reported bad, which proves that tshark checks.
func TestESPCrossCheckTshark(t *testing.T) {
	tshark := requireTshark(t)
	cases := espCases(t)
	opts := []string{"-o", "esp.enable_encryption_decode:TRUE", "-o", "esp.enable_authentication_check:TRUE"}
	seen := map[uint32]bool{}
	pkts := make([][]byte, 0, len(cases)+1)
	for _, c := range cases {
		pkts = append(pkts, c.pkt)
		if seen[c.spi] {
			continue
		}
		seen[c.spi] = true
		// Addresses "*": tshark matches an SA by the packet's IPv6
		// addresses, and a Binding Update's source is the care-of
		// address, to which the SA is not bound.
		opts = append(opts, "-o", fmt.Sprintf(`uat:esp_sa:"IPv6","*","*","0x%08x","%s","0x%x","%s","0x%x"`,
			c.spi, c.a.wiresharkEnc, c.encKey, c.a.wiresharkAuth, c.authKey))
	}
	tampered := bytes.Clone(cases[0].pkt)
	tampered[len(tampered)-1] ^= 1
	pkts = append(pkts, tampered)
	file := writePcap(t, pkts...)
	fields, problems := tsharkFieldsWith(t, tshark, file, len(pkts), wantESPField, opts...)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(problems[i]) != 0 {
				t.Errorf("got tshark dissection problems %q, want none", problems[i])
			}
			if diff := cmp.Diff(wantESPFields(c), fields[i]); diff != "" {
				t.Errorf("got tshark fields diff (-built +tshark):\n%s", diff)
			}
		})
	}
	t.Run("flipped ICV bit", func(t *testing.T) {
		got := fields[len(cases)]
		if !containsField(got, field("esp.icv_bad", 1)) {
			t.Errorf("got tshark fields %v for a flipped ICV bit, want esp.icv_bad 1", got)
		}
	})
}

func containsField(fs []tsField, f tsField) bool {
	for _, g := range fs {
		if g == f {
			return true
		}
	}
	return false
}
