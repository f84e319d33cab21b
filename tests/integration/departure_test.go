package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// departureLoss is what a move cost each direction's 10 ms probe stream.
type departureLoss struct {
	// toVM: probes from the correspondent to the home address, which the home
	// host's cover keeps while the Home Agent takes the address over.
	toVM scenario.PingResult
	// fromVM: probes from the guest to the correspondent, which the foreign
	// host's arrival hold keeps until the binding stands.
	fromVM scenario.PingResult
}

// departureRun moves the guest from its home host under a 10 ms ping stream in
// each direction, with the home host's departure cover on or off and the
// hosts' bridges arranged as layout says, and returns the pings lost.
func departureRun(t *testing.T, ctx context.Context, cover bool, layout lab.HostLayout) (departureLoss, *scenario.Env, *scenario.Capture) {
	e := newEnvWith(t, ctx, lab.Options{Layout: layout})
	startKgswitch(t, ctx, e, []string{"hostA", "hostB"}, nil, cover)
	hoa := lab.HoA.String()
	// The home router must have the VM's MAC cached, as in production.
	if n, err := e.Ping(ctx, "cn", hoa, 3); err != nil || n != 3 {
		t.Fatalf("before the move: %d/3 (%v)", n, err)
	}
	if out, _ := e.Lab.Run(ctx, "rtr", "ip", "-6", "neigh", "show", hoa); !strings.Contains(out, lab.GuestMAC.String()) {
		t.Fatalf("home router has no entry for the VM's MAC: %q", out)
	}
	capture, err := e.StartCapture(ctx, "hostA", lab.Uplink, "hostA-uplink")
	if err != nil {
		t.Fatal(err)
	}
	toVM, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	fromVM, err := e.StartPingStream(ctx, "vm", lab.CNAddr.String(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*scenario.PingStream{toVM, fromVM} {
		if err := p.WaitReplies(ctx, time.Time{}, 1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Both runs end once the home link sends to the Home Agent, and count the
	// whole outage. With the cover, hostA covers the guest until the Home
	// Agent took over and the home link went quiet; without it, the home
	// router keeps the guest's MAC for about 9 s more.
	if cover {
		if err := wait.Until(ctx, 30*time.Second, 100*time.Millisecond, func() error {
			st, err := e.Status(ctx, "hostA", lab.GuestPort)
			if err != nil || st.Location == "departed" {
				return fmt.Errorf("hostA still covers the departed guest: %+v (%v)", st, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, p := range []*scenario.PingStream{toVM, fromVM} {
		if err := p.WaitReplies(ctx, now, 1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	capture.Stop()
	return departureLoss{toVM: toVM.Stop(), fromVM: fromVM.Stop()}, e, capture
}

// TestDepartureCover: a VM leaving its home host for the first time loses
// almost nothing in either direction when the home host covers the Home
// Agent's slow takeover (and the foreign host holds what the guest sends
// until its binding stands), and about ten seconds of the traffic to it when
// the home host does not.
func TestDepartureCover(t *testing.T) {
	var on, off departureLoss
	t.Run("on", func(t *testing.T) { on = departureCoverOn(t, lab.LayoutOneBridge) })
	t.Run("off", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		off, _, _ = departureRun(t, ctx, false, lab.LayoutOneBridge)
	})
	for _, r := range []struct {
		cover string
		loss  departureLoss
	}{{"on", on}, {"off", off}} {
		for _, d := range []struct {
			dir string
			p   scenario.PingResult
		}{{"cn→vm", r.loss.toVM}, {"vm→cn", r.loss.fromVM}} {
			t.Logf("first move from home, pings every 10 ms, cover %s, %s: %d/%d lost (longest gap %v)",
				r.cover, d.dir, d.p.Lost, d.p.Sent, d.p.LongestGap.Round(time.Millisecond))
		}
	}
	if off.toVM.Lost <= 100 {
		t.Errorf("without the cover, cn→vm: %d probes lost, want more than 100 (else the test measures nothing)", off.toVM.Lost)
	}
}

// departureCoverOn is the first move from home with the home host's cover
// on and the hosts' bridges arranged as layout says: frames are held on both
// hosts and all released, the home host never advertises the home address
// before the Home Agent took over, and each direction loses at most 5 probes.
func departureCoverOn(t *testing.T, layout lab.HostLayout) departureLoss {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	on, e, capture := departureRun(t, ctx, true, layout)
	st, err := e.Status(ctx, "hostA", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("home host: %d frames held, %d released to the Home Agent, drops %v", st.Held, st.Released, st.Drops)
	if st.Held == 0 || st.Released < st.Held {
		t.Errorf("got held %d released %d, want frames held and all released", st.Held, st.Released)
	}
	// The home host knew the Home Agent's MAC (nothing configured it):
	// the probe and the takeover were believed because they came from it.
	if b, err := os.ReadFile(e.KgswitchLog("hostA")); err != nil || !strings.Contains(string(b), "Home Agent's MAC learnt") {
		t.Errorf("hostA's kgswitch did not learn the Home Agent's MAC (%v)", err)
	}
	// The guest's replies and its own probes, sent while the Home Agent
	// ran DAD, wait on the foreign host and go through the tunnel then.
	stB, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("foreign host: %d frames held, %d released through the tunnel, drops %v", stB.Held, stB.Released, stB.Drops)
	if stB.Held == 0 || stB.Released != stB.Held {
		t.Errorf("got held %d released %d on the foreign host, want frames held and all released", stB.Held, stB.Released)
	}
	// The Home Agent's DAD probe is never answered by the home host: no
	// Neighbor Advertisement for the home address leaves hostA before the
	// Home Agent's own.
	hostMACs := []string{linkMAC(t, ctx, e.Lab, "hostA", "kgs0"), lab.GuestMAC.String()}
	dad, err := capture.Tshark(ctx, "-Y", "icmpv6.type == 135 && ipv6.src == :: && icmpv6.nd.ns.target_address == "+lab.HoA.String(),
		"-T", "fields", "-e", "frame.time_epoch")
	if err != nil || len(strings.Fields(dad)) == 0 {
		t.Fatalf("no DAD probe for the home address on hostA's uplink (%v)", err)
	}
	nas, err := capture.Tshark(ctx, "-Y", "icmpv6.type == 136 && icmpv6.nd.na.target_address == "+lab.HoA.String(),
		"-T", "fields", "-e", "frame.time_epoch", "-e", "eth.src", "-e", "icmpv6.nd.na.flag.o")
	if err != nil {
		t.Fatal(err)
	}
	sawHA := false
	for _, line := range strings.Split(strings.TrimSpace(nas), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		fromHost := f[1] == hostMACs[0] || f[1] == hostMACs[1]
		if fromHost && !sawHA {
			t.Errorf("home host advertised the home address before the Home Agent took over: %s", line)
		}
		if !fromHost {
			sawHA = true
		} else if f[2] != "1" && f[2] != "True" {
			t.Errorf("home host's advertisement lacks the Override flag: %s", line)
		}
	}
	if !sawHA {
		t.Error("no takeover advertisement from the Home Agent in the capture")
	}
	if on.toVM.Lost > 5 {
		t.Errorf("with the cover, cn→vm: %d probes lost, want at most 5", on.toVM.Lost)
	}
	if on.fromVM.Lost > 5 {
		t.Errorf("with the cover, vm→cn: %d probes lost, want at most 5", on.fromVM.Lost)
	}
	return on
}
