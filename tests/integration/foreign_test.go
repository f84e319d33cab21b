package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/labha"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

// TestLabForeignHostC checks the lab's second foreign link: hostC has its own
// OVS with the userspace datapath, is reachable through the router, and the
// guest's port moves to and from it, announcing itself as QEMU does.
func TestLabForeignHostC(t *testing.T) {
	t.Parallel()
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := newLab(t, ctx)

	h := l.OVS("hostC")
	if h == nil {
		t.Fatal("lab has no OVS on hostC")
	}
	out, err := h.Vsctl(ctx, "get", "bridge", h.Bridge, "datapath_type")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != "netdev" {
		t.Errorf("hostC: got datapath_type = %s, want netdev", got)
	}
	if !lab.ForeignPrefixC.Contains(lab.CareOfAddrC) || lab.ForeignPrefixC.Overlaps(lab.ForeignPrefix) || lab.ForeignPrefixC.Overlaps(lab.HomePrefix) {
		t.Errorf("got ForeignPrefixC = %v, CareOfAddrC = %v: want a prefix of its own holding the address", lab.ForeignPrefixC, lab.CareOfAddrC)
	}
	// cn -> rtr -> foreign2 bridge -> hostC's OVS -> br0, and across the two
	// foreign links.
	ping(t, ctx, l, "cn", lab.CareOfAddrC.String(), 3)
	ping(t, ctx, l, "hostC", lab.RouterForeignAddrC.String(), 1)
	ping(t, ctx, l, "hostB", lab.CareOfAddrC.String(), 1)

	if err := l.MoveGuest(ctx, "hostC", "hostB"); err == nil {
		t.Errorf("MoveGuest(hostC, hostB) with the guest on hostA: got nil error, want one")
	}
	if err := l.MoveGuest(ctx, "hostA", "hostA"); err == nil {
		t.Errorf("MoveGuest(hostA, hostA): got nil error, want one")
	}
	// MoveGuest ends as QEMU's migration does: the guest's NIC announces
	// itself five times (RARP from its MAC), flooded to the host's br0.
	capture := l.Command(ctx, "hostC", "timeout", "5", "tcpdump", "-i", lab.Bridge, "-c", "5", "-n", "-e", "-l", "ether", "proto", "0x8035")
	var captured strings.Builder
	capture.Stdout = &captured
	stderr, err := capture.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := capture.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	waitListening(t, stderr)
	if err := l.MoveGuest(ctx, "hostA", "hostC"); err != nil {
		t.Fatalf("MoveGuest(hostA, hostC): %v", err)
	}
	if err := capture.Wait(); err != nil {
		t.Errorf("tcpdump on hostC: %v (want 5 announcements within 5 s)", err)
	}
	if got := strings.Count(captured.String(), lab.GuestMAC.String()+" > ff:ff:ff:ff:ff:ff"); got != 5 {
		t.Errorf("got %d RARP announcements from %s on hostC's %s, want 5:\n%s", got, lab.GuestMAC, lab.Bridge, captured.String())
	}
	if err := l.MoveGuest(ctx, "hostC", "hostA"); err != nil {
		t.Fatalf("MoveGuest(hostC, hostA): %v", err)
	}

	// Every pair of hosts, ending where it started.
	for _, m := range [][2]string{{"hostA", "hostC"}, {"hostC", "hostB"}, {"hostB", "hostC"}, {"hostC", "hostA"}} {
		if err := l.MoveGuest(ctx, m[0], m[1]); err != nil {
			t.Fatalf("MoveGuest(%s, %s): %v", m[0], m[1], err)
		}
		if got := l.GuestHost(); got != m[1] {
			t.Errorf("got GuestHost() = %s, want %s", got, m[1])
		}
		ping(t, ctx, l, m[1], lab.GuestLinkLocal.String()+"%"+lab.Bridge, 1)
		fdb, err := l.OVS(m[1]).Appctl(ctx, "fdb/show", lab.Bridge)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(fdb, lab.GuestMAC.String()) {
			t.Errorf("%s fdb/show after MoveGuest(%s, %s): got\n%s\nwant the guest's MAC %s learnt", m[1], m[0], m[1], fdb, lab.GuestMAC)
		}
		if out, err := l.OVS(m[0]).Vsctl(ctx, "list-ports", lab.Bridge); err != nil || strings.Contains(out, lab.GuestPort) {
			t.Errorf("%s's ports after MoveGuest(%s, %s): got %q (%v), want no %s", m[0], m[0], m[1], out, err, lab.GuestPort)
		}
	}
	ping(t, ctx, l, "cn", lab.HoA.String(), 3)
}

// waitListening returns once tcpdump says it captures.
func waitListening(t *testing.T, stderr io.Reader) {
	t.Helper()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "listening on") {
			go func() {
				for sc.Scan() {
				}
			}()
			return
		}
	}
	t.Fatal("tcpdump exited before capturing")
}

// foreignLifetime is the binding lifetime kgswitch asks for in
// TestMoveBetweenForeignHosts: short, so that a host that kept refreshing a
// binding for a guest it no longer has would do so within the test.
const foreignLifetime = 8 * time.Second

// foreignMove is what TestMoveBetweenForeignHosts measured for one move.
type foreignMove struct {
	from, to string
	started  time.Time // MoveGuest called
	took     time.Duration
	// haAccepted: first successful Binding Acknowledgement to the new
	// care-of address; bound: kgswitch's status said "bound" (polled);
	// reachable: cn's first answered ping (one ping per try).
	haAccepted, bound, reachable time.Duration
	loss                         scenario.PingResult
	status135                    bool
	activation                   string    // kgswitch's log line on activation
	movedAt                      time.Time // the Home Agent's binding-moved
}

// TestMoveBetweenForeignHosts moves a guest from its home host to a foreign
// host and then between two foreign hosts (hostB, hostC on different links),
// each running kgswitch with the guest declared. On a move between foreign
// hosts the Home Agent only changes the care-of address (no DAD) and the home
// router already sends the guest's traffic to it, so the loss is the time
// from the port's move to the new host's registration. The new host numbers
// from the clock, ahead of the old host's numbers; should the Home Agent
// answer 135 (sequence number out of window) all the same, kgswitch must
// continue after the number the Acknowledgement carries. A TCP stream opened before the first move between
// foreign hosts must survive both intact, and the host the guest left must
// stop refreshing its binding.
func TestMoveBetweenForeignHosts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	e.BindingLifetime = foreignLifetime
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(e.KgswitchLog("hostC")); err == nil {
				t.Logf("---- %s ----\n%s", e.KgswitchLog("hostC"), b)
			}
		}
	})
	if err := e.StartHomeAgent(ctx); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	for _, host := range lab.Hosts {
		cfg, err := e.WriteConfig(host, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			t.Fatal(err)
		}
	}
	hoa := lab.HoA.String()
	if n, err := e.Ping(ctx, "cn", hoa, 3); err != nil || n != 3 {
		t.Fatalf("guest at home: %d/3 pings answered (%v)", n, err)
	}

	// Home to foreign: the Home Agent's first registration (DAD), then the
	// home router's takeover.
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 40*time.Second); err != nil {
		t.Fatalf("after hostA -> hostB: %v", err)
	}
	checkLeft(t, ctx, e, "hostA")

	// 6 MiB at 256 KiB/s: 24 s, longer than both moves with their dwell
	// times.
	const streamBytes = 6 << 20
	stream, err := e.StartTCPStream(ctx, "cn", streamBytes, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	var moves []*foreignMove
	for _, m := range [][2]string{{"hostB", "hostC"}, {"hostC", "hostB"}} {
		mv := moveForeign(t, ctx, e, m[0], m[1])
		moves = append(moves, mv)
		// Watch for longer than a binding lifetime, so a host that still
		// refreshed for the guest would show in the Home Agent's log.
		time.Sleep(time.Until(mv.started.Add(foreignLifetime + time.Second)))
	}
	end := time.Now()

	client, server, err := stream.Wait()
	if err != nil {
		t.Fatalf("TCP stream: %v", err)
	}
	checkStream(t, streamBytes, client, server)
	if n, err := e.Ping(ctx, "cn", hoa, 5); err != nil || n != 5 {
		t.Errorf("after the moves: %d/5 pings answered (%v)", n, err)
	}

	// Between one move's binding-moved and the next move (or the end), every
	// Binding Update comes from the host the guest is on.
	evs, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	for i, mv := range moves {
		until := end
		if i+1 < len(moves) {
			until = moves[i+1].started
		}
		if mv.movedAt.IsZero() {
			continue // reported by moveForeign
		}
		refreshes := 0
		for _, ev := range evs {
			if ev.Msg != labha.EventBUReceived || !ev.Time.After(mv.movedAt) || !ev.Time.Before(until) {
				continue
			}
			if ev.CoA != lab.HostAddr(mv.to).String() {
				t.Errorf("Home Agent got a Binding Update from %s (seq %d) at %s, %v after the guest moved %s -> %s: want none but from %s",
					ev.CoA, ev.Seq, ev.Time.Format("15:04:05.000"), ev.Time.Sub(mv.started).Round(time.Millisecond), mv.from, mv.to, lab.HostAddr(mv.to))
				continue
			}
			refreshes++
		}
		// The new host itself refreshes within a lifetime: the window is
		// long enough to have seen the old one's refreshes too.
		if refreshes == 0 {
			t.Errorf("no refresh from %s in the %v after the move %s -> %s", mv.to, until.Sub(mv.movedAt).Round(time.Millisecond), mv.from, mv.to)
		}
	}

	t.Logf("moves between foreign hosts, pings every 10 ms from cn, binding lifetime %v:", foreignLifetime)
	t.Logf("  %-15s %8s %12s %12s %12s %10s %12s %s", "move", "MoveGuest", "HA accepted", "status bound", "reachable", "pings lost", "longest gap", "status 135")
	for _, mv := range moves {
		t.Logf("  %-15s %8v %12v %12v %12v %6d/%-4d %12v %v", mv.from+" -> "+mv.to, mv.took.Round(time.Millisecond),
			mv.haAccepted.Round(time.Millisecond), mv.bound.Round(time.Millisecond), mv.reachable.Round(time.Millisecond),
			mv.loss.Lost, mv.loss.Sent, mv.loss.LongestGap.Round(time.Millisecond), mv.status135)
	}
	for _, mv := range moves {
		t.Logf("  %s: %s", mv.to, mv.activation)
	}
	t.Logf("TCP stream: %d bytes each way in %.1f s across both moves, intact", client.Sent, client.Seconds)
}

// moveForeign moves the guest between two foreign hosts while cn pings it
// every 10 ms, and checks the new host's binding, the Home Agent's view and
// the old host's.
func moveForeign(t *testing.T, ctx context.Context, e *scenario.Env, from, to string) *foreignMove {
	t.Helper()
	hoa := lab.HoA.String()
	oldCoA, newCoA := lab.HostAddr(from).String(), lab.HostAddr(to).String()
	mv := &foreignMove{from: from, to: to}
	pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := pings.WaitReplies(ctx, time.Time{}, 1, 5*time.Second); err != nil {
		pings.Stop()
		t.Fatal(err)
	}
	before, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}

	mv.started = time.Now()
	if err := e.Lab.MoveGuest(ctx, from, to); err != nil {
		pings.Stop()
		t.Fatalf("MoveGuest(%s, %s): %v", from, to, err)
	}
	mv.took = time.Since(mv.started)
	st, err := e.WaitBinding(ctx, to, lab.GuestPort, "bound", 10*time.Second)
	mv.bound = time.Since(mv.started)
	if err != nil {
		pings.Stop()
		t.Fatalf("%s -> %s: %v", from, to, err)
	}
	if st.Location != "foreign" || st.CareOf != newCoA || st.HomeAgent != lab.HAAddr.String() {
		t.Errorf("%s status after %s -> %s: %+v, want foreign, care-of %s, Home Agent %v", to, from, to, st, newCoA, lab.HAAddr)
	}
	mv.reachable, err = e.WaitReachable(ctx, "cn", hoa, 10*time.Second)
	mv.reachable += mv.bound
	if err != nil {
		pings.Stop()
		t.Fatalf("%s -> %s: %v", from, to, err)
	}
	// The stream's figures end with a reply through the new path.
	if err := pings.WaitReplies(ctx, time.Now(), 1, 5*time.Second); err != nil {
		t.Errorf("%s -> %s: %v", from, to, err)
	}
	mv.loss = pings.Stop()
	// ping -i 0.01 may pace slower than asked (16 ms here with iputils
	// 20221126), which makes fewer pings cover the same outage: the longest
	// gap bounds the outage itself to what 100 pings at 10 ms would.
	if mv.loss.Lost >= 100 || mv.loss.LongestGap >= time.Second {
		t.Errorf("%s -> %s: %d of %d pings lost, longest gap %v; want fewer than 100 lost and a gap under 1s",
			from, to, mv.loss.Lost, mv.loss.Sent, mv.loss.LongestGap.Round(time.Millisecond))
	}
	checkLeft(t, ctx, e, from)
	mv.activation = lastLogLine(e.KgswitchLog(to), `msg="guest runs here`)

	all, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	evs := all[len(before):]
	var accepted *scenario.HAEvent
	for i, ev := range evs {
		if ev.CoA != newCoA {
			continue
		}
		switch {
		case ev.Msg == labha.EventBindingMoved && mv.movedAt.IsZero():
			if ev.OldCoA != oldCoA || ev.HoA != hoa {
				t.Errorf("%s -> %s: Home Agent logged %+v, want the binding of %s moved from %s to %s", from, to, ev, hoa, oldCoA, newCoA)
			}
			mv.movedAt = ev.Time
		case ev.Msg == labha.EventBASent && ev.Status == mipv6.StatusSequenceOutOfWindow:
			mv.status135 = true
			// RFC 6275 §11.7.3: the next Binding Update continues after
			// the sequence number the Acknowledgement carries (or after
			// the clock's number, when that is further ahead).
			if next := nextBU(evs[i+1:], newCoA); next == nil || next.Seq-ev.Seq == 0 || next.Seq-ev.Seq >= 1<<15 {
				t.Errorf("%s -> %s: after status 135 with seq %d, the next Binding Update from %s is %+v, want one ahead of it", from, to, ev.Seq, newCoA, next)
			}
		case ev.Msg == labha.EventBASent && mipv6.StatusSuccess(uint8(ev.Status)) && accepted == nil:
			accepted = &evs[i]
		}
	}
	if accepted == nil || mv.movedAt.IsZero() {
		t.Errorf("%s -> %s: Home Agent log since the move lacks a binding-moved to %s from %s and a successful ba-sent:\n%s",
			from, to, newCoA, oldCoA, formatEvents(evs))
		return mv
	}
	mv.haAccepted = accepted.Time.Sub(mv.started)
	return mv
}

// checkLeft checks that kgswitch on host, which the guest's port left, shows
// the port absent and holds no binding for it. The home host may still be
// covering the departure (holding frames until the Home Agent took over and
// the neighbours moved): that is "departed", also without a binding.
func checkLeft(t *testing.T, ctx context.Context, e *scenario.Env, host string) {
	t.Helper()
	st, err := e.Status(ctx, host, lab.GuestPort)
	if err != nil {
		t.Errorf("%s status: %v", host, err)
		return
	}
	if (st.Location != "absent" && !(host == "hostA" && st.Location == "departed")) || st.BindingState != "" {
		t.Errorf("%s status after the guest left: %+v, want absent (or departed, on the home host) with no binding", host, st)
	}
}

// lastLogLine returns the last line of the file at path that contains s.
func lastLogLine(path, s string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	last := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, s) {
			last = line
		}
	}
	return last
}

// nextBU returns the first Binding Update from coa in evs, or nil.
func nextBU(evs []scenario.HAEvent, coa string) *scenario.HAEvent {
	for i, ev := range evs {
		if ev.Msg == labha.EventBUReceived && ev.CoA == coa {
			return &evs[i]
		}
	}
	return nil
}

func formatEvents(evs []scenario.HAEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "  %s %s coa=%s old_coa=%s seq=%d status=%d %s\n", ev.Time.Format("15:04:05.000"), ev.Msg, ev.CoA, ev.OldCoA, ev.Seq, ev.Status, ev.Reason)
	}
	return b.String()
}
