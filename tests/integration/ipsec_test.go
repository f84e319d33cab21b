package integration

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

// startIPsec starts the lab Home Agent and kgswitch on every host with the
// guest's signalling under ESP (algorithm alg), each side from the same
// key file; haKeys, when not empty, is another key file for the Home Agent.
func startIPsec(t *testing.T, ctx context.Context, e *scenario.Env, alg esp.Algorithm, haKeys string) string {
	t.Helper()
	keys, _, err := e.WriteKeyFile(lab.VM, alg)
	if err != nil {
		t.Fatal(err)
	}
	if haKeys == "" {
		haKeys = keys
	}
	if err := e.StartHomeAgentOf(ctx, lab.HomeNet, "-ipsec-keys", haKeys); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	for _, host := range lab.Hosts {
		cfg, err := e.WriteConfig(host, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := scenario.PrependConfig(cfg, fmt.Sprintf("ipsec_keys = %q\n", keys)); err != nil {
			t.Fatal(err)
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestIPsecMoves: with the guest's signalling under ESP, it moves from home
// to a foreign host, on to a second one and back home, under 10 ms probes
// and a TCP stream; no Mobility Header crosses the home link in clear.
func TestIPsecMoves(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startIPsec(t, ctx, e, esp.AESGCM16, "")
	hoa := lab.HoA.String()
	if n, err := e.Ping(ctx, "cn", hoa, 3); err != nil || n != 3 {
		t.Fatalf("guest at home: %d/3 pings answered (%v)", n, err)
	}
	capture, err := e.StartCapture(ctx, "ha", "eth0", "ha-link")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	// 6 MiB at 256 KiB/s: 24 s, past the three moves.
	const streamBytes = 6 << 20
	stream, err := e.StartTCPStream(ctx, "cn", streamBytes, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.WaitEstablished(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	var report []string
	for _, hop := range []struct{ from, to, state string }{
		{"hostA", "hostB", "bound"}, {"hostB", "hostC", "bound"}, {"hostC", "hostA", ""},
	} {
		pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := pings.WaitReplies(ctx, time.Time{}, 5, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := e.Lab.MoveGuest(ctx, hop.from, hop.to); err != nil {
			t.Fatal(err)
		}
		if hop.state != "" {
			if _, err := e.WaitBinding(ctx, hop.to, lab.GuestPort, hop.state, 15*time.Second); err != nil {
				t.Fatal(err)
			}
		} else if err := waitLocation(ctx, e, hop.to, "home"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.WaitReachable(ctx, "cn", hoa, 40*time.Second); err != nil {
			t.Fatalf("after %s -> %s: %v", hop.from, hop.to, err)
		}
		if err := pings.WaitReplies(ctx, time.Now(), 20, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		r := pings.Stop()
		report = append(report, fmt.Sprintf("%s -> %s: %d/%d lost (longest gap %v)", hop.from, hop.to, r.Lost, r.Sent, r.LongestGap.Round(time.Millisecond)))
	}
	client, server, err := stream.Wait()
	if err != nil {
		t.Fatalf("TCP stream: %v", err)
	}
	checkStream(t, streamBytes, client, server)
	capture.Stop()
	t.Logf("moves with signalling under ESP, 10 ms probes: %s", strings.Join(report, "; "))

	// Every Binding Update and Ack went under ESP, none in clear.
	clear, err := capture.Count(ctx, "mipv6")
	if err != nil {
		t.Fatal(err)
	}
	protected, err := capture.Count(ctx, "esp")
	if err != nil {
		t.Fatal(err)
	}
	if clear != 0 || protected < 6 {
		t.Errorf("on the home link: %d Mobility Header packets in clear, %d under ESP; want none in clear and both ways of 3 hops under ESP", clear, protected)
	}
	for _, host := range lab.Hosts {
		if problems, err := kgswitchLogProblems(e, host, time.Time{}); err != nil || len(problemsExcept(problems, "no state_dir")) != 0 {
			t.Errorf("%s's kgswitch logged: %v (%v)", host, problems, err)
		}
	}
}

// problemsExcept drops the lines that contain what.
func problemsExcept(lines []string, what string) []string {
	var out []string
	for _, l := range lines {
		if !strings.Contains(l, what) {
			out = append(out, l)
		}
	}
	return out
}

// waitLocation waits until kgswitch on host puts the guest's port at where.
func waitLocation(ctx context.Context, e *scenario.Env, host, where string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := e.Status(ctx, host, lab.GuestPort)
		if err == nil && st.Location == where {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: guest at %q (%v), want %s", host, st.Location, err, where)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIPsecWrongKey: the Home Agent holds other keys. It answers nothing;
// kgswitch registers no binding, says in its status what to check, and
// keeps going.
func TestIPsecWrongKey(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	other, _, err := scenario.WriteKeyFile(t.TempDir(), lab.VM, esp.AESGCM16)
	if err != nil {
		t.Fatal(err)
	}
	startIPsec(t, ctx, e, esp.AESGCM16, other)
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	var st scenario.PortStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err = e.Status(ctx, "hostB", lab.GuestPort); err == nil && strings.Contains(st.Reason, "under IPsec") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %+v (%v), want status to say the Home Agent is silent under IPsec", st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("status with a wrong key at the Home Agent: %s: %s", st.BindingState, st.Reason)
	if st.BindingState == "bound" || st.LifetimeLeftSec != 0 {
		t.Errorf("got %+v, want no binding", st)
	}
	evs, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	dropped := 0
	for _, ev := range evs {
		if ev.Msg == "bu-dropped" && strings.Contains(ev.Reason, "esp") {
			dropped++
		}
		if ev.Msg == "ba-sent" || ev.Msg == "binding-added" {
			t.Errorf("the Home Agent answered or bound: %+v", ev)
		}
	}
	if dropped < 3 {
		t.Errorf("the Home Agent dropped %d Binding Updates under ESP, want every one (at least 3)", dropped)
	}
}

// TestIPsecRestarts: under ESP, a SIGKILLed and restarted kgswitch and a
// restarted Home Agent both register again without tripping the other
// side's replay checks: kgswitch's ESP numbers follow the clock, and the
// Home Agent's, which start again at 1, are taken because an Ack counts by
// the Binding Update it answers.
func TestIPsecRestarts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	keys, _, err := e.WriteKeyFile(lab.VM, esp.AESCBCHMACSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.StartHomeAgentOf(ctx, lab.HomeNet, "-ipsec-keys", keys); err != nil {
		t.Fatal(err)
	}
	cfgs := map[string]string{}
	for _, host := range []string{"hostA", "hostB"} {
		cfg, err := e.WriteConfig(host, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := scenario.PrependConfig(cfg, fmt.Sprintf("ipsec_keys = %q\n", keys)); err != nil {
			t.Fatal(err)
		}
		cfgs[host] = cfg
	}
	if err := e.StartKgswitch(ctx, "hostA", cfgs["hostA"]); err != nil {
		t.Fatal(err)
	}
	b, err := e.RunKgswitch(ctx, "hostB", cfgs["hostB"])
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	// The guest talks, so that a restarted Home Agent's refusals reach
	// kgswitch; the correspondent talks to the guest.
	fromVM, err := e.StartPingStream(ctx, lab.VM.Node, lab.CNAddr.String(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer fromVM.Stop()

	// kgswitch killed and started again: it registers afresh (no state_dir)
	// with ESP numbers above those before.
	killed := time.Now()
	if err := syscall.Kill(-b.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = b.Wait()
	if _, err := e.RunKgswitch(ctx, "hostB", cfgs["hostB"]); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := fromVM.WaitReplies(ctx, time.Now(), 5, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	acceptedAfter(t, e, killed, "kgswitch's restart")

	// The Home Agent restarted: new SAs, its numbers from 1 again.
	ready, err := e.RestartHomeAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := fromVM.WaitReplies(ctx, ready, 5, 15*time.Second); err != nil {
		t.Fatalf("after the Home Agent's restart: %v", err)
	}
	first, _ := fromVM.FirstReplyAfter(ready)
	ba := acceptedAfter(t, e, ready, "the Home Agent's restart")
	if ba.ESPSeq != 1 {
		t.Errorf("the restarted Home Agent's first Ack has ESP sequence number %d, want 1", ba.ESPSeq)
	}
	st, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	if st.BindingState != "bound" || st.Drops["esp-invalid"] != 0 || st.Drops["signal-rejected"] != 0 {
		t.Errorf("got %+v, want bound, nothing refused", st)
	}
	t.Logf("under ESP: kgswitch SIGKILLed and restarted, bound again; the Home Agent restarted, traffic from the guest again %v after it answered",
		first.Sub(ready).Round(time.Millisecond))
}

// acceptedAfter returns the Home Agent's first successful Ack since since,
// failing the test if there is none or if it dropped a Binding Update as a
// replay meanwhile.
func acceptedAfter(t *testing.T, e *scenario.Env, since time.Time, what string) scenario.HAEvent {
	t.Helper()
	evs, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	var ba *scenario.HAEvent
	for i, ev := range evs {
		if ev.Time.Before(since) {
			continue
		}
		if ev.Msg == "bu-dropped" && strings.Contains(ev.Reason, "replay") {
			t.Errorf("after %s the Home Agent dropped a Binding Update as a replay: %+v", what, ev)
		}
		if ev.Msg == "ba-sent" && ev.Status == 0 && ba == nil {
			ba = &evs[i]
		}
	}
	if ba == nil {
		t.Fatalf("no accepted Binding Update after %s", what)
	}
	return *ba
}
