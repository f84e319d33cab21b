// Command demo builds the netns lab, runs kgswitch on a home and a foreign
// host and live-migrates a real dual-stack QEMU guest from its home host to
// the foreign host and back while a correspondent pings both its home
// addresses every 10 ms, then shows a person the timeline of each move:
// QEMU's STOP and RESUME, kgswitch's Binding Update, the Home Agent's
// Acknowledgement, the first reply and the probes lost, and that the guest
// kept its IPv4 home address next to its IPv6 one (RFC 5555). Without QEMU it says so and moves the lab's namespace guest
// instead. `make demo` runs it. Everything it creates is removed at the end,
// also on Ctrl-C.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/qemu"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

var start = time.Now()

func step(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

var netns = flag.Bool("netns", false, "move the lab's namespace guest instead of live-migrating a QEMU guest (what the demo does when QEMU is missing)")

func run() error {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := lab.Preflight(); err != nil {
		return err
	}
	lab.CleanupStale(nil)

	step("building kgswitch, the lab Home Agent and tcpcheck")
	dir, err := os.MkdirTemp("", "kgswitch-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins, err := scenario.Build(ctx, dir)
	if err != nil {
		return err
	}

	img, why := qemu.Image{}, "the namespace guest was asked for (-netns)"
	if !*netns {
		img, why = guestImage(ctx, dir)
	}
	if why != "" {
		fmt.Println()
		fmt.Printf("*** Not live-migrating a real QEMU guest: %s.\n", why)
		fmt.Println("*** Falling back to the lab's namespace guest: its port moves between the hosts' bridges")
		fmt.Println("*** (announcing itself as QEMU does after a migration), instead of a real live migration.")
		fmt.Println()
	}

	step("building the lab: cn, router, Home Agent, hostA (home) and hostB (foreign), each host with its own OVS")
	l, err := lab.New(ctx, lab.Options{})
	if err != nil {
		return err
	}
	defer func() {
		l.Close()
		step("lab removed")
	}()
	e := &scenario.Env{Lab: l, Bin: bins}
	fmt.Printf("           cn %v, %v -- rtr -- home link %v, %v (Home Agent %v, hostA %v)\n", lab.CNAddr, lab.CNAddr4, lab.HomePrefix, lab.HomePrefix4, lab.HAAddr, lab.HostAAddr)
	fmt.Printf("                        \\-- foreign link %v (hostB, care-of address %v; no IPv4 home subnet there)\n", lab.ForeignPrefix, lab.CareOfAddr)
	fmt.Printf("           guest: home addresses %v and %v (IPv4 from the home DHCP server), MAC %v, port %s on its host's bridge\n", lab.HoA, lab.HoA4, lab.GuestMAC, lab.GuestPort)
	if why == "" {
		if err := qemu.DetachLabGuest(ctx, l); err != nil {
			return err
		}
	}
	if err := e.StartHomeAgent(ctx); err != nil {
		return err
	}
	// The IPv4 side: the home subnet with the home DHCP server's values, and
	// the home router's MAC, which the guest knows as its gateway's.
	gw, err := e.Lab.LinkMAC(ctx, "rtr", "home0")
	if err != nil {
		return err
	}
	for _, host := range []string{"hostA", "hostB"} {
		cfg, err := e.WriteConfigWith(host, scenario.Config{Guests: []lab.Guest{lab.VM}, IPv4: true, GatewayMAC: gw})
		if err != nil {
			return err
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			return err
		}
	}
	step("Home Agent and kgswitch (on hostA and hostB) running; both know the guest by its port, MAC and home addresses (IPv6 and IPv4)")
	if why != "" {
		return netnsMove(ctx, e)
	}
	return qemuMigrations(ctx, e, img)
}

// guestImage builds the QEMU guest image, or says why there is none.
func guestImage(ctx context.Context, dir string) (qemu.Image, string) {
	if err := qemu.Preflight(); err != nil {
		return qemu.Image{}, err.Error()
	}
	step("building the guest image: Debian's cloud kernel and a busybox initramfs (cached after the first run)")
	tcpcheck, err := qemu.BuildTCPCheck(ctx, dir)
	if err != nil {
		return qemu.Image{}, err.Error()
	}
	img, err := qemu.BuildImage(ctx, qemu.ImageOptions{TCPCheck: tcpcheck})
	if err != nil {
		return qemu.Image{}, "guest image: " + err.Error()
	}
	return img, ""
}

// qemuMigrations boots the guest at home, migrates it A -> B and back B ->
// A, and shows each move's timeline and that the guest kept both home
// addresses.
func qemuMigrations(ctx context.Context, e *scenario.Env, img qemu.Image) error {
	hoa := lab.HoA.String()
	var vms []*qemu.VM
	defer func() {
		for _, vm := range vms {
			vm.Close()
		}
	}()
	vm, err := qemu.Start(ctx, qemu.Config{Lab: e.Lab, Host: "hostA", Name: "A", Image: img, DHCP4: true})
	if err != nil {
		return err
	}
	vms = append(vms, vm)
	boot, err := vm.WaitReady(ctx)
	if err != nil {
		return err
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 15*time.Second); err != nil {
		return err
	}
	step("QEMU guest booted on hostA in %.1fs (TCG, no KVM); cn reaches it at %s on its home link", boot.Seconds(), hoa)
	var home scenario.GuestIPv4
	if err := wait.Until(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		var err error
		if home, err = vm.IPv4(ctx); err != nil {
			return wait.Fatal(err)
		}
		if len(home.Addrs) == 0 {
			return errors.New("the guest has no IPv4 address from the home DHCP server yet")
		}
		return nil
	}); err != nil {
		return err
	}
	if _, err := e.WaitReachable(ctx, "cn", lab.HoA4.String(), 10*time.Second); err != nil {
		return err
	}
	addrs, err := guestAddrs(ctx, vm)
	if err != nil {
		return err
	}
	step("the guest took its IPv4 address from the home DHCP server; cn reaches it at %s too", lab.HoA4)
	fmt.Printf("           guest's addresses (ip -4 addr; ip -6 addr scope global): %s\n", addrs)

	// 48 KiB/s each for 21 s: through both migrations.
	const total, rate = 1 << 20, 48 << 10
	type stream struct {
		family string
		tcp    *qemu.GuestTCP
	}
	var streams []stream
	for _, to := range []netip.AddrPort{netip.AddrPortFrom(lab.HoA, 5001), netip.AddrPortFrom(lab.HoA4, 5002)} {
		tcp, err := qemu.StartGuestTCPPort(ctx, e, vm, to, total, rate, 60*time.Second)
		if err != nil {
			return err
		}
		streams = append(streams, stream{family(to.Addr()), tcp})
	}
	step("cn opens two TCP echo streams to the guest, to %s and to %s (1 MiB each at 48 KiB/s); each move runs under pings of both every 10 ms", lab.HoA, lab.HoA4)

	var hops []qemu.Hop
	var kept []string
	for i, to := range []string{"hostB", "hostA"} {
		fmt.Println()
		step("MIGRATE %s -> %s: QEMU starts on %s waiting for the guest (-incoming); its tap %s joins %s's bridge", vm.Host, to, to, lab.GuestPort, to)
		dst, h, err := qemu.RunHop(ctx, vm, qemu.HopOptions{Env: e, Image: img, To: to, Name: fmt.Sprintf("%s%d", strings.TrimPrefix(to, "host"), i+1), IPv4: true,
			Started: func(vm *qemu.VM) { vms = append(vms, vm) }})
		if err != nil {
			return err
		}
		if c := dst.Crash(); c != "" {
			return fmt.Errorf("the emulated guest crashed after the migration (a rare TCG fault; run the demo again): %s", c)
		}
		timeline(e, h)
		hops = append(hops, h)
		vm = dst
		v, err := checkKept(ctx, e, vm, home, addrs)
		if err != nil {
			return err
		}
		kept = append(kept, v)
	}

	var broken error
	fmt.Println()
	for _, s := range streams {
		client, server, err := s.tcp.Wait(ctx, vm)
		if err != nil {
			return err
		}
		intact := scenario.StreamIntact(total, client, server)
		step("%s TCP stream finished: %d bytes each way in %.1fs, %s", s.family, client.Sent, client.Seconds, streamVerdict(intact))
		if intact != nil {
			broken = fmt.Errorf("%s TCP stream did not survive intact: %w", s.family, intact)
		}
	}
	fmt.Println()
	fmt.Println("Both moves (times from QEMU's QMP events, a capture on the destination's uplink and cn's pings to the IPv6 home address):")
	fmt.Println("  " + qemu.HopTableHeader)
	for _, h := range hops {
		fmt.Println("  " + h.Row())
	}
	fmt.Println()
	fmt.Println("Pings every 10 ms lost, both home addresses:")
	for _, h := range hops {
		fmt.Printf("  %-15s IPv6 %s: %d of %d   IPv4 %s: %d of %d\n", h.From+" -> "+h.To, lab.HoA, h.Probes.Lost, h.Probes.Sent, lab.HoA4, h.Probes4.Lost, h.Probes4.Sent)
	}
	fmt.Println()
	fmt.Println("The guest kept both home addresses, abroad and back:")
	for _, k := range kept {
		fmt.Println("  " + k)
	}
	fmt.Println()
	fmt.Println("Leaving home, the Home Agent spends ~1 s on DAD before it takes the home addresses over; kgswitch on")
	fmt.Println("hostA holds the frames still sent to the guest's old place and releases them to the Home Agent, so")
	fmt.Println("that second costs a delay, not a loss. The IPv4 home address rides the same binding (RFC 5555): its")
	fmt.Println("packets travel IPv4-in-IPv6 to the Home Agent, and abroad kgswitch answers the guest's ARP for its")
	fmt.Println("gateway. Coming home, kgswitch on hostA de-registers the guest.")
	return broken
}

// guestAddrs is the guest's `ip -4 addr show dev eth0` and `ip -6 addr
// show dev eth0 scope global`: its home addresses, side by side.
func guestAddrs(ctx context.Context, vm *qemu.VM) (string, error) {
	out, err := vm.Shell(ctx, "ip -4 addr show dev eth0; ip -6 addr show dev eth0 scope global")
	if err != nil {
		return "", err
	}
	var inet []string
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "inet ") || strings.HasPrefix(line, "inet6 ") {
			inet = append(inet, line)
		}
	}
	return strings.Join(inet, "; "), nil
}

// checkKept shows, after a move, that cn reaches the guest at both home
// addresses and that its IPv4 configuration is the one it had at home
// (home, and addrs its guestAddrs there), and on a foreign host what
// kgswitch says of the IPv4 home address; it returns the move's one-line
// verdict.
func checkKept(ctx context.Context, e *scenario.Env, vm *qemu.VM, home scenario.GuestIPv4, addrs string) (string, error) {
	var answered []string
	for _, a := range []netip.Addr{lab.HoA, lab.HoA4} {
		n, err := e.Ping(ctx, "cn", a.String(), 5)
		if n != 5 {
			return "", fmt.Errorf("on %s: cn's pings to %s: %d/5 answered (%v)", vm.Host, a, n, err)
		}
		answered = append(answered, fmt.Sprintf("%s 5/5", a))
	}
	got, err := vm.IPv4(ctx)
	if err != nil {
		return "", err
	}
	now, err := guestAddrs(ctx, vm)
	if err != nil {
		return "", err
	}
	if !got.Equal(home) || now != addrs {
		return "", fmt.Errorf("on %s the guest's addresses changed: %s (%v), at home %s (%v)", vm.Host, now, got, addrs, home)
	}
	where := "back home on " + vm.Host
	if vm.Host != lab.VM.StartHost {
		where = "abroad on " + vm.Host
		st, err := e.Status(ctx, vm.Host, lab.GuestPort)
		if err != nil {
			return "", err
		}
		step("kgswitch on %s: guest %s, binding %s, IPv4 home address %s", vm.Host, st.Location, st.BindingState, st.IPv4)
	}
	step("%s: cn's pings answered: %s; guest's addresses unchanged: %s", where, strings.Join(answered, ", "), now)
	return fmt.Sprintf("%-20s pings %s; addresses: %s", where+":", strings.Join(answered, ", "), now), nil
}

// family names addr's IP version.
func family(addr netip.Addr) string {
	if addr.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// timeline prints one hop as a person reads it: what happened when,
// relative to the guest's STOP on its source host.
func timeline(e *scenario.Env, h qemu.Hop) {
	r := h.Migration
	at := func(t time.Time) string { return fmt.Sprintf("%+8.1fms", float64(t.Sub(r.Stop).Microseconds())/1000) }
	type event struct {
		t    time.Time
		text string
	}
	evs := []event{
		{h.Started, fmt.Sprintf("QEMU on %s started, waiting for the guest's state", h.To)},
		{r.Stop, fmt.Sprintf("STOP: the guest stops on %s (its memory is copied; QEMU reports %v downtime)", h.From, r.Downtime)},
		{r.Resume, fmt.Sprintf("RESUME: the guest runs on %s and announces itself (RARP)", h.To)},
	}
	if t, _, ok := logLine(e.KgswitchLog(h.To), h.Started, `msg="VM port on a foreign host: prepared`); ok {
		evs = append(evs, event{t, fmt.Sprintf("kgswitch on %s: port prepared (flows, internal port); nothing sent to the Home Agent yet", h.To)})
	}
	if t, line, ok := logLine(e.KgswitchLog(h.To), h.Started, `msg="guest runs here`); ok {
		evs = append(evs, event{t, fmt.Sprintf("kgswitch on %s: guest runs here (%s): registering", h.To, field(line, "trigger"))})
	}
	for _, m := range h.Updates {
		what := fmt.Sprintf("Binding Update from %s, seq %d", m.Src, m.Seq)
		if m.Lifetime == 0 {
			what = fmt.Sprintf("Binding Update (de-registration, lifetime 0) from the home address, seq %d", m.Seq)
		}
		if m.At.Before(r.Stop) {
			what += " -- before STOP, while the guest still runs on " + h.From
		}
		evs = append(evs, event{m.At, what})
	}
	for _, m := range h.Acks {
		evs = append(evs, event{m.At, fmt.Sprintf("Binding Acknowledgement from the Home Agent: status %d, seq %d", m.Status, m.Seq)})
	}
	if !h.Probes.FirstAfter.IsZero() {
		evs = append(evs, event{h.Probes.FirstAfter, fmt.Sprintf("first reply to cn after the longest gap (%v)", h.Probes.LongestGap.Round(time.Millisecond))})
	}
	slices.SortStableFunc(evs, func(a, b event) int { return a.t.Compare(b.t) })
	for _, ev := range evs {
		fmt.Printf("           %s  %s\n", at(ev.t), ev.text)
	}
	fmt.Printf("           probes lost: %d of %d (sent at %s, relative to STOP)\n", h.Probes.Lost, h.Probes.Sent, qemu.LostRanges(h.LostProbes, r.Stop, 50*time.Millisecond))
	if h.Probes4.Sent > 0 {
		fmt.Printf("           IPv4 probes lost: %d of %d (sent at %s, relative to STOP)\n", h.Probes4.Lost, h.Probes4.Sent, qemu.LostRanges(h.LostProbes4, r.Stop, 50*time.Millisecond))
	}
}

// logLine returns the first line of kgswitch's text log at path, logged at
// or after since, that contains s, and its time.
func logLine(path string, since time.Time, s string) (time.Time, string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, s) {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, field(line, "time"))
		if err == nil && !t.Before(since.Truncate(time.Millisecond)) {
			return t, line, true
		}
	}
	return time.Time{}, "", false
}

// field returns the value of key in a slog text line (quoted or not).
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		if !strings.HasPrefix(line, key+"=") {
			return ""
		}
		i = -1
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[1 : j+1]
		}
		return v[1:]
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		return v[:j]
	}
	return v
}

// netnsMove is the fallback without QEMU: the lab's namespace guest's port
// moves from hostA to hostB while cn pings it and keeps a TCP stream open.
func netnsMove(ctx context.Context, e *scenario.Env) error {
	st, _ := e.Status(ctx, "hostA", lab.GuestPort)
	step("hostA's kgswitch sees the guest %s: it is at home, so kgswitch leaves its traffic alone", st.Location)

	hoa := lab.HoA.String()
	n, err := e.Ping(ctx, "cn", hoa, 3)
	if err != nil || n != 3 {
		return fmt.Errorf("cn cannot reach the guest at home: %d/3 (%v)", n, err)
	}
	step("cn pings the guest at %s on its home link: 3/3 answered", hoa)
	if _, err := e.Lab.StartGuestDHCP4(ctx, lab.VM.Node); err != nil {
		return err
	}
	home, err := e.GuestIPv4Of(ctx, lab.VM.Node)
	if err != nil {
		return err
	}
	if n, err := e.Ping(ctx, "cn", lab.HoA4.String(), 3); n != 3 {
		return fmt.Errorf("cn cannot reach the guest at home over IPv4: %d/3 (%v)", n, err)
	}
	step("the guest took %v from the home DHCP server; cn pings it there: 3/3 answered", home.Addrs)

	const total = 4 << 20
	stream, err := e.StartTCPStream(ctx, "cn", total, 192<<10)
	if err != nil {
		return err
	}
	pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		return err
	}
	if err := stream.WaitEstablished(ctx, 5*time.Second); err != nil {
		return err
	}
	if err := pings.WaitReplies(ctx, time.Time{}, 1, 5*time.Second); err != nil {
		return err
	}
	step("cn opens a TCP echo stream to the guest (4 MiB at 192 KiB/s) and pings it every 10 ms")

	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		return err
	}
	moved := time.Now()
	step("MOVE: the guest's port %s now sits on hostB's bridge; the guest itself is untouched", lab.GuestPort)
	st, err = e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second)
	if err != nil {
		return err
	}
	step("hostB's kgswitch: Binding Update sent from %s, Home Agent answered %q after %.2fs (DAD on the home link)",
		st.CareOf, st.Reason, time.Since(moved).Seconds())

	if _, err := e.WaitReachable(ctx, "cn", hoa, 40*time.Second); err != nil {
		return fmt.Errorf("after the move: %w", err)
	}
	step("cn reaches the guest again, %.2fs after the move, now through the Home Agent and kgswitch's tunnel", time.Since(moved).Seconds())

	client, server, err := stream.Wait()
	if err != nil {
		return err
	}
	if err := pings.WaitReplies(ctx, time.Now(), 1, 5*time.Second); err != nil {
		return err
	}
	loss := pings.Stop()
	intact := scenario.StreamIntact(total, client, server)
	step("TCP stream finished: %d bytes each way, %s", client.Sent, streamVerdict(intact))
	for _, a := range []netip.Addr{lab.HoA, lab.HoA4} {
		if n, err := e.Ping(ctx, "cn", a.String(), 5); n != 5 {
			return fmt.Errorf("after the move: cn's pings to %s: %d/5 answered (%v)", a, n, err)
		}
	}
	abroad, err := e.GuestIPv4Of(ctx, lab.VM.Node)
	if err != nil {
		return err
	}
	if !abroad.Equal(home) {
		return fmt.Errorf("the guest's IPv4 changed abroad: %v, at home %v", abroad, home)
	}
	step("abroad: cn's pings to %s and to %s answered 5/5; the guest's IPv4 is unchanged: %v", lab.HoA, lab.HoA4, abroad.Addrs)

	fmt.Println()
	out, _ := e.Kgswitch(ctx, "hostB", "status")
	fmt.Println("kgswitch status on hostB:")
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Println("  " + line)
	}
	fmt.Println()
	fmt.Printf("Loss during the move: %d of %d pings at 10 ms lost (longest gap %.2fs).\n", loss.Lost, loss.Sent, loss.LongestGap.Seconds())
	fmt.Println("The Home Agent spends ~1 s on DAD before it takes the home address over; kgswitch on hostA holds")
	fmt.Println("the frames still sent to the guest's old place meanwhile and releases them to the Home Agent.")
	if intact != nil {
		return fmt.Errorf("TCP stream did not survive intact: %w", intact)
	}
	return nil
}

// streamVerdict says how a TCP echo stream went, given scenario.StreamIntact.
func streamVerdict(intact error) string {
	if intact != nil {
		return "BROKEN: " + intact.Error()
	}
	return "no reset, every byte intact (SHA-256 match)"
}
