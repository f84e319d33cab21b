package mipv6

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// The cross-check tests compare this package's encoding with two
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

// tsharkFrames runs `tshark -r file -V` and returns its verbose text split
// per frame, each line with leading and trailing space trimmed.
func tsharkFrames(t *testing.T, tshark, file string, n int) [][]string {
	t.Helper()
	cmd := exec.Command(tshark, "-r", file, "-V")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r %s -V: %v: %s", file, err, stderr.String())
	}
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

func wantLines(t *testing.T, what string, frame []string, want ...string) {
	t.Helper()
	have := make(map[string]bool, len(frame))
	for _, l := range frame {
		have[l] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("%s: tshark output lacks line %q; got:\n%s", what, w, strings.Join(frame, "\n"))
		}
	}
}

// TestCrossCheckTshark has Wireshark's Mobile IPv6 dissector decode the
// Binding Update and Acknowledgement this package builds. Wireshark 4.0 does
// not verify Mobility Header checksums (mip6 has no such preference; see
// `tshark -G defaultprefs`), so TestCrossCheckScapy covers the checksum.
func TestCrossCheckTshark(t *testing.T) {
	tshark := requireTshark(t)
	bu := testBU()
	ba := testBA()
	ba.Status = StatusNotHomeSubnet
	ba.RefreshInterval = 30
	be := BEPacket{Src: haAddr, Dst: coa, Status: BEStatusUnknownBinding, HomeAddress: hoa}
	frames := tsharkFrames(t, tshark, writePcap(t,
		AppendBUPacket(nil, bu), AppendBAPacket(nil, ba), AppendBindingErrorPacket(nil, be)), 3)
	for i, f := range frames {
		if p := tsharkProblems(f); len(p) != 0 {
			t.Errorf("frame %d: tshark reports problems: %q", i+1, p)
		}
	}
	wantLines(t, "binding update", frames[0],
		"[Protocols in frame: eth:ethertype:ipv6:ipv6.dstopts:mipv6]",
		"Source Address: 2001:db8:3000::3",
		"Destination Address: 2001:db8:2000::1",
		"Type: Home Address (0xc9)",
		"MIPv6 Home Address: 2001:db8:2000::10",
		"Payload protocol: No Next Header for IPv6 (59)",
		"Header length: 1 (16 bytes)",
		"Mobility Header Type: Binding Update (5)",
		"Sequence number: 4660",
		"1... .... .... .... = Acknowledge (A) flag: Binding Acknowledgement requested",
		".1.. .... .... .... = Home Registration (H) flag: Home Registration",
		"..0. .... .... .... = Link-Local Compatibility (L) flag: No Link-Local Address Compatibility",
		"...0 .... .... .... = Key Management Compatibility (K) flag: No Key Management Mobility Compatibility",
		".... .0.. .... .... = Mobile Router (R) flag: No Mobile Router Compatibility",
		"Lifetime: 150 (600 seconds)",
	)
	wantLines(t, "binding ack", frames[1],
		"[Protocols in frame: eth:ethertype:ipv6:ipv6.routing:mipv6]",
		"Source Address: 2001:db8:2000::1",
		"Destination Address: 2001:db8:3000::3",
		"Routing Header for IPv6 (Type 2 Routing)",
		"Type: Type 2 Routing (2)",
		"Segments Left: 1",
		"Address[1]: 2001:db8:2000::10",
		"Mobility Header Type: Binding Acknowledgement (6)",
		"Status: Not home subnet (132)",
		"Sequence number: 4660",
		"Lifetime: 150 (600 seconds)",
		"Refresh interval: 30 (120 seconds)",
	)
	wantLines(t, "binding error", frames[2],
		"Mobility Header Type: Binding Error (7)",
		"Status: Unknown binding for Home Address destination option (1)",
		"Home Address: 2001:db8:2000::10",
	)
}

// TestCrossCheckTsharkSeesMalformed proves that the tshark problem check
// above can fail: a Mobility Header whose Header Len overruns the packet is
// reported as malformed.
func TestCrossCheckTsharkSeesMalformed(t *testing.T) {
	tshark := requireTshark(t)
	b := AppendBUPacket(nil, testBU())
	b[64+1] = 5 // Header Len: 48 octets, but only 16 follow
	frames := tsharkFrames(t, tshark, writePcap(t, b), 1)
	if p := tsharkProblems(frames[0]); len(p) == 0 {
		t.Errorf("got no tshark problem for an overrunning Mobility Header, want one; output:\n%s", strings.Join(frames[0], "\n"))
	}
}

// scapyScript decodes and encodes Mobile IPv6 packets with scapy. Modes:
// "parse HEX" prints the fields scapy decodes plus the checksum and bytes
// scapy produces when it re-encodes the packet itself; "bu"/"ba" print a
// packet scapy builds from the JSON fields argument.
const scapyScript = `
import json, sys
from scapy.all import raw
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, HAO,
    MIP6MH_BU, MIP6MH_BA, MIP6OptBRAdvice)

mode = sys.argv[1]
if mode == "parse":
    wire = bytes.fromhex(sys.argv[2])
    p = IPv6(wire)
    out = {"src": p.src, "dst": p.dst}
    if MIP6MH_BU in p:
        mh = p[MIP6MH_BU]
        out.update(type="BU", seq=mh.seq, flags=(int(mh.flags) << 9) | mh.reserved,
                   lifetime=mh.getfieldval("mhtime"))
        out["hoa"] = [o.hoa for o in p[IPv6ExtHdrDestOpt].options if isinstance(o, HAO)]
    elif MIP6MH_BA in p:
        mh = p[MIP6MH_BA]
        rh = p[IPv6ExtHdrRouting]
        out.update(type="BA", status=mh.status, flags=int(mh.flags) << 5, seq=mh.seq,
                   lifetime=mh.getfieldval("mhtime"), rhtype=rh.type, segleft=rh.segleft,
                   addresses=rh.addresses,
                   refresh=[o.rinter for o in mh.options if isinstance(o, MIP6OptBRAdvice)])
    else:
        sys.exit("scapy found no BU or BA in " + p.summary())
    out["mhlen"] = mh.len
    out["cksum"] = mh.cksum
    # Re-encode with scapy computing the checksum. scapy uses the Home
    # Address option for the pseudo-header only when it is the header's
    # sole option, so drop the parsed padding and let autopad redo it.
    q = IPv6(wire)
    if IPv6ExtHdrDestOpt in q:
        d = q[IPv6ExtHdrDestOpt]
        d.options = [o for o in d.options if isinstance(o, HAO)]
        del d.len
    del q[MIP6MH_BU if out["type"] == "BU" else MIP6MH_BA].cksum
    rebuilt = raw(q)
    r = IPv6(rebuilt)
    out["scapy_cksum"] = r[MIP6MH_BU if out["type"] == "BU" else MIP6MH_BA].cksum
    out["scapy_bytes"] = rebuilt.hex()
elif mode == "bu":
    a = json.loads(sys.argv[2])
    p = (IPv6(src=a["src"], dst=a["dst"]) /
         IPv6ExtHdrDestOpt(options=[HAO(hoa=a["hoa"])]) /
         MIP6MH_BU(seq=a["seq"], flags=a["flags"] >> 9, reserved=a["flags"] & 0x1ff, mhtime=a["lifetime"]))
    out = {"bytes": raw(p).hex()}
elif mode == "ba":
    a = json.loads(sys.argv[2])
    p = (IPv6(src=a["src"], dst=a["dst"]) /
         IPv6ExtHdrRouting(type=2, segleft=1, addresses=[a["hoa"]]) /
         MIP6MH_BA(status=a["status"], flags=a["flags"] >> 5, seq=a["seq"], mhtime=a["lifetime"],
                   options=[MIP6OptBRAdvice(rinter=a["refresh"])]))
    out = {"bytes": raw(p).hex()}
print(json.dumps(out))
`

func runScapy(t *testing.T, args ...string) map[string]any {
	t.Helper()
	cmd := exec.Command(python3(), append([]string{"-c", scapyScript}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scapy %s: %v: %s", args[0], err, stderr.String())
	}
	var m map[string]any
	// scapy may print warnings before the JSON line.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("scapy %s output %q: %v", args[0], out, err)
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

// TestCrossCheckScapy checks our encoding against scapy both ways: scapy
// decodes our packets to the same fields and computes the same checksum
// (re-encoding them to identical bytes), and packets scapy builds parse here
// to the values scapy was given.
func TestCrossCheckScapy(t *testing.T) {
	requireScapy(t)
	t.Run("scapy parses our BU", func(t *testing.T) {
		for _, p := range []BUPacket{testBU(), {Src: coa, Dst: haAddr, HomeAddress: hoa, Sequence: 65535, Flags: FlagH | FlagK | FlagR, Lifetime: 0}} {
			b := AppendBUPacket(nil, p)
			m := runScapy(t, "parse", hex.EncodeToString(b))
			wantField(t, m, "type", "BU")
			wantField(t, m, "src", p.Src)
			wantField(t, m, "dst", p.Dst)
			wantField(t, m, "hoa", []netip.Addr{p.HomeAddress})
			wantField(t, m, "seq", int(p.Sequence))
			wantField(t, m, "flags", int(p.Flags))
			wantField(t, m, "lifetime", int(p.Lifetime))
			wantField(t, m, "mhlen", 1)
			sum := int(MobilityHeader(b[64:]).Checksum())
			wantField(t, m, "cksum", sum)
			wantField(t, m, "scapy_cksum", sum)
			wantField(t, m, "scapy_bytes", hex.EncodeToString(b))
		}
	})
	t.Run("scapy parses our BA", func(t *testing.T) {
		for _, p := range []BAPacket{testBA(), {Src: haAddr, Dst: coa, HomeAddress: hoa, Status: StatusDADFailed, Flags: BAFlagK, Sequence: 7, Lifetime: 1, RefreshInterval: 2}} {
			b := AppendBAPacket(nil, p)
			m := runScapy(t, "parse", hex.EncodeToString(b))
			wantField(t, m, "type", "BA")
			wantField(t, m, "src", p.Src)
			wantField(t, m, "dst", p.Dst)
			wantField(t, m, "rhtype", 2)
			wantField(t, m, "segleft", 1)
			wantField(t, m, "addresses", []netip.Addr{p.HomeAddress})
			wantField(t, m, "status", int(p.Status))
			wantField(t, m, "flags", int(p.Flags))
			wantField(t, m, "seq", int(p.Sequence))
			wantField(t, m, "lifetime", int(p.Lifetime))
			var refresh []int
			if p.RefreshInterval != 0 {
				refresh = []int{int(p.RefreshInterval)}
			}
			wantField(t, m, "refresh", refresh)
			sum := int(MobilityHeader(b[64:]).Checksum())
			wantField(t, m, "cksum", sum)
			wantField(t, m, "scapy_cksum", sum)
			wantField(t, m, "scapy_bytes", hex.EncodeToString(b))
		}
	})
	t.Run("we parse scapy's BU", func(t *testing.T) {
		want := BUPacket{Src: coa, Dst: haAddr, HomeAddress: hoa, Sequence: 0xbeef, Flags: FlagA | FlagH, Lifetime: 65535}
		args, _ := json.Marshal(map[string]any{"src": want.Src, "dst": want.Dst, "hoa": want.HomeAddress,
			"seq": want.Sequence, "flags": want.Flags, "lifetime": want.Lifetime})
		b, err := hex.DecodeString(runScapy(t, "bu", string(args))["bytes"].(string))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseBUPacket(b)
		if err != nil {
			t.Fatalf("ParseBUPacket(scapy %x): %v", b, err)
		}
		if got != want {
			t.Errorf("got ParseBUPacket(scapy) = %+v, want %+v", got, want)
		}
	})
	t.Run("we parse scapy's BA", func(t *testing.T) {
		want := BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Status: StatusSequenceOutOfWindow, Flags: BAFlagK,
			Sequence: 0x1001, Lifetime: 300, RefreshInterval: 100}
		args, _ := json.Marshal(map[string]any{"src": want.Src, "dst": want.Dst, "hoa": want.HomeAddress,
			"status": want.Status, "flags": want.Flags, "seq": want.Sequence, "lifetime": want.Lifetime,
			"refresh": want.RefreshInterval})
		b, err := hex.DecodeString(runScapy(t, "ba", string(args))["bytes"].(string))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseBAPacket(b)
		if err != nil {
			t.Fatalf("ParseBAPacket(scapy %x): %v", b, err)
		}
		if got != want {
			t.Errorf("got ParseBAPacket(scapy) = %+v, want %+v", got, want)
		}
	})
}
