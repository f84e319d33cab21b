package integration

import (
	"context"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/labha"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

// TestHomeAgentRestart: the Home Agent restarts while the guest is away,
// under 10 ms probes both ways and the default 10-minute lifetime. The
// restarted Home Agent refuses the guest's tunnelled packets
// (Destination Unreachable); kgswitch takes that as a hint and registers
// again at once, so traffic flows again about one DAD (1 s) after the Home
// Agent answers, not at the next refresh minutes later.
func TestHomeAgentRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	moveAway(t, ctx, e, lab.HoA)

	toVM, err := e.StartPingStream(ctx, "cn", lab.HoA.String(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	fromVM, err := e.StartPingStream(ctx, lab.VM.Node, lab.CNAddr.String(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*scenario.PingStream{toVM, fromVM} {
		if err := p.WaitReplies(ctx, time.Time{}, 10, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ready, err := e.RestartHomeAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*scenario.PingStream{toVM, fromVM} {
		if err := p.WaitReplies(ctx, ready, 10, 20*time.Second); err != nil {
			t.Fatalf("after the Home Agent's restart: %v", err)
		}
	}
	toFirst, _ := toVM.FirstReplyAfter(ready)
	fromFirst, _ := fromVM.FirstReplyAfter(ready)
	to, from := toVM.Stop(), fromVM.Stop()
	t.Logf("Home Agent restarted, 10 ms probes: cn->vm flows again %v after it answers (%d/%d lost), vm->cn %v after (%d/%d lost)",
		toFirst.Sub(ready).Round(time.Millisecond), to.Lost, to.Sent, fromFirst.Sub(ready).Round(time.Millisecond), from.Lost, from.Sent)
	for dir, d := range map[string]time.Duration{"cn->vm": toFirst.Sub(ready), "vm->cn": fromFirst.Sub(ready)} {
		if d > 2*time.Second {
			t.Errorf("%s: traffic flows again %v after the Home Agent answers, want within 2 s", dir, d.Round(time.Millisecond))
		}
	}

	// kgswitch learnt of the loss from the refusals, and its binding is the
	// one the restarted Home Agent holds.
	st, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	if st.TunnelRefused == 0 {
		t.Errorf("no refusal counted: %+v", st)
	}
	evs, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	var seq uint16
	added := false
	for _, ev := range evs {
		if ev.Msg == labha.EventBindingAdded && ev.Time.After(ready) {
			seq, added = ev.Seq, true
		}
	}
	if !added {
		t.Fatal("the restarted Home Agent added no binding")
	}
	if st.BindingState != "bound" || st.Sequence != seq || st.LifetimeLeftSec < 590 {
		t.Errorf("got %s seq %d with %.0f s left, want bound with the Home Agent's sequence number %d and about 600 s",
			st.BindingState, st.Sequence, st.LifetimeLeftSec, seq)
	}
}
