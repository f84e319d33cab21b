package coafilter

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

func TestRuleset(t *testing.T) {
	head := "table inet kgswitch\ndelete table inet kgswitch\ntable inet kgswitch {\n" +
		"\tchain prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n" +
		"\t\tiifname \"eth1\" ip6 daddr 2001:db8:3000::3 meta l4proto { 4, 41, 135 } counter drop\n" +
		"\t\tiifname \"eth1\" ip6 daddr 2001:db8:3000::3 rt type 2 counter drop\n"
	tail := "\t}\n}\n"
	for _, tc := range []struct {
		name    string
		espFrom []netip.Addr
		want    string
	}{
		{"no IPsec", nil, head + tail},
		{"two Home Agents under ESP", []netip.Addr{ha, netip.MustParseAddr("2001:db8:2::1")}, head +
			"\t\tiifname \"eth1\" ip6 daddr 2001:db8:3000::3 ip6 saddr { 2001:db8:1::1, 2001:db8:2::1 } meta l4proto esp counter drop\n" + tail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Ruleset("eth1", coa, tc.espFrom); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
	if got, want := Removal(), "table inet kgswitch\ndelete table inet kgswitch\n"; got != want {
		t.Errorf("Removal() = %q, want %q", got, want)
	}
}

// TestRulesetParses has nft check the scripts, where nft is installed and
// may talk to the kernel (nft -c needs netlink, so root).
func TestRulesetParses(t *testing.T) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft not installed")
	}
	for _, script := range []string{Ruleset("eth1", coa, []netip.Addr{ha}), Removal()} {
		cmd := exec.Command(nft, "-c", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		if err != nil && strings.Contains(string(out), "Operation not permitted") {
			t.Skip("nft -c needs privileges")
		}
		if err != nil {
			t.Errorf("nft -c: %v\n%s\nscript:\n%s", err, out, script)
		}
	}
}
