package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// kgswitch as an Open vSwitch citizen: it survives its own crash, the
// restart of either OVS daemon and a reload, refuses a bad configuration,
// takes a VM declared with ovs-vsctl, and exports its counters to Prometheus.

// czLifetime is the binding lifetime of these tests: short, so a refresh
// (at three quarters of it) comes within a test.
const czLifetime = 16 * time.Second

// czEnv is a lab with the Home Agent, kgswitch on hostA (the guest's home
// host, guest declared) and kgswitch on hostB (a foreign host, with a state
// directory), whose process the test may signal.
type czEnv struct {
	*scenario.Env
	// CfgB is hostB's configuration file; B is its kgswitch.
	CfgB string
	B    *exec.Cmd
}

// newCzEnv starts the daemons; hostB declares the guest in its file when
// declareOnB is set, and gets top, if not empty, as extra top-level keys.
func newCzEnv(t *testing.T, ctx context.Context, declareOnB bool, top string) *czEnv {
	t.Helper()
	e := newEnv(t, ctx)
	e.BindingLifetime = czLifetime
	if err := e.StartHomeAgent(ctx); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	cfgA, err := e.WriteConfig("hostA", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.StartKgswitch(ctx, "hostA", cfgA); err != nil {
		t.Fatal(err)
	}
	c := &czEnv{Env: e}
	c.CfgB = c.writeConfigB(t, declareOnB, top)
	c.B, err = e.RunKgswitch(ctx, "hostB", c.CfgB, "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeConfigB (re)writes hostB's configuration, with a state directory.
func (c *czEnv) writeConfigB(t *testing.T, declare bool, top string) string {
	t.Helper()
	cfg, err := c.WriteConfig("hostB", declare)
	if err != nil {
		t.Fatal(err)
	}
	state, err := c.StateDir("hostB")
	if err != nil {
		t.Fatal(err)
	}
	if err := scenario.PrependConfig(cfg, fmt.Sprintf("state_dir = %q\n%s", state, top)); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// moveToB moves the guest from hostA to hostB and waits until hostB's
// binding is up and the correspondent reaches the guest.
func (c *czEnv) moveToB(t *testing.T, ctx context.Context) scenario.PortStatus {
	t.Helper()
	if err := c.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatalf("move: %v", err)
	}
	st, err := c.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitReachable(ctx, "cn", lab.HoA.String(), 20*time.Second); err != nil {
		t.Fatalf("after the move: %v", err)
	}
	return st
}

// flows returns kgswitch's flows on host and fails the test if any is
// installed twice.
func (c *czEnv) flows(t *testing.T, ctx context.Context, host string) []scenario.Flow {
	t.Helper()
	fl, err := c.KgswitchFlows(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	if dup := scenario.Duplicates(fl); len(dup) > 0 {
		t.Errorf("%s: flows installed twice (same priority and match):\n%s", host, czFlowList(dup))
	}
	return fl
}

func czFlowList(fl []scenario.Flow) string {
	var b strings.Builder
	for _, f := range fl {
		fmt.Fprintf(&b, "  cookie=%s %s\n", f.Cookie, f)
	}
	return b.String()
}

// czFlowStrings returns the flows without their cookies.
func czFlowStrings(fl []scenario.Flow) []string {
	var s []string
	for _, f := range fl {
		s = append(s, f.String())
	}
	slices.Sort(s)
	return s
}

// czDiff lists what is in a but not in b and the other way round.
func czDiff(a, b []string) string {
	var out strings.Builder
	for _, x := range a {
		if !slices.Contains(b, x) {
			fmt.Fprintf(&out, "  - %s\n", x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			fmt.Fprintf(&out, "  + %s\n", x)
		}
	}
	return out.String()
}

// guestFlows returns the flows that concern the guest's port or MAC.
func guestFlows(fl []scenario.Flow) []scenario.Flow {
	var out []scenario.Flow
	for _, f := range fl {
		s := f.String()
		if strings.Contains(s, lab.GuestPort) || strings.Contains(s, lab.GuestMAC.String()) {
			out = append(out, f)
		}
	}
	return out
}

// waitUnbound waits until hostB's kgswitch no longer lists the guest and
// has no flow for it left, and returns how long that took.
func (c *czEnv) waitUnbound(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	err := wait.Until(ctx, timeout, 20*time.Millisecond, func() error {
		if _, err := c.Status(ctx, "hostB", lab.GuestPort); err == nil {
			return fmt.Errorf("kgswitch still lists %s", lab.GuestPort)
		}
		fl, err := c.KgswitchFlows(ctx, "hostB")
		if err != nil || len(guestFlows(fl)) > 0 {
			return fmt.Errorf("flows for the unbound guest remain (%v):\n%s", err, czFlowList(guestFlows(fl)))
		}
		return nil
	})
	return time.Since(start), err
}

// buEvents returns the Home Agent's bu-received events after t.
func (c *czEnv) buEvents(t *testing.T, after time.Time) []scenario.HAEvent {
	t.Helper()
	return c.haEvents(t, after, "bu-received")
}

// logSince returns hostB's kgswitch log from byte offset off on.
func (c *czEnv) logSince(off int64) string {
	b, _ := os.ReadFile(c.KgswitchLog("hostB"))
	if off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

func (c *czEnv) logSize() int64 {
	fi, err := os.Stat(c.KgswitchLog("hostB"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitLogAny waits until hostB's log after off contains one of want, and
// returns that log.
func (c *czEnv) waitLogAny(ctx context.Context, off int64, timeout time.Duration, want ...string) (string, bool) {
	var s string
	err := wait.Until(ctx, timeout, 50*time.Millisecond, func() error {
		s = c.logSince(off)
		for _, w := range want {
			if strings.Contains(s, w) {
				return nil
			}
		}
		return fmt.Errorf("hostB's log has none of %q", want)
	})
	return s, err == nil
}

// haEvents returns the Home Agent's events named msg after t.
func (c *czEnv) haEvents(t *testing.T, after time.Time, msg string) []scenario.HAEvent {
	t.Helper()
	evs, err := c.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	var out []scenario.HAEvent
	for _, ev := range evs {
		if ev.Msg == msg && ev.Time.After(after) {
			out = append(out, ev)
		}
	}
	return out
}

// waitLog waits until hostB's log after off contains every one of want, and
// returns that log.
func (c *czEnv) waitLog(ctx context.Context, off int64, timeout time.Duration, want ...string) (string, bool) {
	var s string
	err := wait.Until(ctx, timeout, 50*time.Millisecond, func() error {
		s = c.logSince(off)
		for _, w := range want {
			if !strings.Contains(s, w) {
				return fmt.Errorf("hostB's log lacks %q", w)
			}
		}
		return nil
	})
	return s, err == nil
}

// TestKgswitchKilledAndRestarted: kgswitch on the foreign host is killed
// (SIGKILL) while it serves a bound guest and started again a second later.
// Traffic resumes within a second of the restart, the binding is resumed, not
// registered again, the sequence numbers continue and no flow is duplicated.
func TestKgswitchKilledAndRestarted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCzEnv(t, ctx, true, "")
	hoa := lab.HoA.String()
	st0 := c.moveToB(t, ctx)
	before := c.flows(t, ctx, "hostB")
	if len(guestFlows(before)) == 0 {
		t.Fatalf("no kgswitch flow for the guest on hostB:\n%s", czFlowList(before))
	}
	if b, err := os.ReadFile(filepath.Join(c.Lab.Dir, "hostB-state", "bindings.json")); err != nil || !strings.Contains(string(b), hoa) {
		t.Errorf("state_dir/bindings.json: got %q (%v), want the guest's binding", b, err)
	}

	pings := c.startPings(t, ctx)
	if _, err := scenario.StopKgswitch(c.B, syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Down for a second, as a crashed daemon that its supervisor restarts.
	time.Sleep(time.Second)
	restarted := time.Now()
	var err error
	c.B, err = c.RunKgswitch(ctx, "hostB", c.CfgB, "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	// Watch the 3 s after the restart: the first echo reply, and no new
	// registration.
	time.Sleep(time.Until(restarted.Add(3 * time.Second)))
	first, resumed := pings.FirstReplyAfter(restarted)
	loss := pings.Stop()

	st, err := c.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	if st.BindingState != "bound" || st.Reason != "restored" || st.Sequence != st0.Sequence {
		t.Errorf("after the restart: got state %q reason %q sequence %d, want bound, restored, sequence %d",
			st.BindingState, st.Reason, st.Sequence, st0.Sequence)
	}
	if bus := c.buEvents(t, killed); len(bus) > 0 {
		t.Errorf("Binding Update(s) within 3 s of the restart, the binding was registered again: %+v", bus)
	}
	after := c.flows(t, ctx, "hostB")
	if len(after) != len(before) {
		t.Errorf("got %d kgswitch flows after the restart, want %d as before", len(after), len(before))
	}
	if d := czDiff(czFlowStrings(before), czFlowStrings(after)); d != "" {
		t.Errorf("kgswitch flows changed across the restart (- before, + after):\n%s", d)
	}
	if !resumed {
		t.Errorf("no echo reply within 3 s of the restart")
	} else if d := first.Sub(restarted); d > time.Second {
		t.Errorf("first echo reply %v after the restart, want within 1s", d.Round(time.Millisecond))
	}

	// The next Binding Update is the refresh, three quarters into the
	// lifetime, and numbering continues.
	var refresh *scenario.HAEvent
	if err := wait.Until(ctx, czLifetime, 100*time.Millisecond, func() error {
		if bus := c.buEvents(t, killed); len(bus) > 0 {
			refresh = &bus[0]
			return nil
		}
		return errors.New("no refresh Binding Update")
	}); err != nil {
		t.Fatal(err)
	}
	// Numbering continues: ahead of the number before the kill in 16-bit
	// serial arithmetic (numbers follow the clock, so by more than one).
	if d := refresh.Seq - st0.Sequence; d == 0 || d >= 1<<15 {
		t.Errorf("refresh Binding Update: got sequence %d, want one ahead of %d (the one before the kill)", refresh.Seq, st0.Sequence)
	}
	st2, err := c.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 5*time.Second)
	if err != nil {
		t.Error(err)
	}
	t.Logf("kgswitch SIGKILLed, restarted 1 s later: control socket up after %v, first echo reply %v after the restart "+
		"(pings every 10 ms: %d sent, %d lost, longest gap %v)", up.Sub(restarted).Round(time.Millisecond),
		first.Sub(restarted).Round(time.Millisecond), loss.Sent, loss.Lost, loss.LongestGap.Round(time.Millisecond))
	t.Logf("status after restart: %s/%s sequence %d (before: %d); %d kgswitch flows before and %d after; refresh BU seq %d at %v after the restart; status then %s sequence %d",
		st.BindingState, st.Reason, st.Sequence, st0.Sequence, len(before), len(after), refresh.Seq,
		refresh.Time.Sub(restarted).Round(time.Millisecond), st2.BindingState, st2.Sequence)
}

// TestOVSRestart: ovs-vswitchd on the foreign host is killed and started
// again; kgswitch puts its flows back within 2 s and the guest is reachable
// again.
func TestOVSRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCzEnv(t, ctx, true, "")
	hoa := lab.HoA.String()
	c.moveToB(t, ctx)
	before := c.flows(t, ctx, "hostB")
	ovsB := c.Lab.OVS("hostB")

	pings := c.startPings(t, ctx)
	off := c.logSize()
	if err := ovsB.KillDaemon(lab.OVSVswitchd, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := ovsB.StartDaemon(ctx, lab.OVSVswitchd); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	// What an init script does not do but the host's network configuration
	// would: br0 is a tap the new ovs-vswitchd may have created anew.
	restored, err := ovsB.RestoreHostIP(ctx)
	if err != nil {
		t.Fatal(err)
	}

	var after []scenario.Flow
	if err := wait.Until(ctx, time.Until(up.Add(5*time.Second)), 20*time.Millisecond, func() error {
		var err error
		if after, err = c.KgswitchFlows(ctx, "hostB"); err != nil || len(after) < len(before) {
			return fmt.Errorf("kgswitch's flows not back after ovs-vswitchd restarted: %d of %d (%v):\n%s", len(after), len(before), err, czFlowList(after))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if d := back.Sub(up); d > 2*time.Second {
		t.Errorf("kgswitch's flows back %v after ovs-vswitchd was up, want within 2s", d.Round(time.Millisecond))
	}
	if d := czDiff(czFlowStrings(before), czFlowStrings(after)); d != "" {
		t.Errorf("kgswitch flows differ after the ovs-vswitchd restart (- before, + after):\n%s", d)
	}
	if dup := scenario.Duplicates(after); len(dup) > 0 {
		t.Errorf("flows installed twice:\n%s", czFlowList(dup))
	}
	reach, err := c.WaitReachable(ctx, "cn", hoa, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The stream's figures end with a reply through the restored path.
	if err := pings.WaitReplies(ctx, time.Now(), 1, 5*time.Second); err != nil {
		t.Error(err)
	}
	loss := pings.Stop()
	if !czRunning(c.B) {
		t.Error("kgswitch died with ovs-vswitchd")
	}
	// no-flood is OpenFlow port state, lost with ovs-vswitchd.
	show, err := ovsB.Ofctl(ctx, "-O", "OpenFlow10", "show")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := czPortConfig(show, lab.GuestPort); !strings.Contains(cfg, "NO_FLOOD") {
		t.Errorf("%s after the restart: config %q, want NO_FLOOD", lab.GuestPort, cfg)
	}
	st, err := c.Status(ctx, "hostB", lab.GuestPort)
	if err != nil || st.BindingState != "bound" {
		t.Errorf("hostB status after the restart: %+v (%v), want bound", st, err)
	}
	t.Logf("ovs-vswitchd killed, up again after %v (br0 address restored by the lab: %v); kgswitch's %d flows back %v after it was up; "+
		"cn reached the guest %v after that; pings every 10 ms: %d sent, %d lost, longest gap %v",
		up.Sub(killed).Round(time.Millisecond), restored, len(after), back.Sub(up).Round(time.Millisecond),
		reach.Round(time.Millisecond), loss.Sent, loss.Lost, loss.LongestGap.Round(time.Millisecond))
	czLogLines(t, c.logSince(off), "level=INFO", "level=WARN", "level=ERROR")
}

// startPings starts cn's echo requests to the guest every 10 ms and waits
// until they are answered; the stream ends with the test.
func (c *czEnv) startPings(t *testing.T, ctx context.Context) *scenario.PingStream {
	t.Helper()
	pings, err := c.StartPingStream(ctx, "cn", lab.HoA.String(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := pings.WaitReplies(ctx, time.Time{}, 1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return pings
}

// czLogLines logs the lines of log that contain any of subs.
func czLogLines(t *testing.T, log string, subs ...string) {
	t.Helper()
	for _, l := range strings.Split(log, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				t.Logf("  kgswitch: %s", l)
				break
			}
		}
	}
}

// czPortConfig returns the "config:" line of port in `ovs-ofctl show`.
func czPortConfig(show, port string) string {
	lines := strings.Split(show, "\n")
	for i, l := range lines {
		if !strings.Contains(l, "("+port+")") {
			continue
		}
		for _, m := range lines[i+1:] {
			if strings.HasPrefix(strings.TrimSpace(m), "config:") {
				return strings.TrimSpace(m)
			}
			if !strings.HasPrefix(m, "     ") {
				break
			}
		}
	}
	return ""
}

func czRunning(cmd *exec.Cmd) bool {
	return cmd.ProcessState == nil && lab.ProcessAlive(cmd.Process.Pid)
}

// TestOVSDBOutage: ovsdb-server on the foreign host dies while kgswitch
// serves a guest: kgswitch stays up and responsive, and forwards as long as
// ovs-vswitchd does; when ovsdb-server is back kgswitch reconnects and keeps
// mirroring its state into the Interface.
//
// ovs-vswitchd itself stops servicing its ports and OpenFlow connections
// while it holds no OVSDB connection (bridge_run returns before running the
// ofprotos when it lacks the database lock); with the userspace datapath
// that stops all forwarding through the bridge, the host's own traffic
// included. The test measures the host's own traffic as a control and holds
// kgswitch to forwarding only when the bridge forwards at all.
func TestOVSDBOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCzEnv(t, ctx, true, "")
	hoa := lab.HoA.String()
	c.moveToB(t, ctx)
	ovsB := c.Lab.OVS("hostB")
	if err := c.WaitExternalID(ctx, "hostB", lab.GuestPort, "kagemusha-state", "foreign/bound", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	flowsBefore := c.flows(t, ctx, "hostB")

	pings := c.startPings(t, ctx)
	off := c.logSize()
	if err := ovsB.KillDaemon(lab.OVSDBServer, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	// The host's own traffic through br0, as a control.
	hostN, _ := c.Ping(ctx, "hostB", lab.RouterForeignAddr.String(), 5)
	// kgswitch's control socket answers promptly (Prometheus scrapes and
	// operators' status calls must not stall it).
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	statusStart := time.Now()
	_, statusErr := c.Kgswitch(sctx, "hostB", "status", "--json")
	statusTook := time.Since(statusStart)
	scancel()
	if statusErr != nil {
		t.Errorf("kgswitch status while ovsdb-server is down: no answer within 3s (%v)", statusErr)
	}
	// ovsdb-server stays down for 4 s.
	time.Sleep(time.Until(down.Add(4 * time.Second)))
	end := time.Now()
	gap := pings.LongestGapBetween(down, end)
	pings.Stop()
	if !czRunning(c.B) {
		t.Fatalf("kgswitch exited when ovsdb-server died:\n%s", c.logSince(off))
	}
	if hostN > 0 && gap > 100*time.Millisecond {
		t.Errorf("while ovsdb-server was down the bridge forwarded the host's own pings (%d/5) but the guest's traffic stopped for %v", hostN, gap.Round(time.Millisecond))
	}

	offBack := c.logSize()
	if err := ovsB.StartDaemon(ctx, lab.OVSDBServer); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if log, ok := c.waitLogAny(ctx, offBack, 10*time.Second, "OVSDB connection back", "connection re-established"); !ok {
		t.Errorf("kgswitch's log says nothing of a reconnection 10 s after ovsdb-server was back:\n%s", log)
	}
	reconnected := time.Since(back)
	// kgswitch reconciles its mirror: an operator's unrelated key stays, and
	// kgswitch's own key is written again when something clobbers it.
	if _, err := ovsB.Vsctl(ctx, "set", "Interface", lab.GuestPort, "external_ids:foo=bar"); err != nil {
		t.Fatal(err)
	}
	if _, err := ovsB.Vsctl(ctx, "remove", "Interface", lab.GuestPort, "external_ids", "kagemusha-state"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitExternalID(ctx, "hostB", lab.GuestPort, "kagemusha-state", "foreign/bound", 5*time.Second); err != nil {
		t.Errorf("after the reconnection: %v", err)
	}
	if v, err := c.ExternalID(ctx, "hostB", lab.GuestPort, "foo"); err != nil || v != "bar" {
		t.Errorf("operator's external_ids:foo: got %q (%v), want bar", v, err)
	}
	reach, err := c.WaitReachable(ctx, "cn", hoa, 10*time.Second)
	if err != nil {
		t.Errorf("after the reconnection: %v", err)
	}
	flowsAfter := c.flows(t, ctx, "hostB")
	if d := czDiff(czFlowStrings(flowsBefore), czFlowStrings(flowsAfter)); d != "" {
		t.Errorf("kgswitch flows changed across the ovsdb-server outage (- before, + after):\n%s", d)
	}
	st, err := c.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 5*time.Second)
	if err != nil {
		t.Error(err)
	}
	if evs := c.haEvents(t, down, "binding-expired"); len(evs) > 0 {
		t.Errorf("the Home Agent's binding expired during the %v outage: %+v", end.Sub(down).Round(time.Millisecond), evs)
	}
	t.Logf("ovsdb-server down for %v; meanwhile: host's own pings through br0 %d/5, guest's longest gap %v, kgswitch status answered in %v (err %v)",
		back.Sub(down).Round(time.Millisecond), hostN, gap.Round(time.Millisecond), statusTook.Round(time.Millisecond), statusErr)
	t.Logf("kgswitch logged its reconnection %v after ovsdb-server was back; cn reached the guest %v later; binding %s sequence %d",
		reconnected.Round(time.Millisecond), reach.Round(time.Millisecond), st.BindingState, st.Sequence)
	czLogLines(t, c.logSince(off), "level=INFO", "level=WARN", "level=ERROR msg=\"ovsdb", "sent Binding Update")
}
