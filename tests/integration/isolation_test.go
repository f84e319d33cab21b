package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// TestIsolation checks the pseudo home link's walls with the guest on the
// foreign host hostB: (a) nothing of the foreign LAN reaches the guest, (b)
// nothing the guest sends reaches the foreign LAN but through the tunnel, and
// (c) frames with a spoofed source MAC or IPv6 source address go nowhere and
// are counted.
func TestIsolation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	l := e.Lab
	startDaemons(t, ctx, e, true)
	py := scapyPython(t)
	hoa, gmac, gll := lab.HoA.String(), lab.GuestMAC.String(), lab.GuestLinkLocal.String()

	// Arrival: from the moment its port appears on hostB, the guest is on
	// the pseudo home link only, and its first frames must not reach the
	// foreign LAN. The lab's move is harsher than a live migration: the
	// guest's kernel sees its carrier come back and sends MLD reports at
	// once, and the first RARP follows the port by milliseconds, where a
	// migration leaves kgswitch the whole transfer time. Harsh on purpose:
	// one early frame is enough for hostB's bridge to learn the guest's MAC
	// on its port, after which the foreign LAN's unicast reaches the guest
	// until the entry ages out (see the fdb check below).
	capArrival := startCapture(t, ctx, e, "sw", "hostB", "isolation-arrival")
	moved := time.Now()
	if err := l.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	// The arrival is over: the Home Agent's DAD (1 s) came after it.
	capArrival.Stop()
	if c := count(t, ctx, capArrival, "eth.src == "+gmac); c != 0 {
		out, _ := capArrival.Tshark(ctx, "-Y", "eth.src == "+gmac, "-T", "fields", "-e", "frame.time_epoch", "-e", "eth.dst", "-e", "_ws.col.Protocol", "-e", "_ws.col.Info")
		t.Errorf("the foreign LAN got %d frames from the guest's MAC on its arrival (MoveGuest called at %.6f; flows installed per %s):\n%s",
			c, float64(moved.UnixMicro())/1e6, lastLogLine(e.KgswitchLog("hostB"), `replaced flows`), out)
	}
	kgsMAC := linkMAC(t, ctx, l, "hostB", "kgs0")
	// A MAC that hostB's bridge learnt on the guest's port is one the
	// foreign LAN's unicast frames reach: no-flood keeps only floods away.
	fdb, err := l.OVS("hostB").Appctl(ctx, "fdb/show", lab.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fdb, gmac) {
		flows, _ := l.OVS("hostB").Ofctl(ctx, "--names", "dump-flows")
		t.Errorf("hostB's bridge learnt the guest's MAC %s:\n%s\nflows:\n%s", gmac, fdb, flows)
	}
	foreignMACs := map[string]string{
		linkMAC(t, ctx, l, "rtr", "fgn0"): "rtr fgn0", linkMAC(t, ctx, l, "hostB", lab.Bridge): "hostB br0",
		linkMAC(t, ctx, l, "hostB", lab.Uplink): "hostB eth0", chatterMAC: "chatter",
	}

	// (a) The foreign LAN chatters; the guest hears none of it.
	capVM := startCapture(t, ctx, e, "vm", lab.Uplink, "isolation-vm")
	capLAN := startCapture(t, ctx, e, "sw", "hostB", "isolation-foreign-to-hostB")
	pings, err := e.StartPingStream(ctx, "vm", lab.CNAddr.String(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"rtr", "ping", "-6", "-n", "-c", "3", "-i", "0.2", "ff02::1%fgn0"},
		{"hostB", "ping", "-6", "-n", "-c", "3", "-i", "0.2", "ff02::1%" + lab.Bridge},
		{"rtr", "ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "1", hoa},
	} {
		// All-nodes pings answer themselves; the ping to the home address
		// goes the home way. Only the traffic matters.
		_, _ = l.Run(ctx, c[0], c[1:]...)
	}
	chatter := strings.TrimSpace(scapy(t, ctx, e, "rtr", "chatter", foreignChatter, "fgn0", hoa, gmac, gll))
	// Until the chatter reached hostB's uplink (counted below), and then
	// until the guest got an answer through hostB's bridge: what of the
	// chatter the bridge would let through has reached the guest by then.
	if n, err := strconv.Atoi(chatter); err == nil {
		_ = capLAN.WaitCount(ctx, "eth.src == "+chatterMAC, n, 5*time.Second)
	}
	if err := pings.WaitReplies(ctx, time.Now(), 1, 5*time.Second); err != nil {
		t.Error(err)
	}
	vmPings := pings.Stop()
	capVM.Stop()
	capLAN.Stop()

	srcs := sourceMACs(t, ctx, capVM)
	strange := 0
	for mac, k := range srcs {
		if mac != gmac && mac != kgsMAC {
			strange += k
			t.Errorf("the guest received %d frames from %s (%s), want none but from kgs0 (%s)", k, mac, foreignMACs[mac], kgsMAC)
		}
	}
	if c := count(t, ctx, capVM, `frame contains "kgchatter" || arp || icmpv6.type == 134 || icmpv6.type == 130`); c != 0 {
		t.Errorf("the guest received %d frames of the chatter:\n%s", c, show(t, ctx, capVM, `frame contains "kgchatter" || arp`))
	}
	fromKgs := srcs[kgsMAC]
	if vmPings.Received == 0 || fromKgs < vmPings.Received {
		t.Errorf("the guest's pings to cn during the chatter: %d answered, %d frames from kgs0; want answers, each from kgs0", vmPings.Received, fromKgs)
	}
	// The chatter did reach hostB.
	reached := count(t, ctx, capLAN, "eth.src == "+chatterMAC)
	if n, _ := strconv.Atoi(chatter); reached < n {
		t.Errorf("only %d of the %s chatter frames reached hostB's uplink", reached, chatter)
	}
	t.Logf("(a) foreign LAN chatter: %d frames from %s reached hostB's uplink, plus all-nodes pings from rtr and hostB; the guest received %d frames from other MACs than its own and kgs0's, %d frames from kgs0 (its pings to cn: %d/%d answered)",
		reached, chatterMAC, strange, fromKgs, vmPings.Received, vmPings.Sent)

	// (b) The guest speaks as on its home link; the foreign LAN hears
	// nothing but the tunnel.
	before, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	capLAN = startCapture(t, ctx, e, "sw", "hostB", "isolation-from-hostB")
	// The kernel's own MLD report, for a group it joins.
	if _, err := l.Run(ctx, "vm", py, "-c", `import socket, struct, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, "ff05::1:3") + struct.pack("@I", socket.if_nametoindex("eth0")))
time.sleep(0.3)`); err != nil {
		t.Fatal(err)
	}
	noise := strings.TrimSpace(scapy(t, ctx, e, "vm", "noise", guestNoise, lab.Uplink, hoa, gmac, gll))
	if n, err := e.Ping(ctx, "vm", lab.CNAddr.String(), 5); err != nil || n != 5 {
		t.Errorf("vm -> cn: %d/5 pings answered (%v)", n, err)
	}
	// Until the capture holds the pings' tunnelled requests (counted below).
	tunnelledEchoes := fmt.Sprintf("ipv6.nxt == 41 && ipv6.src == %s && icmpv6.type == 128", hoa)
	_ = capLAN.WaitCount(ctx, tunnelledEchoes, 5, 5*time.Second)
	capLAN.Stop()
	after, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	if c := count(t, ctx, capLAN, "eth.src == "+gmac); c != 0 {
		t.Errorf("the foreign LAN got %d frames from the guest's MAC:\n%s", c, show(t, ctx, capLAN, "eth.src == "+gmac))
	}
	// The home address appears only inside the tunnel, and in the Mobility
	// Header signalling.
	bare := fmt.Sprintf(`(ipv6.addr == %s && !(ipv6.nxt == 41) && !mip6.mhtype) || frame contains "kgnoise"`, hoa)
	if c := count(t, ctx, capLAN, bare); c != 0 {
		t.Errorf("the foreign LAN got %d packets of the guest outside the tunnel:\n%s", c, show(t, ctx, capLAN, bare))
	}
	tunnelled := count(t, ctx, capLAN, tunnelledEchoes)
	if tunnelled < 5 {
		t.Errorf("the foreign LAN carried %d tunnelled echo requests from the guest, want >= 5", tunnelled)
	}
	drops := func(reason string) uint64 { return after.Drops[reason] - before.Drops[reason] }
	// Absorbed: RS (no advertisement configured), MLD report, NA, the
	// all-nodes echo; solicitations for foreign-LAN addresses and DAD are
	// not answered; ARP and DHCP are no IPv6. Three of each.
	if drops("absorbed") < 3*4 || drops("nd-ignored") < 3*3 || drops("not-ipv6") < 3*2 {
		t.Errorf("guest's drops: before %v, after %v; want >= 12 more absorbed, >= 9 more nd-ignored, >= 6 more not-ipv6", before.Drops, after.Drops)
	}
	t.Logf("(b) the guest sent %s frames of link chatter (RS, MLD, NS, DAD, NA, ARP, DHCP) and 5 pings to cn: 0 frames from its MAC on the foreign LAN, %d tunnelled echo requests; drops +%d absorbed, +%d nd-ignored, +%d not-ipv6",
		noise, tunnelled, drops("absorbed"), drops("nd-ignored"), drops("not-ipv6"))

	// (c) Spoofing.
	const nMAC, nHome, nForeign, nValid = 20, 15, 15, 5
	capCN, err := e.StartCaptureFilter(ctx, "cn", lab.Uplink, "isolation-cn", "ip6")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(capCN.Stop)
	capLAN = startCapture(t, ctx, e, "sw", "hostB", "isolation-spoof")
	before = after
	scapy(t, ctx, e, "vm", "spoof", spoofer, lab.Uplink, hoa, gmac, kgsMAC, lab.CNAddr.String(),
		strconv.Itoa(nMAC), strconv.Itoa(nHome), strconv.Itoa(nForeign), strconv.Itoa(nValid))
	// OVS updates flow statistics about once a second. The counts are
	// checked below.
	_ = wait.Until(ctx, 5*time.Second, 200*time.Millisecond, func() error {
		if after, err = e.Status(ctx, "hostB", lab.GuestPort); err != nil {
			return wait.Fatal(err)
		}
		if d := after.Drops["spoofed-mac"] - before.Drops["spoofed-mac"]; d < nMAC {
			return fmt.Errorf("drops[spoofed-mac] grew by %d", d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The correct echo requests went last: once cn and the foreign LAN got
	// them (counted below), any spoofed one that got through is there too.
	validAtCN := fmt.Sprintf(`frame contains "kgvalid" && ipv6.src == %s && icmpv6.type == 128`, hoa)
	_ = capCN.WaitCount(ctx, validAtCN, nValid, 5*time.Second)
	_ = capLAN.WaitCount(ctx, `frame contains "kgvalid"`, nValid, 5*time.Second)
	capCN.Stop()
	capLAN.Stop()
	if d := drops("spoofed-mac"); d < nMAC {
		t.Errorf("drops[spoofed-mac] grew by %d, want >= %d (before %v, after %v)", d, nMAC, before.Drops, after.Drops)
	}
	if d := drops("bad-source"); d < nHome+nForeign {
		t.Errorf("drops[bad-source] grew by %d, want >= %d (before %v, after %v)", d, nHome+nForeign, before.Drops, after.Drops)
	}
	for _, c := range []*scenario.Capture{capCN, capLAN} {
		if k := count(t, ctx, c, `frame contains "kgspoof"`); k != 0 {
			t.Errorf("%s: %d spoofed frames got through:\n%s", filepath.Base(c.Path), k, show(t, ctx, c, `frame contains "kgspoof"`))
		}
	}
	valid := count(t, ctx, capCN, validAtCN)
	if valid != nValid {
		t.Errorf("cn got %d of the %d correct echo requests sent the same way, want all", valid, nValid)
	}
	t.Logf("(c) spoofing: sent %d frames with MAC %s, %d with source %v, %d with %v: drops[spoofed-mac] +%d, drops[bad-source] +%d; 0 reached cn or the foreign LAN; %d/%d correct control frames reached cn",
		nMAC, spoofedMAC, nHome, homeStranger, nForeign, foreignStranger, drops("spoofed-mac"), drops("bad-source"), valid, nValid)
	t.Logf("guest's counters on hostB: %+v", after)
}
