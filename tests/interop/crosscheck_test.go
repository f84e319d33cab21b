package interop

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/kgswitch/kgswitch/mipv6"
)

// The cross-check tests compare package mipv6's encoding with two
// independent implementations, Wireshark's dissector (tshark) and scapy.
// They fail when a tool is missing, unless KGSWITCH_SKIP_INTEGRATION=1.

func requireIntegration(t *testing.T, what, install string, ok func() error) {
	t.Helper()
	if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
		t.Skipf("KGSWITCH_SKIP_INTEGRATION=1: skipping cross-check against %s", what)
	}
	if err := ok(); err != nil {
		t.Fatalf("cross-check needs %s: %v; install %s, or set KGSWITCH_SKIP_INTEGRATION=1 to skip", what, err, install)
	}
}

func requireTshark(t *testing.T) string {
	t.Helper()
	var path string
	requireIntegration(t, "tshark", "the Debian package tshark", func() (err error) {
		path, err = exec.LookPath("tshark")
		return err
	})
	return path
}

func python3() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}

func requireScapy(t *testing.T) {
	t.Helper()
	requireIntegration(t, "python3 with scapy", "the Debian package python3-scapy", func() error {
		out, err := exec.Command(python3(), "-c", "import scapy.layers.inet6").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -c 'import scapy.layers.inet6': %v: %s", python3(), err, bytes.TrimSpace(out))
		}
		return nil
	})
}

// writePcap writes the IPv6 packets as Ethernet frames to a pcap file.
func writePcap(t *testing.T, pkts ...[]byte) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "mipv6.pcap")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 0)
	for i, p := range pkts {
		frame := append([]byte{
			0x52, 0x54, 0, 0, 0, 0x10, // destination
			0x52, 0x54, 0, 0, 0, 0x01, // source
			0x86, 0xdd, // IPv6
		}, p...)
		ci := gopacket.CaptureInfo{Timestamp: ts.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(frame), Length: len(frame)}
		if err := w.WritePacket(ci, frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

// tsharkFrames runs `tshark -r file -V`, with extra options opts
// (preferences, say), and returns its verbose text split per frame, each
// line with leading and trailing space trimmed.
func tsharkFrames(t *testing.T, tshark, file string, n int, opts ...string) [][]string {
	t.Helper()
	out := runTshark(t, tshark, append([]string{"-r", file, "-V"}, opts...)...)
	var frames [][]string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Frame ") {
			frames = append(frames, nil)
		}
		if len(frames) > 0 {
			frames[len(frames)-1] = append(frames[len(frames)-1], strings.TrimSpace(line))
		}
	}
	if len(frames) != n {
		t.Fatalf("got %d frames from tshark, want %d:\n%s", len(frames), n, out)
	}
	return frames
}

func runTshark(t *testing.T, tshark string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(tshark, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// tsharkProblems returns the lines in which Wireshark reports a malformed
// packet, an expert warning or error, or a bad checksum.
func tsharkProblems(frame []string) []string {
	bad := regexp.MustCompile(`(?i)malformed|expert info \((warning|error)|checksum status: bad|incorrect|exception`)
	var out []string
	for _, l := range frame {
		if bad.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// tsField is one field of Wireshark's dissection: its filter name and its
// value as tshark shows it.
type tsField struct {
	Name, Show string
}

func field(name string, show any) tsField { return tsField{name, fmt.Sprint(show)} }

// pdmlNode is an element of tshark's PDML output (a packet, proto or
// field), kept in document order.
type pdmlNode struct {
	XMLName  xml.Name
	Name     string     `xml:"name,attr"`
	Show     string     `xml:"show,attr"`
	ShowName string     `xml:"showname,attr"`
	Hide     string     `xml:"hide,attr"`
	Children []pdmlNode `xml:",any"`
}

// tsharkFields runs `tshark -r file -T pdml` and returns, per frame, the
// fields that describe what package mipv6 encodes (the dissector chain, the
// IPv6 header fields it sets, the Destination Options and type 2 routing
// headers, the whole Mobility Header) in the order tshark shows them, and
// every expert or malformed-packet item tshark adds. Pad1 and PadN options
// are checked to be zero-filled and then left out: where padding goes is
// the scapy golden tests' concern, and leaving it out lets the expected
// field lists below say only what the message means.
func tsharkFields(t *testing.T, tshark, file string, n int) (fields [][]tsField, problems [][]string) {
	t.Helper()
	return tsharkFieldsWith(t, tshark, file, n, wantTsharkField)
}

// tsharkFieldsWith is tsharkFields keeping the fields keep names, with
// extra tshark options (preferences, say).
func tsharkFieldsWith(t *testing.T, tshark, file string, n int, keep func(string) bool, opts ...string) (fields [][]tsField, problems [][]string) {
	t.Helper()
	var doc pdmlNode
	if err := xml.Unmarshal(runTshark(t, tshark, append([]string{"-r", file, "-T", "pdml"}, opts...)...), &doc); err != nil {
		t.Fatalf("tshark PDML: %v", err)
	}
	for _, pkt := range doc.Children {
		if pkt.XMLName.Local != "packet" {
			continue
		}
		var fs []tsField
		var ps []string
		var walk func(n pdmlNode)
		walk = func(n pdmlNode) {
			switch {
			case strings.HasPrefix(n.Name, "_ws.expert") || strings.HasPrefix(n.Name, "_ws.malformed"):
				ps = append(ps, n.Name+": "+n.ShowName)
			case n.XMLName.Local == "field" && n.Hide != "yes" && keep(n.Name):
				if pad, ok := padding(n); ok {
					if strings.Trim(pad, "0:") != "" {
						ps = append(ps, fmt.Sprintf("%s: non-zero padding %s", n.Name, pad))
					}
					return
				}
				fs = append(fs, tsField{n.Name, n.Show})
			}
			for _, c := range n.Children {
				walk(c)
			}
		}
		walk(pkt)
		fields = append(fields, fs)
		problems = append(problems, ps)
	}
	if len(fields) != n {
		t.Fatalf("got %d frames in tshark PDML, want %d", len(fields), n)
	}
	return fields, problems
}

func wantTsharkField(name string) bool {
	switch name {
	case "frame.protocols", "ipv6.plen", "ipv6.nxt", "ipv6.hlim", "ipv6.src", "ipv6.dst":
		return true
	}
	for _, p := range []string{"ipv6.dstopts.", "ipv6.opt", "ipv6.routing.", "mip6."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// padding reports whether PDML field n is a Pad1 or PadN option, of the
// Destination Options header (RFC 8200 §4.2) or of the Mobility Header
// (RFC 6275 §6.2.2-§6.2.3), and returns its padding octets.
func padding(n pdmlNode) (string, bool) {
	switch n.Name {
	case "mip6.options.pad1":
		return "", true
	case "mip6.options.padn":
		// The option's octets: type, length, then the padding.
		return strings.Join(strings.Split(n.Show, ":")[2:], ":"), true
	case "ipv6.opt":
		var typ, pad string
		for _, c := range n.Children {
			switch c.Name {
			case "ipv6.opt.type":
				typ = c.Show
			case "ipv6.opt.padn":
				pad = c.Show
			}
		}
		if typ == "0x00" || typ == "0x01" {
			return pad, true
		}
	}
	return "", false
}

// Expected tshark fields, built from the values a packet was encoded from.

func bitField(name string, flags, bit uint16) tsField {
	if flags&bit != 0 {
		return field(name, 1)
	}
	return field(name, 0)
}

func colonHex(b ...byte) string {
	h := make([]string, len(b))
	for i, x := range b {
		h[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(h, ":")
}

func wantIPv6(protocols string, src, dst netip.Addr, pkt []byte) []tsField {
	return []tsField{
		field("frame.protocols", protocols),
		field("ipv6.plen", len(pkt)-40),
		field("ipv6.nxt", pkt[6]),
		field("ipv6.hlim", 64),
		field("ipv6.src", src),
		field("ipv6.dst", dst),
	}
}

func wantHAO(hoa netip.Addr) []tsField {
	return []tsField{
		field("ipv6.dstopts.nxt", mipv6.IPProtoMH),
		field("ipv6.dstopts.len", 2),
		field("ipv6.dstopts.len_oct", 24),
		field("ipv6.opt", ""),
		field("ipv6.opt.type", "0xc9"),
		field("ipv6.opt.type.action", 3), // discard, ICMP unless multicast
		field("ipv6.opt.type.change", 0),
		field("ipv6.opt.type.rest", "0x09"),
		field("ipv6.opt.length", 16),
		field("ipv6.opt.mipv6.home_address", hoa),
	}
}

func wantRH2(hoa netip.Addr) []tsField {
	return []tsField{
		field("ipv6.routing.nxt", mipv6.IPProtoMH),
		field("ipv6.routing.len", 2),
		field("ipv6.routing.len_oct", 24),
		field("ipv6.routing.type", 2),
		field("ipv6.routing.segleft", 1),
		field("ipv6.routing.mipv6.reserved", "00:00:00:00"),
		field("ipv6.routing.mipv6.home_address", hoa),
	}
}

// wantMH gives the Mobility Header prefix; the checksum is the one in mh,
// whose correctness the scapy checks establish.
func wantMH(typ uint8, mh mipv6.MobilityHeader) []tsField {
	return []tsField{
		field("mip6.proto", mipv6.IPProtoNone),
		field("mip6.hlen", len(mh)/8-1),
		field("mip6.mhtype", typ),
		field("mip6.reserved", "0x00"),
		field("mip6.csum", fmt.Sprintf("0x%04x", mh.Checksum())),
	}
}

func wantBUFields(p mipv6.BUPacket, pkt []byte) []tsField {
	w := wantIPv6("eth:ethertype:ipv6:ipv6.dstopts:mipv6", p.Src, p.Dst, pkt)
	w = append(w, wantHAO(p.HomeAddress)...)
	w = append(w, wantMH(mipv6.TypeBindingUpdate, mipv6.MobilityHeader(pkt[64:]))...)
	w = append(w,
		field("mip6.bu.seqnr", p.Sequence),
		bitField("mip6.bu.a_flag", p.Flags, mipv6.FlagA),
		bitField("mip6.bu.h_flag", p.Flags, mipv6.FlagH),
		bitField("mip6.bu.l_flag", p.Flags, mipv6.FlagL),
		bitField("mip6.bu.k_flag", p.Flags, mipv6.FlagK),
		bitField("mip6.bu.m_flag", p.Flags, mipv6.FlagM),
		bitField("mip6.nemo.bu.r_flag", p.Flags, mipv6.FlagR),
		// Flags of later RFCs that package mipv6 never sets: P (RFC
		// 5213), F (RFC 5555), T (RFC 5555), B (RFC 6602).
		bitField("mip6.bu.p_flag", p.Flags, 0x0200),
		bitField("mip6.bu.f_flag", p.Flags, 0x0100),
		bitField("mip6.bu.t_flag", p.Flags, 0x0080),
		bitField("mip6.bu.b_flag", p.Flags, 0x0040),
		field("mip6.bu.lifetime", p.Lifetime),
	)
	if h := p.IPv4HomeAddress; h.Address.Is4() {
		a := h.Address.As4()
		pFlag := 0
		if h.RequestPrefix {
			pFlag = 1
		}
		w = append(w,
			field("mip6.options.ipv4ha", colonHex(mipv6.OptIPv4HomeAddress, 6, h.PrefixLen<<2|byte(pFlag<<1), 0, a[0], a[1], a[2], a[3])),
			field("mip6.mobility_opt.len", 6),
			field("mip6.ipv4ha.preflen", h.PrefixLen),
			field("mip6.ipv4ha.p_flag", pFlag),
			field("mip6.ipv4ha.ha", h.Address),
		)
	}
	if n := p.NonceIndices; n.Present {
		w = append(w,
			field("mip6.options.ni", colonHex(mipv6.OptNonceIndices, 4, byte(n.Home>>8), byte(n.Home), byte(n.CareOf>>8), byte(n.CareOf))),
			field("mip6.mobility_opt.len", 4),
			field("mip6.ni.hni", n.Home),
			field("mip6.ni.cni", n.CareOf),
		)
	}
	if p.AlternateCareOf.IsValid() {
		a := p.AlternateCareOf.As16()
		w = append(w,
			field("mip6.options.acoa", colonHex(append([]byte{mipv6.OptAlternateCareOf, 16}, a[:]...)...)),
			field("mip6.mobility_opt.len", 16),
			field("mip6.acoa.acoa", p.AlternateCareOf),
		)
	}
	return w
}

func wantBAFields(p mipv6.BAPacket, pkt []byte) []tsField {
	w := wantIPv6("eth:ethertype:ipv6:ipv6.routing:mipv6", p.Src, p.Dst, pkt)
	w = append(w, wantRH2(p.HomeAddress)...)
	w = append(w, wantMH(mipv6.TypeBindingAck, mipv6.MobilityHeader(pkt[64:]))...)
	f := uint16(p.Flags)
	w = append(w,
		field("mip6.ba.status", p.Status),
		bitField("mip6.ba.k_flag", f, uint16(mipv6.BAFlagK)),
		bitField("mip6.nemo.ba.r_flag", f, uint16(mipv6.BAFlagR)),
		// P (RFC 5213), T (RFC 5555), B (RFC 6602): never set by mipv6.
		bitField("mip6.ba.p_flag", f, 0x20),
		bitField("mip6.ba.t_flag", f, 0x10),
		bitField("mip6.ba.b_flag", f, 0x08),
		field("mip6.ba.seqnr", p.Sequence),
		field("mip6.ba.lifetime", p.Lifetime),
	)
	if k := p.IPv4Ack; k.Present {
		a := k.Address.As4()
		// Wireshark 4.0 shows the Status with another registry's names
		// (129 is "PPP"), so only its number is compared; the Pref-len and
		// address fields are named after the IPv4 Home Address option's.
		w = append(w,
			field("mip6.options.ipv4aa", colonHex(mipv6.OptIPv4AddressAck, 6, k.Status, k.PrefixLen<<2, a[0], a[1], a[2], a[3])),
			field("mip6.mobility_opt.len", 6),
			field("mip6.ipv4aa.sts", k.Status),
			field("mip6.ipv4ha.preflen", k.PrefixLen),
			field("mip6.ipv4ha.ha", k.Address),
		)
	}
	if p.RefreshInterval != 0 {
		w = append(w,
			field("mip6.options.bra", colonHex(mipv6.OptBindingRefreshAdvice, 2, byte(p.RefreshInterval>>8), byte(p.RefreshInterval))),
			field("mip6.mobility_opt.len", 2),
			field("mip6.bra.interval", p.RefreshInterval),
		)
	}
	return w
}

func wantBEFields(p mipv6.BEPacket, pkt []byte) []tsField {
	w := wantIPv6("eth:ethertype:ipv6:mipv6", p.Src, p.Dst, pkt)
	w = append(w, wantMH(mipv6.TypeBindingError, mipv6.MobilityHeader(pkt[40:]))...)
	return append(w, field("mip6.be.status", p.Status), field("mip6.be.haddr", p.HomeAddress))
}

func wantBRRFields(p mipv6.BRRPacket, pkt []byte) []tsField {
	w := wantIPv6("eth:ethertype:ipv6:mipv6", p.Src, p.Dst, pkt)
	w = append(w, wantMH(mipv6.TypeBindingRefreshRequest, mipv6.MobilityHeader(pkt[40:]))...)
	return append(w, field("mip6.binding_refresh_request", "00:00"))
}

// kgswitchBUs returns the Binding Updates kgswitch sends for one VM, as
// its Binding produces them: the registration from the care-of address, a
// refresh, and the de-registration from the home link (RFC 6275 §11.5.4).
func kgswitchBUs(t *testing.T) (reg, refresh, dereg mipv6.BUPacket) {
	t.Helper()
	t0 := time.Unix(1700000000, 0)
	b := mipv6.NewBinding(hoa, haAddr, coa, 600*time.Second)
	reg, ok := b.Register(t0)
	if !ok {
		t.Fatal("got no registration BU from Binding.Register")
	}
	ba := mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Sequence: reg.Sequence, Lifetime: 150}
	if _, _, err := b.HandleBA(t0.Add(time.Second), ba); err != nil {
		t.Fatalf("got HandleBA error = %v, want nil", err)
	}
	refresh, ok = b.Tick(t0.Add(600 * time.Second))
	if !ok {
		t.Fatal("got no refresh BU from Binding.Tick at the end of the lifetime")
	}
	dereg, ok = b.Deregister(t0.Add(601*time.Second), hoa)
	if !ok {
		t.Fatal("got no de-registration BU from Binding.Deregister")
	}
	if refresh.Sequence != mipv6.ClockSequence(t0.Add(600*time.Second)) || dereg.Lifetime != 0 || dereg.Src != hoa || dereg.HomeAddress != hoa {
		t.Fatalf("got BUs %+v, %+v, %+v: not a registration, refresh and de-registration from home", reg, refresh, dereg)
	}
	return reg, refresh, dereg
}

// vmIPv4 is the lab guest's IPv4 home address.
var vmIPv4 = netip.MustParseAddr("192.0.2.10")

// kgswitchDualStackBUs returns the registration and refresh a binding
// carrying the VM's IPv4 home address sends (RFC 5555 §3.1.1).
func kgswitchDualStackBUs(t *testing.T) (reg, refresh mipv6.BUPacket) {
	t.Helper()
	t0 := time.Unix(1700000000, 0)
	b := mipv6.NewBinding(hoa, haAddr, coa, 600*time.Second)
	b.SetIPv4HomeAddress(vmIPv4)
	reg, ok := b.Register(t0)
	if !ok || !reg.IPv4HomeAddress.Address.IsValid() {
		t.Fatalf("got registration %+v (sent %v), want one with the IPv4 Home Address option", reg, ok)
	}
	ba := mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Sequence: reg.Sequence, Lifetime: 150,
		IPv4Ack: mipv6.IPv4AddressAck{Present: true, PrefixLen: 32, Address: vmIPv4}}
	if _, _, err := b.HandleBA(t0.Add(time.Second), ba); err != nil {
		t.Fatalf("got HandleBA error = %v, want nil", err)
	}
	if !b.IPv4Tunnelling(t0.Add(time.Second)) {
		t.Fatal("got IPv4 not tunnelling after an accepting Ack, want tunnelling")
	}
	refresh, ok = b.Tick(t0.Add(600 * time.Second))
	if !ok || refresh.IPv4HomeAddress != reg.IPv4HomeAddress {
		t.Fatalf("got refresh %+v (sent %v), want one with the IPv4 Home Address option", refresh, ok)
	}
	return reg, refresh
}

type tsharkCase struct {
	name string
	pkt  []byte
	want []tsField
}

func tsharkCases(t *testing.T) []tsharkCase {
	reg, refresh, dereg := kgswitchBUs(t)
	allBU := mipv6.BUPacket{Src: coa, Dst: haAddr, HomeAddress: hoa, Sequence: 0xffff,
		Flags: mipv6.FlagA | mipv6.FlagH | mipv6.FlagL | mipv6.FlagK | mipv6.FlagM | mipv6.FlagR, Lifetime: 0xffff,
		AlternateCareOf: altCoA, NonceIndices: mipv6.NonceIndices{Present: true, Home: 7, CareOf: 0xfffe}}
	refused := mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Status: mipv6.StatusNotHomeSubnet, Flags: mipv6.BAFlagK | mipv6.BAFlagR,
		Sequence: 0x1234, Lifetime: 0, RefreshInterval: 30}
	outOfWindow := mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Status: mipv6.StatusSequenceOutOfWindow, Flags: mipv6.BAFlagK, Sequence: 0x42}
	reg4, refresh4 := kgswitchDualStackBUs(t)
	all4 := allBU
	all4.IPv4HomeAddress = mipv6.IPv4HomeAddress{Address: netip.IPv4Unspecified(), PrefixLen: 24, RequestPrefix: true}
	type baCase struct {
		name string
		p    mipv6.BAPacket
	}
	var bas []baCase
	for _, st := range []uint8{mipv6.IPv4StatusSuccess, mipv6.IPv4StatusUnspecified, mipv6.IPv4StatusProhibited,
		mipv6.IPv4StatusIncorrectHome, mipv6.IPv4StatusInvalidAddress, mipv6.IPv4StatusDynamicUnavailable,
		mipv6.IPv4StatusPrefixUnauthorized} {
		p := testBA()
		p.IPv4Ack = mipv6.IPv4AddressAck{Present: true, Status: st, Address: vmIPv4}
		if st == mipv6.IPv4StatusSuccess {
			p.IPv4Ack.PrefixLen = 32
			p.RefreshInterval = 30
		}
		bas = append(bas, baCase{fmt.Sprintf("BA with IPv4 %s", mipv6.IPv4StatusString(st)), p})
	}
	var cases []tsharkCase
	for _, c := range []struct {
		name string
		p    mipv6.BUPacket
	}{
		{"registration BU", reg},
		{"refresh BU", refresh},
		{"de-registration BU from home", dereg},
		{"BU with every flag and option", allBU},
		{"dual-stack registration BU", reg4},
		{"dual-stack refresh BU", refresh4},
		{"BU with IPv4 prefix request and every option", all4},
	} {
		b := mipv6.AppendBUPacket(nil, c.p)
		cases = append(cases, tsharkCase{c.name, b, wantBUFields(c.p, b)})
	}
	bas = append(bas,
		baCase{"BA accepted", testBA()},
		baCase{"BA not home subnet with refresh advice", refused},
		baCase{"BA sequence out of window", outOfWindow},
	)
	for _, c := range bas {
		b := mipv6.AppendBAPacket(nil, c.p)
		cases = append(cases, tsharkCase{c.name, b, wantBAFields(c.p, b)})
	}
	for _, p := range []mipv6.BEPacket{
		{Src: haAddr, Dst: coa, Status: mipv6.BEStatusUnknownBinding, HomeAddress: hoa},
		{Src: haAddr, Dst: coa, Status: mipv6.BEStatusUnrecognizedMHType, HomeAddress: netip.IPv6Unspecified()},
	} {
		b := mipv6.AppendBindingErrorPacket(nil, p)
		cases = append(cases, tsharkCase{fmt.Sprintf("BE status %d", p.Status), b, wantBEFields(p, b)})
	}
	brr := mipv6.BRRPacket{Src: haAddr, Dst: hoa}
	b := mipv6.AppendBRRPacket(nil, brr)
	return append(cases, tsharkCase{"BRR", b, wantBRRFields(brr, b)})
}

// TestCrossCheckTshark has Wireshark's dissectors decode every message kind
// package mipv6 encodes, among them each Binding Update kgswitch sends, and
// compares every field tshark shows for the IPv6 header, its extension
// headers and the Mobility Header with the values the packet was encoded
// from. Any malformed-packet or expert item, in `tshark -V` or in the
// dissection, fails the test. Wireshark 4.0 does not verify Mobility Header
// checksums (mip6 has no such preference; see `tshark -G defaultprefs`),
// so TestCrossCheckScapy and mipv6's golden tests cover the checksum.
func TestCrossCheckTshark(t *testing.T) {
	tshark := requireTshark(t)
	cases := tsharkCases(t)
	pkts := make([][]byte, len(cases))
	for i, c := range cases {
		pkts[i] = c.pkt
	}
	file := writePcap(t, pkts...)
	text := tsharkFrames(t, tshark, file, len(cases))
	fields, problems := tsharkFields(t, tshark, file, len(cases))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if p := tsharkProblems(text[i]); len(p) != 0 {
				t.Errorf("got tshark -V problems %q, want none", p)
			}
			if len(problems[i]) != 0 {
				t.Errorf("got tshark dissection problems %q, want none", problems[i])
			}
			if diff := cmp.Diff(c.want, fields[i]); diff != "" {
				t.Errorf("got tshark fields diff (-encoded +tshark):\n%s", diff)
			}
		})
	}
}

// TestCrossCheckTsharkCanFail proves that the checks above can fail: a
// Mobility Header whose Header Len overruns the packet is reported as
// malformed by both views of tshark's output, and a field that differs
// from what was encoded shows up in the comparison.
func TestCrossCheckTsharkCanFail(t *testing.T) {
	tshark := requireTshark(t)
	good := mipv6.AppendBUPacket(nil, testBU())
	bad := append([]byte(nil), good...)
	bad[64+1] = 5 // Header Len: 48 octets, but only 16 follow
	file := writePcap(t, bad, good)
	text := tsharkFrames(t, tshark, file, 2)
	if p := tsharkProblems(text[0]); len(p) == 0 {
		t.Errorf("got no tshark -V problem for an overrunning Mobility Header, want one; output:\n%s", strings.Join(text[0], "\n"))
	}
	fields, problems := tsharkFields(t, tshark, file, 2)
	if len(problems[0]) == 0 {
		t.Errorf("got no PDML problem for an overrunning Mobility Header, want one; fields: %v", fields[0])
	}
	other := testBU()
	other.Sequence++
	if cmp.Equal(wantBUFields(other, good), fields[1]) {
		t.Errorf("got tshark fields equal to those of sequence %d, want a difference", other.Sequence)
	}
	if !cmp.Equal(wantBUFields(testBU(), good), fields[1]) {
		t.Errorf("got tshark fields diff for the unmodified BU:\n%s", cmp.Diff(wantBUFields(testBU(), good), fields[1]))
	}

	// The same for the Dual-Stack options' fields.
	bu4 := testBU()
	bu4.IPv4HomeAddress = mipv6.IPv4HomeAddress{Address: vmIPv4, PrefixLen: 32}
	ba4 := testBA()
	ba4.IPv4Ack = mipv6.IPv4AddressAck{Present: true, Status: mipv6.IPv4StatusProhibited, Address: vmIPv4}
	pkt4, ack4 := mipv6.AppendBUPacket(nil, bu4), mipv6.AppendBAPacket(nil, ba4)
	fields, _ = tsharkFields(t, tshark, writePcap(t, pkt4, ack4), 2)
	if !cmp.Equal(wantBUFields(bu4, pkt4), fields[0]) || !cmp.Equal(wantBAFields(ba4, ack4), fields[1]) {
		t.Fatalf("got tshark fields diff for the unmodified dual-stack BU and BA:\n%s%s",
			cmp.Diff(wantBUFields(bu4, pkt4), fields[0]), cmp.Diff(wantBAFields(ba4, ack4), fields[1]))
	}
	other4 := bu4
	other4.IPv4HomeAddress.PrefixLen = 24
	if cmp.Equal(wantBUFields(other4, pkt4), fields[0]) {
		t.Error("got tshark fields equal to those of an IPv4 prefix length of 24, want a difference")
	}
	otherAck := ba4
	otherAck.IPv4Ack.Status = mipv6.IPv4StatusIncorrectHome
	if cmp.Equal(wantBAFields(otherAck, ack4), fields[1]) {
		t.Error("got tshark fields equal to those of IPv4 status 130, want a difference")
	}
}

// scapyScript has scapy decode the packets given as hex arguments and prints
// a JSON list with, per packet, the fields scapy decodes plus the checksum
// and bytes scapy produces when it encodes the decoded packet again with
// lengths, padding and checksum left to itself.
const scapyScript = `
import json, sys
from scapy.all import raw
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, HAO, Pad1, PadN,
    MIP6MH_BU, MIP6MH_BA, MIP6MH_BE, MIP6MH_BRR, MIP6OptBRAdvice, MIP6OptAltCoA, MIP6OptNonceIndices,
    MIP6OptUnknown)

KINDS = [(MIP6MH_BU, "BU"), (MIP6MH_BA, "BA"), (MIP6MH_BE, "BE"), (MIP6MH_BRR, "BRR")]

def is_pad(o):
    return isinstance(o, (Pad1, PadN))

def decode(wire):
    p = IPv6(wire)
    out = {"src": p.src, "dst": p.dst, "plen": p.plen, "hlim": p.hlim}
    found = [k for k in KINDS if k[0] in p]
    if not found:
        sys.exit("scapy found no mobility header in " + p.summary())
    cls, kind = found[0]
    mh = p[cls]
    out.update(type=kind, mhtype=mh.mhtype, mhlen=mh.len, cksum=mh.cksum)
    out["hoa"] = [o.hoa for o in p[IPv6ExtHdrDestOpt].options if isinstance(o, HAO)] if IPv6ExtHdrDestOpt in p else []
    if IPv6ExtHdrRouting in p:
        rh = p[IPv6ExtHdrRouting]
        out.update(rhtype=rh.type, segleft=rh.segleft, addresses=rh.addresses)
    if kind == "BU":
        out.update(seq=mh.seq, flags=(int(mh.flags) << 9) | mh.reserved, lifetime=mh.mhtime)
    elif kind == "BA":
        out.update(status=mh.status, flags=(int(mh.flags) << 5) | mh.res2, seq=mh.seq, lifetime=mh.mhtime)
    elif kind == "BE":
        out.update(status=mh.status, ha=mh.ha)
    opts = list(mh.options)
    out["pads_zero"] = all(o.optdata == b"\0" * len(o.optdata) for o in opts if isinstance(o, PadN))
    opts = [o for o in opts if not is_pad(o)]
    out["options"] = [o.otype for o in opts]
    out["refresh"] = [o.rinter for o in opts if isinstance(o, MIP6OptBRAdvice)]
    out["altcoa"] = [o.acoa for o in opts if isinstance(o, MIP6OptAltCoA)]
    out["nonce"] = [[o.hni, o.coni] for o in opts if isinstance(o, MIP6OptNonceIndices)]
    # scapy has no class for RFC 5555's options: it frames them as unknown.
    out["unknown"] = [[o.otype, o.odata.hex()] for o in opts if isinstance(o, MIP6OptUnknown)]
    # Encode again. scapy uses the Home Address option for the
    # pseudo-header only when it is the header's sole option, so the parsed
    # padding goes and autopad redoes it.
    q = IPv6(wire)
    del q.plen
    if IPv6ExtHdrDestOpt in q:
        d = q[IPv6ExtHdrDestOpt]
        d.options = [o for o in d.options if isinstance(o, HAO)]
        del d.len
    m = q[cls]
    m.options = [o for o in m.options if not is_pad(o)]
    del m.len
    del m.cksum
    rebuilt = raw(q)
    out["scapy_cksum"] = IPv6(rebuilt)[cls].cksum
    out["scapy_bytes"] = rebuilt.hex()
    return out

print(json.dumps([decode(bytes.fromhex(h)) for h in sys.argv[1:]]))
`

// runScapy returns scapy's decoding of each packet.
func runScapy(t *testing.T, pkts ...[]byte) []map[string]any {
	t.Helper()
	args := []string{"-c", scapyScript}
	for _, p := range pkts {
		args = append(args, hex.EncodeToString(p))
	}
	cmd := exec.Command(python3(), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scapy: %v: %s", err, stderr.String())
	}
	var m []map[string]any
	// scapy may print warnings before the JSON line.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("scapy output %q: %v", out, err)
	}
	if len(m) != len(pkts) {
		t.Fatalf("got %d scapy decodings, want %d", len(m), len(pkts))
	}
	return m
}

func wantField(t *testing.T, m map[string]any, key string, want any) {
	t.Helper()
	got := m[key]
	if f, ok := got.(float64); ok {
		got = int(f)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got scapy %s = %v, want %v", key, got, want)
	}
}

// scapyCase is a packet package mipv6 encoded and the fields scapy must
// decode from it, keyed as scapyScript prints them.
type scapyCase struct {
	name   string
	pkt    []byte
	mhOff  int
	fields map[string]any
}

func scapyBU(name string, p mipv6.BUPacket) scapyCase {
	var alt []netip.Addr
	var opts []int
	var nonce [][]int
	var unknown [][]any
	if h := p.IPv4HomeAddress; h.Address.Is4() {
		opts = append(opts, mipv6.OptIPv4HomeAddress)
		pFlag := byte(0)
		if h.RequestPrefix {
			pFlag = 2
		}
		a := h.Address.As4()
		unknown = append(unknown, []any{mipv6.OptIPv4HomeAddress, hex.EncodeToString([]byte{h.PrefixLen<<2 | pFlag, 0, a[0], a[1], a[2], a[3]})})
	}
	if p.NonceIndices.Present {
		opts = append(opts, mipv6.OptNonceIndices)
		nonce = append(nonce, []int{int(p.NonceIndices.Home), int(p.NonceIndices.CareOf)})
	}
	if p.AlternateCareOf.IsValid() {
		opts = append(opts, mipv6.OptAlternateCareOf)
		alt = append(alt, p.AlternateCareOf)
	}
	return scapyCase{name, mipv6.AppendBUPacket(nil, p), 64, map[string]any{
		"type": "BU", "mhtype": mipv6.TypeBindingUpdate, "src": p.Src, "dst": p.Dst, "hoa": []netip.Addr{p.HomeAddress},
		"seq": int(p.Sequence), "flags": int(p.Flags), "lifetime": int(p.Lifetime),
		"options": opts, "altcoa": alt, "nonce": nonce, "refresh": []int(nil), "unknown": unknown,
	}}
}

func scapyBA(name string, p mipv6.BAPacket) scapyCase {
	var refresh, opts []int
	var unknown [][]any
	if k := p.IPv4Ack; k.Present {
		opts = append(opts, mipv6.OptIPv4AddressAck)
		a := k.Address.As4()
		unknown = append(unknown, []any{mipv6.OptIPv4AddressAck, hex.EncodeToString([]byte{k.Status, k.PrefixLen << 2, a[0], a[1], a[2], a[3]})})
	}
	if p.RefreshInterval != 0 {
		refresh = []int{int(p.RefreshInterval)}
		opts = append(opts, mipv6.OptBindingRefreshAdvice)
	}
	return scapyCase{name, mipv6.AppendBAPacket(nil, p), 64, map[string]any{
		"type": "BA", "mhtype": mipv6.TypeBindingAck, "src": p.Src, "dst": p.Dst, "hoa": []netip.Addr(nil),
		"rhtype": 2, "segleft": 1, "addresses": []netip.Addr{p.HomeAddress},
		"status": int(p.Status), "flags": int(p.Flags), "seq": int(p.Sequence), "lifetime": int(p.Lifetime),
		"options": opts, "refresh": refresh, "unknown": unknown,
	}}
}

// TestCrossCheckScapy has scapy decode every message kind package mipv6
// encodes: scapy must find the fields the packet was encoded from, the
// same checksum, and, encoding the packet again itself, the same bytes.
// The other direction, scapy's packets decoded by mipv6, is mipv6's
// TestGoldenDecode.
func TestCrossCheckScapy(t *testing.T) {
	requireScapy(t)
	reg, refresh, dereg := kgswitchBUs(t)
	allBU := testBU()
	allBU.Flags, allBU.Sequence, allBU.Lifetime = mipv6.FlagA|mipv6.FlagH|mipv6.FlagL|mipv6.FlagK|mipv6.FlagM|mipv6.FlagR, 0xffff, 0
	altBU := testBU()
	altBU.AlternateCareOf = altCoA
	nonceBU := testBU()
	nonceBU.NonceIndices = mipv6.NonceIndices{Present: true, Home: 7, CareOf: 0xfffe}
	bothBU := nonceBU
	bothBU.AlternateCareOf = altCoA
	reg4, refresh4 := kgswitchDualStackBUs(t)
	all4 := bothBU
	all4.IPv4HomeAddress = mipv6.IPv4HomeAddress{Address: netip.IPv4Unspecified(), PrefixLen: 24, RequestPrefix: true}
	ack4 := testBA()
	ack4.IPv4Ack = mipv6.IPv4AddressAck{Present: true, PrefixLen: 32, Address: vmIPv4}
	ack4.RefreshInterval = 30
	refused4 := testBA()
	refused4.IPv4Ack = mipv6.IPv4AddressAck{Present: true, Status: mipv6.IPv4StatusPrefixUnauthorized, Address: vmIPv4}
	cases := []scapyCase{
		scapyBU("registration BU", reg),
		scapyBU("refresh BU", refresh),
		scapyBU("de-registration BU from home", dereg),
		scapyBU("BU with every flag", allBU),
		scapyBU("BU with alternate care-of address", altBU),
		scapyBU("BU with nonce indices", nonceBU),
		scapyBU("BU with nonce indices and alternate care-of address", bothBU),
		scapyBU("dual-stack registration BU", reg4),
		scapyBU("dual-stack refresh BU", refresh4),
		scapyBU("BU with IPv4 prefix request, nonce indices and alternate care-of address", all4),
		scapyBA("BA with IPv4 accepted and refresh advice", ack4),
		scapyBA("BA with IPv4 prefix allocation unauthorized", refused4),
		scapyBA("BA accepted", testBA()),
		scapyBA("BA DAD failed with refresh advice", mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa,
			Status: mipv6.StatusDADFailed, Flags: mipv6.BAFlagK | mipv6.BAFlagR, Sequence: 7, Lifetime: 1, RefreshInterval: 2}),
		scapyBA("BA sequence out of window", mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa,
			Status: mipv6.StatusSequenceOutOfWindow, Sequence: 0x42}),
	}
	for _, p := range []mipv6.BEPacket{
		{Src: haAddr, Dst: coa, Status: mipv6.BEStatusUnknownBinding, HomeAddress: hoa},
		{Src: haAddr, Dst: coa, Status: mipv6.BEStatusUnrecognizedMHType, HomeAddress: netip.IPv6Unspecified()},
	} {
		cases = append(cases, scapyCase{fmt.Sprintf("BE status %d", p.Status), mipv6.AppendBindingErrorPacket(nil, p), 40, map[string]any{
			"type": "BE", "mhtype": mipv6.TypeBindingError, "src": p.Src, "dst": p.Dst, "hoa": []netip.Addr(nil),
			"status": int(p.Status), "ha": p.HomeAddress, "options": []int(nil),
		}})
	}
	brr := mipv6.BRRPacket{Src: haAddr, Dst: hoa}
	cases = append(cases, scapyCase{"BRR", mipv6.AppendBRRPacket(nil, brr), 40, map[string]any{
		"type": "BRR", "mhtype": mipv6.TypeBindingRefreshRequest, "src": brr.Src, "dst": brr.Dst, "hoa": []netip.Addr(nil),
		"options": []int(nil),
	}})

	pkts := make([][]byte, len(cases))
	for i, c := range cases {
		pkts[i] = c.pkt
	}
	decoded := runScapy(t, pkts...)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := decoded[i]
			for k, v := range c.fields {
				wantField(t, m, k, v)
			}
			mh := mipv6.MobilityHeader(c.pkt[c.mhOff:])
			wantField(t, m, "plen", len(c.pkt)-40)
			wantField(t, m, "hlim", 64)
			wantField(t, m, "mhlen", len(mh)/8-1)
			wantField(t, m, "pads_zero", true)
			wantField(t, m, "cksum", int(mh.Checksum()))
			wantField(t, m, "scapy_cksum", int(mh.Checksum()))
			wantField(t, m, "scapy_bytes", hex.EncodeToString(c.pkt))
		})
	}
}
