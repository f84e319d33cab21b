package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/scenario"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// TestLabExtraGuests checks the lab's optional guests: vm2 beside vm on the
// home link, a second home link (home2) with its Home Agent's namespace ha2
// behind the router, and vm3 on hostB; and that Move moves any guest.
func TestLabExtraGuests(t *testing.T) {
	t.Parallel()
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := newLabWith(t, ctx, lab.Options{ExtraGuests: true})

	if got := len(l.Guests()); got != 3 {
		t.Fatalf("got %d guests, want 3: %+v", got, l.Guests())
	}
	for _, g := range l.Guests() {
		if got := l.HostOf(g.Node); got != g.StartHost {
			t.Errorf("HostOf(%s) = %q, want %q", g.Node, got, g.StartHost)
		}
	}
	// Both guests of the home link, and the second home link's Home Agent,
	// through the router.
	ping(t, ctx, l, "cn", lab.VM2.HoA.String(), 2)
	ping(t, ctx, l, "vm", lab.VM2.HoA.String(), 2)
	ping(t, ctx, l, "cn", lab.HAAddr2.String(), 2)
	ping(t, ctx, l, "ha2", lab.RouterHomeAddr2.String(), 1)
	// vm3 is on hostB's bridge, a stranger on the foreign link: only its
	// link-local address works there without kgswitch.
	ping(t, ctx, l, "hostB", lab.VM3.LinkLocal().String()+"%"+lab.Bridge, 1)

	if err := l.Move(ctx, "vm2", "hostB", "hostC"); err == nil {
		t.Errorf("Move(vm2, hostB, hostC) with vm2 on hostA: got nil error, want one")
	}
	if err := l.Move(ctx, "nosuch", "hostA", "hostB"); err == nil {
		t.Errorf("Move(nosuch, ...): got nil error, want one")
	}
	if err := l.Move(ctx, "vm2", "hostA", "hostC"); err != nil {
		t.Fatalf("Move(vm2, hostA, hostC): %v", err)
	}
	if got := l.HostOf("vm2"); got != "hostC" {
		t.Errorf("HostOf(vm2) = %q after the move, want hostC", got)
	}
	if got := l.GuestHost(); got != "hostA" {
		t.Errorf("GuestHost() = %q after moving vm2, want vm still on hostA", got)
	}
	ping(t, ctx, l, "hostC", lab.VM2.LinkLocal().String()+"%"+lab.Bridge, 1)
	if err := l.Move(ctx, "vm2", "hostC", "hostA"); err != nil {
		t.Fatalf("Move(vm2, hostC, hostA): %v", err)
	}
	ping(t, ctx, l, "cn", lab.VM2.HoA.String(), 2)
}

// raInterval is how often kgswitch repeats each home router's Router
// Advertisement to its guests in these tests: often enough that every guest
// gets several during a test.
const raInterval = 2 * time.Second

// startGuestDaemons starts both Home Agents, kgswitch on hostA with the home
// network's two guests and kgswitch on hostB with all three guests, each
// home network advertised (raInterval).
func startGuestDaemons(t *testing.T, ctx context.Context, e *scenario.Env) {
	t.Helper()
	for _, hn := range []lab.HomeNetwork{lab.HomeNet, lab.HomeNet2} {
		if err := e.StartHomeAgentOf(ctx, hn); err != nil {
			t.Fatalf("start Home Agent %s: %v", hn.HANode, err)
		}
	}
	for host, guests := range map[string][]lab.Guest{
		"hostA": {lab.VM, lab.VM2},
		"hostB": {lab.VM, lab.VM2, lab.VM3},
	} {
		cfg, err := e.WriteConfigWith(host, scenario.Config{Guests: guests, AdvertiseInterval: raInterval})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// linkMAC returns the MAC address of dev in node.
func linkMAC(t *testing.T, ctx context.Context, l *lab.Lab, node, dev string) string {
	t.Helper()
	mac, err := l.LinkMAC(ctx, node, dev)
	if err != nil {
		t.Fatalf("%s: MAC address of %s: %v", node, dev, err)
	}
	return mac.String()
}

// count returns how many frames of the capture match the display filter.
func count(t *testing.T, ctx context.Context, c *scenario.Capture, filter string) int {
	t.Helper()
	n, err := c.Count(ctx, filter)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// show returns a one-line summary of each frame of the capture that matches
// the display filter, the first 20 at most, for error messages.
func show(t *testing.T, ctx context.Context, c *scenario.Capture, filter string) string {
	t.Helper()
	out, err := c.Tshark(ctx, "-Y", filter, "-T", "fields", "-e", "frame.number", "-e", "eth.src", "-e", "eth.dst",
		"-e", "ipv6.src", "-e", "ipv6.dst", "-e", "_ws.col.Info")
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) > 20 {
		lines = append(lines[:20], fmt.Sprintf("... %d more", len(lines)-20))
	}
	return strings.Join(lines, "\n")
}

// sourceMACs returns how many frames of the capture each source MAC sent.
func sourceMACs(t *testing.T, ctx context.Context, c *scenario.Capture) map[string]int {
	t.Helper()
	out, err := c.Tshark(ctx, "-T", "fields", "-e", "eth.src")
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	m := make(map[string]int)
	for _, mac := range strings.Fields(out) {
		m[mac]++
	}
	return m
}

// startCapture starts a capture of every frame (no filter) on dev in node.
// The capture is stopped when the test ends; stopping it before (to read it)
// is fine, Stop may be called twice.
func startCapture(t *testing.T, ctx context.Context, e *scenario.Env, node, dev, name string) *scenario.Capture {
	t.Helper()
	c, err := e.StartCaptureFilter(ctx, node, dev, name, "")
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, node, err)
	}
	t.Cleanup(c.Stop)
	return c
}

// scapyPython is the interpreter with scapy: Debian's python3-scapy is for
// the system python, which a python3 earlier in PATH (pyenv) may not be.
func scapyPython(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		py = "python3"
	}
	if out, err := exec.Command(py, "-c", "import scapy.layers.inet6").CombinedOutput(); err != nil {
		if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
			t.Skipf("KGSWITCH_SKIP_INTEGRATION=1 and no scapy: %v", err)
		}
		t.Fatalf("%s -c 'import scapy.layers.inet6' (install the Debian package python3-scapy; KGSWITCH_SKIP_INTEGRATION=1 skips): %v: %s", py, err, out)
	}
	return py
}

// scapy runs a scapy program in node, with everything of scapy.all imported
// and args in sys.argv[1:], and returns what it prints.
func scapy(t *testing.T, ctx context.Context, e *scenario.Env, node, name, program string, args ...string) string {
	t.Helper()
	path := filepath.Join(e.Lab.Dir, name+".py")
	src := "import sys\nfrom scapy.all import *\nconf.verb = 0\n" + program
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := e.Lab.Run(ctx, node, append([]string{scapyPython(t), path}, args...)...)
	if err != nil {
		t.Fatalf("scapy %s in %s: %v", name, node, err)
	}
	return out
}

// TestSeveralGuests runs three guests on one foreign host: vm and vm2 of one
// home network, moved there from their home host, and vm3 of another home
// network. Each is bound to its own Home Agent, the correspondent reaches
// each home address, the two neighbours of one home link talk directly on
// hostB without the tunnel, vm reaches vm3 through both Home Agents, and no
// guest sees anything of the other home link: its Router Advertisements,
// Neighbor Discovery or link-layer addresses.
func TestSeveralGuests(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnvWith(t, ctx, lab.Options{ExtraGuests: true})
	l := e.Lab
	startGuestDaemons(t, ctx, e)
	vm, vm2, vm3 := lab.VM, lab.VM2, lab.VM3

	// At home the two neighbours know each other's MAC, and the router knows
	// theirs: what they carry along when they move.
	for _, p := range [][2]string{{"cn", vm.HoA.String()}, {"cn", vm2.HoA.String()}, {"vm", vm2.HoA.String()}} {
		if n, err := e.Ping(ctx, p[0], p[1], 2); err != nil || n != 2 {
			t.Fatalf("at home: %s -> %s: %d/2 pings answered (%v)", p[0], p[1], n, err)
		}
	}
	for _, g := range []lab.Guest{vm, vm2} {
		if err := l.Move(ctx, g.Node, "hostA", "hostB"); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []lab.Guest{vm, vm2, vm3} {
		st, err := e.WaitBinding(ctx, "hostB", g.Port, "bound", 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if st.Location != "foreign" || st.CareOf != lab.CareOfAddr.String() || st.HomeAgent != g.Home.HAAddr.String() || st.HomeAddress != g.HoA.String() {
			t.Errorf("hostB status of %s: %+v, want foreign, home address %v, care-of %v, Home Agent %v", g.Port, st, g.HoA, lab.CareOfAddr, g.Home.HAAddr)
		}
	}
	kgsMAC := linkMAC(t, ctx, l, "hostB", "kgs0")

	uplink, err := e.StartCaptureFilter(ctx, "hostB", lab.Uplink, "several-hostB-uplink", "ip6")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(uplink.Stop)
	capVM := startCapture(t, ctx, e, "vm", "eth0", "several-vm")
	capVM3 := startCapture(t, ctx, e, "vm3", "eth0", "several-vm3")

	// The correspondent reaches every home address. The router still has vm's
	// and vm2's MACs: it reaches them only once their Home Agent's proxy
	// takes over (see docs/home-agents.md).
	for _, g := range []lab.Guest{vm, vm2, vm3} {
		took, err := e.WaitReachable(ctx, "cn", g.HoA.String(), 40*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("cn reaches %s (%s) after %v", g.Node, g.HoA, took.Round(time.Millisecond))
	}
	for _, g := range []lab.Guest{vm, vm2, vm3} {
		if n, err := e.Ping(ctx, "cn", g.HoA.String(), 5); err != nil || n != 5 {
			t.Errorf("cn -> %s: %d/5 pings answered (%v)", g.Node, n, err)
		}
	}

	// The neighbours of one home link: directly across hostB's kgswitch.
	before := map[string]scenario.PortStatus{}
	for _, g := range []lab.Guest{vm, vm2} {
		if before[g.Node], err = e.Status(ctx, "hostB", g.Port); err != nil {
			t.Fatal(err)
		}
	}
	const n = 10
	if got, err := e.Ping(ctx, "vm", vm2.HoA.String(), n); err != nil || got != n {
		t.Errorf("vm -> vm2 on hostB: %d/%d pings answered (%v)", got, n, err)
	}
	if got, err := e.Ping(ctx, "vm2", vm.HoA.String(), n); err != nil || got != n {
		t.Errorf("vm2 -> vm on hostB: %d/%d pings answered (%v)", got, n, err)
	}
	after := map[string]scenario.PortStatus{}
	for _, g := range []lab.Guest{vm, vm2} {
		if after[g.Node], err = e.Status(ctx, "hostB", g.Port); err != nil {
			t.Fatal(err)
		}
		// Each sent n requests and n replies to the other.
		if d := after[g.Node].LocalPackets - before[g.Node].LocalPackets; d < 2*n {
			t.Errorf("%s's local_packets grew by %d during the pings between vm and vm2, want >= %d", g.Node, d, 2*n)
		}
	}

	// Guests of different home networks: through both Home Agents.
	if got, err := e.Ping(ctx, "vm", vm3.HoA.String(), n); err != nil || got != n {
		t.Errorf("vm -> vm3: %d/%d pings answered (%v)", got, n, err)
	}
	if got, err := e.Ping(ctx, "vm3", vm2.HoA.String(), n); err != nil || got != n {
		t.Errorf("vm3 -> vm2: %d/%d pings answered (%v)", got, n, err)
	}
	// What vm sent vm3 went through the tunnel, to vm's Home Agent and from
	// vm3's (checked below).
	toHA1 := fmt.Sprintf("ipv6.src == %s && ipv6.dst == %s && ipv6.nxt == 41 && ipv6.src == %s && ipv6.dst == %s && icmpv6.type == 128", lab.CareOfAddr, lab.HAAddr, vm.HoA, vm3.HoA)
	fromHA2 := fmt.Sprintf("ipv6.src == %s && ipv6.dst == %s && ipv6.nxt == 41 && ipv6.src == %s && ipv6.dst == %s && icmpv6.type == 128", lab.HAAddr2, lab.CareOfAddr, vm.HoA, vm3.HoA)
	// Until the captures hold those echo requests and a few Router
	// Advertisements of kgswitch's reached each guest (all counted below).
	_ = uplink.WaitCount(ctx, toHA1, n, 5*time.Second)
	_ = uplink.WaitCount(ctx, fromHA2, n, 5*time.Second)
	for _, c := range []*scenario.Capture{capVM, capVM3} {
		_ = c.WaitCount(ctx, "icmpv6.type == 134", 2, 3*raInterval)
	}
	uplink.Stop()
	capVM.Stop()
	capVM3.Stop()

	// Not one packet between vm and vm2 went through the tunnel (tshark
	// matches inner headers too).
	between := fmt.Sprintf("ipv6.addr == %s && ipv6.addr == %s", vm.HoA, vm2.HoA)
	if c := count(t, ctx, uplink, between); c != 0 {
		t.Errorf("hostB's uplink carried %d packets between vm and vm2, want 0:\n%s", c, show(t, ctx, uplink, between))
	}
	// ... while what vm sent vm3 did.
	tunnelled := [2]int{count(t, ctx, uplink, toHA1), count(t, ctx, uplink, fromHA2)}
	if tunnelled[0] < n || tunnelled[1] < n {
		t.Errorf("hostB's uplink: %d echo requests vm -> vm3 tunnelled to %v, %d from %v; want >= %d each", tunnelled[0], lab.HAAddr, tunnelled[1], lab.HAAddr2, n)
	}

	// Each guest sees only its own home link.
	macs := map[string]string{
		"vm": vm.MAC.String(), "vm2": vm2.MAC.String(), "vm3": vm3.MAC.String(),
		"rtr home2": linkMAC(t, ctx, l, "rtr", "home2"), "ha2": linkMAC(t, ctx, l, "ha2", "eth0"),
		"rtr home0": linkMAC(t, ctx, l, "rtr", "home0"), "ha": linkMAC(t, ctx, l, "ha", "eth0"),
		"rtr fgn0": linkMAC(t, ctx, l, "rtr", "fgn0"), "hostB br0": linkMAC(t, ctx, l, "hostB", lab.Bridge),
	}
	nameOf := map[string]string{kgsMAC: "kgs0"}
	for name, mac := range macs {
		nameOf[mac] = name
	}
	for _, c := range []struct {
		g       lab.Guest
		capture *scenario.Capture
		// strangers may not appear as a frame's source.
		strangers []string
		other     lab.HomeNetwork
		// peers are the guests of the other home link it pinged: their
		// addresses may appear, in echo requests and replies only.
		peers []lab.Guest
	}{
		{vm, capVM, []string{"vm3", "rtr home2", "ha2", "rtr fgn0", "hostB br0"}, lab.HomeNet2, []lab.Guest{vm3}},
		{vm3, capVM3, []string{"vm", "vm2", "rtr home0", "ha", "rtr home2", "ha2", "rtr fgn0", "hostB br0"}, lab.HomeNet, []lab.Guest{vm, vm2}},
	} {
		srcs := sourceMACs(t, ctx, c.capture)
		var seen []string
		for mac, k := range srcs {
			seen = append(seen, fmt.Sprintf("%s (%s) %d", mac, nameOf[mac], k))
		}
		sort.Strings(seen)
		t.Logf("%s's eth0 captured frames by source MAC: %s", c.g.Node, strings.Join(seen, ", "))
		for _, s := range c.strangers {
			if k := srcs[macs[s]]; k > 0 {
				t.Errorf("%s received %d frames from %s's MAC %s", c.g.Node, k, s, macs[s])
			}
		}
		if c.g.Node == "vm3" {
			// vm3 never was at home: it knows no MAC but kgswitch's.
			for mac, k := range srcs {
				if mac != kgsMAC && mac != c.g.MAC.String() {
					t.Errorf("vm3 received %d frames from %s (%s); want only kgs0's %s and its own", k, mac, nameOf[mac], kgsMAC)
				}
			}
		}
		other := c.other.Prefix.String()
		var peerAddrs, peerNames []string
		for _, p := range c.peers {
			peerAddrs = append(peerAddrs, "ipv6.addr == "+p.HoA.String())
			peerNames = append(peerNames, p.Node)
		}
		peerEchoes := fmt.Sprintf("(%s) && (icmpv6.type == 128 || icmpv6.type == 129)", strings.Join(peerAddrs, " || "))
		foreign := fmt.Sprintf("(ipv6.addr == %s || icmpv6.nd.ns.target_address == %s || icmpv6.nd.na.target_address == %s || icmpv6.opt.prefix == %s) && !(%s)",
			other, other, other, c.other.Prefix.Addr(), peerEchoes)
		if k := count(t, ctx, c.capture, foreign); k != 0 {
			t.Errorf("%s saw %d frames about the other home link %s:\n%s", c.g.Node, k, other, show(t, ctx, c.capture, foreign))
		}
		// The captures saw the traffic that crossed: every echo with the
		// other home link's guests.
		echoes := count(t, ctx, c.capture, peerEchoes)
		if echoes < 2*n*len(c.peers) {
			t.Errorf("%s's capture holds %d echo requests and replies with %s, want >= %d", c.g.Node, echoes, strings.Join(peerNames, ", "), 2*n*len(c.peers))
		}
		// Router Advertisements: kgswitch's, of the guest's own prefix only.
		out, err := c.capture.Tshark(ctx, "-Y", "icmpv6.type == 134", "-T", "fields", "-e", "eth.src", "-e", "ipv6.src", "-e", "icmpv6.opt.prefix")
		if err != nil {
			t.Fatal(err)
		}
		ras := strings.Split(strings.TrimSpace(out), "\n")
		if strings.TrimSpace(out) == "" {
			ras = nil
		}
		want := strings.Join([]string{kgsMAC, c.g.Home.RouterLinkLocal.String(), c.g.Home.Prefix.Addr().String()}, "\t")
		for _, ra := range ras {
			if ra != want {
				t.Errorf("%s got a Router Advertisement %q (eth.src, ipv6.src, prefix), want only %q", c.g.Node, ra, want)
			}
		}
		if len(ras) < 2 {
			t.Errorf("%s got %d Router Advertisements in %v, want >= 2 (interval %v)", c.g.Node, len(ras), 3*raInterval, raInterval)
		}
		t.Logf("%s: %d Router Advertisements, all of %v; %d echoes with %s, nothing else of %v", c.g.Node, len(ras), c.g.Home.Prefix, echoes, strings.Join(peerNames, ", "), c.other.Prefix)
	}

	final := map[string]scenario.PortStatus{}
	for _, g := range []lab.Guest{vm, vm2, vm3} {
		if final[g.Node], err = e.Status(ctx, "hostB", g.Port); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("on hostB, care-of %v:", lab.CareOfAddr)
	t.Logf("  %-4s %-18s %-18s %8s %8s %6s %6s %6s  %s", "vm", "home address", "Home Agent", "to tun", "from tun", "local", "nd", "ra", "drops")
	for _, g := range []lab.Guest{vm, vm2, vm3} {
		st := final[g.Node]
		t.Logf("  %-4s %-18s %-18s %8d %8d %6d %6d %6d  %v", g.Node, st.HomeAddress, st.HomeAgent, st.ToTunnelPackets, st.FromTunnelPackets, st.LocalPackets, st.NDAnswered, st.RASent, st.Drops)
	}
	t.Logf("vm <-> vm2: %d pings each way, all answered; local_packets +%d (vm), +%d (vm2); 0 of their packets on hostB's uplink",
		n, after["vm"].LocalPackets-before["vm"].LocalPackets, after["vm2"].LocalPackets-before["vm2"].LocalPackets)
	t.Logf("vm -> vm3: %d echo requests tunnelled CoA -> %v, %d tunnelled %v -> CoA", tunnelled[0], lab.HAAddr, tunnelled[1], lab.HAAddr2)
}

// chatterMAC is the source MAC of the foreign LAN's chatter in TestIsolation,
// and spoofedMAC the one the guest pretends to have.
const (
	chatterMAC = "02:66:00:00:00:01"
	spoofedMAC = "52:54:00:00:00:66"
)

// foreignStranger is the foreign LAN's chatterer in TestIsolation, and
// homeStranger an address of the home link that is not the guest's: the guest
// spoofs both.
var (
	foreignStranger = hostInPrefix(lab.ForeignPrefix, 0x66)
	homeStranger    = hostInPrefix(lab.HomePrefix, 0x66)
)

// hostInPrefix returns the address of prefix p whose last byte is b.
func hostInPrefix(p netip.Prefix, b byte) netip.Addr {
	a := p.Masked().Addr().As16()
	a[15] = b
	return netip.AddrFrom16(a)
}

// foreignChatter is a scapy program (argv: interface, the guest's home
// address, MAC and link-local address) that sends, three times over, what a
// busy foreign LAN carries: a Router Advertisement of the foreign prefix, a
// Neighbor Solicitation for the guest's home address, an unsolicited
// Neighbor Advertisement, an MLD query, an ARP broadcast, and echo requests
// unicast to the guest's MAC. It prints how many frames it sent.
var foreignChatter = `
iface, hoa, gmac, gll = sys.argv[1:5]
M = "` + chatterMAC + `"
nsma = in6_getnsma(inet_pton(socket.AF_INET6, hoa))
frames = [
    Ether(src=M, dst="33:33:00:00:00:01")/IPv6(src="fe80::66", dst="ff02::1", hlim=255)/ICMPv6ND_RA()/
        ICMPv6NDOptSrcLLAddr(lladdr=M)/ICMPv6NDOptPrefixInfo(prefix="` + lab.ForeignPrefix.Addr().String() + `", prefixlen=64),
    Ether(src=M, dst=in6_getnsmac(nsma))/IPv6(src="` + foreignStranger.String() + `", dst=inet_ntop(socket.AF_INET6, nsma), hlim=255)/
        ICMPv6ND_NS(tgt=hoa)/ICMPv6NDOptSrcLLAddr(lladdr=M),
    Ether(src=M, dst="33:33:00:00:00:01")/IPv6(src="fe80::66", dst="ff02::1", hlim=255)/
        ICMPv6ND_NA(tgt="` + foreignStranger.String() + `", R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr=M),
    Ether(src=M, dst="33:33:00:00:00:01")/IPv6(src="fe80::66", dst="ff02::1", hlim=1)/
        IPv6ExtHdrHopByHop(options=[RouterAlert()])/ICMPv6MLQuery(),
    Ether(src=M, dst="ff:ff:ff:ff:ff:ff")/ARP(hwsrc=M, psrc="192.0.2.66", pdst="192.0.2.1"),
    Ether(src=M, dst=gmac)/IPv6(src="` + foreignStranger.String() + `", dst=hoa)/ICMPv6EchoRequest(data=b"kgchatter"),
    Ether(src=M, dst=gmac)/IPv6(src="fe80::66", dst=gll)/ICMPv6EchoRequest(data=b"kgchatter"),
]
for _ in range(3):
    sendp(frames, iface=iface)
print(3 * len(frames))
`

// guestNoise is a scapy program (argv: interface, the guest's home address,
// MAC and link-local address) that sends from the guest what a guest that
// believes it is at home sends on its link: a Router Solicitation, an MLDv2
// report, Neighbor Solicitations for foreign-LAN addresses (the care-of
// address, the foreign router) and a DAD probe, an unsolicited Neighbor
// Advertisement, an all-nodes echo request, ARP and DHCP broadcasts. Every
// frame is sent three times; it prints how many frames it sent.
var guestNoise = `
iface, hoa, gmac, gll = sys.argv[1:5]
def ns(src, tgt):
    dst = in6_getnsma(inet_pton(socket.AF_INET6, tgt))
    p = Ether(src=gmac, dst=in6_getnsmac(dst))/IPv6(src=src, dst=inet_ntop(socket.AF_INET6, dst), hlim=255)/ICMPv6ND_NS(tgt=tgt)
    if src != "::":
        p = p/ICMPv6NDOptSrcLLAddr(lladdr=gmac)
    return p
frames = [
    Ether(src=gmac, dst="33:33:00:00:00:02")/IPv6(src=gll, dst="ff02::2", hlim=255)/ICMPv6ND_RS()/ICMPv6NDOptSrcLLAddr(lladdr=gmac),
    Ether(src=gmac, dst="33:33:00:00:00:16")/IPv6(src=gll, dst="ff02::16", hlim=1)/IPv6ExtHdrHopByHop(options=[RouterAlert()])/
        ICMPv6MLReport2(records=[ICMPv6MLDMultAddrRec(rtype=4, dst="ff05::1:3")]),
    ns(hoa, "` + lab.CareOfAddr.String() + `"),
    ns(hoa, "` + lab.RouterForeignAddr.String() + `"),
    ns("::", hoa),
    Ether(src=gmac, dst="33:33:00:00:00:01")/IPv6(src=gll, dst="ff02::1", hlim=255)/ICMPv6ND_NA(tgt=hoa, R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr=gmac),
    Ether(src=gmac, dst="33:33:00:00:00:01")/IPv6(src=hoa, dst="ff02::1")/ICMPv6EchoRequest(data=b"kgnoise"),
    Ether(src=gmac, dst="ff:ff:ff:ff:ff:ff")/ARP(hwsrc=gmac, psrc="192.0.2.10", pdst="192.0.2.1"),
    Ether(src=gmac, dst="ff:ff:ff:ff:ff:ff")/IP(src="0.0.0.0", dst="255.255.255.255")/UDP(sport=68, dport=67)/Raw(b"kgnoise"),
]
for _ in range(3):
    sendp(frames, iface=iface)
print(3 * len(frames))
`

// spoofer is a scapy program (argv: interface, the guest's home address and
// MAC, kgswitch's MAC, the correspondent's address, the counts of each kind)
// that sends echo requests to the correspondent: with a spoofed source MAC
// (and the right home address), with the guest's MAC but a source address of
// the home link that is not the guest's, with a source address of the
// foreign link, and, as a control, correct ones. Each kind carries its own
// payload marker.
var spoofer = `
iface, hoa, gmac, kmac, cn = sys.argv[1:6]
nmac, nhome, nforeign, nvalid = (int(x) for x in sys.argv[6:10])
def echo(smac, src, mark, i):
    return Ether(src=smac, dst=kmac)/IPv6(src=src, dst=cn)/ICMPv6EchoRequest(id=0x6b67, seq=i, data=mark)
frames = [echo("` + spoofedMAC + `", hoa, b"kgspoof-mac", i) for i in range(nmac)]
frames += [echo(gmac, "` + homeStranger.String() + `", b"kgspoof-home", i) for i in range(nhome)]
frames += [echo(gmac, "` + foreignStranger.String() + `", b"kgspoof-foreign", i) for i in range(nforeign)]
frames += [echo(gmac, hoa, b"kgvalid", i) for i in range(nvalid)]
sendp(frames, iface=iface, inter=0.01)
print(len(frames))
`
