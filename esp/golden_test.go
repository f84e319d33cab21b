package esp

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/mipv6"
)

//go:generate /usr/bin/python3 testdata/gen_golden.py testdata/golden.json

// goldenFile holds Binding Updates and Acknowledgements that scapy built and
// protected with its SecurityAssociation, with the keys, IVs and sequence
// numbers it was given; testdata/gen_golden.py writes it, and
// TestESPGoldenUpToDate in tests/interop checks that the installed scapy
// still writes the same file. Reading it needs neither python3 nor scapy.
const goldenFile = "testdata/golden.json"

// goldenPacket is one entry of goldenFile.
type goldenPacket struct {
	Name      string     `json:"name"`
	Algorithm string     `json:"algorithm"` // the Go constant's name
	SPI       uint32     `json:"spi"`
	EncKey    string     `json:"enc_key"`  // hex
	AuthKey   string     `json:"auth_key"` // hex
	ESPSeq    uint32     `json:"esp_seq"`
	IV        string     `json:"iv"` // hex
	Src       netip.Addr `json:"src"`
	Dst       netip.Addr `json:"dst"`
	HAO       netip.Addr `json:"hao"`
	RH2       netip.Addr `json:"rh2"`
	SASrc     netip.Addr `json:"sa_src"`
	SADst     netip.Addr `json:"sa_dst"`
	MH        struct {
		Type    string `json:"type"` // BU, BA
		Seq     uint16 `json:"seq"`
		Flags   string `json:"flags"` // scapy's flag letters
		Mhtime  uint16 `json:"mhtime"`
		Status  uint8  `json:"status"`
		Options []struct {
			Cls    string `json:"cls"`
			Rinter uint16 `json:"rinter"`
		} `json:"options"`
	} `json:"mh"`
	ClearHex string `json:"clear_hex"` // the packet before scapy protected it
	Hex      string `json:"hex"`
}

var goldenAlgorithms = map[string]Algorithm{
	"AESCBCHMACSHA256": AESCBCHMACSHA256,
	"AESGCM16":         AESGCM16,
	"NullHMACSHA256":   NullHMACSHA256,
	"AESCBCHMACSHA1":   AESCBCHMACSHA1,
}

func loadGolden(t testing.TB) []goldenPacket {
	t.Helper()
	b, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	var g []goldenPacket
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("%s: %v", goldenFile, err)
	}
	if len(g) == 0 {
		t.Fatalf("%s: no packets", goldenFile)
	}
	return g
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (g goldenPacket) sa(t testing.TB) SA {
	t.Helper()
	alg, ok := goldenAlgorithms[g.Algorithm]
	if !ok {
		t.Fatalf("unknown algorithm %q", g.Algorithm)
	}
	sa, err := NewSA(g.SPI, g.SASrc, g.SADst, alg, unhex(t, g.EncKey), unhex(t, g.AuthKey))
	if err != nil {
		t.Fatalf("got NewSA error = %v, want nil", err)
	}
	return sa
}

// scapyFlags maps scapy's flag letters to mipv6's flags (as in mipv6's
// golden test).
func scapyFlags(t *testing.T, letters string, bits map[rune]uint16) uint16 {
	t.Helper()
	var f uint16
	for _, l := range letters {
		b, ok := bits[l]
		if !ok {
			t.Fatalf("scapy flag %q has no meaning here", l)
		}
		f |= b
	}
	return f
}

func (g goldenPacket) buPacket(t *testing.T) mipv6.BUPacket {
	t.Helper()
	return mipv6.BUPacket{Src: g.Src, Dst: g.Dst, HomeAddress: g.HAO, Sequence: g.MH.Seq,
		Flags:    scapyFlags(t, g.MH.Flags, map[rune]uint16{'A': mipv6.FlagA, 'H': mipv6.FlagH}),
		Lifetime: g.MH.Mhtime}
}

func (g goldenPacket) baPacket(t *testing.T) mipv6.BAPacket {
	t.Helper()
	p := mipv6.BAPacket{Src: g.Src, Dst: g.Dst, HomeAddress: g.RH2, Status: g.MH.Status,
		Flags:    uint8(scapyFlags(t, g.MH.Flags, map[rune]uint16{'K': uint16(mipv6.BAFlagK)})),
		Sequence: g.MH.Seq, Lifetime: g.MH.Mhtime}
	for _, o := range g.MH.Options {
		if o.Cls == "MIP6OptBRAdvice" {
			p.RefreshInterval = o.Rinter
		}
	}
	return p
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// TestGoldenBuild builds every packet scapy protected from the same values,
// keys and IV, and expects scapy's bytes: the Binding Updates kgswitch
// sends and the Acknowledgements the lab Home Agent will send.
func TestGoldenBuild(t *testing.T) {
	for _, g := range loadGolden(t) {
		t.Run(g.Name, func(t *testing.T) {
			sa := g.sa(t)
			iv := bytes.NewReader(unhex(t, g.IV))
			var got []byte
			var err error
			switch g.MH.Type {
			case "BU":
				got, err = AppendBUPacket(nil, &sa, g.ESPSeq, g.buPacket(t), iv)
			case "BA":
				got, err = AppendBAPacket(nil, &sa, g.ESPSeq, g.baPacket(t), iv)
			default:
				t.Fatalf("unknown MH type %q", g.MH.Type)
			}
			if err != nil {
				t.Fatalf("got error = %v, want nil", err)
			}
			if h := hex.EncodeToString(got); h != g.Hex {
				t.Errorf("got bytes\n%s\nwant scapy's\n%s", h, g.Hex)
			}
			if iv.Len() != 0 {
				t.Errorf("got %d IV octets unread, want all read", iv.Len())
			}
		})
	}
}

// TestGoldenParse checks and decrypts every packet scapy protected and
// expects the values scapy was given: the Acknowledgements kgswitch
// receives, and the Binding Updates the Home Agent receives. The clear
// packet scapy started from is what unprotect restores.
func TestGoldenParse(t *testing.T) {
	for _, g := range loadGolden(t) {
		t.Run(g.Name, func(t *testing.T) {
			sa := g.sa(t)
			pkt := unhex(t, g.Hex)
			if spi, err := PacketSPI(pkt); err != nil || spi != g.SPI {
				t.Errorf("got PacketSPI = %#x, %v; want %#x, nil", spi, err, g.SPI)
			}
			clear, seq, err := unprotect(pkt, &sa)
			if err != nil {
				t.Fatalf("got unprotect error = %v, want nil", err)
			}
			if h := hex.EncodeToString(clear); h != g.ClearHex || seq != g.ESPSeq {
				t.Errorf("got clear packet %s sequence %d, want scapy's %s sequence %d", h, seq, g.ClearHex, g.ESPSeq)
			}
			switch g.MH.Type {
			case "BU":
				seq, got, err := ParseBUPacket(pkt, &sa)
				if err != nil || seq != g.ESPSeq {
					t.Fatalf("got ParseBUPacket sequence %d, error = %v; want %d, nil", seq, err, g.ESPSeq)
				}
				if diff := cmp.Diff(g.buPacket(t), got, addrCmp); diff != "" {
					t.Errorf("got ParseBUPacket diff (-scapy +got):\n%s", diff)
				}
			case "BA":
				seq, got, err := ParseBAPacket(pkt, &sa)
				if err != nil || seq != g.ESPSeq {
					t.Fatalf("got ParseBAPacket sequence %d, error = %v; want %d, nil", seq, err, g.ESPSeq)
				}
				if diff := cmp.Diff(g.baPacket(t), got, addrCmp); diff != "" {
					t.Errorf("got ParseBAPacket diff (-scapy +got):\n%s", diff)
				}
			}
		})
	}
}

// TestGoldenCoversEveryAlgorithm keeps the golden file honest about what it
// proves: a Binding Update and an Acknowledgement for each algorithm.
func TestGoldenCoversEveryAlgorithm(t *testing.T) {
	seen := map[Algorithm]map[string]bool{}
	for _, g := range loadGolden(t) {
		alg := goldenAlgorithms[g.Algorithm]
		if seen[alg] == nil {
			seen[alg] = map[string]bool{}
		}
		seen[alg][g.MH.Type] = true
	}
	for _, alg := range allAlgorithms {
		if !seen[alg]["BU"] || !seen[alg]["BA"] {
			t.Errorf("got golden types %v for %v, want BU and BA", seen[alg], alg)
		}
	}
}

// xfrmLine is the ip xfrm state line an operator would write for g's SA.
func (g goldenPacket) xfrmLine(t *testing.T) string {
	t.Helper()
	var alg string
	switch goldenAlgorithms[g.Algorithm] {
	case AESCBCHMACSHA256:
		alg = fmt.Sprintf("enc 'cbc(aes)' 0x%s auth-trunc 'hmac(sha256)' 0x%s 128", g.EncKey, g.AuthKey)
	case AESGCM16:
		alg = fmt.Sprintf("aead 'rfc4106(gcm(aes))' 0x%s 128", g.EncKey)
	case NullHMACSHA256:
		alg = fmt.Sprintf(`enc cipher_null "" auth-trunc 'hmac(sha256)' 0x%s 128`, g.AuthKey)
	case AESCBCHMACSHA1:
		alg = fmt.Sprintf("enc 'cbc(aes)' 0x%s auth-trunc 'hmac(sha1)' 0x%s 96", g.EncKey, g.AuthKey)
	default:
		t.Fatalf("no ip xfrm line for %q", g.Algorithm)
	}
	return fmt.Sprintf("ip xfrm state add src %v dst %v proto esp spi %#x mode transport %s", g.SASrc, g.SADst, g.SPI, alg)
}

// TestGoldenFromKeyFile keys each SA from the ip xfrm line an operator
// would write for it and opens scapy's packets: Linux's key layout (GCM's
// salt after the key) and scapy's agree with what ParseKeys makes of it.
func TestGoldenFromKeyFile(t *testing.T) {
	for _, g := range loadGolden(t) {
		t.Run(g.Name, func(t *testing.T) {
			sas, err := ParseKeys("keys", []byte(g.xfrmLine(t)))
			if err != nil || len(sas) != 1 {
				t.Fatalf("got ParseKeys = %v, %v; want one SA", sas, err)
			}
			pkt := unhex(t, g.Hex)
			if _, _, err := unprotect(pkt, &sas[0]); err != nil {
				t.Errorf("got unprotect error = %v with the SA from %q, want nil", err, g.xfrmLine(t))
			}
		})
	}
}
