package integration

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

// The pseudo home network: a guest on a foreign host cannot tell it
// left home. Its Router Advertisements keep coming, its path MTU is what the
// tunnel carries, the Home Agent's own packets reach it as they did at home,
// and when it comes back the home link forgets the Home Agent at once.

// tunnelMTU is the largest packet kgswitch's tunnel carries over the lab's
// 1500-byte links: 1500 minus the outer IPv6 header.
const tunnelMTU = 1460

// startDaemonsHoA starts the lab Home Agent and kgswitch on hostA and hostB,
// both with the guest declared at home address hoa and with adv (may be nil)
// as the home network's advertise table.
func startDaemonsHoA(t *testing.T, ctx context.Context, e *scenario.Env, hoa netip.Addr, adv *scenario.Advertise) {
	t.Helper()
	if err := e.StartHomeAgent(ctx); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	for _, host := range []string{"hostA", "hostB"} {
		cfg, err := e.WriteConfigHoA(host, hoa, adv)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// moveAway moves the guest from hostA to hostB and waits until cn reaches
// addr again through the Home Agent; it returns when the port moved.
func moveAway(t *testing.T, ctx context.Context, e *scenario.Env, addr netip.Addr) time.Time {
	t.Helper()
	moved := time.Now()
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatalf("move hostA -> hostB: %v", err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	bound := time.Since(moved)
	reach, err := e.WaitReachable(ctx, "cn", addr.String(), 40*time.Second)
	if err != nil {
		t.Fatalf("after hostA -> hostB: %v", err)
	}
	t.Logf("hostA -> hostB: bound after %v, cn reaches %v after %v", bound.Round(time.Millisecond), addr, (bound + reach).Round(time.Millisecond))
	return moved
}

// tsharkFields returns, for each frame of c matching filter, the values of
// fields (tshark -T fields), one slice per frame.
func tsharkFields(t *testing.T, ctx context.Context, c *scenario.Capture, filter string, fields ...string) [][]string {
	t.Helper()
	args := []string{"-Y", filter, "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := c.Tshark(ctx, args...)
	if err != nil {
		t.Fatalf("tshark -Y %q: %v\n%s", filter, err, out)
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line != "" {
			rows = append(rows, strings.Split(line, "|"))
		}
	}
	return rows
}

// TestSLAACGuestKeepsAddress: a guest that configured its address and default
// route by SLAAC from the home router's advertisements (lifetimes 30 s) stays
// on a foreign host for three lifetimes. Only kgswitch's repetition of the
// advertisement can keep both alive there: the home router's own never
// reach the foreign link.
func TestSLAACGuestKeepsAddress(t *testing.T) {
	t.Parallel()
	const (
		lifetime = 30 * time.Second
		interval = 10 * time.Second
		away     = 3 * lifetime
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	slaac := lab.GuestSLAACAddr
	if want := netip.MustParseAddr("2001:db8:2000::5054:ff:fe00:10"); slaac != want {
		t.Fatalf("got lab.GuestSLAACAddr = %v, want %v", slaac, want)
	}
	if err := e.Lab.GuestUseSLAAC(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Lab.StartRadvd(ctx, lab.RAConfig{MinInterval: 3 * time.Second, MaxInterval: interval,
		RouterLifetime: lifetime, ValidLifetime: lifetime, PreferredLifetime: lifetime}); err != nil {
		t.Fatal(err)
	}
	if err := e.Lab.WaitGuestSLAAC(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := e.Addr(ctx, "vm", lab.Uplink, slaac)
	if err != nil {
		t.Fatal(err)
	}
	if st.Forever || st.Valid > lifetime {
		t.Fatalf("guest's SLAAC address at home: %s; want radvd's %v lifetimes", st.Line, lifetime)
	}
	startDaemonsHoA(t, ctx, e, slaac, &scenario.Advertise{Interval: interval,
		RouterLifetime: lifetime, ValidLifetime: lifetime, PreferredLifetime: lifetime})
	if n, err := e.Ping(ctx, "cn", slaac.String(), 3); err != nil || n != 3 {
		t.Fatalf("guest at home: %d/3 pings to its SLAAC address answered (%v)", n, err)
	}
	rtrMAC := linkMAC(t, ctx, e.Lab, "rtr", "home0")

	capture, err := e.StartCapture(ctx, "vm", lab.Uplink, "vm-eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	moved := moveAway(t, ctx, e, slaac)
	raAtBound, err := e.RASent(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}

	// Watch the guest's state while it is away: every lapse would show.
	minValid, minPreferred := lifetime, lifetime
	var lapses []string
	for time.Since(moved) < away+2*time.Second {
		time.Sleep(2 * time.Second)
		a, err := e.Addr(ctx, "vm", lab.Uplink, slaac)
		switch {
		case err != nil:
			lapses = append(lapses, fmt.Sprintf("%v: %v", time.Since(moved).Round(time.Second), err))
			continue
		case a.Deprecated || a.Forever:
			lapses = append(lapses, fmt.Sprintf("%v: %s", time.Since(moved).Round(time.Second), a.Line))
		}
		minValid, minPreferred = min(minValid, a.Valid), min(minPreferred, a.Preferred)
		if r, _ := e.Lab.Run(ctx, "vm", "ip", "-6", "route", "show", "default"); !strings.Contains(r, "via "+lab.RouterLinkLocal.String()) {
			lapses = append(lapses, fmt.Sprintf("%v: default route %q", time.Since(moved).Round(time.Second), r))
		}
	}
	stayed := time.Since(moved)
	for _, l := range lapses {
		t.Errorf("guest's state lapsed while away: %s", l)
	}

	a, err := e.Addr(ctx, "vm", lab.Uplink, slaac)
	if err != nil {
		t.Fatalf("after %v on hostB: %v", stayed.Round(time.Second), err)
	}
	if a.Forever || a.Valid <= 0 || a.Preferred <= 0 || a.Deprecated {
		t.Errorf("after %v on hostB: got %q, want the SLAAC address valid and preferred, with finite lifetimes", stayed.Round(time.Second), a.Line)
	}
	route, err := e.Lab.Run(ctx, "vm", "ip", "-6", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(route, "via "+lab.RouterLinkLocal.String()+" dev "+lab.Uplink+" proto ra") {
		t.Errorf("after %v on hostB: got default route %q, want one via %v learnt from an advertisement", stayed.Round(time.Second), route, lab.RouterLinkLocal)
	}
	if n, err := e.Ping(ctx, "cn", slaac.String(), 5); err != nil || n != 5 {
		t.Errorf("after %v on hostB: %d/5 pings from cn to %v answered (%v)", stayed.Round(time.Second), n, slaac, err)
	}
	raSent, err := e.RASent(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	if grew := raSent - raAtBound; grew < uint64(stayed/interval)-1 {
		t.Errorf("kgswitch's ra_sent grew by %d in %v, want about one per %v", grew, stayed.Round(time.Second), interval)
	}
	capture.Stop()

	// What reached the guest while it was away: kgswitch's advertisements
	// only, to its MAC, from the router's link-local address, with the tunnel
	// MTU and the configured lifetimes.
	var times []time.Time
	lt := strconv.Itoa(int(lifetime / time.Second))
	for _, r := range tsharkFields(t, ctx, capture, "icmpv6.type == 134", "frame.time_epoch", "eth.src", "eth.dst", "ipv6.src",
		"icmpv6.nd.ra.router_lifetime", "icmpv6.opt.mtu", "icmpv6.opt.prefix", "icmpv6.opt.prefix.valid_lifetime", "icmpv6.opt.prefix.preferred_lifetime") {
		at := parseEpoch(t, r[0])
		if at.Before(moved) {
			continue
		}
		if r[1] == rtrMAC {
			t.Errorf("the home router's own advertisement reached the guest on hostB at +%v: %v", at.Sub(moved).Round(time.Millisecond), r)
			continue
		}
		want := []string{r[0], r[1], lab.GuestMAC.String(), lab.RouterLinkLocal.String(), lt, strconv.Itoa(tunnelMTU), lab.HomePrefix.Addr().String(), lt, lt}
		if strings.Join(r, "|") != strings.Join(want, "|") {
			t.Errorf("advertisement at +%v: got %v, want %v (eth.src, eth.dst, ipv6.src, router lifetime, MTU, prefix, valid, preferred)",
				at.Sub(moved).Round(time.Millisecond), r[1:], want[1:])
		}
		times = append(times, at)
	}
	var gap time.Duration
	for i := 1; i < len(times); i++ {
		gap = max(gap, times[i].Sub(times[i-1]))
	}
	if len(times) < int(stayed/interval)-1 || gap > interval+2*time.Second {
		t.Errorf("the guest got %d advertisements in %v on hostB, longest gap %v; want one every %v", len(times), stayed.Round(time.Second), gap.Round(time.Millisecond), interval)
	}
	t.Logf("guest on hostB for %v (lifetimes %v): %d advertisements from kgswitch (ra_sent %d), longest gap %v; lowest valid_lft %v, preferred_lft %v; at the end: %s",
		stayed.Round(time.Second), lifetime, len(times), raSent, gap.Round(time.Millisecond), minValid, minPreferred, a.Line)
}

// TestPathMTU: a guest with a 1500-byte MTU sends and receives bulk TCP
// through the tunnel, which carries 1460 bytes: kgswitch's Packet Too Big
// makes the guest shrink its packets, without a stall.
func TestPathMTU(t *testing.T) {
	t.Parallel()
	const d = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	if err := e.StartIperf3Server(ctx, "cn"); err != nil {
		t.Fatal(err)
	}
	moveAway(t, ctx, e, lab.HoA)
	if mtu, out, err := e.RouteMTU(ctx, "vm", lab.CNAddr); err != nil || mtu != 0 {
		t.Fatalf("guest's route to cn before the transfer: %q (%v), want no path MTU yet", out, err)
	}
	link, err := e.Lab.Run(ctx, "vm", "cat", "/sys/class/net/"+lab.Uplink+"/mtu")
	if err != nil || strings.TrimSpace(link) != "1500" {
		t.Fatalf("guest's MTU: %q (%v), want 1500", link, err)
	}

	results := map[string]scenario.IperfResult{}
	for _, dir := range []struct {
		name    string
		reverse bool
	}{{"guest -> cn", false}, {"cn -> guest", true}} {
		r, err := e.Iperf3(ctx, "vm", lab.CNAddr, d, dir.reverse)
		if err != nil {
			t.Fatalf("%s: %v", dir.name, err)
		}
		results[dir.name] = r
		if r.BitsPerSecond <= 0 || len(r.Intervals) < int(d/time.Second) {
			t.Errorf("%s: got %.0f bit/s in %d intervals, want throughput over %v", dir.name, r.BitsPerSecond, len(r.Intervals), d)
		}
		for i, b := range r.Intervals {
			if i > 0 && b == 0 {
				t.Errorf("%s: interval %d carried 0 bytes (stall); intervals %v", dir.name, i, r.Intervals)
			}
		}
	}
	st, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops["too-big"] == 0 {
		t.Errorf("kgswitch on hostB: got drops %v, want too-big > 0 (a Packet Too Big sent to the guest)", st.Drops)
	}
	mtu, out, err := e.RouteMTU(ctx, "vm", lab.CNAddr)
	if err != nil || mtu != tunnelMTU {
		t.Errorf("guest's route to cn after the transfer: %q (%v), want mtu %d", out, err, tunnelMTU)
	}
	cnMTU, _, _ := e.RouteMTU(ctx, "cn", lab.HoA)
	for _, name := range []string{"guest -> cn", "cn -> guest"} {
		r := results[name]
		t.Logf("%s: %.1f Mbit/s over %v, retransmits %d, bytes per second %v", name, r.BitsPerSecond/1e6, d, r.Retransmits, r.Intervals)
	}
	t.Logf("kgswitch sent %d Packet Too Big (drops %v); guest's path MTU to cn %d, cn's to the guest %d", st.Drops["too-big"], st.Drops, mtu, cnMTU)
}

// TestHomeAgentOwnPackets: the Home Agent's own packets to a guest away from
// home are not tunnelled but sent to the care-of address with a type 2
// routing header (RFC 6275 §6.4, §9.3.2); kgswitch delivers them to the guest
// as plain packets to its home address, as at home.
func TestHomeAgentOwnPackets(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	moveAway(t, ctx, e, lab.HoA)

	uplink, err := e.StartCapture(ctx, "hostB", lab.Uplink, "hostB-uplink")
	if err != nil {
		t.Fatal(err)
	}
	defer uplink.Stop()
	guest, err := e.StartCapture(ctx, "vm", lab.Uplink, "vm-eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Stop()
	const count = 5
	if n, err := e.Ping(ctx, "ha", lab.HoA.String(), count); err != nil || n != count {
		t.Errorf("ping from the Home Agent to %v: %d/%d answered (%v)", lab.HoA, n, count, err)
	}
	ha, hoa, coa := lab.HAAddr.String(), lab.HoA.String(), lab.CareOfAddr.String()
	// Until both captures hold the echo requests; they are counted below.
	for _, c := range []*scenario.Capture{uplink, guest} {
		_ = c.WaitCount(ctx, "icmpv6.type == 128 && ipv6.src == "+ha, count, 5*time.Second)
	}
	uplink.Stop()
	guest.Stop()

	rh2 := tsharkFields(t, ctx, uplink, "icmpv6.type == 128 && ipv6.src == "+ha, "ipv6.nxt", "ipv6.dst", "ipv6.routing.type", "ipv6.routing.segleft", "ipv6.routing.mipv6.home_address")
	direct := 0
	for _, r := range rh2 {
		switch strings.Join(r, "|") {
		case "43|" + coa + "|2|1|" + hoa:
			direct++
		default:
			t.Errorf("echo request from the Home Agent on hostB's uplink: got next header, dst, routing type, segments left, home address = %v, want 43, %s, 2, 1, %s", r, coa, hoa)
		}
	}
	if direct != count {
		t.Errorf("got %d echo requests from the Home Agent to %s with a type 2 routing header on hostB's uplink, want %d", direct, coa, count)
	}
	seen := tsharkFields(t, ctx, guest, "icmpv6.type == 128 && ipv6.src == "+ha, "ipv6.dst", "ipv6.nxt", "eth.src")
	for _, r := range seen {
		if r[0] != hoa || r[1] != "58" {
			t.Errorf("echo request from the Home Agent at the guest: got dst, next header = %s, %s, want %s, 58 (no extension header)", r[0], r[1], hoa)
		}
	}
	if len(seen) != count {
		t.Errorf("the guest saw %d echo requests from the Home Agent, want %d", len(seen), count)
	}
	if rh := tsharkFields(t, ctx, guest, "ipv6.routing", "frame.number"); len(rh) != 0 {
		t.Errorf("%d packets with a routing header reached the guest, want none", len(rh))
	}
	replies := tsharkFields(t, ctx, uplink, "icmpv6.type == 129 && ipv6.dst == "+ha, "ipv6.src", "ipv6.nxt")
	for _, r := range replies {
		if r[0] != coa+","+hoa || r[1] != "41,58" {
			t.Errorf("echo reply to the Home Agent on hostB's uplink: got src %s, next header %s, want tunnelled from %s (inner %s)", r[0], r[1], coa, hoa)
		}
	}
	t.Logf("Home Agent -> guest: %d/%d echo requests with a type 2 routing header on hostB's uplink, %d delivered plain to %s; %d replies tunnelled back",
		direct, count, len(seen), hoa, len(replies))
}

// neighLLAddr returns the link-layer address of rtr's neighbour entry for a
// on the home link, and the entry.
func neighLLAddr(ctx context.Context, e *scenario.Env, a netip.Addr) (string, string) {
	return neighEntry(ctx, e, "rtr", a, "home0")
}

// neighEntry returns the link-layer address of node's neighbour entry for a
// on dev, and the entry (or the error, when ip fails).
func neighEntry(ctx context.Context, e *scenario.Env, node string, a netip.Addr, dev string) (string, string) {
	out, err := e.Lab.Run(ctx, node, "ip", "-6", "neigh", "show", a.String(), "dev", dev)
	if err != nil {
		return "", err.Error()
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1], strings.TrimSpace(out)
		}
	}
	return "", strings.TrimSpace(out)
}
