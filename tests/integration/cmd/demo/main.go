// Command demo builds the netns lab, runs kgswitch on a home and a foreign
// host and live-migrates a real QEMU guest from its home host to the foreign
// host and back while a correspondent pings it every 10 ms, then shows a
// person the timeline of each move: QEMU's STOP and RESUME, kgswitch's
// Binding Update, the Home Agent's Acknowledgement, the first reply and the
// probes lost. Without QEMU it says so and moves the lab's namespace guest
// instead. `make demo` runs it. Everything it creates is removed at the end,
// also on Ctrl-C.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/qemu"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
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
	fmt.Printf("           cn %v -- rtr -- home link %v (Home Agent %v, hostA %v)\n", lab.CNAddr, lab.HomePrefix, lab.HAAddr, lab.HostAAddr)
	fmt.Printf("                        \\-- foreign link %v (hostB, care-of address %v)\n", lab.ForeignPrefix, lab.CareOfAddr)
	fmt.Printf("           guest: home address %v, MAC %v, port %s on its host's bridge\n", lab.HoA, lab.GuestMAC, lab.GuestPort)
	if why == "" {
		if err := qemu.DetachLabGuest(ctx, l); err != nil {
			return err
		}
	}
	if err := e.StartHomeAgent(ctx); err != nil {
		return err
	}
	for _, host := range []string{"hostA", "hostB"} {
		cfg, err := e.WriteConfig(host, true)
		if err != nil {
			return err
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			return err
		}
	}
	step("Home Agent and kgswitch (on hostA and hostB) running; both know the guest by its port, MAC and home address")
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
// A, and shows each move's timeline.
func qemuMigrations(ctx context.Context, e *scenario.Env, img qemu.Image) error {
	hoa := lab.HoA.String()
	var vms []*qemu.VM
	defer func() {
		for _, vm := range vms {
			vm.Close()
		}
	}()
	vm, err := qemu.Start(ctx, qemu.Config{Lab: e.Lab, Host: "hostA", Name: "A", Image: img})
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

	// 64 KiB/s for 16 s: through both migrations.
	const total = 1 << 20
	tcp, err := qemu.StartGuestTCP(ctx, e, vm, total, 64<<10, 60*time.Second)
	if err != nil {
		return err
	}
	step("cn opens a TCP echo stream to the guest (1 MiB at 64 KiB/s); each move runs under pings every 10 ms")

	var hops []qemu.Hop
	for i, to := range []string{"hostB", "hostA"} {
		fmt.Println()
		step("MIGRATE %s -> %s: QEMU starts on %s waiting for the guest (-incoming); its tap %s joins %s's bridge", vm.Host, to, to, lab.GuestPort, to)
		dst, h, err := qemu.RunHop(ctx, vm, qemu.HopOptions{Env: e, Image: img, To: to, Name: fmt.Sprintf("%s%d", strings.TrimPrefix(to, "host"), i+1),
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
	}

	client, server, err := tcp.Wait(ctx, vm)
	if err != nil {
		return err
	}
	intact := scenario.StreamIntact(total, client, server)
	fmt.Println()
	step("TCP stream finished: %d bytes each way in %.1fs, %s", client.Sent, client.Seconds, streamVerdict(intact))
	fmt.Println()
	fmt.Println("Both moves (times from QEMU's QMP events, a capture on the destination's uplink and cn's pings):")
	fmt.Println("  " + qemu.HopTableHeader)
	for _, h := range hops {
		fmt.Println("  " + h.Row())
	}
	fmt.Println()
	fmt.Println("Leaving home, the Home Agent spends ~1 s on DAD before it takes the home address over; kgswitch on")
	fmt.Println("hostA holds the frames still sent to the guest's old place and releases them to the Home Agent, so")
	fmt.Println("that second costs a delay, not a loss. Coming home, kgswitch on hostA de-registers the guest.")
	if intact != nil {
		return fmt.Errorf("TCP stream did not survive intact: %w", intact)
	}
	return nil
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
