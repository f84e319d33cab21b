package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vswitch "github.com/kgswitch/kgswitch/switch"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/labha"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// The forged-signalling tests send, from cn (a node that is not the Home
// Agent), Mobility Header packets with the Home Agent's address as source
// to the care-of address of a guest bound abroad on hostB. The forgeries
// once tore tunnels down, kept bindings re-registering, or made kgswitch
// believe grants the Home Agent never gave; each test holds kgswitch to:
// the guest's traffic flows through the forgeries (at most one probe in ten
// lost, probes.stop), `kgswitch status` agrees with the lab Home Agent's binding cache, and a
// restart of kgswitch (which resumes bindings from its state_dir) brings
// back nothing forged.

// forgedLifetime is kgswitch's default binding lifetime, what the lab Home
// Agent grants: no status may show more.
const forgedLifetime = 10 * time.Minute

// forgedProbeInterval paces the ping streams that carry the guest's traffic
// through the forgeries.
const forgedProbeInterval = 10 * time.Millisecond

var (
	forgeOnce sync.Once
	forgeBin  string
	forgeErr  error
)

// forgedEnv is a lab whose guest is bound abroad on hostB, with kgswitch
// there keeping its bindings in a state_dir, and the forger at hand.
type forgedEnv struct {
	*scenario.Env
	cfgB  string
	b     *exec.Cmd
	forge string
}

func newForgedEnv(t *testing.T, ctx context.Context, haArgs ...string) *forgedEnv {
	t.Helper()
	forgeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kgswitch-forge-")
		if err != nil {
			forgeErr = err
			return
		}
		forgeBin = filepath.Join(dir, "forge")
		// Tests run in their package's directory.
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", forgeBin, "./cmd/forge").CombinedOutput(); err != nil {
			forgeErr = fmt.Errorf("go build ./cmd/forge: %v\n%s", err, out)
		}
	})
	if forgeErr != nil {
		t.Fatal(forgeErr)
	}
	e := newEnv(t, ctx)
	f := &forgedEnv{Env: e, forge: forgeBin}
	if err := e.StartHomeAgentOf(ctx, lab.HomeNet, haArgs...); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	cfgA, err := e.WriteConfig("hostA", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.StartKgswitch(ctx, "hostA", cfgA); err != nil {
		t.Fatal(err)
	}
	if f.cfgB, err = e.WriteConfig("hostB", true); err != nil {
		t.Fatal(err)
	}
	state, err := e.StateDir("hostB")
	if err != nil {
		t.Fatal(err)
	}
	if err := scenario.PrependConfig(f.cfgB, fmt.Sprintf("state_dir = %q\n", state)); err != nil {
		t.Fatal(err)
	}
	if f.b, err = e.RunKgswitch(ctx, "hostB", f.cfgB, "--log-level", "debug"); err != nil {
		t.Fatal(err)
	}
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatalf("move: %v", err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitReachable(ctx, "cn", lab.HoA.String(), 40*time.Second); err != nil {
		t.Fatalf("after the move: %v", err)
	}
	f.checkTrue(t, ctx, "before the forgeries")
	return f
}

// forgeFromCN sends the packets of specs (see cmd/forge) count times at
// rate packets per second from cn, claiming the Home Agent's address, and
// returns how many it sent.
func (f *forgedEnv) forgeFromCN(t *testing.T, ctx context.Context, count int, rate float64, specs ...string) int {
	t.Helper()
	argv := append([]string{f.forge, "-src", lab.HAAddr.String(), "-dst", lab.CareOfAddr.String(), "-hoa", lab.HoA.String(),
		"-count", strconv.Itoa(count), "-rate", strconv.FormatFloat(rate, 'f', -1, 64)}, specs...)
	out, err := f.Lab.Run(ctx, "cn", argv...)
	if err != nil {
		t.Fatalf("forge %v: %v\n%s", specs, err, out)
	}
	var r struct {
		Sent    int     `json:"sent"`
		Seconds float64 `json:"seconds"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("forge %v: %v: %q", specs, err, out)
	}
	t.Logf("forged %d packets %v in %.2fs", r.Sent, specs, r.Seconds)
	return r.Sent
}

// probes are the guest's traffic in both directions during the forgeries.
type probes struct{ in, out *scenario.PingStream }

func (f *forgedEnv) startProbes(t *testing.T, ctx context.Context) probes {
	t.Helper()
	in, err := f.StartPingStream(ctx, "cn", lab.HoA.String(), forgedProbeInterval)
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.StartPingStream(ctx, "vm", lab.CNAddr.String(), forgedProbeInterval)
	if err != nil {
		in.Stop()
		t.Fatal(err)
	}
	// Both streams go through before anything is forged, so a loss at their
	// start is not blamed on the forgeries.
	for _, s := range []*scenario.PingStream{in, out} {
		if err := s.WaitReplies(ctx, time.Time{}, 10, 10*time.Second); err != nil {
			in.Stop()
			out.Stop()
			t.Fatal(err)
		}
	}
	return probes{in, out}
}

// stop ends the streams and fails the test when either lost more than one
// probe in ten.
func (p probes) stop(t *testing.T) {
	t.Helper()
	for _, s := range []struct {
		name string
		r    scenario.PingResult
	}{{"cn -> guest", p.in.Stop()}, {"guest -> cn", p.out.Stop()}} {
		t.Logf("%s: %d probes, %d lost, longest gap %v", s.name, s.r.Sent, s.r.Lost, s.r.LongestGap)
		if s.r.Sent < 50 || s.r.Lost*10 > s.r.Sent {
			t.Errorf("%s through the forgeries: got %d of %d probes lost, want at most one in ten of at least 50", s.name, s.r.Lost, s.r.Sent)
		}
	}
}

// watchStates polls hostB's binding state until the returned function is
// called, which returns every state seen: a forgery that tears the tunnel
// down shows as "failed" or "registering" even if it heals before the end.
func (f *forgedEnv) watchStates(ctx context.Context) func() map[string]int {
	ctx, cancel := context.WithCancel(ctx)
	seen := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if st, err := f.Status(ctx, "hostB", lab.GuestPort); err == nil {
				seen[st.BindingState]++
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return func() map[string]int {
		cancel()
		<-done
		return seen
	}
}

// checkStates fails the test unless every state seen keeps the tunnel up.
func checkStates(t *testing.T, seen map[string]int) {
	t.Helper()
	t.Logf("binding states seen during the forgeries: %v", seen)
	for s := range seen {
		if s != "bound" && s != "refreshing" {
			t.Errorf("binding state during the forgeries: got %q, want only bound or refreshing (tunnel up)", s)
		}
	}
}

// checkTrue fails the test unless hostB's status shows the binding the lab
// Home Agent holds: bound to the care-of address, the sequence number it
// accepted last, and a lifetime that ends when the Home Agent's does (a
// little earlier: kgswitch counts from when it sent the Binding Update),
// never longer than asked.
func (f *forgedEnv) checkTrue(t *testing.T, ctx context.Context, when string) vswitch.PortStatus {
	t.Helper()
	var st vswitch.PortStatus
	var ha scenario.HAEvent
	err := wait.Until(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		before := time.Now()
		var err error
		if st, err = f.Status(ctx, "hostB", lab.GuestPort); err != nil {
			return err
		}
		after := time.Now()
		if ha, err = f.HABinding(lab.HoA); err != nil {
			return err
		}
		switch {
		case ha.Msg == labha.EventBindingRemoved || ha.Msg == labha.EventBindingExpired:
			return wait.Fatal(fmt.Errorf("the Home Agent's binding is gone (%s)", ha.Msg))
		case st.BindingState != "bound":
			return fmt.Errorf("binding is %q (%s), want bound", st.BindingState, st.Reason)
		case st.CareOf != lab.CareOfAddr.String() || ha.CoA != lab.CareOfAddr.String():
			return fmt.Errorf("care-of address: kgswitch %s, Home Agent %s, want %s", st.CareOf, ha.CoA, lab.CareOfAddr)
		case st.Sequence != ha.Seq:
			return fmt.Errorf("sequence number: kgswitch %d, Home Agent %d", st.Sequence, ha.Seq)
		}
		left := time.Duration(st.LifetimeLeftSec * float64(time.Second))
		// kgswitch's binding ends between before+left and after+left.
		if left > forgedLifetime || before.Add(left).After(ha.Expires.Add(50*time.Millisecond)) ||
			after.Add(left).Before(ha.Expires.Add(-2*time.Second)) {
			return wait.Fatal(fmt.Errorf("lifetime left %v (ends %s), Home Agent's binding ends %s, asked %v",
				left, before.Add(left).Format("15:04:05.000"), ha.Expires.Format("15:04:05.000"), forgedLifetime))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: kgswitch's status %+v does not agree with the Home Agent's binding %+v: %v", when, st, ha, err)
	}
	t.Logf("%s: kgswitch and the Home Agent agree: sequence %d, %.0fs left, Home Agent's grant %ds", when, st.Sequence, st.LifetimeLeftSec, ha.LifetimeS)
	return st
}

// restart kills kgswitch on hostB and starts it again, as a supervisor
// would after a crash, then checks that what it resumed from its state_dir
// is the Home Agent's binding and that the guest is still reachable.
func (f *forgedEnv) restart(t *testing.T, ctx context.Context) {
	t.Helper()
	ha, err := f.HABinding(lab.HoA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(f.Lab.Dir, "hostB-state", "bindings.json"))
	if err != nil {
		t.Fatal(err)
	}
	var saved map[string]vswitch.StoredBinding
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatalf("bindings.json: %v: %s", err, b)
	}
	var rec *vswitch.StoredBinding
	for k, r := range saved {
		if strings.Contains(k, lab.HoA.String()) {
			rec = &r
		}
	}
	switch {
	case rec == nil:
		t.Errorf("bindings.json holds no binding for %s: %s", lab.HoA, b)
	case rec.Sequence != ha.Seq || rec.Granted != time.Duration(ha.LifetimeS)*time.Second || rec.Expires.After(ha.Expires):
		t.Errorf("bindings.json holds %+v, want the Home Agent's sequence %d and grant %ds, ending by %s",
			*rec, ha.Seq, ha.LifetimeS, ha.Expires.Format(time.RFC3339Nano))
	}
	if _, err := scenario.StopKgswitch(f.b, syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if f.b, err = f.RunKgswitch(ctx, "hostB", f.cfgB, "--log-level", "debug"); err != nil {
		t.Fatal(err)
	}
	st := f.checkTrue(t, ctx, "after the restart")
	if st.Reason != "restored" {
		t.Errorf("after the restart: got reason %q, want the binding restored from the state_dir", st.Reason)
	}
	if _, err := f.WaitReachable(ctx, "cn", lab.HoA.String(), 10*time.Second); err != nil {
		t.Errorf("after the restart: %v", err)
	}
}

// signalling is what hostB saw of Mobility Header packets: how many OVS sent
// to kgswitch's internal port, and how kgswitch counted the ones it
// refused.
type signalling struct {
	diverted, rejected, ignored, queueFull, overflow uint64
}

var nPackets = regexp.MustCompile(`n_packets=(\d+)`)

func (f *forgedEnv) signalling(t *testing.T, ctx context.Context) signalling {
	t.Helper()
	var s signalling
	out, err := f.Lab.OVS("hostB").Ofctl(ctx, "dump-flows", scenario.KgswitchCookie)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "nw_proto=135") && strings.Contains(line, "ipv6_dst="+lab.CareOfAddr.String()) {
			if m := nPackets.FindStringSubmatch(line); m != nil {
				n, _ := strconv.ParseUint(m[1], 10, 64)
				s.diverted += n
			}
		}
	}
	st, err := f.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := f.DatapathDrops(ctx, "hostB")
	if err != nil {
		t.Fatal(err)
	}
	s.rejected = st.Drops["signal-rejected"] + dp["signal-rejected"]
	s.ignored = st.Drops["signal-ignored"] + dp["signal-ignored"]
	s.queueFull, s.overflow = dp["signal-queue-full"], dp["socket-overflow"]
	return s
}

// logLines returns hostB's kgswitch log lines from line from on.
func (f *forgedEnv) logLines(t *testing.T, from int) []string {
	t.Helper()
	lines, err := f.KgswitchLogLines("hostB", from)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// countMatching counts the lines that contain s.
func countMatching(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// haBUs counts the Binding Updates the lab Home Agent received from hostB.
func (f *forgedEnv) haBUs(t *testing.T) int {
	t.Helper()
	n, err := f.HABindingUpdates(lab.CareOfAddr)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestForgedBindingErrorKeepsTunnel: one Binding Error (status 2, "Mobility
// Header type not recognized") used to fail the binding and stop its tunnel
// for a minute. It is a hint now: kgswitch asks the Home Agent again, and
// the Home Agent's answer keeps the binding as it was.
func TestForgedBindingErrorKeepsTunnel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newForgedEnv(t, ctx)
	before, bus := f.signalling(t, ctx), f.haBUs(t)
	p := f.startProbes(t, ctx)
	states := f.watchStates(ctx)
	f.forgeFromCN(t, ctx, 1, 0, "be:2")
	time.Sleep(5 * time.Second)
	checkStates(t, states())
	p.stop(t)
	after := f.signalling(t, ctx)
	// The forgery reached kgswitch, which asked the Home Agent once, and the
	// Home Agent answered.
	if got := f.haBUs(t) - bus; got != 1 {
		t.Errorf("Binding Updates the Home Agent got after the forged Binding Error: got %d, want 1", got)
	}
	if got := after.diverted - before.diverted; got != 2 {
		t.Errorf("Mobility Header packets OVS gave kgswitch: got %d, want 2 (the forged one, the Home Agent's Ack)", got)
	}
	f.checkTrue(t, ctx, "after the forged Binding Error")
	f.restart(t, ctx)
}

// TestForgedBindingErrorFlood: Binding Errors (status 1, "unknown binding")
// at 40 a second used to keep the binding re-registering for as long as they
// came. Hints are rate-limited: kgswitch sends at most one Binding Update per
// hint gap (1.5 s), and the tunnel stays up.
func TestForgedBindingErrorFlood(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newForgedEnv(t, ctx)
	const (
		rate    = 40
		seconds = 6
	)
	before, bus := f.signalling(t, ctx), f.haBUs(t)
	logFrom := len(f.logLines(t, 0))
	p := f.startProbes(t, ctx)
	states := f.watchStates(ctx)
	start := time.Now()
	sent := f.forgeFromCN(t, ctx, rate*seconds, rate, "be:1")
	took := time.Since(start)
	time.Sleep(2 * time.Second) // the last hint's Binding Update answered
	checkStates(t, states())
	p.stop(t)
	after := f.signalling(t, ctx)
	lines := f.logLines(t, logFrom)
	sentBUs := countMatching(lines, "sent Binding Update")
	haBUs := f.haBUs(t) - bus
	// Each Binding Update the Home Agent got is answered with an Ack.
	if got := after.diverted - before.diverted; got != uint64(sent+haBUs) {
		t.Errorf("Mobility Header packets OVS gave kgswitch: got %d, want the %d forged and %d Acks", got, sent, haBUs)
	}
	// One hint per 1.5 s, the first at once; the last forgeries may reach
	// kgswitch a little after the forger is done.
	limit := int((took+500*time.Millisecond)/(1500*time.Millisecond)) + 1
	t.Logf("%d forged Binding Errors in %v: kgswitch sent %d Binding Updates, the Home Agent got %d, %d log lines",
		sent, took.Round(time.Millisecond), sentBUs, haBUs, len(lines))
	if sentBUs < 2 || sentBUs > limit {
		t.Errorf("Binding Updates sent during %v of forged Binding Errors: got %d, want between 2 and %d (one per 1.5 s)", took, sentBUs, limit)
	}
	if haBUs != sentBUs {
		t.Errorf("Binding Updates the Home Agent received: got %d, want the %d kgswitch logged", haBUs, sentBUs)
	}
	// A Binding Error that comes too soon after the last changes nothing,
	// and its line is rate-limited like those of rejected signalling: about
	// one a second, plus one for each hint taken.
	if got, most := countMatching(lines, "Binding Error"), int(took/time.Second)+2+sentBUs; got > most {
		t.Errorf("kgswitch's log lines about Binding Errors during %v of forged ones: got %d, want at most %d", took, got, most)
	}
	f.checkTrue(t, ctx, "after the Binding Error flood")
	f.restart(t, ctx)
}

// TestForgedLongBinding: a Binding Refresh Request (kgswitch sends a
// refresh), then an Ack with status 135 and a sequence number of the
// forger's choosing (kgswitch resends after it), then an Ack to that resend
// with status 0 and the longest lifetime, 65535 units (72 hours), used to
// make kgswitch believe in a binding the Home Agent never granted, and
// persist it. kgswitch caps the grant at the lifetime it asked, and the
// numbers it takes from status 135 only go forward, so whatever it believes
// is what the Home Agent holds, before and after a restart.
func TestForgedLongBinding(t *testing.T) {
	t.Parallel()
	forgeAfter135(t, "ba:0:%d:65535")
}

// TestForgedRefusal: the same three packets, but the last refuses the
// resend (status 129, administratively prohibited). It used to fail the
// binding and stop its tunnel for a minute; an off-path forger guesses a
// number ahead of kgswitch's half the time. A Home Agent that refuses a
// refresh keeps its binding until the grant ends, and so does kgswitch.
func TestForgedRefusal(t *testing.T) {
	t.Parallel()
	forgeAfter135(t, "ba:129:%d:0")
}

// forgeAfter135 forges a Binding Refresh Request, a status 135 Ack naming a
// number ahead of kgswitch's, and last (a forge SPEC with %d for the number
// kgswitch resends after the 135).
func forgeAfter135(t *testing.T, last string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The Home Agent answers 100 ms late, as one a WAN round trip away
	// would: the forgeries (a few ms apart) come while kgswitch's refresh
	// is outstanding, however loaded the machine.
	f := newForgedEnv(t, ctx, "-ack-delay", "100ms")
	st, err := f.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	// The strongest forger knows the sequence number in use: it jumps well
	// ahead of the refresh the Binding Refresh Request starts.
	chosen := st.Sequence + 1000
	before, bus := f.signalling(t, ctx), f.haBUs(t)
	logFrom := len(f.logLines(t, 0))
	p := f.startProbes(t, ctx)
	states := f.watchStates(ctx)
	f.forgeFromCN(t, ctx, 1, 0, "brr", fmt.Sprintf("ba:135:%d:0", chosen), fmt.Sprintf(last, chosen+1))
	time.Sleep(3 * time.Second)
	checkStates(t, states())
	p.stop(t)
	after := f.signalling(t, ctx)
	// The three forged packets reached kgswitch, and the Home Agent answered
	// each Binding Update they caused.
	haBUs := f.haBUs(t) - bus
	if got := after.diverted - before.diverted; got != uint64(3+haBUs) {
		t.Errorf("Mobility Header packets OVS gave kgswitch: got %d, want the 3 forged and %d Acks", got, haBUs)
	}
	t.Logf("kgswitch's log around the forgeries:\n%s", strings.Join(f.logLines(t, logFrom), "\n"))
	st = f.checkTrue(t, ctx, "after the forgeries")
	// The forged 135 came while the refresh the Binding Refresh Request
	// started was outstanding (the Home Agent's answer takes a round trip):
	// kgswitch went on after the forger's number, and so did the Home Agent.
	if st.Sequence != chosen+1 {
		t.Errorf("sequence number after the forged status 135 with %d: got %d, want %d (else the forgery came too late to test anything)",
			chosen, st.Sequence, chosen+1)
	}
	f.restart(t, ctx)
}

// TestForgedAckFlood: thousands of forged Acks in about a second. kgswitch
// refuses each (no Binding Update of its asks for one), counts every one it
// read, and logs a bounded number of lines: about one a second.
func TestForgedAckFlood(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newForgedEnv(t, ctx)
	st, err := f.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	// Sequence numbers kgswitch never sent: a forger without the real one.
	seq := st.Sequence + 1<<14
	before := f.signalling(t, ctx)
	logFrom := len(f.logLines(t, 0))
	p := f.startProbes(t, ctx)
	states := f.watchStates(ctx)
	start := time.Now()
	sent := f.forgeFromCN(t, ctx, 1500, 3000,
		fmt.Sprintf("ba:0:%d:65535", seq), fmt.Sprintf("ba:135:%d:0", seq))
	took := time.Since(start)
	time.Sleep(2 * time.Second)
	checkStates(t, states())
	p.stop(t)
	after := f.signalling(t, ctx)
	diverted := after.diverted - before.diverted
	rejected, queueFull, overflow := after.rejected-before.rejected, after.queueFull-before.queueFull, after.overflow-before.overflow
	t.Logf("forged %d Acks in %v: OVS gave kgswitch %d, kgswitch counted %d signal-rejected, %d signal-queue-full, %d socket-overflow",
		sent, took.Round(time.Millisecond), diverted, rejected, queueFull, overflow)
	if diverted < uint64(sent)*9/10 {
		t.Errorf("forged Acks OVS gave kgswitch: got %d of %d, want nearly all (else the test proves little)", diverted, sent)
	}
	if rejected+queueFull+overflow != diverted {
		t.Errorf("forged Acks counted: got %d rejected + %d queue full + %d socket overflow = %d, want the %d OVS gave kgswitch",
			rejected, queueFull, overflow, rejected+queueFull+overflow, diverted)
	}
	if rejected < diverted/2 {
		t.Errorf("forged Acks that reached kgswitch's control loop: got %d of %d, want most", rejected, diverted)
	}
	lines := f.logLines(t, logFrom)
	// About one a second per key over the flood and the wait after it.
	limit := int((took+2*time.Second)/time.Second) + 2
	t.Logf("kgswitch logged %d lines during the flood:\n%s", len(lines), strings.Join(lines, "\n"))
	if len(lines) > limit {
		t.Errorf("kgswitch's log during %v of forged Acks: got %d lines, want at most %d", took, len(lines), limit)
	}

	// Replays of the Home Agent's last Ack: the answer to a Binding Update of
	// the series kgswitch settled, expected once, then nothing new.
	logFrom += len(lines)
	before = f.signalling(t, ctx)
	start = time.Now()
	sent = f.forgeFromCN(t, ctx, 1000, 1000, fmt.Sprintf("ba:0:%d:150", st.Sequence))
	took = time.Since(start)
	time.Sleep(2 * time.Second)
	after = f.signalling(t, ctx)
	lines = f.logLines(t, logFrom)
	t.Logf("replayed the Home Agent's Ack %d times in %v: OVS gave kgswitch %d; kgswitch logged %d lines:\n%s",
		sent, took.Round(time.Millisecond), after.diverted-before.diverted, len(lines), strings.Join(lines, "\n"))
	if got := after.diverted - before.diverted; got < uint64(sent)*9/10 {
		t.Errorf("replayed Acks OVS gave kgswitch: got %d of %d, want nearly all", got, sent)
	}
	// Each replay is counted: ignored (it changed nothing), or dropped on
	// the way to the control loop.
	ignored, queueFull, overflow := after.ignored-before.ignored, after.queueFull-before.queueFull, after.overflow-before.overflow
	if diverted := after.diverted - before.diverted; ignored+queueFull+overflow != diverted {
		t.Errorf("replayed Acks counted: got %d ignored + %d queue full + %d socket overflow, want the %d OVS gave kgswitch",
			ignored, queueFull, overflow, diverted)
	}
	if limit := int((took+2*time.Second)/time.Second) + 2; len(lines) > limit {
		t.Errorf("kgswitch's log during %v of replayed Acks: got %d lines, want at most %d", took, len(lines), limit)
	}
	f.checkTrue(t, ctx, "after the Ack flood")
	f.restart(t, ctx)
}
