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

// czSIGHUP sends SIGHUP to kgswitch.
func czSIGHUP(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
}

// czVMTable is the guest's [[vm]] table.
func czVMTable() string {
	return fmt.Sprintf("\n[[vm]]\nport = %q\nhome_address = %q\nmac = %q\n", lab.GuestPort, lab.HoA, lab.GuestMAC)
}

// TestReload: SIGHUP adds a VM to a running kgswitch, refuses a broken file
// (keeping the running configuration), and removes a VM with its flows.
func TestReload(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCzEnv(t, ctx, false, "")
	hoa := lab.HoA.String()
	if err := c.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	if err := c.Lab.WaitAnnounced(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx, "hostB", lab.GuestPort); err == nil {
		t.Fatalf("hostB serves %s before it is in its file: %+v", lab.GuestPort, st)
	}
	flows0 := c.flows(t, ctx, "hostB")

	// (a) A VM added to the file is served.
	if err := scenario.AppendConfig(c.CfgB, czVMTable()); err != nil {
		t.Fatal(err)
	}
	hup := time.Now()
	czSIGHUP(t, c.B)
	st, err := c.WaitBinding(ctx, "hostB", lab.GuestPort, "waiting-for-guest", 5*time.Second)
	if err != nil {
		t.Fatalf("after adding the VM and SIGHUP: %v", err)
	}
	served := time.Since(hup)
	if st.Location != "foreign" {
		t.Errorf("got location %q, want foreign", st.Location)
	}
	if _, err := c.Kgswitch(ctx, "hostB", "activate", lab.GuestPort); err != nil {
		t.Fatal(err)
	}
	if st, err = c.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	reach, err := c.WaitReachable(ctx, "cn", hoa, 20*time.Second)
	if err != nil {
		t.Fatalf("after the reload: %v", err)
	}
	flowsA := c.flows(t, ctx, "hostB")
	if len(guestFlows(flowsA)) == 0 {
		t.Errorf("no flow for the guest after the reload:\n%s", czFlowList(flowsA))
	}

	// (b) A file that does not parse is refused with its line; nothing changes.
	good, err := os.ReadFile(c.CfgB)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Count(string(good), "\n") + 2
	if err := os.WriteFile(c.CfgB, append(append([]byte{}, good...), "\nthis is = = not TOML\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	off := c.logSize()
	czSIGHUP(t, c.B)
	want := fmt.Sprintf("%s:%d:", c.CfgB, line)
	if log, ok := c.waitLog(ctx, off, 5*time.Second, "reload refused", want); !ok {
		t.Errorf("broken file: kgswitch's log lacks \"reload refused\" with %q:\n%s", want, log)
	} else {
		t.Logf("broken file refused: %s", strings.TrimSpace(log))
	}
	stB, err := c.Status(ctx, "hostB", lab.GuestPort)
	if err != nil || stB.BindingState != "bound" || stB.Sequence != st.Sequence {
		t.Errorf("status after a refused reload: %+v (%v), want bound with sequence %d as before", stB, err, st.Sequence)
	}
	if d := czDiff(czFlowStrings(flowsA), czFlowStrings(c.flows(t, ctx, "hostB"))); d != "" {
		t.Errorf("flows changed by a refused reload:\n%s", d)
	}
	// A file that parses but does not validate (a second VM with the
	// guest's MAC) is refused the same way.
	collide := fmt.Sprintf("\n[[vm]]\nport = \"vnet9\"\nhome_address = %q\nmac = %q\n", lab.VM2.HoA, lab.GuestMAC)
	line = strings.Count(string(good), "\n") + strings.Count(collide, "\n")
	if err := os.WriteFile(c.CfgB, append(append([]byte{}, good...), collide...), 0o644); err != nil {
		t.Fatal(err)
	}
	off = c.logSize()
	czSIGHUP(t, c.B)
	want = fmt.Sprintf("%s:%d:", c.CfgB, line)
	if log, ok := c.waitLog(ctx, off, 5*time.Second, "reload refused", want, "already used by port "+lab.GuestPort); !ok {
		t.Errorf("MAC collision: kgswitch's log lacks \"reload refused\" with %q:\n%s", want, log)
	} else {
		t.Logf("MAC collision refused: %s", strings.TrimSpace(log))
	}
	if _, err := c.Status(ctx, "hostB", "vnet9"); err == nil {
		t.Error("a refused reload added vnet9")
	}
	if stB, err := c.Status(ctx, "hostB", lab.GuestPort); err != nil || stB.BindingState != "bound" {
		t.Errorf("status after a refused reload: %+v (%v), want bound", stB, err)
	}
	if !czRunning(c.B) {
		t.Fatal("kgswitch exited on a broken file")
	}

	// (c) The VM removed from the file: no longer served, its flows gone.
	c.writeConfigB(t, false, "")
	off = c.logSize()
	czSIGHUP(t, c.B)
	gone, err := c.waitUnbound(ctx, 5*time.Second)
	if err != nil {
		t.Errorf("VM removed from the file: %v\n%s", err, c.logSince(off))
	}
	flowsC := c.flows(t, ctx, "hostB")
	if v, err := c.ExternalID(ctx, "hostB", lab.GuestPort, "kagemusha-state"); err != nil || v == "foreign/bound" {
		t.Errorf("kagemusha-state of the removed VM: got %q (%v), want it cleared", v, err)
	}
	t.Logf("reload: VM served %v after SIGHUP (state %s), bound after activate, cn reached it %v later; "+
		"VM removed: unlisted, flows gone %v after SIGHUP; kgswitch flows: %d without the VM, %d with it, %d after removal",
		served.Round(time.Millisecond), "waiting-for-guest", reach.Round(time.Millisecond), gone.Round(time.Millisecond),
		len(flows0), len(flowsA), len(flowsC))
}

// TestBadConfigAtStart: kgswitch refuses to start on a bad file, with exit
// status 2 and "path:line: reason" naming the right line.
func TestBadConfigAtStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	base, err := e.WriteConfig("hostB", true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	lines := strings.Split(good, "\n")
	lineOf := func(prefix string) int {
		for i, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line %q in\n%s", prefix, good)
		return 0
	}
	n := len(lines) // the good file ends with a newline: the next line is n
	const otherMAC = "52:54:00:00:00:99"
	other := fmt.Sprintf("\n[[vm]]\nport = \"vnet9\"\nhome_address = %q\nmac = %q\n", lab.VM2.HoA, otherMAC)
	coaLine := fmt.Sprintf("care_of_address = %q", lab.CareOfAddr)
	for _, tc := range []struct {
		name, text string
		line       int
		reason     string
	}{
		{"syntax error", good + "\nbridge = = \"br1\"\n", n + 1, ""},
		{"unknown key", "colour = \"blue\"\n" + good, 1, "unknown key colour"},
		{"bad address", strings.Replace(good, coaLine, `care_of_address = "2001:db8:3000::zz"`, 1),
			lineOf("care_of_address"), "2001:db8:3000::zz"},
		{"duplicate home address", good + strings.Replace(other, lab.VM2.HoA.String(), lab.HoA.String(), 1), n + 3, "already used by port vnet3"},
		{"MAC collision", good + strings.Replace(other, otherMAC, lab.GuestMAC.String(), 1), n + 4, "already used by port vnet3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(e.Lab.Dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
			if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			cmd := e.Lab.Command(cctx, "hostB", e.Bin.Kgswitch, "run", "--config", path)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			if code := exitCode(err); code != 2 || cctx.Err() != nil {
				t.Errorf("got exit status %d (%v) after %v, want 2 within 2s; stderr:\n%s", code, err, took.Round(time.Millisecond), stderr.String())
			}
			want := fmt.Sprintf("%s:%d: ", path, tc.line)
			if got := stderr.String(); !strings.Contains(got, want) || !strings.Contains(got, tc.reason) {
				t.Errorf("got stderr %q, want %q and %q", got, want, tc.reason)
			}
			t.Logf("%s: exit %d in %v: %s", tc.name, exitCode(err), took.Round(time.Millisecond), strings.TrimSpace(stderr.String()))
		})
	}
}

// TestDeclaredWithOVSVsctl: a VM declared only in OVSDB (ovs-vsctl set
// Interface ... external_ids:kagemusha-home-address) is served like one of
// the TOML file or of add-port, with the same flows, and unbound when the key
// goes.
func TestDeclaredWithOVSVsctl(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCzEnv(t, ctx, false, "")
	hoa := lab.HoA.String()
	ovsB := c.Lab.OVS("hostB")
	if err := c.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	if err := c.Lab.WaitAnnounced(ctx); err != nil {
		t.Fatal(err)
	}
	flows0 := c.flows(t, ctx, "hostB")

	// way waits for the guest to be bound and reachable and returns its flows.
	way := func(name string) ([]scenario.Flow, time.Duration) {
		t.Helper()
		if _, err := c.Kgswitch(ctx, "hostB", "activate", lab.GuestPort); err != nil {
			t.Fatalf("%s: activate: %v", name, err)
		}
		if _, err := c.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		reach, err := c.WaitReachable(ctx, "cn", hoa, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fl := c.flows(t, ctx, "hostB")
		if len(guestFlows(fl)) == 0 {
			t.Errorf("%s: no flow for the guest:\n%s", name, czFlowList(fl))
		}
		return fl, reach
	}
	unbound := func(name string) time.Duration {
		t.Helper()
		d, err := c.waitUnbound(ctx, 5*time.Second)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		return d
	}

	// OVSDB.
	if _, err := ovsB.Vsctl(ctx, "set", "Interface", lab.GuestPort, "external_ids:kagemusha-home-address="+hoa,
		"external_ids:attached-mac="+lab.GuestMAC.String()); err != nil {
		t.Fatal(err)
	}
	byDB, reachDB := way("ovs-vsctl")
	if err := c.WaitExternalID(ctx, "hostB", lab.GuestPort, "kagemusha-state", "foreign/bound", 5*time.Second); err != nil {
		t.Error(err)
	}
	if v, err := c.ExternalID(ctx, "hostB", lab.GuestPort, "kagemusha-care-of"); err != nil || v != lab.CareOfAddr.String() {
		t.Errorf("kagemusha-care-of: got %q (%v), want %v", v, err, lab.CareOfAddr)
	}
	if _, err := ovsB.Vsctl(ctx, "remove", "Interface", lab.GuestPort, "external_ids", "kagemusha-home-address"); err != nil {
		t.Fatal(err)
	}
	goneDB := unbound("key removed")
	if v, err := c.ExternalID(ctx, "hostB", lab.GuestPort, "kagemusha-state"); err != nil || v == "foreign/bound" {
		t.Errorf("kagemusha-state after the key was removed: got %q (%v), want it cleared", v, err)
	}

	// add-port.
	if _, err := c.Kgswitch(ctx, "hostB", "add-port", lab.GuestPort, "--hoa", hoa, "--mac", lab.GuestMAC.String()); err != nil {
		t.Fatalf("add-port: %v", err)
	}
	byCLI, reachCLI := way("add-port")

	// TOML: a clean stop (flows stay) and a start with the VM in the file;
	// the start reconciles the flows to what the file gives.
	if _, err := scenario.StopKgswitch(c.B, syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if fl := c.flows(t, ctx, "hostB"); len(guestFlows(fl)) == 0 {
		t.Errorf("SIGTERM removed the guest's flows; they should stay:\n%s", czFlowList(fl))
	}
	c.writeConfigB(t, true, "")
	var err error
	if c.B, err = c.RunKgswitch(ctx, "hostB", c.CfgB, "--log-level", "debug"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The start reconciles the flows; they are compared below.
	_ = wait.Until(ctx, 5*time.Second, 50*time.Millisecond, func() error {
		fl, err := c.KgswitchFlows(ctx, "hostB")
		if err != nil || czDiff(czFlowStrings(byDB), czFlowStrings(fl)) != "" {
			return errors.New("flows not reconciled yet")
		}
		return nil
	})
	byTOML := c.flows(t, ctx, "hostB")
	if n, err := c.Ping(ctx, "cn", hoa, 3); err != nil || n != 3 {
		t.Errorf("TOML: %d/3 pings answered (%v)", n, err)
	}

	for _, x := range []struct {
		name string
		fl   []scenario.Flow
	}{{"add-port", byCLI}, {"TOML", byTOML}} {
		if d := czDiff(czFlowStrings(byDB), czFlowStrings(x.fl)); d != "" {
			t.Errorf("flows of the ovs-vsctl way (-) and the %s way (+) differ:\n%s", x.name, d)
		}
	}
	t.Logf("ovs-vsctl: bound, cn reached the guest %v after activate; key removed: unbound and flows gone in %v; add-port: reached after %v; "+
		"kgswitch flows: %d without a VM, %d by ovs-vsctl, %d by add-port, %d by TOML", reachDB.Round(time.Millisecond),
		goneDB.Round(time.Millisecond), reachCLI.Round(time.Millisecond), len(flows0), len(byDB), len(byCLI), len(byTOML))
}

// TestMetrics: the Prometheus counters agree with `kgswitch status`.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The daemon listens in hostB's own namespace: any port is free there.
	const addr = "[::1]:9477"
	c := newCzEnv(t, ctx, true, fmt.Sprintf("metrics_address = %q\n", addr))
	hoa := lab.HoA.String()
	c.moveToB(t, ctx)
	if n, err := c.Ping(ctx, "cn", hoa, 10); err != nil || n != 10 {
		t.Errorf("%d/10 pings answered (%v)", n, err)
	}
	text, err := c.Metrics(ctx, "hostB", addr)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := scenario.ParseMetrics(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	within := func(name string, got float64, want uint64) {
		t.Helper()
		// Traffic in flight between the two reads: the guest's ND and RAs.
		if got <= 0 || got > float64(want) || float64(want)-got > 5 {
			t.Errorf("%s: got %v, want > 0 and within 5 below status's %d", name, got, want)
		}
	}
	for _, x := range []struct {
		dir  string
		want uint64
	}{{"to_ha", st.ToTunnelPackets}, {"from_ha", st.FromTunnelPackets}} {
		m, ok := scenario.FindMetric(ms, "kgswitch_tunnel_packets_total", map[string]string{"direction": x.dir, "home_address": hoa})
		if !ok {
			t.Errorf("no kgswitch_tunnel_packets_total{direction=%q,home_address=%q}:\n%s", x.dir, hoa, text)
			continue
		}
		within("kgswitch_tunnel_packets_total "+x.dir, m.Value, x.want)
		t.Logf("kgswitch_tunnel_packets_total{direction=%q} = %v, status says %d", x.dir, m.Value, x.want)
	}
	info, ok := scenario.FindMetric(ms, "kgswitch_vm_info", map[string]string{"home_address": hoa, "port": lab.GuestPort})
	if !ok {
		t.Fatalf("no kgswitch_vm_info for %s:\n%s", hoa, text)
	}
	if info.Labels["location"] != "foreign" || info.Labels["binding_state"] != "bound" || info.Value != 1 {
		t.Errorf("got kgswitch_vm_info %v = %v, want location foreign, binding_state bound, value 1", info.Labels, info.Value)
	}
	if m, ok := scenario.FindMetric(ms, "kgswitch_binding_sequence", map[string]string{"home_address": hoa}); !ok || m.Value != float64(st.Sequence) {
		t.Errorf("kgswitch_binding_sequence: got %v (found %v), want %d", m.Value, ok, st.Sequence)
	}
	t.Logf("kgswitch_vm_info %v; %d samples in all", info.Labels, len(ms))

	// The table an operator reads asks the daemon for the VMs and for the
	// datapath's own drops; both must answer.
	table, err := c.Kgswitch(ctx, "hostB", "status")
	if err != nil {
		t.Fatalf("kgswitch status: %v\n%s", err, table)
	}
	row := ""
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, lab.GuestPort+" ") {
			row = line
		}
	}
	if !strings.Contains(row, "foreign") || !strings.Contains(row, "bound") {
		t.Errorf("kgswitch status has no row for %s foreign and bound:\n%s", lab.GuestPort, table)
	}
}
