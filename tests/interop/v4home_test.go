package interop

import (
	"encoding/hex"
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kgswitch/kgswitch/v4responder"
)

// v4UnsolicitedCases are the ARP packets a home host sends for a dual-stack
// VM unasked: the ARP Announcement pointing its IPv4 home address at the Home
// Agent (and, back home, at the VM), and the reply telling the returning
// guest its gateway's MAC.
func v4UnsolicitedCases(t *testing.T) []v4Case {
	haMAC := net.HardwareAddr{0x02, 0x48, 0x41, 0, 0, 1}
	build := func(u v4responder.UnsolicitedARP) []byte {
		t.Helper()
		f, err := v4responder.AppendUnsolicitedARP(nil, u)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	hoa4 := v4Guest.Addr
	return []v4Case{
		{"ARP Announcement of the Home Agent", build(v4responder.UnsolicitedARP{Addr: hoa4, LLAddr: haMAC, From: v4AnswerMAC}), map[string]any{
			"eth_src": v4AnswerMAC.String(), "eth_dst": "ff:ff:ff:ff:ff:ff", "op": 1,
			"hwsrc": haMAC.String(), "psrc": "192.0.2.10", "hwdst": "00:00:00:00:00:00", "pdst": "192.0.2.10",
		}},
		{"gateway's MAC to a guest back home", build(v4responder.UnsolicitedARP{Addr: netip.MustParseAddr("192.0.2.1"), LLAddr: v4GatewayMAC,
			From: v4GatewayMAC, To: v4GuestMAC, ToAddr: hoa4}), map[string]any{
			"eth_src": v4GatewayMAC.String(), "eth_dst": v4GuestMAC.String(), "op": 2,
			"hwsrc": v4GatewayMAC.String(), "psrc": "192.0.2.1", "hwdst": v4GuestMAC.String(), "pdst": "192.0.2.10",
		}},
	}
}

// TestV4UnsolicitedCrossCheck has scapy and Wireshark decode the home host's
// unsolicited ARP. Each frame is a capture of its own for tshark: an
// announcement moves an address, which tshark, seeing the address at another
// MAC earlier in the same capture, rightly reports as a duplicate.
func TestV4UnsolicitedCrossCheck(t *testing.T) {
	tshark := requireTshark(t)
	requireScapy(t)
	for _, c := range v4UnsolicitedCases(t) {
		t.Run(c.name, func(t *testing.T) {
			out, err := exec.Command(python3(), "-c", v4ScapyScript, hex.EncodeToString(c.reply)).Output()
			if err != nil {
				t.Fatalf("scapy: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			var got []map[string]any
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil || len(got) != 1 {
				t.Fatalf("scapy output %q: %v", out, err)
			}
			if diff := cmp.Diff(jsonRound(t, c.want), got[0]); diff != "" {
				t.Errorf("scapy decoding (-want +got):\n%s", diff)
			}
			file := writeFramesPcap(t, c.reply)
			args := []string{"-r", file, "-T", "fields", "-E", "separator=/t", "-E", "aggregator=,", "-E", "occurrence=a"}
			for _, f := range v4TsharkFields {
				args = append(args, "-e", f)
			}
			fields := strings.Split(strings.TrimRight(string(runTshark(t, tshark, args...)), "\n"), "\t")
			if diff := cmp.Diff(fieldPairs(wantV4Tshark(c.want)), fieldPairs(fields)); diff != "" {
				t.Errorf("tshark fields (-want +got):\n%s", diff)
			}
			if p := tsharkProblems(tsharkFrames(t, tshark, file, 1)[0]); len(p) != 0 {
				t.Errorf("tshark reports problems: %q", p)
			}
		})
	}
}
