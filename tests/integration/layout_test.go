package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// TestPatchLayout runs the move tests with every host in OpenStack's layout
// (lab.LayoutPatch): the guests' ports on br0, the uplink and the host's
// address on br-ex, the two joined by patch ports. The guest stays reachable
// at its home address with its TCP stream intact, the Home Agent gets no
// ICMPv6 error from the foreign host, the home host covers the departure,
// and the guest comes home, as in the one-bridge layout.
func TestPatchLayout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(*testing.T, lab.HostLayout)
	}{
		{"move", moveKeepsHomeAddress},
		{"no-icmp-errors", noICMPErrorsToHomeAgent},
		{"departure-cover", func(t *testing.T, l lab.HostLayout) { departureCoverOn(t, l) }},
		{"return-home", returnHome},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, lab.LayoutPatch)
		})
	}
}

// TestPatchLayoutRefused: kgswitch started on a host of the patch layout
// with a configuration for the one-bridge layout exits at once, saying
// where it found the uplink and what to configure, and installs nothing.
func TestPatchLayoutRefused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnvWith(t, ctx, lab.Options{Layout: lab.LayoutPatch})
	cfg, err := e.WriteConfig("hostB", true)
	if err != nil {
		t.Fatal(err)
	}
	// The configuration of a one-bridge host: no uplink_bridge.
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "uplink_bridge = \"br-ex\"\n", "", 1)
	if text == string(b) {
		t.Fatalf("no uplink_bridge in the patch layout's configuration:\n%s", b)
	}
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := e.Lab.Run(ctx, "hostB", e.Bin.Kgswitch, "run", "--config", cfg)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("kgswitch run: %v, want exit status 1; output:\n%s", err, out)
	}
	for _, want := range []string{"uplink eth0 is on bridge br-ex, not br0", "patch ports int-br-ex and phy-br-ex", `set uplink_bridge = "br-ex"`} {
		if !strings.Contains(out, want) {
			t.Errorf("kgswitch's output lacks %q:\n%s", want, out)
		}
	}
	for _, br := range []string{lab.Bridge, lab.UplinkBridge} {
		flows, err := e.Lab.Run(ctx, "hostB", "ovs-ofctl", "dump-flows", "unix:"+filepath.Join(e.Lab.OVS("hostB").RunDir, br+".mgmt"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(flows, "cookie=0x6b67") {
			t.Errorf("refused kgswitch left flows on %s:\n%s", br, flows)
		}
	}
}
