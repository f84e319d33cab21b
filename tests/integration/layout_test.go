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
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, lab.LayoutPatch)
		})
	}
}

// TestPatchLayoutCoverAndReturn is TestPatchLayout's departure cover and
// return home. It runs alone, as their one-bridge tests do (see
// lab_test.go): both are held to a loss of a few probes, which the load of
// other labs on a 2-core machine exceeds.
func TestPatchLayoutCoverAndReturn(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(*testing.T, lab.HostLayout)
	}{
		{"departure-cover", func(t *testing.T, l lab.HostLayout) { departureCoverOn(t, l) }},
		{"return-home", returnHome},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, lab.LayoutPatch) })
	}
}

// TestLayoutRefused: kgswitch started on a host whose layout its
// configuration does not describe exits at once with status 1, saying what it
// found and what to configure, and installs no flow on any bridge.
func TestLayoutRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		layout lab.HostLayout
		edit   func(cfg string) string
		// setup, when not nil, changes the host before kgswitch starts.
		setup func(ctx context.Context, h *lab.OVSHost) error
		want  []string
	}{
		{name: "one-bridge configuration on a patch host", layout: lab.LayoutPatch,
			edit: func(cfg string) string { return strings.Replace(cfg, "uplink_bridge = \"br-ex\"\n", "", 1) },
			want: []string{"uplink eth0 is on bridge br-ex, not br0", "patch ports int-br-ex and phy-br-ex", `set uplink_bridge = "br-ex"`}},
		{name: "patch configuration on a one-bridge host", layout: lab.LayoutOneBridge,
			edit: func(cfg string) string { return "uplink_bridge = \"br-ex\"\n" + cfg },
			want: []string{"uplink eth0 is on bridge br0, not on uplink_bridge br-ex"}},
		{name: "patch host without its patch pair", layout: lab.LayoutPatch,
			setup: func(ctx context.Context, h *lab.OVSHost) error {
				_, err := h.Vsctl(ctx, "del-port", lab.Bridge, lab.PatchVM)
				return err
			},
			want: []string{`no patch port joins br0 and br-ex (found phy-br-ex on br-ex with peer "int-br-ex")`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e := newEnvWith(t, ctx, lab.Options{Layout: tc.layout})
			cfg, err := e.WriteConfig("hostB", true)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				text := tc.edit(string(b))
				if text == string(b) {
					t.Fatalf("the edit changed nothing in:\n%s", b)
				}
				if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.setup != nil {
				if err := tc.setup(ctx, e.Lab.OVS("hostB")); err != nil {
					t.Fatal(err)
				}
			}
			out, err := e.Lab.Run(ctx, "hostB", e.Bin.Kgswitch, "run", "--config", cfg)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("kgswitch run: %v, want exit status 1; output:\n%s", err, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("kgswitch's output lacks %q:\n%s", want, out)
				}
			}
			bridges := []string{lab.Bridge}
			if tc.layout == lab.LayoutPatch {
				bridges = append(bridges, lab.UplinkBridge)
			}
			for _, br := range bridges {
				flows, err := e.Lab.Run(ctx, "hostB", "ovs-ofctl", "dump-flows", "unix:"+filepath.Join(e.Lab.OVS("hostB").RunDir, br+".mgmt"))
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(flows, "cookie=0x6b67") {
					t.Errorf("refused kgswitch left flows on %s:\n%s", br, flows)
				}
			}
		})
	}
}
