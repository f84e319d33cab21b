package mipv6

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

//go:generate /usr/bin/python3 testdata/gen_golden.py testdata/golden.json

// goldenFile holds packets built by scapy's Mobile IPv6 classes with the
// values scapy was given (RFC 5555's two options by classes the generator
// writes from the RFC, scapy having none); testdata/gen_golden.py writes it, and
// TestGoldenUpToDate in tests/interop checks that the installed scapy still
// writes the same file. Reading it needs neither python3 nor scapy.
const goldenFile = "testdata/golden.json"

// goldenPacket is one entry of goldenFile. Field names are scapy's.
type goldenPacket struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Encode      bool       `json:"encode"` // this package encodes this packet
	Src         netip.Addr `json:"src"`
	Dst         netip.Addr `json:"dst"`
	HAO         netip.Addr `json:"hao"` // Home Address destination option
	RH2         netip.Addr `json:"rh2"` // type 2 routing header address
	MH          struct {
		Type   string     `json:"type"` // BU, BA, BE, BRR
		Seq    uint16     `json:"seq"`
		Flags  string     `json:"flags"` // scapy's flag letters
		Mhtime uint16     `json:"mhtime"`
		Status uint8      `json:"status"`
		HA     netip.Addr `json:"ha"` // Binding Error's Home Address
	} `json:"mh"`
	Options []goldenOption `json:"options"`
	Hex     string         `json:"hex"`
}

// goldenOption is a mobility option as given to scapy.
type goldenOption struct {
	Cls           string     `json:"cls"`
	Olen          uint8      `json:"olen"`
	Acoa          netip.Addr `json:"acoa"`
	Hni           uint16     `json:"hni"`
	Coni          uint16     `json:"coni"`
	Rinter        uint16     `json:"rinter"`
	Authenticator *big.Int   `json:"authenticator"` // 96 bits in scapy
	Otype         uint8      `json:"otype"`
	Odata         string     `json:"odata"` // hex
	// The Dual-Stack options' fields, named as in gen_golden.py's
	// classes written from RFC 5555 §3.1.1 and §3.2.1.
	Prefixlen  uint8      `json:"prefixlen"`
	PFlag      uint8      `json:"p_flag"`
	IPv4HoA    netip.Addr `json:"ipv4hoa"`
	IPv4Status uint8      `json:"ipv4status"`
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

// scapyFlags maps scapy's flag letters to this package's constants. scapy
// numbers them from the least significant bit of a field that ends where
// the reserved bits start: "PRMKLHA" in the Binding Update's top 7 bits
// (P, proxy registration of RFC 5213, has no constant here), "PRK" in the
// Binding Acknowledgement's top 3.
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

var (
	buFlagLetters = map[rune]uint16{'A': FlagA, 'H': FlagH, 'L': FlagL, 'K': FlagK, 'M': FlagM, 'R': FlagR}
	baFlagLetters = map[rune]uint16{'K': uint16(BAFlagK), 'R': uint16(BAFlagR)}
)

// wantOption returns the type and data that option o, as given to scapy,
// must have on the wire (RFC 6275 §6.2.4-§6.2.7).
func (o goldenOption) wantOption(t *testing.T) (uint8, []byte) {
	t.Helper()
	switch o.Cls {
	case "MIP6OptBRAdvice":
		return OptBindingRefreshAdvice, binary.BigEndian.AppendUint16(nil, o.Rinter)
	case "MIP6OptAltCoA":
		a := o.Acoa.As16()
		return OptAlternateCareOf, a[:]
	case "MIP6OptNonceIndices":
		return OptNonceIndices, binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, o.Hni), o.Coni)
	case "MIP6OptBindingAuthData":
		return OptBindingAuthData, o.Authenticator.FillBytes(make([]byte, 12))
	case "IPv4HomeAddressOption":
		a := o.IPv4HoA.As4()
		return OptIPv4HomeAddress, []byte{o.Prefixlen<<2 | o.PFlag<<1, 0, a[0], a[1], a[2], a[3]}
	case "IPv4AddressAckOption":
		a := o.IPv4HoA.As4()
		return OptIPv4AddressAck, []byte{o.IPv4Status, o.Prefixlen << 2, a[0], a[1], a[2], a[3]}
	case "MIP6OptUnknown":
		d, err := hex.DecodeString(o.Odata)
		if err != nil {
			t.Fatal(err)
		}
		return o.Otype, d
	}
	t.Fatalf("unknown option class %q", o.Cls)
	return 0, nil
}

// TestGoldenDecode decodes every scapy packet to the values scapy was given.
func TestGoldenDecode(t *testing.T) {
	for _, g := range loadGolden(t) {
		t.Run(g.Name, func(t *testing.T) {
			pkt, err := hex.DecodeString(g.Hex)
			if err != nil {
				t.Fatal(err)
			}
			mp, err := ParseMobilityPacket(pkt)
			if err != nil {
				t.Fatalf("got ParseMobilityPacket error = %v, want nil", err)
			}
			if mp.Src != g.Src || mp.Dst != g.Dst || mp.HomeAddress != g.HAO || mp.RoutingAddress != g.RH2 {
				t.Errorf("got addresses src %v dst %v hao %v rh2 %v, want %v %v %v %v",
					mp.Src, mp.Dst, mp.HomeAddress, mp.RoutingAddress, g.Src, g.Dst, g.HAO, g.RH2)
			}
			// Every option scapy was given, in order, and nothing else.
			type opt struct {
				Typ  uint8
				Data []byte
			}
			var want, got []opt
			for _, o := range g.Options {
				typ, data := o.wantOption(t)
				if int(o.Olen) != len(data) {
					t.Fatalf("%s: olen %d, data %d octets", o.Cls, o.Olen, len(data))
				}
				want = append(want, opt{typ, data})
			}
			var opts []byte
			switch g.MH.Type {
			case "BU":
				opts = BindingUpdate(mp.MH.MessageData()).Options()
			case "BA":
				opts = BindingAck(mp.MH.MessageData()).Options()
			case "BE":
				opts = BindingError(mp.MH.MessageData()).Options()
			case "BRR":
				opts = BindingRefreshRequest(mp.MH.MessageData()).Options()
			}
			if err := ForEachOption(opts, func(typ uint8, data []byte) error {
				got = append(got, opt{typ, data})
				return nil
			}); err != nil {
				t.Fatalf("got ForEachOption error = %v, want nil", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("got mobility options diff (-want +got):\n%s", diff)
			}
			if got, want := mp.MH.Type(), goldenMHType(t, g.MH.Type); got != want {
				t.Fatalf("got MH type = %d, want %d", got, want)
			}
			switch g.MH.Type {
			case "BU":
				got, err := ParseBUPacket(pkt)
				if err != nil {
					t.Fatalf("got ParseBUPacket error = %v, want nil", err)
				}
				if diff := cmp.Diff(g.buPacket(t), got, addrCmp); diff != "" {
					t.Errorf("got ParseBUPacket diff (-want +got):\n%s", diff)
				}
			case "BA":
				got, err := ParseBAPacket(pkt)
				if err != nil {
					t.Fatalf("got ParseBAPacket error = %v, want nil", err)
				}
				if diff := cmp.Diff(g.baPacket(t), got, addrCmp); diff != "" {
					t.Errorf("got ParseBAPacket diff (-want +got):\n%s", diff)
				}
			case "BE":
				got, err := ParseBindingErrorPacket(pkt)
				if err != nil {
					t.Fatalf("got ParseBindingErrorPacket error = %v, want nil", err)
				}
				if diff := cmp.Diff(g.bePacket(), got, addrCmp); diff != "" {
					t.Errorf("got ParseBindingErrorPacket diff (-want +got):\n%s", diff)
				}
			case "BRR":
				got, err := ParseBRRPacket(pkt)
				if err != nil {
					t.Fatalf("got ParseBRRPacket error = %v, want nil", err)
				}
				if want := (BRRPacket{Src: g.Src, Dst: g.Dst}); got != want {
					t.Errorf("got ParseBRRPacket = %+v, want %+v", got, want)
				}
			}
		})
	}
}

// TestGoldenEncode encodes the values scapy was given and expects scapy's
// bytes exactly. scapy and this package pad options the same way (the
// minimum Pad1/PadN before each option to reach its alignment, RFC 6275
// §6.2, then to a multiple of 8 octets), so no case needs a looser
// comparison.
func TestGoldenEncode(t *testing.T) {
	n := 0
	for _, g := range loadGolden(t) {
		if !g.Encode {
			continue
		}
		n++
		t.Run(g.Name, func(t *testing.T) {
			var got []byte
			switch g.MH.Type {
			case "BU":
				got = AppendBUPacket(nil, g.buPacket(t))
			case "BA":
				got = AppendBAPacket(nil, g.baPacket(t))
			case "BE":
				got = AppendBindingErrorPacket(nil, g.bePacket())
			case "BRR":
				got = AppendBRRPacket(nil, BRRPacket{Src: g.Src, Dst: g.Dst})
			default:
				t.Fatalf("no encoder for %q", g.MH.Type)
			}
			if h := hex.EncodeToString(got); h != g.Hex {
				t.Errorf("got bytes\n%s\nwant scapy's\n%s", h, g.Hex)
			}
		})
	}
	if n == 0 {
		t.Fatal("got no golden packet to encode, want some")
	}
}

func goldenMHType(t *testing.T, s string) uint8 {
	t.Helper()
	switch s {
	case "BU":
		return TypeBindingUpdate
	case "BA":
		return TypeBindingAck
	case "BE":
		return TypeBindingError
	case "BRR":
		return TypeBindingRefreshRequest
	}
	t.Fatalf("unknown MH type %q", s)
	return 0
}

func (g goldenPacket) buPacket(t *testing.T) BUPacket {
	t.Helper()
	p := BUPacket{Src: g.Src, Dst: g.Dst, HomeAddress: g.HAO, Sequence: g.MH.Seq,
		Flags: scapyFlags(t, g.MH.Flags, buFlagLetters), Lifetime: g.MH.Mhtime}
	for _, o := range g.Options {
		switch o.Cls {
		case "MIP6OptAltCoA":
			p.AlternateCareOf = o.Acoa
		case "MIP6OptNonceIndices":
			p.NonceIndices = NonceIndices{Present: true, Home: o.Hni, CareOf: o.Coni}
		case "MIP6OptBindingAuthData":
			p.BindingAuthData = true
		case "IPv4HomeAddressOption":
			p.IPv4HomeAddress = IPv4HomeAddress{Address: o.IPv4HoA, PrefixLen: o.Prefixlen, RequestPrefix: o.PFlag != 0}
		}
	}
	return p
}

func (g goldenPacket) baPacket(t *testing.T) BAPacket {
	t.Helper()
	p := BAPacket{Src: g.Src, Dst: g.Dst, HomeAddress: g.RH2, Status: g.MH.Status,
		Flags: uint8(scapyFlags(t, g.MH.Flags, baFlagLetters)), Sequence: g.MH.Seq, Lifetime: g.MH.Mhtime}
	for _, o := range g.Options {
		switch o.Cls {
		case "MIP6OptBRAdvice":
			p.RefreshInterval = o.Rinter
		case "IPv4AddressAckOption":
			p.IPv4Ack = IPv4AddressAck{Present: true, Status: o.IPv4Status, PrefixLen: o.Prefixlen, Address: o.IPv4HoA}
		}
	}
	return p
}

func (g goldenPacket) bePacket() BEPacket {
	return BEPacket{Src: g.Src, Dst: g.Dst, Status: g.MH.Status, HomeAddress: g.MH.HA}
}
