package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/labha"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// The hostile-input tests send what kgswitch must not believe from where an
// attacker stands: a node of its own on the home link (the intruder,
// scenario.AddHomeLinkIntruder), a node behind the router that spoofs the Home
// Agent's address (cn), and the guest itself. Each checks that the VM under
// attack and its neighbours keep their traffic and that kgswitch counts what
// it refused by reason.

// evilMAC is the link-layer address forgeries would have the guest use.
const evilMAC = "02:00:00:00:66:66"

// hostileStatus returns port's status on host, or fails the test.
func hostileStatus(t *testing.T, ctx context.Context, e *scenario.Env, host, port string) scenario.PortStatus {
	t.Helper()
	st, err := e.Status(ctx, host, port)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitDrops waits until port's drops on host reach want for each reason, and
// fails the test (and goes on) unless they do: more is as wrong as fewer.
func waitDrops(t *testing.T, ctx context.Context, e *scenario.Env, host, port string, want map[string]uint64) {
	t.Helper()
	var got map[string]uint64
	err := wait.Until(ctx, 5*time.Second, 50*time.Millisecond, func() error {
		st, err := e.Status(ctx, host, port)
		if err != nil {
			return err
		}
		got = st.Drops
		for r, n := range want {
			if got[r] != n {
				return fmt.Errorf("%s drops %s = %d", port, r, got[r])
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("kgswitch on %s: got %s drops %v, want %v", host, port, got, want)
		return
	}
	t.Logf("kgswitch on %s counted for %s: drops %v", host, port, got)
}

// waitLogLine waits until host's kgswitch log has a line containing s after
// line from, and returns it; it fails the test if none comes.
func waitLogLine(t *testing.T, ctx context.Context, e *scenario.Env, host string, from int, s string, timeout time.Duration) string {
	t.Helper()
	line, err := e.WaitLogLine(ctx, host, from, s, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// logLen is how many lines host's kgswitch log has.
func logLen(t *testing.T, e *scenario.Env, host string) int {
	t.Helper()
	lines, err := e.KgswitchLogLines(host, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(lines)
}

// scapyFile writes a scapy program (see scapy) for a later Start.
func scapyFile(t *testing.T, e *scenario.Env, name, program string) string {
	t.Helper()
	path := filepath.Join(e.Lab.Dir, name+".py")
	src := "import sys, time\nfrom scapy.all import *\nconf.verb = 0\n" + program
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// homeHostReady starts the Home Agent and kgswitch on hosts (departure cover
// on) and waits until the home host knows the Home Agent's MAC: only from
// then on does it tell the Home Agent's probes and advertisements from an
// intruder's. It returns the Home Agent's MAC.
func homeHostReady(t *testing.T, ctx context.Context, e *scenario.Env, hosts ...string) string {
	t.Helper()
	startKgswitch(t, ctx, e, hosts, nil, true)
	waitLogLine(t, ctx, e, "hostA", 0, "Home Agent's MAC learnt", 15*time.Second)
	// The home router has the VM's MAC cached, as in production.
	ping(t, ctx, e.Lab, "cn", lab.HoA.String(), 3)
	return linkMAC(t, ctx, e.Lab, "ha", "eth0")
}

// dadProbe is a scapy program that sends one DAD probe (RFC 4862 §5.4.2) for
// argv[2] to its solicited-node address argv[3] (MAC argv[4]) from MAC
// argv[1] on interface argv[5].
const dadProbe = `sendp(Ether(src=sys.argv[1], dst=sys.argv[4])/IPv6(src="::", dst=sys.argv[3], hlim=255)/ICMPv6ND_NS(tgt=sys.argv[2]), iface=sys.argv[5])
`

// TestHostileHomeLinkProbe: a node on the home link probes (DAD) the home
// address of a VM that runs on its home host, once from its own MAC and once
// with the Home Agent's MAC as source. The first is refused (not-home-agent)
// and changes nothing. The second cannot be told from the Home Agent's: the
// home host starts the departure cover, but the VM answers the probe itself
// and the home host undoes the departure, giving the VM what it held. The
// VM's traffic loses nothing either way.
//
// It runs alone: it holds the VM's traffic to a delay of tens of milliseconds
// (see lab_test.go).
func TestHostileHomeLinkProbe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	haMAC := homeHostReady(t, ctx, e, "hostA")
	intruderMAC, err := e.AddHomeLinkIntruder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hoa := lab.HoA.String()
	snma, snmac := scenario.SolicitedNode(lab.HoA)
	toVM, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer toVM.Stop()
	if err := toVM.WaitReplies(ctx, time.Time{}, 10, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	logFrom := logLen(t, e, "hostA")

	scapy(t, ctx, e, "sw", "probe-own-mac", dadProbe, intruderMAC, hoa, snma, snmac, scenario.IntruderDev)
	waitDrops(t, ctx, e, "hostA", lab.GuestPort, map[string]uint64{"not-home-agent": 1})
	// The VM answers every probe (to all nodes); the refused one's answer
	// must change nothing either: DAD waits a second for it.
	time.Sleep(1500 * time.Millisecond)
	if st := hostileStatus(t, ctx, e, "hostA", lab.GuestPort); st.Location != "home" {
		t.Errorf("after a probe from the intruder's own MAC: got location %q, want home", st.Location)
	}
	if lines, _ := e.KgswitchLogLines("hostA", logFrom); countMatching(lines, "VM left its home host") != 0 {
		t.Errorf("a probe from the intruder's own MAC started a departure:\n%s", strings.Join(lines, "\n"))
	}

	logFrom = logLen(t, e, "hostA")
	scapy(t, ctx, e, "sw", "probe-spoofed-mac", dadProbe, haMAC, hoa, snma, snmac, scenario.IntruderDev)
	// Believed (else this part tests nothing), then undone by the VM's answer.
	left := waitLogLine(t, ctx, e, "hostA", logFrom, "VM left its home host", 5*time.Second)
	undone := waitLogLine(t, ctx, e, "hostA", logFrom, "departure undone", 5*time.Second)
	t.Logf("hostA's kgswitch on the spoofed probe:\n%s\n%s", left, undone)
	if err := wait.Until(ctx, 5*time.Second, 50*time.Millisecond, func() error {
		if st, err := e.Status(ctx, "hostA", lab.GuestPort); err != nil || st.Location != "home" {
			return fmt.Errorf("location %q (%v), want home", st.Location, err)
		}
		return nil
	}); err != nil {
		t.Errorf("after the VM answered the spoofed probe: %v", err)
	}
	// The intruder's frame taught the home link's switch the Home Agent's
	// MAC on the intruder's port; the Home Agent's next frame corrects it.
	ping(t, ctx, e.Lab, "ha", lab.RouterHomeAddr.String(), 1)
	// Undone means the VM's traffic no longer goes through kgswitch: the
	// departure's flows are gone (what remains lets frames kgswitch gives
	// back reach the VM, from kgswitch's own MAC) and nothing more is held
	// or given back.
	if err := wait.Until(ctx, 5*time.Second, 50*time.Millisecond, func() error {
		flows, err := e.KgswitchFlows(ctx, "hostA")
		if err != nil {
			return err
		}
		for _, f := range flows {
			if strings.Contains(f.Match, "dl_dst="+lab.GuestMAC.String()) && !strings.Contains(f.Match, "dl_src=") {
				return fmt.Errorf("hostA still sends the VM's frames to kgswitch: %s", f)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	undoneSt := hostileStatus(t, ctx, e, "hostA", lab.GuestPort)

	since := time.Now()
	if err := toVM.WaitReplies(ctx, since, 50, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r := toVM.Stop()
	st := hostileStatus(t, ctx, e, "hostA", lab.GuestPort)
	t.Logf("cn -> VM, a probe every 10 ms: %d sent, %d lost, longest gap %v; hostA held %d frames and gave %d back, drops %v",
		r.Sent, r.Lost, r.LongestGap.Round(time.Millisecond), st.Held, st.Released, st.Drops)
	if st.Held != undoneSt.Held || st.Released != undoneSt.Released {
		t.Errorf("after the undone departure hostA went on holding (%d then %d) or giving back (%d then %d) the VM's frames, want neither",
			undoneSt.Held, st.Held, undoneSt.Released, st.Released)
	}
	// The VM answers a probe at once, so a departure it undoes lasts as long
	// as kgswitch takes to act on two events and OVS to install a flow set:
	// tens of milliseconds. What arrived meanwhile waits and is given back,
	// so nothing is lost, and no probe waits longer than 250 ms (a few
	// probes: a round trip to OVS on a loaded 2-core machine).
	if r.Lost != 0 {
		t.Errorf("cn -> VM through both probes: got %d of %d lost, want none", r.Lost, r.Sent)
	}
	if r.LongestGap > 250*time.Millisecond {
		t.Errorf("cn -> VM through both probes: got longest gap %v, want at most 250ms", r.LongestGap)
	}
	// Frames that reach kgswitch once the departure is undone, before OVS
	// has the home flows back, go straight on: given back, never held.
	if st.Released < st.Held {
		t.Errorf("frames held during the undone departure: got %d held, %d given back, want all given back", st.Held, st.Released)
	}
	if got := st.Drops["not-home-agent"]; got != 1 {
		t.Errorf("not-home-agent: got %d, want 1 (the probe from the intruder's own MAC)", got)
	}
	if mac, entry := neighLLAddr(ctx, e, lab.HoA); mac != lab.GuestMAC.String() {
		t.Errorf("home router's entry for the home address: got %q, want the VM's MAC %s", entry, lab.GuestMAC)
	}
}

// TestHostileHomeLinkTakeover: the VM leaves its home host for hostB, and
// while the Home Agent runs DAD a node on the home link advertises the home
// address with its own MAC (Override set), again and again: a home host that
// believed it would give it the frames it held and point the home link at it.
// The forgeries go to all nodes (as the Home Agent's takeover does) but in
// frames to hostA's MAC: a multicast frame would also mislead the home
// router, which believes any advertisement (the home link has no SEND), and
// this test is about what the home host does. Nothing of the home host
// reaches the intruder, the forgeries are counted (not-home-agent), and the
// Home Agent's real takeover works as without them.
//
// It runs alone: it holds the move to the departure cover's loss (see
// lab_test.go).
func TestHostileHomeLinkTakeover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	haMAC := homeHostReady(t, ctx, e, "hostA", "hostB")
	intruderMAC, err := e.AddHomeLinkIntruder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hoa := lab.HoA.String()
	hostAMAC := linkMAC(t, ctx, e.Lab, "hostA", lab.Bridge)
	received := captureReceived(t, ctx, e, "sw", scenario.IntruderDev, "intruder-received")
	uplink := startCapture(t, ctx, e, "hostA", lab.Uplink, "hostA-uplink")
	toVM, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer toVM.Stop()
	fromVM, err := e.StartPingStream(ctx, "vm", lab.CNAddr.String(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer fromVM.Stop()
	for _, p := range []*scenario.PingStream{toVM, fromVM} {
		if err := p.WaitReplies(ctx, time.Time{}, 10, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The forger starts (scapy takes a while to load) and waits for the
	// departure; then 20 forgeries a second for 3 s: from before the Home
	// Agent's takeover (about a second after the move: its DAD) to after it.
	forger := scapyFile(t, e, "forge-takeover", `while not os.path.exists(sys.argv[5]):
    time.sleep(0.005)
n = 0
end = time.time() + 3
while time.time() < end:
    sendp(Ether(src=sys.argv[1], dst=sys.argv[2])/IPv6(src="fe80::bad", dst="ff02::1", hlim=255)/
          ICMPv6ND_NA(tgt=sys.argv[3], R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr=sys.argv[1]), iface=sys.argv[4])
    n += 1
    time.sleep(0.05)
print(n)
`)
	forgeLog, goFile := filepath.Join(e.Lab.Dir, "forge-takeover.log"), filepath.Join(e.Lab.Dir, "forge-takeover.go")
	forging, err := e.Lab.Start(ctx, "sw", forgeLog, scapyPython(t), forger, intruderMAC, hostAMAC, hoa, scenario.IntruderDev, goFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	// From the departure on, every forgery meets the cover, so each counts.
	if err := wait.Until(ctx, 5*time.Second, 10*time.Millisecond, func() error {
		if st, err := e.Status(ctx, "hostA", lab.GuestPort); err != nil || st.Location != "departed" {
			return fmt.Errorf("hostA has not seen the VM leave: %+v (%v)", st, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := forging.Wait(); err != nil {
		t.Fatalf("forger: %v", err)
	}
	out, _ := os.ReadFile(forgeLog)
	forged, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	// The cover ends once the Home Agent took over and the link went quiet.
	if err := wait.Until(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		if st, err := e.Status(ctx, "hostA", lab.GuestPort); err != nil || st.Location == "departed" {
			return fmt.Errorf("hostA still covers the departed VM: %+v (%v)", st, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, p := range []*scenario.PingStream{toVM, fromVM} {
		if err := p.WaitReplies(ctx, now, 10, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	in, out2 := toVM.Stop(), fromVM.Stop()
	received.Stop()
	uplink.Stop()

	// The forgeries reached hostA before the Home Agent's takeover did.
	hoaNA := "icmpv6.type == 136 && icmpv6.nd.na.target_address == " + hoa
	first := func(filter string) time.Time {
		rows := tsharkFields(t, ctx, uplink, filter, "frame.time_epoch")
		if len(rows) == 0 {
			t.Fatalf("hostA's uplink saw no frame matching %q", filter)
		}
		return parseEpoch(t, rows[0][0])
	}
	forgedAt, takenAt := first(hoaNA+" && eth.src == "+intruderMAC), first(hoaNA+" && eth.src == "+haMAC)
	t.Logf("first forged advertisement at hostA %s, the Home Agent's %s (%v later); %d forged in all",
		forgedAt.Format("15:04:05.000"), takenAt.Format("15:04:05.000"), takenAt.Sub(forgedAt).Round(time.Millisecond), forged)
	if !forgedAt.Before(takenAt) {
		t.Errorf("the first forged advertisement came after the Home Agent's: the test proves nothing")
	}
	// Nothing was sent to the intruder, and no advertisement it received
	// names it; the home host's Overrides, naming the Home Agent, did reach
	// it (else their absence would prove nothing).
	if rows := tsharkFields(t, ctx, received, "eth.dst == "+intruderMAC, "frame.time_epoch", "eth.src", "ipv6.src", "ipv6.dst"); len(rows) != 0 {
		t.Errorf("%d frames were sent to the intruder's MAC, want none: %v", len(rows), rows)
	}
	if rows := tsharkFields(t, ctx, received, hoaNA+" && icmpv6.opt.linkaddr == "+intruderMAC, "eth.src"); len(rows) != 0 {
		t.Errorf("%d advertisements of the home address naming the intruder's MAC, from %v, want none", len(rows), rows)
	}
	overrides := tsharkFields(t, ctx, received, hoaNA+" && icmpv6.nd.na.flag.o == 1 && icmpv6.opt.linkaddr == "+haMAC+" && eth.src != "+haMAC, "eth.src")
	if len(overrides) == 0 {
		t.Errorf("the intruder saw no Override advertisement from the home host naming the Home Agent")
	}
	st := hostileStatus(t, ctx, e, "hostA", lab.GuestPort)
	t.Logf("hostA: %d frames held, %d released to the Home Agent, %d Overrides, drops %v", st.Held, st.Released, len(overrides), st.Drops)
	// The forger is done 3 s after the departure began; the cover lasts 5 s
	// beyond the takeover.
	if n := st.Drops["not-home-agent"]; forged == 0 || n != uint64(forged) {
		t.Errorf("not-home-agent: got %d, want the %d forged", n, forged)
	}
	if st.Held == 0 || st.Released < st.Held {
		t.Errorf("got held %d released %d, want frames held and all released to the Home Agent", st.Held, st.Released)
	}
	waitLogLine(t, ctx, e, "hostA", 0, "Home Agent took over", time.Second)
	if mac, entry := neighLLAddr(ctx, e, lab.HoA); mac != haMAC {
		t.Errorf("home router's entry for the home address: got %q, want the Home Agent's MAC %s", entry, haMAC)
	}
	for _, d := range []struct {
		dir string
		r   scenario.PingResult
	}{{"cn -> VM", in}, {"VM -> cn", out2}} {
		t.Logf("%s, a probe every 10 ms: %d sent, %d lost, longest gap %v", d.dir, d.r.Sent, d.r.Lost, d.r.LongestGap.Round(time.Millisecond))
		// TestDepartureCover loses at most 5 on a quiet machine; other labs
		// add a few on a loaded one. A believed forgery would lose every
		// frame the cover held (over 100), and 20 tells the two apart.
		if d.r.Lost > 20 {
			t.Errorf("%s through the move and the forgeries: got %d lost, want at most 20", d.dir, d.r.Lost)
		}
	}
}

// captureReceived captures every frame dev receives in node (not those it
// sends) until the test ends or Stop.
func captureReceived(t *testing.T, ctx context.Context, e *scenario.Env, node, dev, name string) *scenario.Capture {
	t.Helper()
	c, err := e.StartCaptureReceived(ctx, node, dev, name, "")
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, node, err)
	}
	t.Cleanup(c.Stop)
	return c
}

// tunnelForge is a scapy program that sends, from cn, IP6IP6 packets that
// claim the Home Agent's address to the care-of address through the router:
// its arguments are the Home Agent's and the care-of address, the router's
// MAC on the cn link, the home router's link-local and global addresses,
// cn's address and the MAC the forgeries name, then "plain" and home
// addresses (an echo request from cn to each), or "hostile" and the guest's
// home address (see TestHostileTunnel; the last of those comes as the Home
// Agent's own packets do: not tunnelled, with a type 2 routing header).
const tunnelForge = `ha, coa, rtrmac, rll, rglobal, cn, evil, kind = sys.argv[1:9]
if kind == "plain":
    inner = [IPv6(src=cn, dst=h)/ICMPv6EchoRequest() for h in sys.argv[9:]]
else:
    hoa = sys.argv[9]
    na = lambda tgt: ICMPv6ND_NA(tgt=tgt, R=1, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr=evil)
    redirect = ICMPv6ND_Redirect(tgt=cn, dst=cn)/ICMPv6NDOptDstLLAddr(lladdr=evil)
    inner = [
        IPv6(src=rglobal, dst=hoa, hlim=255)/na(rll),
        IPv6(src=rglobal, dst=hoa, hlim=255)/na(rglobal),
        IPv6(src=rglobal, dst=hoa, hlim=255)/IPv6ExtHdrDestOpt()/na(rll),
        IPv6(src=rglobal, dst=hoa, hlim=255)/redirect,
        IPv6(src=rll, dst=hoa, hlim=255)/redirect,
        IPv6(src=rll, dst=hoa)/ICMPv6EchoRequest(),
        IPv6(src="ff02::1", dst=hoa)/ICMPv6EchoRequest(),
    ]
eth = Ether(src=get_if_hwaddr("eth0"), dst=rtrmac)
pkts = [eth/IPv6(src=ha, dst=coa)/p for p in inner]
if kind != "plain":
    pkts.append(eth/IPv6(src=ha, dst=coa, hlim=255)/IPv6ExtHdrRouting(type=2, addresses=[hoa], segleft=1)/na(rll))
for p in pkts:
    sendp(p, iface="eth0")
    time.sleep(0.02)
print(len(pkts))
`

// TestHostileTunnel: cn, behind the router, spoofs the Home Agent's address
// and sends IP6IP6 packets to hostB's care-of address. Before the guest moves
// there, a plain packet to its home address (not served by hostB: unknown-home)
// and one to a guest whose port is on hostB but that has not run there yet
// (not-bound). With the guest bound there, Neighbor Advertisements with hop
// limit 255 that would point its router entries at another MAC (one behind a
// Destination Options header, one as the Home Agent's own packet, with a type
// 2 routing header), Redirects that would put cn on-link, and packets from
// link-local and multicast sources. None reaches a guest: its
// neighbour cache and route to cn stay as they were, its traffic flows, and
// kgswitch counts each by reason.
func TestHostileTunnel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	// A guest whose port is on hostB but that never sent a frame: its veth
	// peer stays down.
	idle := netip.MustParseAddr("2001:db8:2000::20")
	if out, err := e.Lab.Run(ctx, "hostB", "ip", "link", "add", "vnet9", "up", "type", "veth", "peer", "name", "vnet9p"); err != nil {
		t.Fatalf("idle guest's port: %v: %s", err, out)
	}
	if _, err := e.Lab.OVS("hostB").Vsctl(ctx, "add-port", lab.Bridge, "vnet9", "--", "set", "Interface", "vnet9",
		"external_ids:kagemusha-home-address="+idle.String(), "external_ids:kagemusha-mac=52:54:00:00:00:20"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", "vnet9", "waiting-for-guest", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	fixed := []string{lab.HAAddr.String(), lab.CareOfAddr.String(), linkMAC(t, ctx, e.Lab, "rtr", "cn0"),
		lab.RouterLinkLocal.String(), lab.RouterHomeAddr.String(), lab.CNAddr.String(), evilMAC}
	forge := func(args ...string) {
		argv := append(slices.Clone(fixed), args...)
		t.Logf("forged %s packets from cn", strings.TrimSpace(scapy(t, ctx, e, "cn", "forge-tunnel-"+args[0], tunnelForge, argv...)))
	}
	before, err := e.DatapathDrops(ctx, "hostB")
	if err != nil {
		t.Fatal(err)
	}
	forge("plain", lab.HoA.String(), idle.String())
	waitDrops(t, ctx, e, "hostB", "vnet9", map[string]uint64{"not-bound": 1})
	if after, err := e.DatapathDrops(ctx, "hostB"); err != nil || after["unknown-home"] != before["unknown-home"]+1 {
		t.Errorf("hostB's datapath drops of no VM: got %v (%v), want unknown-home one more than %v", after, err, before)
	}

	moveAway(t, ctx, e, lab.HoA)
	neighBefore := routerNeigh(t, ctx, e.Lab)
	routeBefore := routeToCN(t, ctx, e)
	received := captureReceived(t, ctx, e, "vm", "eth0", "vm-received")
	// The guest's traffic both ways, as through forged signalling.
	p := (&forgedEnv{Env: e}).startProbes(t, ctx)
	forge("hostile", lab.HoA.String())
	waitDrops(t, ctx, e, "hostB", lab.GuestPort, map[string]uint64{"tunnel-nd": 5, "tunnel-link-local": 3, "not-bound": 0})
	p.stop(t)
	received.Stop()

	if got := routerNeigh(t, ctx, e.Lab); got != neighBefore {
		t.Errorf("guest's neighbour entry for the router after the forgeries: got %s, want %s", got, neighBefore)
	}
	if got := routeToCN(t, ctx, e); got != routeBefore {
		t.Errorf("guest's route to cn after the forgeries: got %q, want %q", got, routeBefore)
	}
	if out, _ := e.Lab.Run(ctx, "vm", "ip", "-6", "neigh", "show"); strings.Contains(out, evilMAC) {
		t.Errorf("guest's neighbour cache names the forgeries' MAC %s:\n%s", evilMAC, out)
	}
	forged := "icmpv6.opt.linkaddr == " + evilMAC + " || icmpv6.type == 137 || (icmpv6.type == 128 && (ipv6.src == fe80::1 || ipv6.src == ff02::1))"
	if rows := tsharkFields(t, ctx, received, forged, "ipv6.src", "icmpv6.type"); len(rows) != 0 {
		t.Errorf("forged packets reached the guest: %v", rows)
	}
	if n := count(t, ctx, received, "icmpv6.type == 128 && ipv6.src == "+lab.CNAddr.String()); n < 50 {
		t.Errorf("the guest's capture holds %d echo requests from cn, want the probes' (else it proves nothing)", n)
	}
}

// routeToCN is the guest's route to cn.
func routeToCN(t *testing.T, ctx context.Context, e *scenario.Env) string {
	t.Helper()
	out, err := e.Lab.Run(ctx, "vm", "ip", "-6", "route", "get", lab.CNAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// guestForge is a scapy program the guest runs on its eth0: argv[1] is the
// router's MAC as the guest knows it, argv[2] "router-source" (a frame from
// the router's link-local address) or "signalling" (a Binding Update to the
// Home Agent, argv[3], and packets to cn, argv[4], with routing headers of
// type 0 and 2, all from the home address, argv[5]).
const guestForge = `rmac, kind = sys.argv[1:3]
if kind == "router-source":
    pkts = [IPv6(src="fe80::1", dst="ff02::1")/ICMPv6EchoRequest()]
else:
    ha, cn, hoa = sys.argv[3:6]
    pkts = [
        IPv6(src=hoa, dst=ha)/MIP6MH_BU(seq=1000, flags="AH", mhtime=150),
        IPv6(src=hoa, dst=cn)/IPv6ExtHdrRouting(type=0, addresses=[cn])/ICMPv6EchoRequest(),
        IPv6(src=hoa, dst=cn)/IPv6ExtHdrRouting(type=2, addresses=[hoa])/ICMPv6EchoRequest(),
    ]
for p in pkts:
    sendp(Ether(src=get_if_hwaddr("eth0"), dst=rmac)/p, iface="eth0")
print(len(pkts))
`

// TestHostileGuest: the guest itself, bound abroad on hostB, sends a frame
// from its router's link-local address (kgswitch must go on answering its
// Neighbor Solicitations for the router), a Binding Update and packets with
// routing headers of type 0 and 2 from its home address (the Home Agent would
// take them for the mobile node's own: none may reach it).
func TestHostileGuest(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	moveAway(t, ctx, e, lab.HoA)
	rmac := routerNeigh(t, ctx, e.Lab)
	haCapture := captureReceived(t, ctx, e, "ha", "eth0", "ha-received")

	scapy(t, ctx, e, "vm", "guest-router-source", guestForge, rmac, "router-source")
	answered := hostileStatus(t, ctx, e, "hostB", lab.GuestPort).NDAnswered
	if out, err := e.Lab.Run(ctx, "vm", "ip", "-6", "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatalf("flush the guest's neighbour cache: %v: %s", err, out)
	}
	ping(t, ctx, e.Lab, "vm", lab.CNAddr.String(), 3)
	if got := routerNeigh(t, ctx, e.Lab); got != rmac {
		t.Errorf("guest's neighbour entry for the router after the flush: got %s, want %s", got, rmac)
	}
	if got := hostileStatus(t, ctx, e, "hostB", lab.GuestPort).NDAnswered; got <= answered {
		t.Errorf("kgswitch answered %d Neighbor Solicitations after the guest sent from the router's address, want more than %d", got, answered)
	}

	evs, err := e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	busBefore := scenario.CountHAEvents(evs, labha.EventBUReceived)
	scapy(t, ctx, e, "vm", "guest-signalling", guestForge, rmac, "signalling", lab.HAAddr.String(), lab.CNAddr.String(), lab.HoA.String())
	waitDrops(t, ctx, e, "hostB", lab.GuestPort, map[string]uint64{"guest-mobility-header": 1, "guest-routing-header": 2})
	// The guest's ordinary traffic still goes through the tunnel: the
	// capture at the Home Agent holds it, so it would hold the others.
	ping(t, ctx, e.Lab, "vm", lab.CNAddr.String(), 3)
	fromGuest := "ipv6.nxt == 41 && ipv6.src == " + lab.HoA.String()
	if err := haCapture.WaitCount(ctx, fromGuest+" && icmpv6.type == 128", 3, 5*time.Second); err != nil {
		t.Error(err)
	}
	haCapture.Stop()
	if rows := tsharkFields(t, ctx, haCapture, "ipv6.src == "+lab.HoA.String()+" && (mipv6 || ipv6.routing)", "ipv6.src", "ipv6.dst", "ipv6.nxt"); len(rows) != 0 {
		t.Errorf("the guest's Mobility Header or routing header packets reached the Home Agent: %v", rows)
	}
	evs, err = e.HAEvents()
	if err != nil {
		t.Fatal(err)
	}
	if got := scenario.CountHAEvents(evs, labha.EventBUReceived); got != busBefore {
		t.Errorf("Binding Updates the Home Agent received after the guest's: got %d, want %d as before", got, busBefore)
	}
}
