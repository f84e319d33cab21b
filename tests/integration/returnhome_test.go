package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/labha"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// TestReturnHome: a guest goes from its home host to a foreign host and back
// under a TCP stream. Back home, kgswitch de-registers it and, once the Home
// Agent confirms, tells the home link with three Override advertisements that
// the guest's MAC holds its home address again, so the home router stops
// sending to the Home Agent at once rather than after its neighbour
// unreachability detection.
func TestReturnHome(t *testing.T) { returnHome(t, lab.LayoutOneBridge) }

// returnHome is TestReturnHome with the hosts' bridges arranged as layout
// says.
func returnHome(t *testing.T, layout lab.HostLayout) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnvWith(t, ctx, lab.Options{Layout: layout})
	startDaemons(t, ctx, e, true)
	started := time.Now()
	hoa := lab.HoA.String()
	guestMAC := lab.GuestMAC.String()
	haMAC := linkMAC(t, ctx, e.Lab, "ha", "eth0")

	capture, err := e.StartCapture(ctx, "hostA", lab.Uplink, "hostA-uplink")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	// 5 MiB at 192 KiB/s: about 27 s, past both moves.
	const total = 5 << 20
	stream, err := e.StartTCPStream(ctx, "cn", total, 192<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.WaitEstablished(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	moveAway(t, ctx, e, lab.HoA)
	if mac, entry := neighLLAddr(ctx, e, lab.HoA); mac != haMAC {
		t.Errorf("rtr's neighbour entry with the guest away: %q, want the Home Agent's MAC %s", entry, haMAC)
	}

	pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := pings.WaitReplies(ctx, time.Time{}, 1, 5*time.Second); err != nil {
		pings.Stop()
		t.Fatal(err)
	}
	evBefore, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	neigh := watchNeigh(t, ctx, e, "rtr", "home0")
	back := time.Now()
	if err := e.Lab.MoveGuest(ctx, "hostB", "hostA"); err != nil {
		pings.Stop()
		t.Fatalf("move hostB -> hostA: %v", err)
	}
	// Watch hostA's kgswitch and rtr's neighbour entry together.
	var locations []string
	var returning, home, neighAt time.Duration
	var entry string
	_ = wait.Until(ctx, time.Until(back.Add(10*time.Second)), 20*time.Millisecond, func() error {
		if st, err := e.Status(ctx, "hostA", lab.GuestPort); err == nil {
			loc := st.Location
			if st.BindingState != "" {
				loc += "/" + st.BindingState
			}
			if len(locations) == 0 || locations[len(locations)-1] != loc {
				locations = append(locations, loc)
			}
			if st.Location == "returning" && returning == 0 {
				returning = time.Since(back)
			}
			if st.Location == "home" && st.BindingState == "" && returning != 0 && home == 0 {
				home = time.Since(back)
			}
		}
		if neighAt == 0 {
			var mac string
			if mac, entry = neighLLAddr(ctx, e, lab.HoA); mac == guestMAC {
				neighAt = time.Since(back)
			}
		}
		if home == 0 || neighAt == 0 {
			return errors.New("the return is not over") // checked below
		}
		return nil
	})
	if returning == 0 || home == 0 {
		t.Errorf("hostA's kgswitch after the guest came back: locations %v, want returning, then home without binding%s", locations, haSince(e, len(evBefore)))
	}
	// Without the Override advertisement the router would keep the Home
	// Agent's MAC until its neighbour unreachability detection gave up
	// (DELAY 5 s, then probes).
	if neighAt == 0 {
		t.Errorf("rtr's neighbour entry for %s 10 s after the return: %q, want lladdr %s within 2 s", hoa, entry, guestMAC)
	} else if neighAt > 2*time.Second {
		t.Errorf("rtr's neighbour entry for %s had lladdr %s only %v after the return, want within 2 s", hoa, guestMAC, neighAt.Round(time.Millisecond))
	}
	reach, err := e.WaitReachable(ctx, "cn", hoa, 10*time.Second)
	if err != nil {
		pings.Stop()
		// The TCP stream would wait for its timeout: give up now.
		t.Fatalf("after hostB -> hostA: %v", err)
	}
	// The stream's figures end with a reply through the home link, and
	// cover enough probes to mean something (checked below).
	if err := pings.WaitReplies(ctx, time.Now(), 1, 5*time.Second); err != nil {
		t.Error(err)
	}
	_ = pings.WaitSent(ctx, minReturnProbes, 10*time.Second)
	loss := pings.Stop()

	client, server, err := stream.Wait()
	if err != nil {
		t.Fatalf("TCP stream: %v", err)
	}
	checkStream(t, total, client, server)
	capture.Stop()

	// The Home Agent's view: a de-registration from the home address, a
	// successful Acknowledgement with lifetime 0, the binding gone.
	all, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	evs := all[len(evBefore):]
	var dereg, ack, removed *scenario.HAEvent
	for i, ev := range evs {
		if ev.HoA != hoa {
			continue
		}
		switch {
		case ev.Msg == labha.EventBUReceived && ev.Lifetime == 0 && dereg == nil:
			dereg = &evs[i]
		case ev.Msg == labha.EventBASent && ev.Lifetime == 0 && ev.Status == 0 && ack == nil:
			ack = &evs[i]
		case ev.Msg == labha.EventBindingRemoved && removed == nil:
			removed = &evs[i]
		}
	}
	if dereg == nil || ack == nil || removed == nil {
		t.Fatalf("Home Agent log since the return lacks bu-received with lifetime 0, ba-sent status 0 lifetime 0 and binding-removed:\n%s", formatEvents(evs))
	}
	if dereg.CoA != hoa {
		t.Errorf("de-registration's care-of address: got %s, want the home address %s (RFC 6275 §11.5.4)", dereg.CoA, hoa)
	}

	// Three Override advertisements from the guest's MAC to all nodes, one a
	// second, after the Acknowledgement. Both are timed on hostA's uplink, one
	// clock: the Home Agent logs its ba-sent event only after the send.
	bas := tsharkFields(t, ctx, capture, "mip6.mhtype == 6 && mip6.ba.status == 0 && ipv6.dst == "+hoa, "frame.time_epoch")
	if len(bas) == 0 {
		t.Fatalf("no accepted Binding Acknowledgement to %s on hostA's uplink", hoa)
	}
	ackSeen := parseEpoch(t, bas[0][0])
	nas := tsharkFields(t, ctx, capture, "icmpv6.type == 136 && eth.src == "+guestMAC+" && ipv6.dst == ff02::1",
		"frame.time_epoch", "icmpv6.nd.na.target_address", "icmpv6.nd.na.flag.o", "icmpv6.nd.na.flag.s", "icmpv6.opt.linkaddr")
	var naTimes []string
	for i, r := range nas {
		at := parseEpoch(t, r[0])
		naTimes = append(naTimes, "+"+at.Sub(back).Round(time.Millisecond).String())
		if r[1] != hoa || !isTrue(r[2]) || isTrue(r[3]) || r[4] != guestMAC {
			t.Errorf("advertisement %d on hostA's uplink: got target, O, S, target link-layer address = %v, want %s, set, clear, %s", i+1, r[1:], hoa, guestMAC)
		}
		if at.Before(ackSeen) {
			t.Errorf("advertisement %d at %s, before the Home Agent's Acknowledgement at %s", i+1, at.Format("15:04:05.000000"), ackSeen.Format("15:04:05.000000"))
		}
		if i > 0 {
			if gap := at.Sub(parseEpoch(t, nas[i-1][0])); gap < 800*time.Millisecond || gap > 1500*time.Millisecond {
				t.Errorf("advertisements %d and %d are %v apart, want about 1 s", i, i+1, gap.Round(time.Millisecond))
			}
		}
	}
	if len(nas) != 3 {
		t.Errorf("got %d Override advertisements for %s from %s on hostA's uplink, want 3", len(nas), hoa, guestMAC)
	}
	// One de-registration, answered once: nothing refused, nothing to warn of.
	if rejected := tsharkFields(t, ctx, capture, "mip6.mhtype == 6 && mip6.ba.status != 0 && ipv6.dst == "+hoa, "mip6.ba.status"); len(rejected) != 0 {
		t.Errorf("Home Agent refused de-registrations of %s on hostA's uplink with statuses %v, want none", hoa, rejected)
	}
	neighDelay := checkNeighAfterAck(t, neigh, lab.HoA, guestMAC, ackSeen, "hostB -> hostA")
	checkQuietReturn(t, ctx, e, started, "hostA", "hostB")

	t.Logf("hostB -> hostA: kgswitch %v; returning at +%v, home at +%v; Home Agent got the de-registration at +%v, acknowledged at +%v",
		locations, returning.Round(time.Millisecond), home.Round(time.Millisecond),
		dereg.Time.Sub(back).Round(time.Millisecond), ack.Time.Sub(back).Round(time.Millisecond))
	t.Logf("Override advertisements at %v; rtr's entry had the guest's MAC at +%v (%s), %.1f ms after the Home Agent's Ack on hostA's uplink (ip monitor; bound %v)",
		naTimes, neighAt.Round(time.Millisecond), entry, ms(neighDelay), returnNeighBound)
	t.Logf("pings every 10 ms during the return: %d sent, %d lost, longest gap %v, first reply after it at %+v from the move; WaitReachable %v",
		loss.Sent, loss.Lost, loss.LongestGap.Round(time.Millisecond), loss.FirstAfter.Sub(back).Round(time.Millisecond), reach.Round(time.Millisecond))
	t.Logf("TCP stream: %d bytes each way in %.1f s across hostA -> hostB -> hostA, intact", client.Sent, client.Seconds)
	if loss.LongestGap >= time.Second {
		t.Errorf("pings every 10 ms during the return: longest gap %v, want under 1 s", loss.LongestGap.Round(time.Millisecond))
	}
	if loss.Sent < minReturnProbes {
		t.Errorf("ping stream sent only %d probes; the loss figure means nothing", loss.Sent)
	}
}

// minReturnProbes is how many probes TestReturnHome's ping stream must cover
// for its loss figure to mean something.
const minReturnProbes = 200

// isTrue reads a tshark boolean field ("1", "True").
func isTrue(s string) bool { return s == "1" || strings.EqualFold(s, "true") }

// haSince formats the Home Agent's log from event index from on, for a
// failure message.
func haSince(e *scenario.Env, from int) string {
	evs, err := e.HAEvents()
	if err != nil {
		return "; Home Agent log: " + err.Error()
	}
	if from > len(evs) {
		from = len(evs)
	}
	return "; Home Agent log since:\n" + formatEvents(evs[from:])
}

// TestReturnHomeRepeatedly sends the guest out to hostB and back home eight
// times. hostB registers with a sequence number of its own and hostA
// de-registers with another; the Home Agent accepts the de-registration only
// if its number is ahead of hostB's (RFC 6275 §9.5.1), and answers status 135
// otherwise. That answer cannot reach hostA: while the binding stands, the
// Home Agent sends its own packets for the home address, this
// Acknowledgement included, to the old care-of address (see
// docs/home-agents.md). Both hosts number from the clock, so every return
// must succeed at its first try, trip after trip.
func TestReturnHomeRepeatedly(t *testing.T) {
	t.Parallel()
	const trips = 8
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	guestMAC := lab.GuestMAC.String()
	var figures []string
	for trip := 1; trip <= trips; trip++ {
		if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
			t.Fatalf("trip %d: move hostA -> hostB: %v", trip, err)
		}
		stB, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second)
		if err != nil {
			t.Fatalf("trip %d: %v", trip, err)
		}
		evBefore, err := e.HAEvents()
		if err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		if err := e.Lab.MoveGuest(ctx, "hostB", "hostA"); err != nil {
			t.Fatalf("trip %d: move hostB -> hostA: %v", trip, err)
		}
		st, ok := waitHome(ctx, e, 5*time.Second)
		home := time.Since(back)
		if !ok {
			t.Fatalf("trip %d: hostA's kgswitch 5 s after the guest came back: %s/%s (its last sequence number %d; hostB registered with %d), want home without binding%s",
				trip, st.Location, st.BindingState, st.Sequence, stB.Sequence, haSince(e, len(evBefore)))
		}
		// The router may hold no entry (nothing was sent to the guest):
		// an unsolicited advertisement creates none (RFC 4861 §7.2.5).
		if mac, entry := neighLLAddr(ctx, e, lab.HoA); mac != guestMAC && mac != "" {
			t.Fatalf("trip %d: rtr's neighbour entry after the return: %q, want lladdr %s or none", trip, entry, guestMAC)
		}
		figures = append(figures, fmt.Sprintf("trip %d: hostB registered with seq %d, hostA home after %v", trip, stB.Sequence, home.Round(time.Millisecond)))
	}
	for _, f := range figures {
		t.Log(f)
	}
}

// waitHome waits until hostA's kgswitch shows the guest at home with no
// binding (the return finished) and returns its last status.
func waitHome(ctx context.Context, e *scenario.Env, timeout time.Duration) (scenario.PortStatus, bool) {
	var st scenario.PortStatus
	err := wait.Until(ctx, timeout, 20*time.Millisecond, func() error {
		var err error
		if st, err = e.Status(ctx, "hostA", lab.GuestPort); err != nil || st.Location != "home" || st.BindingState != "" {
			return fmt.Errorf("hostA's kgswitch: %s/%s (%v), not home without binding", st.Location, st.BindingState, err)
		}
		return nil
	})
	return st, err == nil
}

// guestRouterMAC returns the link-layer address in the guest's neighbour
// entry for its default router, and the entry.
func guestRouterMAC(ctx context.Context, e *scenario.Env) (string, string) {
	return neighEntry(ctx, e, "vm", lab.RouterLinkLocal, lab.Uplink)
}

// TestReturnHomeRouterResolvedAbroad: a guest that resolves its default
// router while abroad (its entry had failed, it rebooted, it never talked to
// the router before it left) gets kgswitch's answer, since kgswitch
// impersonates the router. Back home the guest must still reach its router at
// once: if kgswitch answered with a MAC of its own, the guest keeps sending to
// a MAC that does not exist on the home link until its neighbour
// unreachability detection gives up (RFC 4861 §7.3: up to a reachable time of
// 15-45 s, then 5 s DELAY and 3 probes).
func TestReturnHomeRouterResolvedAbroad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	hoa := lab.HoA.String()
	rtrMAC := linkMAC(t, ctx, e.Lab, "rtr", "home0")
	if n, err := e.Ping(ctx, "vm", lab.CNAddr.String(), 3); err != nil || n != 3 {
		t.Fatalf("guest at home: %d/3 pings to cn answered (%v)", n, err)
	}
	if mac, entry := guestRouterMAC(ctx, e); mac != rtrMAC {
		t.Fatalf("guest at home: router entry %q, want the router's MAC %s", entry, rtrMAC)
	}
	moveAway(t, ctx, e, lab.HoA)

	// Abroad, the guest forgets its neighbours and resolves its router anew.
	if _, err := e.Lab.Run(ctx, "vm", "ip", "-6", "neigh", "flush", "dev", lab.Uplink); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Ping(ctx, "vm", lab.CNAddr.String(), 3); err != nil || n != 3 {
		t.Fatalf("guest on hostB: %d/3 pings to cn answered (%v)", n, err)
	}
	macAbroad, entryAbroad := guestRouterMAC(ctx, e)
	t.Logf("guest's router entry on hostB after resolving it there: %q (the router's MAC is %s)", entryAbroad, rtrMAC)

	back := time.Now()
	if err := e.Lab.MoveGuest(ctx, "hostB", "hostA"); err != nil {
		t.Fatalf("move hostB -> hostA: %v", err)
	}
	if st, ok := waitHome(ctx, e, 5*time.Second); !ok {
		t.Errorf("hostA's kgswitch 5 s after the guest came back: %+v, want home without binding", st)
	}
	_, err := e.WaitReachable(ctx, "cn", hoa, 10*time.Second)
	reach := time.Since(back)
	macHome, entryHome := guestRouterMAC(ctx, e)
	if err != nil {
		t.Errorf("back home, the guest having resolved its router abroad (entry abroad %q, now %q, the router's MAC %s): %v",
			entryAbroad, entryHome, rtrMAC, err)
	}
	if macHome != "" && macHome != rtrMAC {
		t.Errorf("back home: guest's router entry %q, want the router's MAC %s or none", entryHome, rtrMAC)
	}
	t.Logf("guest's router MAC: at home %s, abroad %s, back home %s; cn reaches the guest %v after the return",
		rtrMAC, macAbroad, macHome, reach.Round(time.Millisecond))
}
