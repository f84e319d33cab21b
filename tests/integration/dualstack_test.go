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
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// startDualStack starts the lab Home Agent and kgswitch on hostA and hostB
// with the guest declared with its IPv4 home address, the home network's IPv4
// side as the lab's DHCP server hands it out and the home gateway's MAC (as an
// operator would configure them), and then the guest's DHCP client at home.
// It returns the lease the guest got there. haArgs go to the lab Home Agent.
func startDualStack(t *testing.T, ctx context.Context, e *scenario.Env, haArgs ...string) lab.DHCP4Event {
	t.Helper()
	gwMAC, err := e.Lab.LinkMAC(ctx, "rtr", "home0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.StartHomeAgentOf(ctx, lab.HomeNet, haArgs...); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	for _, host := range []string{"hostA", "hostB"} {
		cfg, err := e.WriteConfigWith(host, scenario.Config{Guests: []lab.Guest{lab.VM}, IPv4: true, GatewayMAC: gwMAC})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := e.Lab.StartGuestDHCP4(ctx, lab.VM.Node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, f := range []string{e.Lab.DHCP4Log(lab.VM.Node), filepath.Join(e.Lab.Dir, lab.VM.Node+"-udhcpc.log")} {
			if b, err := os.ReadFile(f); err == nil {
				t.Logf("---- %s ----\n%s", f, b)
			}
		}
	})
	if lease.Addr != netip.PrefixFrom(lab.HoA4, lab.HomePrefix4.Bits()) {
		t.Fatalf("the guest's lease at home: %+v, want %v", lease, lab.HoA4)
	}
	return lease
}

// guestIPv4 is the guest's IPv4 configuration as ip prints it.
func guestIPv4(t *testing.T, ctx context.Context, e *scenario.Env) scenario.GuestIPv4 {
	t.Helper()
	c, err := e.GuestIPv4Of(ctx, lab.VM.Node)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Addrs) == 0 {
		t.Fatalf("the guest has no IPv4 address: %v", c)
	}
	return c
}

// TestDualStackMove moves a dual-stack guest from its home host to a foreign
// host and back while cn runs a TCP echo stream to each of its home
// addresses, IPv4 and IPv6, and probes both every 10 ms: both streams end with
// every byte intact, the guest keeps its IPv4 configuration throughout, and
// with the departure cover the first departure loses no more than five probes
// of either family. It prints the probes lost per hop and family.
//
// It runs alone, as TestDepartureCover does: the probes lost while the home
// host installs its departure flows count against the bound, and on a
// loaded 2-core machine one ovs-ofctl run takes 150 ms instead of 20.
func TestDualStackMove(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDualStack(t, ctx, e)
	hoa, hoa4 := lab.HoA.String(), lab.HoA4.String()
	// The home router caches the guest's MAC for both addresses, as in
	// production.
	for _, a := range []string{hoa, hoa4} {
		if n, err := e.Ping(ctx, "cn", a, 3); err != nil || n != 3 {
			t.Fatalf("before the move: %d/3 pings to %s answered (%v)", n, a, err)
		}
	}
	before := guestIPv4(t, ctx, e)

	// 3 MiB each at 96 KiB/s: about 32 s, spanning both hops.
	const total, rate = 3 << 20, 96 << 10
	streams := map[string]*scenario.TCPStream{}
	for fam, to := range map[string]netip.Addr{"IPv6": lab.HoA, "IPv4": lab.HoA4} {
		s, err := e.StartTCPStreamTo(ctx, "cn", to, total, rate)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WaitEstablished(ctx, 5*time.Second); err != nil {
			t.Fatalf("%s stream: %v", fam, err)
		}
		streams[fam] = s
	}

	var report strings.Builder
	for i, hop := range []struct{ from, to string }{{"hostA", "hostB"}, {"hostB", "hostA"}} {
		probes := map[string]*scenario.PingStream{}
		for fam, a := range map[string]string{"IPv6": hoa, "IPv4": hoa4} {
			p, err := e.StartPingStream(ctx, "cn", a, 10*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.WaitReplies(ctx, time.Time{}, 1, 5*time.Second); err != nil {
				t.Fatalf("%s probes before hop %s -> %s: %v", fam, hop.from, hop.to, err)
			}
			probes[fam] = p
		}
		if err := e.Lab.MoveGuest(ctx, hop.from, hop.to); err != nil {
			t.Fatal(err)
		}
		waitHopSettled(t, ctx, e, hop.to)
		for _, a := range []string{hoa, hoa4} {
			if _, err := e.WaitReachable(ctx, "cn", a, 30*time.Second); err != nil {
				t.Fatalf("hop %s -> %s: %v", hop.from, hop.to, err)
			}
		}
		now := time.Now()
		fmt.Fprintf(&report, "\n  hop %s -> %s:", hop.from, hop.to)
		for _, fam := range []string{"IPv4", "IPv6"} {
			if err := probes[fam].WaitReplies(ctx, now, 1, 5*time.Second); err != nil {
				t.Error(err)
			}
			r := probes[fam].Stop()
			fmt.Fprintf(&report, " %s %d/%d lost (longest gap %v);", fam, r.Lost, r.Sent, r.LongestGap.Round(time.Millisecond))
			if i == 0 && r.Lost > 5 {
				t.Errorf("first departure with the cover: %d %s probes lost, want at most 5", r.Lost, fam)
			}
		}
		if c := guestIPv4(t, ctx, e); !c.Equal(before) {
			t.Errorf("after hop %s -> %s the guest's IPv4 configuration is %v, was %v", hop.from, hop.to, c, before)
		}
		if hop.to == "hostB" {
			st, err := e.Status(ctx, "hostB", lab.GuestPort)
			if err != nil || st.IPv4State != "accepted" || st.IPv4Address != hoa4 {
				t.Errorf("hostB status: %+v (%v), want the IPv4 home address %s accepted", st, err, hoa4)
			}
		}
	}
	t.Logf("dual-stack guest, probes every 10 ms from cn, departure cover on:%s", report.String())

	for _, fam := range []string{"IPv4", "IPv6"} {
		client, server, err := streams[fam].Wait()
		if err != nil {
			t.Fatalf("%s stream: %v", fam, err)
		}
		if err := scenario.StreamIntact(total, client, server); err != nil {
			t.Errorf("%s TCP echo stream from cn: %v", fam, err)
		} else {
			t.Logf("%s TCP stream: %d bytes each way in %.1f s, intact", fam, client.Sent, client.Seconds)
		}
	}
}

// waitHopSettled waits until a move to host is over there: abroad, the binding
// is bound and the home host no longer covers the guest; at home, kgswitch has
// de-registered it and told the neighbours.
func waitHopSettled(t *testing.T, ctx context.Context, e *scenario.Env, host string) {
	t.Helper()
	if host != lab.VM.StartHost {
		if _, err := e.WaitBinding(ctx, host, lab.GuestPort, "bound", 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait.Until(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		st, err := e.Status(ctx, lab.VM.StartHost, lab.GuestPort)
		switch {
		case err != nil:
			return err
		case host != lab.VM.StartHost && st.Location == "departed":
			return fmt.Errorf("the home host still covers the departed guest")
		case host == lab.VM.StartHost && st.Location != "home":
			return fmt.Errorf("the home host has the guest %q, want home", st.Location)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestDHCPRenewalAbroad lets the guest renew its DHCPv4 lease (30 s, so at
// 15 s) while it runs on the foreign host: kgswitch answers for the home DHCP
// server with the same address, gateway, lease time, DNS server and domain,
// and the guest's IPv4 configuration is the same before, during and after the
// stay abroad, where the home server renews it again.
func TestDHCPRenewalAbroad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnvWith(t, ctx, lab.Options{DHCP4Lease: 30 * time.Second})
	home := startDualStack(t, ctx, e)
	before := guestIPv4(t, ctx, e)

	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	waitHopSettled(t, ctx, e, "hostB")
	moved := time.Now()
	var renewal lab.DHCP4Event
	if err := wait.Until(ctx, 40*time.Second, 200*time.Millisecond, func() error {
		evs, err := e.Lab.GuestDHCP4Events(lab.VM.Node)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.Time.Before(moved) {
				continue
			}
			if ev.Event != "renew" {
				return wait.Fatal(fmt.Errorf("the guest's DHCP client abroad: %+v, want renewals only", ev))
			}
			renewal = ev
			return nil
		}
		return fmt.Errorf("no renewal since the move")
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("renewal abroad at %s (%.1f s after the move): %+v", renewal.Time.Format("15:04:05.000"), renewal.Time.Sub(moved).Seconds(), renewal)
	if renewal.Addr != home.Addr || renewal.Router != home.Router || renewal.ServerID != home.ServerID ||
		renewal.Lease != home.Lease || renewal.Domain != home.Domain || !slices.Equal(renewal.DNS, home.DNS) {
		t.Errorf("lease renewed abroad: %+v, want what the home server gave: %+v", renewal, home)
	}
	if c := guestIPv4(t, ctx, e); !c.Equal(before) {
		t.Errorf("abroad, after the renewal, the guest's IPv4 configuration is %v, was %v", c, before)
	}
	if n, err := e.Ping(ctx, "cn", lab.HoA4.String(), 3); err != nil || n != 3 {
		t.Errorf("after the renewal abroad: %d/3 IPv4 pings answered (%v)", n, err)
	}
	st, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil || st.V4Answered == 0 {
		t.Errorf("hostB status: %+v (%v), want DHCP answered", st, err)
	}

	if err := e.Lab.MoveGuest(ctx, "hostB", "hostA"); err != nil {
		t.Fatal(err)
	}
	waitHopSettled(t, ctx, e, "hostA")
	back := time.Now()
	if err := e.Lab.RenewGuestDHCP4(lab.VM.Node); err != nil {
		t.Fatal(err)
	}
	if err := wait.Until(ctx, 10*time.Second, 200*time.Millisecond, func() error {
		evs, err := e.Lab.GuestDHCP4Events(lab.VM.Node)
		if err != nil {
			return err
		}
		if lab.CountDHCP4(evs, "renew", back) == 0 {
			return fmt.Errorf("no renewal at home yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if c := guestIPv4(t, ctx, e); !c.Equal(before) {
		t.Errorf("back home, renewed by the home server, the guest's IPv4 configuration is %v, was %v", c, before)
	}
	if n, err := e.Ping(ctx, "cn", lab.HoA4.String(), 3); err != nil || n != 3 {
		t.Errorf("back home: %d/3 IPv4 pings answered (%v)", n, err)
	}
}

// guestNoise4 sends, from the guest's interface (sys.argv[1]) with its MAC
// (argv[2]) and IPv4 home address (argv[3]), what must never reach the
// foreign LAN: ARP for the foreign router (argv[4]) and for the home
// gateway (argv[5], which kgswitch answers), broadcasts (limited, subnet,
// DHCP DISCOVER), and packets with spoofed sources, a foreign-LAN one and
// another home address. It prints how many frames it sent.
const guestNoise4 = `iface, mac, hoa4, foreign, gw = sys.argv[1:6]
frames = [
    Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")/ARP(op=1, hwsrc=mac, psrc=hoa4, pdst=foreign),
    Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")/ARP(op=1, hwsrc=mac, psrc=hoa4, pdst=gw),
    Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")/IP(src=hoa4, dst="255.255.255.255")/UDP(sport=5353, dport=5353)/Raw(b"kgnoise4"),
    Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")/IP(src=hoa4, dst="192.0.2.255")/UDP(sport=5353, dport=5353)/Raw(b"kgnoise4"),
    Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")/IP(src="0.0.0.0", dst="255.255.255.255")/UDP(sport=68, dport=67)/BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")), xid=0x6b67)/DHCP(options=[("message-type", "discover"), "end"]),
    Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")/IP(src="203.0.113.77", dst=foreign)/ICMP()/Raw(b"kgnoise4"),
    Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")/IP(src="192.0.2.99", dst="198.51.100.100")/ICMP()/Raw(b"kgnoise4"),
]
for f in frames:
    for _ in range(3):
        sendp(f, iface=iface)
print(3 * len(frames))
`

// TestIPv4Isolation checks the IPv4 walls of the pseudo home link with the
// dual-stack guest on the foreign host: its ARP, broadcasts and packets with
// spoofed sources never reach the foreign LAN, and are counted; kgswitch
// answers its ARP for its gateway and its DHCP itself; its IPv4 to cn crosses
// the foreign LAN only inside the tunnel (IPv4-in-IPv6).
func TestIPv4Isolation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDualStack(t, ctx, e)
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	waitHopSettled(t, ctx, e, "hostB")
	if _, err := e.WaitReachable(ctx, "cn", lab.HoA4.String(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	before, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	capLAN := startCapture(t, ctx, e, "sw", "hostB", "isolation4")
	gmac := lab.GuestMAC.String()
	sent := strings.TrimSpace(scapy(t, ctx, e, "vm", "noise4", guestNoise4, lab.Uplink, gmac, lab.HoA4.String(),
		lab.RouterForeignAddr4.String(), lab.RouterHomeAddr4.String()))
	if n, err := e.Ping(ctx, "vm", lab.CNAddr4.String(), 5); err != nil || n != 5 {
		t.Errorf("vm -> cn over IPv4: %d/5 pings answered (%v)", n, err)
	}
	tunnelled := fmt.Sprintf("ipv6.nxt == 4 && ip.src == %s && icmp.type == 8", lab.HoA4)
	_ = capLAN.WaitCount(ctx, tunnelled, 5, 5*time.Second)
	capLAN.Stop()
	after, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}

	if c := count(t, ctx, capLAN, "eth.src == "+gmac); c != 0 {
		t.Errorf("the foreign LAN got %d frames from the guest's MAC:\n%s", c, show(t, ctx, capLAN, "eth.src == "+gmac))
	}
	// Nothing but IPv6 on the foreign LAN, and none of the chatter or the
	// spoofed packets inside the tunnel either. (The guest's kernel answers
	// kgswitch's OFFER to the scripted DISCOVER with a Port Unreachable to
	// its gateway: that goes through the tunnel, as it would at home.)
	// The foreign router's own frames are the foreign LAN's business.
	bare := fmt.Sprintf(`eth.src != %s && (!ipv6 || frame contains "kgnoise4" || ip.src == 203.0.113.77 || ip.src == 192.0.2.99)`,
		linkMAC(t, ctx, e.Lab, "rtr", "fgn0"))
	if c := count(t, ctx, capLAN, bare); c != 0 {
		t.Errorf("the foreign LAN got %d of the guest's IPv4/ARP frames, bare or tunnelled:\n%s", c, show(t, ctx, capLAN, bare))
	}
	if c := count(t, ctx, capLAN, tunnelled); c < 5 {
		t.Errorf("the foreign LAN carried %d tunnelled IPv4 echo requests from the guest, want >= 5", c)
	}
	drops := func(reason string) uint64 { return after.Drops[reason] - before.Drops[reason] }
	// Three of each: the two broadcasts absorbed, the two spoofed sources,
	// the ARP for the foreign router unanswered; the gateway's ARP and the
	// DISCOVER answered.
	answered := after.V4Answered - before.V4Answered
	if drops("absorbed") < 6 || drops("bad-source") < 6 || drops("arp-dhcp-ignored") < 3 || answered < 6 {
		t.Errorf("guest's drops: before %v, after %v, answered %d more; want >= 6 more absorbed, >= 6 bad-source, >= 3 arp-dhcp-ignored, >= 6 answered",
			before.Drops, after.Drops, answered)
	}
	t.Logf("the guest sent %s frames of IPv4 chatter (ARP, broadcasts, DHCP DISCOVER, spoofed sources): none on the foreign LAN; drops +%d absorbed, +%d bad-source, +%d arp-dhcp-ignored; %d answered by kgswitch",
		sent, drops("absorbed"), drops("bad-source"), drops("arp-dhcp-ignored"), answered)
	if n, _ := strconv.Atoi(sent); n != 21 {
		t.Errorf("scapy sent %q frames, want 21", sent)
	}
}

// TestIPv4Refused moves the dual-stack guest abroad to a Home Agent that
// binds IPv4 home addresses of another subnet only, so it refuses the
// guest's: IPv6 is bound and reachable as ever, IPv4 is not tunnelled, and
// kgswitch status says so in words and counts the refusal.
func TestIPv4Refused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDualStack(t, ctx, e, "-ipv4-prefix", "198.18.0.0/24")
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	waitHopSettled(t, ctx, e, "hostB")
	if _, err := e.WaitReachable(ctx, "cn", lab.HoA.String(), 20*time.Second); err != nil {
		t.Fatalf("IPv6 with IPv4 refused: %v", err)
	}
	st, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	if st.BindingState != "bound" || st.IPv4State != "refused" || st.IPv4Refused == 0 || !strings.Contains(st.IPv4, "refused") {
		t.Errorf("hostB status: %+v, want bound, IPv4 refused and counted", st)
	}
	if n, _ := e.Ping(ctx, "cn", lab.HoA4.String(), 3); n != 0 {
		t.Errorf("cn reached the refused IPv4 home address: %d/3 answered", n)
	}
	text, err := e.Kgswitch(ctx, "hostB", "status")
	if err != nil || !strings.Contains(text, "ipv4 "+lab.HoA4.String()+": refused") {
		t.Errorf("kgswitch status says %q (%v), want the IPv4 refusal in words", text, err)
	}
	t.Logf("IPv4 refused, IPv6 bound: %s", st.IPv4)
}
