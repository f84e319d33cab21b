package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// TestLayouts runs the move tests with every host in each layout besides
// the one-bridge layout, where the other tests run: OpenStack's
// (lab.LayoutPatch: the guests' ports on br0, the uplink and the host's
// address on br-ex, the two joined by patch ports) and the host's address
// on a NIC outside OVS (lab.LayoutNIC: eth1, with br0's own uplink eth0 to
// the same LAN). The guest stays reachable at its home address with its TCP
// stream intact and the Home Agent gets no ICMPv6 error from the foreign
// host, as in the one-bridge layout; TestLayoutsCoverAndReturn does the
// rest. Run one layout with -run 'TestLayouts/nic'.
func TestLayouts(t *testing.T) {
	t.Parallel()
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
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
					tc.run(t, layout)
				})
			}
		})
	}
}

// layouts are the host layouts besides the one-bridge layout.
var layouts = []lab.HostLayout{lab.LayoutPatch, lab.LayoutNIC}

// TestLayoutsCoverAndReturn is TestLayouts' departure cover and return
// home: the home host covers the departure, and the guest comes home. It
// runs alone, as their one-bridge tests do (see lab_test.go): both are held
// to a loss of a few probes, which the load of other labs on a 2-core
// machine exceeds.
func TestLayoutsCoverAndReturn(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout.String(), func(t *testing.T) {
			for _, tc := range []struct {
				name string
				run  func(*testing.T, lab.HostLayout)
			}{
				{"departure-cover", func(t *testing.T, l lab.HostLayout) { departureCoverOn(t, l) }},
				{"return-home", returnHome},
			} {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, layout) })
			}
		})
	}
}

// TestNICLayoutFilter: in layout 3 kgswitch keeps the host kernel from the
// care-of NIC's tunnel packets with an nftables table of its own while it
// runs, and removes it when stopped with SIGTERM: a table left behind would
// swallow the host's tunnel packets for good.
func TestNICLayoutFilter(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnvWith(t, ctx, lab.Options{Layout: lab.LayoutNIC})
	cfg, err := e.WriteConfig("hostB", true)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := e.RunKgswitch(ctx, "hostB", cfg)
	if err != nil {
		t.Fatal(err)
	}
	table, err := e.Lab.Run(ctx, "hostB", "nft", "list", "table", "inet", "kgswitch")
	if err != nil {
		_, _ = scenario.StopKgswitch(cmd, syscall.SIGKILL, 5*time.Second)
		t.Fatalf("no nftables table while kgswitch runs: %v\n%s", err, table)
	}
	for _, want := range []string{`iifname "eth1" ip6 daddr ` + lab.CareOfAddr.String(), "rt type 2", "drop"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if _, err := scenario.StopKgswitch(cmd, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := e.Lab.Run(ctx, "hostB", "nft", "list", "tables"); err != nil || strings.Contains(out, "kgswitch") {
		t.Errorf("after SIGTERM: nft list tables = %q, %v; want no kgswitch table", out, err)
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
		{name: "patch configuration on a one-bridge host", layout: lab.LayoutOneBridge,
			edit: func(cfg string) string { return "uplink_bridge = \"br-ex\"\n" + cfg },
			want: []string{"uplink eth0 is on bridge br0, not on uplink_bridge br-ex"}},
		{name: "patch host without its patch pair", layout: lab.LayoutPatch,
			setup: func(ctx context.Context, h *lab.OVSHost) error {
				_, err := h.Vsctl(ctx, "del-port", lab.Bridge, lab.PatchVM)
				return err
			},
			want: []string{`no patch port joins br0 and br-ex (found phy-br-ex on br-ex with peer "int-br-ex")`}},
		{name: "NIC configuration on a one-bridge host", layout: lab.LayoutOneBridge,
			edit: func(cfg string) string { return "care_of_interface = \"eth1\"\n" + cfg },
			want: []string{"care-of address " + lab.CareOfAddr.String() + " is on br0, not on care_of_interface eth1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e := newEnvWith(t, ctx, lab.Options{Layout: tc.layout})
			cfg := writeEditedConfig(t, e, "hostB", tc.edit)
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
			if out, err := e.Lab.Run(ctx, "hostB", "nft", "list", "tables"); err != nil || strings.Contains(out, "kgswitch") {
				t.Errorf("refused kgswitch: nft list tables = %q, %v; want no kgswitch table", out, err)
			}
		})
	}
}

// TestLayoutDetected: a configuration that leaves the layout out on a host
// where it is unambiguous runs as if it named it, and kgswitch says what it
// detected: OpenStack's layout (the uplink on br-ex, one patch pair to br0:
// its flows go on br-ex too) and a care-of address on a NIC outside OVS (its
// nftables table keeps the host kernel from the tunnel packets).
func TestLayoutDetected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		layout lab.HostLayout
		key    string
		on     func(ctx context.Context, e *scenario.Env) error
	}{
		{lab.LayoutPatch, "uplink_bridge = \"br-ex\"\n", func(ctx context.Context, e *scenario.Env) error {
			flows, err := e.Lab.Run(ctx, "hostB", "ovs-ofctl", "dump-flows", "unix:"+filepath.Join(e.Lab.OVS("hostB").RunDir, lab.UplinkBridge+".mgmt"))
			if err == nil && !strings.Contains(flows, "cookie=0x6b67") {
				err = fmt.Errorf("no kgswitch flow on %s yet:\n%s", lab.UplinkBridge, flows)
			}
			return err
		}},
		{lab.LayoutNIC, "care_of_interface = \"eth1\"\n", func(ctx context.Context, e *scenario.Env) error {
			out, err := e.Lab.Run(ctx, "hostB", "nft", "list", "tables")
			if err == nil && !strings.Contains(out, "kgswitch") {
				err = fmt.Errorf("no kgswitch table yet: %q", out)
			}
			return err
		}},
	} {
		t.Run(tc.layout.String(), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e := newEnvWith(t, ctx, lab.Options{Layout: tc.layout})
			cfg := writeEditedConfig(t, e, "hostB", func(cfg string) string { return strings.Replace(cfg, tc.key, "", 1) })
			if err := e.StartKgswitch(ctx, "hostB", cfg); err != nil {
				t.Fatal(err)
			}
			if _, err := e.WaitLogLine(ctx, "hostB", 0, `msg="host layout detected`, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := wait.Until(ctx, 10*time.Second, 100*time.Millisecond, func() error { return tc.on(ctx, e) }); err != nil {
				t.Error(err)
			}
		})
	}
}

// writeEditedConfig writes host's configuration with the guest declared,
// changed by edit (when not nil), which must change something.
func writeEditedConfig(t *testing.T, e *scenario.Env, host string, edit func(string) string) string {
	t.Helper()
	cfg, err := e.WriteConfig(host, true)
	if err != nil {
		t.Fatal(err)
	}
	if edit == nil {
		return cfg
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := edit(string(b))
	if text == string(b) {
		t.Fatalf("the edit changed nothing in:\n%s", b)
	}
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}
