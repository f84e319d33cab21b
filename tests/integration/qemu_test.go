package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/qemu"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

var (
	qemuImageOnce sync.Once
	qemuImage     qemu.Image
	qemuImageErr  error
)

// newQEMUEnv builds a lab whose veth guest is detached from hostA, so that a
// QEMU guest takes its port name, MAC and home address, and returns it with
// the guest image (built or taken from the cache, see qemu.BuildImage).
func newQEMUEnv(t *testing.T, ctx context.Context) (*scenario.Env, qemu.Image) {
	t.Helper()
	requireLab(t)
	if err := qemu.Preflight(); err != nil {
		t.Fatalf("QEMU test cannot run (set KGSWITCH_SKIP_INTEGRATION=1 to skip): %v", err)
	}
	qemuImageOnce.Do(func() {
		start := time.Now()
		dir, err := os.MkdirTemp("", "kgswitch-qemu-")
		if err != nil {
			qemuImageErr = err
			return
		}
		defer os.RemoveAll(dir)
		tcpcheck, err := qemu.BuildTCPCheck(ctx, dir)
		if err != nil {
			qemuImageErr = err
			return
		}
		qemuImage, qemuImageErr = qemu.BuildImage(ctx, qemu.ImageOptions{TCPCheck: tcpcheck, Logf: t.Logf})
		t.Logf("guest image (%s) ready in %v: %s, %s", qemuImage.KernelPackage, time.Since(start).Round(time.Millisecond), qemuImage.Kernel, qemuImage.Initrd)
	})
	if qemuImageErr != nil {
		t.Fatalf("guest image: %v", qemuImageErr)
	}
	e := newEnv(t, ctx)
	if err := qemu.DetachLabGuest(ctx, e.Lab); err != nil {
		t.Fatal(err)
	}
	return e, qemuImage
}

// startVM starts a QEMU guest on host; the VM is closed when the test ends,
// and its console (heartbeats folded) goes to the test log then, whatever
// the outcome: an emulated guest may crash, and the console says so.
func startVM(t *testing.T, ctx context.Context, e *scenario.Env, img qemu.Image, host, name string, incoming bool) *qemu.VM {
	t.Helper()
	return startVMWith(t, ctx, qemu.Config{Lab: e.Lab, Host: host, Name: name, Image: img, Incoming: incoming})
}

// startVMWith is startVM with a whole configuration (its Logf is the
// test's).
func startVMWith(t *testing.T, ctx context.Context, cfg qemu.Config) *qemu.VM {
	t.Helper()
	cfg.Logf = t.Logf
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, vm)
	return vm
}

// closeAtEnd closes vm when the test ends and logs its console (heartbeats
// folded), and QEMU's own output when the test failed.
func closeAtEnd(t *testing.T, vm *qemu.VM) {
	t.Helper()
	name, host := vm.Name, vm.Host
	t.Cleanup(func() {
		if err := vm.Close(); err != nil {
			t.Errorf("close VM %s: %v", name, err)
		}
		t.Logf("---- console of %s (QEMU on %s) ----\n%s", name, host, vm.ConsoleSummary())
		if t.Failed() {
			if b, err := os.ReadFile(vm.QEMULog); err == nil && len(b) > 0 {
				t.Logf("---- QEMU output of %s ----\n%s", name, b)
			}
		}
	})
}

// bootVM starts a guest on host and waits until it is up and cn reaches it.
func bootVM(t *testing.T, ctx context.Context, e *scenario.Env, img qemu.Image, host, name string) *qemu.VM {
	t.Helper()
	return bootVMWith(t, ctx, e, qemu.Config{Lab: e.Lab, Host: host, Name: name, Image: img})
}

// bootVMWith is bootVM with a whole configuration.
func bootVMWith(t *testing.T, ctx context.Context, e *scenario.Env, cfg qemu.Config) *qemu.VM {
	t.Helper()
	host, name := cfg.Host, cfg.Name
	vm := startVMWith(t, ctx, cfg)
	boot, err := vm.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	if _, err := e.WaitReachable(ctx, "cn", lab.HoA.String(), 15*time.Second); err != nil {
		t.Fatalf("guest %s on %s: %v", name, host, err)
	}
	t.Logf("guest %s on %s: booted in %v (QEMU start -> NIC configured), cn reaches it %v later",
		name, host, boot.Round(time.Millisecond), time.Since(ready).Round(time.Millisecond))
	return vm
}

// startGuestTCP starts a TCP echo stream from cn to the guest
// (qemu.StartGuestTCP).
func startGuestTCP(t *testing.T, ctx context.Context, e *scenario.Env, vm *qemu.VM, total, rate int64, timeout time.Duration) *qemu.GuestTCP {
	t.Helper()
	s, err := qemu.StartGuestTCP(ctx, e, vm, total, rate, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitTCP waits for the stream to end; vm is where the guest runs by now.
func waitTCP(t *testing.T, ctx context.Context, s *qemu.GuestTCP, vm *qemu.VM) (client, server scenario.TCPReport) {
	t.Helper()
	client, server, err := s.Wait(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

// TestQEMUBoot boots a real guest on hostA, the home host: it configures its
// home address, writes its heartbeat, answers on its command shell, and cn
// reaches it on the home link with ping and with an intact TCP echo stream
// (which proves the tap carries correct checksums: vnet_hdr=off). Booted
// with DHCPv4, it also gets its IPv4 home address from the home DHCPv4
// server and is reachable over IPv4 (checkQEMUHomeIPv4).
func TestQEMUBoot(t *testing.T) {
	t.Parallel()
	oneQEMUAtATime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, img := newQEMUEnv(t, ctx)
	vm := bootVMWith(t, ctx, e, qemu.Config{Lab: e.Lab, Host: "hostA", Name: "A", Image: img, DHCP4: true})

	since := time.Now()
	if err := vm.WaitHeartbeats(ctx, since, 5); err != nil {
		t.Fatal(err)
	}
	hbs := vm.Heartbeats()
	if n := len(hbs); n < 5 || hbs[n-1].N-hbs[n-5].N != 4 {
		t.Errorf("heartbeats not consecutive: %+v", hbs[max(0, n-5):])
	}

	// The link-local address comes up to a second after ready (see init.sh).
	// What eth0 has is checked below.
	var out string
	_ = wait.Until(ctx, 3*time.Second, 100*time.Millisecond, func() error {
		var err error
		if out, err = vm.Shell(ctx, "cat /sys/class/net/eth0/address; ip -6 addr show dev eth0; ip -6 route show default"); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, lab.GuestLinkLocal.String()) {
			return errors.New("no link-local address yet")
		}
		return nil
	})
	for _, want := range []string{lab.GuestMAC.String(), lab.HoA.String() + "/64", lab.GuestLinkLocal.String(), "default via fe80::1 dev eth0"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest's eth0 lacks %q:\n%s", want, out)
		}
	}
	if _, err := vm.Shell(ctx, "false"); err == nil {
		t.Error("got Shell(false) = nil error, want exit status 1")
	}

	if n, err := e.Ping(ctx, "cn", lab.HoA.String(), 5); err != nil || n != 5 {
		t.Errorf("got %d/5 pings answered from cn to the guest (%v)", n, err)
	}
	const total = 512 << 10
	s := startGuestTCP(t, ctx, e, vm, total, 1<<20, 30*time.Second)
	client, server := waitTCP(t, ctx, s, vm)
	checkStream(t, total, client, server)
	t.Logf("TCP echo from cn: %d bytes each way in %.2f s", client.Sent, client.Seconds)

	checkQEMUHomeIPv4(t, ctx, e, vm)
	if c := vm.Crash(); c != "" {
		t.Errorf("guest console reports a crash: %q", c)
	}
}

// checkQEMUHomeIPv4 checks a QEMU guest booted at home with Config.DHCP4,
// as TestLabIPv4 does the netns guest: its IPv4 home address and default
// route come from the home DHCPv4 server, cn reaches it over IPv4 with ping
// and an intact TCP stream, and it renews its lease when told to.
func checkQEMUHomeIPv4(t *testing.T, ctx context.Context, e *scenario.Env, vm *qemu.VM) {
	t.Helper()
	waitGuestIPv4(t, ctx, vm, guestHomeIPv4)
	evs, err := vm.DHCP4Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var bound []lab.DHCP4Event
	for _, ev := range evs {
		if ev.Event == "bound" {
			bound = append(bound, ev)
		}
	}
	if len(bound) != 1 {
		t.Fatalf("guest's DHCPv4 events: got %d bound, want 1: %+v", len(bound), evs)
	}
	checkHomeLease(t, bound[0], lab.DefaultDHCP4Lease)

	if n, err := e.Ping(ctx, "cn", lab.HoA4.String(), 5); n != 5 {
		t.Errorf("got %d/5 IPv4 pings answered from cn to the guest (%v)", n, err)
	}
	const total = 256 << 10
	s, err := qemu.StartGuestTCPTo(ctx, e, vm, lab.HoA4, total, 1<<20, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	client, server := waitTCP(t, ctx, s, vm)
	checkStream(t, total, client, server)

	if err := vm.RenewDHCP4(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wait.Until(ctx, 5*time.Second, 100*time.Millisecond, func() error {
		evs, err := vm.DHCP4Events(ctx)
		if n := lab.CountDHCP4(evs, "renew", time.Time{}); n != 1 {
			return fmt.Errorf("guest's DHCPv4 events after SIGUSR1: %d renew (%v), want 1: %+v", n, err, evs)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if got, err := vm.IPv4(ctx); err != nil || !got.Equal(guestHomeIPv4) {
		t.Errorf("guest's IPv4 after the renewal: got %v (%v), want %v", got, err, guestHomeIPv4)
	}
}

// migrateWithRetry runs one migration attempt, and once more if the
// destination's guest crashed (the console shows an Oops or panic): a rare
// fault of the emulated guest right after it resumes, not kgswitch's. The
// attempt returns the destination VM; both consoles are logged either way.
// Each attempt builds its own lab: a retry on the first one would inherit
// the home router's neighbour entry, just confirmed by the crashed guest, which
// the Home Agent's advertisement (no Override flag) cannot change until it
// expires, and cn would not reach the guest for 40 s and more.
func migrateWithRetry(t *testing.T, attempt func(n int) *qemu.VM) {
	t.Helper()
	for n := 1; ; n++ {
		dst := attempt(n)
		if dst == nil {
			return
		}
		crash := dst.Crash()
		if crash == "" {
			return
		}
		if n == 2 {
			t.Fatalf("the guest crashed after the migration twice in a row: %q", crash)
		}
		t.Logf("attempt %d: the guest crashed on the destination (%q); retrying once", n, crash)
	}
}

// migrate runs qemu.Migrate and logs its report and both sides' events.
func migrate(t *testing.T, ctx context.Context, src, dst *qemu.VM) qemu.Report {
	t.Helper()
	rep, err := qemu.Migrate(ctx, src, dst, qemu.MigrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("migration %s (%s) -> %s (%s): %v\nsource events (QEMU clock, from migrate):\n%sdestination events:\n%s",
		src.Name, src.Host, dst.Name, dst.Host, rep, qemu.FormatEvents(rep.SourceEvents, rep.Start), qemu.FormatEvents(rep.DestEvents, rep.Start))
	return rep
}

// checkHeartbeatsContinue fails the test unless the guest's heartbeat
// carries on on dst where it stopped on src: the same guest, not a reboot.
func checkHeartbeatsContinue(t *testing.T, ctx context.Context, src, dst *qemu.VM, rep qemu.Report) {
	t.Helper()
	if err := dst.WaitHeartbeats(ctx, rep.Start, 10); err != nil {
		t.Fatalf("after the migration: %v", err)
	}
	srcHB, dstHB := src.Heartbeats(), dst.Heartbeats()
	last, first := srcHB[len(srcHB)-1], dstHB[0]
	// A line cut in two by the switchover is lost, so one may be missing.
	if d := first.N - last.N; d < 1 || d > 2 {
		t.Errorf("heartbeat %d (uptime %.2f) last on %s, %d (uptime %.2f) first on %s: want the next one", last.N, last.Uptime, src.Host, first.N, first.Uptime, dst.Host)
	}
	t.Logf("heartbeat: last %d on %s at %s, first %d on %s at %s (host clock); guest uptime %.2f -> %.2f",
		last.N, src.Host, last.At.Format("15:04:05.000"), first.N, dst.Host, first.At.Format("15:04:05.000"), last.Uptime, first.Uptime)
}

// TestQEMUMigrateWithoutKgswitch is the negative control of the migration
// tests: a real live migration of the guest from hostA (home link) to hostB
// (foreign link) with no kgswitch anywhere. The guest runs on hostB, the same
// guest (its heartbeat carries on, its shell answers, it reaches the foreign
// router's link-local address), but its home address is unreachable there: cn
// gets no answer after the switchover.
func TestQEMUMigrateWithoutKgswitch(t *testing.T) {
	oneQEMUAtATime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hoa := lab.HoA.String()
	migrateWithRetry(t, func(n int) *qemu.VM {
		e, img := newQEMUEnv(t, ctx)
		src := bootVM(t, ctx, e, img, "hostA", fmt.Sprintf("A%d", n))
		pings, err := e.StartPingStream(ctx, "cn", hoa, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := pings.WaitReplies(ctx, time.Time{}, 1, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		dst := startVM(t, ctx, e, img, "hostB", fmt.Sprintf("B%d", n), true)
		rep := migrate(t, ctx, src, dst)
		checkHeartbeatsContinue(t, ctx, src, dst, rep)
		if dst.Crash() != "" {
			pings.Stop()
			src.Close()
			dst.Close()
			return dst
		}
		// The guest is unreachable from here on: the figures end with its
		// last answer.
		res := pings.Stop()
		t.Logf("pings every 20 ms from cn: %d answered up to the last answer, %d lost before it", res.Received, res.Lost)

		// The guest's neighbour entry for fe80::1 still holds the home
		// router's MAC; NUD would take seconds to notice.
		if _, err := dst.Shell(ctx, "ip -6 neigh flush dev eth0; ping -c 3 -W 1 -I eth0 fe80::1"); err != nil {
			t.Errorf("guest on hostB cannot reach the foreign router's fe80::1: %v", err)
		}
		if n, err := e.Ping(ctx, "cn", hoa, 10); n != 0 {
			t.Errorf("got %d/10 pings answered from cn after the migration without kgswitch (%v), want 0: the home address should be unreachable on the foreign link", n, err)
		} else {
			t.Logf("after the switchover: the guest runs on hostB and reaches fe80::1 there; cn: 0/10 pings answered")
		}
		if c := dst.Crash(); c != "" {
			t.Errorf("guest console reports a crash: %q", c)
		}
		return nil
	})
}

// hopOpts are the knobs of one hop in a test.
type hopOpts struct {
	tap          string
	reachTimeout time.Duration
	// ipv4: the guest is dual-stack, and cn probes its IPv4 home address
	// too (qemu.HopOptions.IPv4).
	ipv4 bool
}

// hop live-migrates the guest from src to a new QEMU named name on host to,
// under cn's 10 ms probes (qemu.RunHop), and checks what every hop must show:
// the same guest carries on there, the destination sends no Binding Update
// before the guest stops on its source, the Home Agent accepts one after,
// and cn reaches the guest again. The caller checks dst.Crash() first: a
// crashed guest ends the hop early (and the attempt, see migrateWithRetry).
func hop(t *testing.T, ctx context.Context, e *scenario.Env, img qemu.Image, src *qemu.VM, to, name string, o hopOpts) (*qemu.VM, qemu.Hop) {
	t.Helper()
	dst, h, err := qemu.RunHop(ctx, src, qemu.HopOptions{
		Env: e, Image: img, To: to, Name: name, Tap: o.tap, ReachTimeout: o.reachTimeout, IPv4: o.ipv4,
		Started: func(vm *qemu.VM) { closeAtEnd(t, vm) },
		Logf:    t.Logf,
	})
	if err != nil {
		logBinding(t, ctx, e, to, o.tap)
		t.Fatal(err)
	}
	rep := h.Migration
	t.Logf("migration %s (%s) -> %s (%s): %v\nsource events (QEMU clock, from migrate):\n%sdestination events:\n%s",
		src.Name, src.Host, dst.Name, dst.Host, rep, qemu.FormatEvents(rep.SourceEvents, rep.Start), qemu.FormatEvents(rep.DestEvents, rep.Start))
	if dst.Crash() != "" {
		return dst, h
	}
	checkHeartbeatsContinue(t, ctx, src, dst, rep)

	var b strings.Builder
	fmt.Fprintf(&b, "hop %s -> %s, relative to the source's STOP (RESUME %+.1fms; destination QEMU started %+.0fms):\n",
		h.From, h.To, ms(rep.Resume.Sub(rep.Stop)), ms(h.Started.Sub(rep.Stop)))
	for _, m := range append(append([]qemu.MobilityMessage(nil), h.Updates...), h.Acks...) {
		fmt.Fprintf(&b, "  %+9.1fms %s %s -> %s seq %d lifetime %d", ms(m.At.Sub(rep.Stop)), map[int]string{qemu.MHBindingUpdate: "BU", qemu.MHBindingAck: "BA"}[m.Type], m.Src, m.Dst, m.Seq, m.Lifetime)
		if m.Type == qemu.MHBindingAck {
			fmt.Fprintf(&b, " status %d", m.Status)
		}
		b.WriteString("\n")
	}
	trigger := `msg="guest runs here`
	if to == lab.VM.StartHost {
		trigger = `msg="VM is on its home link`
	}
	for _, at := range h.Overrides {
		fmt.Fprintf(&b, "  %+9.1fms Override NA for %s: %s\n", ms(at.Sub(rep.Stop)), lab.HoA, lab.GuestMAC)
	}
	fmt.Fprintf(&b, "  probes lost (sent at, relative to STOP): %s\n", qemu.LostRanges(h.LostProbes, rep.Stop, 50*time.Millisecond))
	if o.ipv4 {
		fmt.Fprintf(&b, "  IPv4 probes lost (sent at, relative to STOP): %s\n", qemu.LostRanges(h.LostProbes4, rep.Stop, 50*time.Millisecond))
	}
	fmt.Fprintf(&b, "  kgswitch on %s: %s", to, lastLogLine(e.KgswitchLog(to), trigger))
	t.Logf("%s", b.String())

	// Nothing is sent to the Home Agent before the guest stopped on its
	// source: until then the guest still runs there.
	home := to == lab.VM.StartHost
	for _, m := range h.Early() {
		t.Errorf("hop %s -> %s: %s sent a Binding Update (seq %d, lifetime %d) %v before the guest stopped on %s (STOP at %s)",
			h.From, h.To, h.To, m.Seq, m.Lifetime, rep.Stop.Sub(m.At).Round(time.Microsecond), h.From, rep.Stop.Format("15:04:05.000000"))
	}
	ba, ok := h.AcceptedAck()
	if !ok {
		t.Errorf("hop %s -> %s: the Home Agent accepted no Binding Update of %s: updates %+v, acks %+v", h.From, h.To, h.To, h.Updates, h.Acks)
	}
	if ok && home {
		// Back home: de-registered, then the neighbours told (Override).
		if ba.Lifetime != 0 {
			t.Errorf("hop %s -> %s: accepted Binding Update has lifetime %d, want 0 (a de-registration)", h.From, h.To, ba.Lifetime)
		}
		// kgswitch's Override advertisements follow the Acknowledgement at
		// once (the guest's own, QEMU's announce after RESUME, may come
		// earlier); TestQEMUPingPong counts kgswitch's in its log.
		if n := len(h.Overrides); n == 0 || h.Overrides[n-1].Before(ba.At) {
			t.Errorf("hop %s -> %s: Override advertisements of the guest's MAC at %v, want some after the de-registration's ack (%v)",
				h.From, h.To, h.Overrides, ba.At)
		}
	}
	if c := dst.Crash(); c != "" {
		t.Errorf("guest console reports a crash: %q", c)
	}
	return dst, h
}

// countLogLines counts the lines of the file at path that contain s.
func countLogLines(path, s string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), s)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// logHops logs the hops as a table.
func logHops(t *testing.T, title string, hops []qemu.Hop) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n  %s\n", title, qemu.HopTableHeader)
	for _, h := range hops {
		fmt.Fprintf(&b, "  %s\n", h.Row())
	}
	t.Logf("%s", b.String())
}

// TestQEMUMigrateWithKgswitch live-migrates the guest from hostA (home) to
// hostB (foreign) under cn's 10 ms probes, with kgswitch on both hosts and
// the lab Home Agent (1 s DAD, takeover advertisement without Override): a
// real migration away from home keeps the guest reachable, and the departure
// cover turns the Home Agent's slow takeover into delay. It prints QEMU's
// downtime, STOP->RESUME, RESUME->Binding Update and BU->BA (both from a
// capture on hostB's uplink) and the probes lost, with the home host's
// departure cover on (at most 5 lost, and a TCP stream through the guest
// intact) and off (more than 100 lost: the Home Agent's slow takeover).
func TestQEMUMigrateWithKgswitch(t *testing.T) {
	oneQEMUAtATime(t)
	var on, off qemu.Hop
	t.Run("cover-on", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		migrateWithRetry(t, func(n int) *qemu.VM {
			e, img := newQEMUEnv(t, ctx)
			startKgswitch(t, ctx, e, []string{"hostA", "hostB"}, nil, true)
			src := bootVM(t, ctx, e, img, "hostA", fmt.Sprintf("A%d", n))
			// At home kgswitch may be de-registering (it cannot know whether
			// the guest had a binding); it must not take the guest for a
			// foreign one.
			if st, err := e.Status(ctx, "hostA", lab.GuestPort); err != nil || st.Location == "foreign" {
				t.Errorf("hostA status with the guest at home: %+v (%v), want it not foreign", st, err)
			}
			// 2 MiB at 96 KiB/s: about 21 s, spanning the migration and
			// the Home Agent's takeover.
			const total = 2 << 20
			tcp := startGuestTCP(t, ctx, e, src, total, 96<<10, 50*time.Second)
			dst, h := hop(t, ctx, e, img, src, "hostB", fmt.Sprintf("B%d", n), hopOpts{})
			if dst.Crash() != "" {
				dst.Close()
				return dst
			}
			client, server := waitTCP(t, ctx, tcp, dst)
			checkStream(t, total, client, server)
			t.Logf("TCP stream: %d bytes each way in %.1f s", client.Sent, client.Seconds)
			if st, err := e.Status(ctx, "hostB", lab.GuestPort); err != nil || st.Location != "foreign" || st.BindingState != "bound" {
				t.Errorf("hostB status after the migration: %+v (%v), want foreign and bound", st, err)
			}
			if st, err := e.Status(ctx, "hostA", lab.GuestPort); err == nil {
				t.Logf("home host: %d frames held, %d released to the Home Agent, drops %v", st.Held, st.Released, st.Drops)
			}
			logHops(t, "A -> B, departure cover on:", []qemu.Hop{h})
			if h.Probes.Lost > 5 {
				t.Errorf("with the departure cover: %d probes lost, want at most 5", h.Probes.Lost)
			}
			on = h
			return dst
		})
	})
	t.Run("cover-off", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		migrateWithRetry(t, func(n int) *qemu.VM {
			e, img := newQEMUEnv(t, ctx)
			startKgswitch(t, ctx, e, []string{"hostA", "hostB"}, nil, false)
			src := bootVM(t, ctx, e, img, "hostA", fmt.Sprintf("A%d", n))
			dst, h := hop(t, ctx, e, img, src, "hostB", fmt.Sprintf("B%d", n), hopOpts{reachTimeout: 40 * time.Second})
			if dst.Crash() != "" {
				dst.Close()
				return dst
			}
			logHops(t, "A -> B, departure cover off:", []qemu.Hop{h})
			if h.Probes.Lost <= 100 {
				t.Errorf("without the departure cover: %d probes lost, want more than 100 (else the test measures nothing)", h.Probes.Lost)
			}
			off = h
			return dst
		})
	})
	t.Logf("real QEMU migration hostA (home) -> hostB, probes every 10 ms: departure cover on: %d/%d lost (longest gap %v); off: %d/%d lost (longest gap %v)",
		on.Probes.Lost, on.Probes.Sent, on.Probes.LongestGap.Round(time.Millisecond), off.Probes.Lost, off.Probes.Sent, off.Probes.LongestGap.Round(time.Millisecond))
}

// pingPong is the route of TestQEMUPingPong: A -> B -> A, then A -> B -> C
// -> A. Every move kind meets kgswitch there: home -> foreign (the Home
// Agent's first registration, with DAD, and the home host's departure
// cover), foreign -> home (the home host de-registers and sends Override
// advertisements), foreign -> foreign (the new host meets a sequence number
// it did not choose, and must be ahead of it: the hosts number from the
// clock, so the Home Agent answers no 135).
var pingPong = []string{"hostA", "hostB", "hostA", "hostB", "hostC", "hostA"}

// TestQEMUPingPong live-migrates one guest along pingPong with real QEMU
// migrations while cn keeps a paced TCP echo stream to it: the stream must
// end with no reset and no corrupted or lost byte. hostC names its tap
// vnet7, as libvirt names taps per host. It prints each hop's figures.
func TestQEMUPingPong(t *testing.T) {
	oneQEMUAtATime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	taps := map[string]string{"hostC": "vnet7"}
	migrateWithRetry(t, func(n int) *qemu.VM {
		e, img := newQEMUEnv(t, ctx)
		startKgswitch(t, ctx, e, lab.Hosts, taps, true)
		neigh := watchNeigh(t, ctx, e, "rtr", "home0")
		attempt := time.Now()
		vm := bootVM(t, ctx, e, img, pingPong[0], fmt.Sprintf("p%d-0A", n))
		// 64 KiB/s: slow enough for the emulated guest, and 1.5 MiB of it
		// (24 s) outlasts the five hops.
		const total = 3 << 19
		tcp := startGuestTCP(t, ctx, e, vm, total, 64<<10, 100*time.Second)
		var hops []qemu.Hop
		for i, to := range pingPong[1:] {
			dst, h := hop(t, ctx, e, img, vm, to, fmt.Sprintf("p%d-%d%s", n, i+1, strings.TrimPrefix(to, "host")), hopOpts{tap: taps[to]})
			if dst.Crash() != "" {
				dst.Close()
				return dst
			}
			hops = append(hops, h)
			vm = dst
		}
		client, server := waitTCP(t, ctx, tcp, vm)
		checkStream(t, total, client, server)
		last := hops[len(hops)-1]
		end := tcp.End(client)
		t.Logf("TCP stream: %d bytes each way in %.1f s, %s to %s; the last hop resumed at %s", client.Sent, client.Seconds,
			tcp.Started.Format("15:04:05.000"), end.Format("15:04:05.000"), last.Migration.Resume.Format("15:04:05.000"))
		if !end.After(last.Migration.Resume) {
			t.Errorf("the TCP stream ended at %s, before the last hop resumed (%s): it proves nothing about that hop; make it longer",
				end.Format("15:04:05.000"), last.Migration.Resume.Format("15:04:05.000"))
		}
		logHops(t, "ping-pong A -> B -> A -> B -> C -> A, probes every 10 ms:", hops)
		for _, h := range hops {
			// Bounds with room for a loaded 2-core machine; the figures are
			// in the table. Away from home, the first registration's DAD
			// (1 s) is the Home Agent's; a move between foreign hosts
			// skips it, so a longer gap there would be kgswitch's.
			maxGap := 1500 * time.Millisecond
			if h.From != lab.VM.StartHost && h.To != lab.VM.StartHost {
				maxGap = 500 * time.Millisecond
			}
			if h.Probes.Lost > 30 || h.Probes.LongestGap > maxGap {
				t.Errorf("hop %s -> %s: %d of %d probes lost, longest gap %v; want at most 30 and under %v",
					h.From, h.To, h.Probes.Lost, h.Probes.Sent, h.Probes.LongestGap.Round(time.Millisecond), maxGap)
			}
		}
		// Each return home ends with kgswitch's Override advertisements.
		returns := 0
		for _, h := range hops {
			if h.To == lab.VM.StartHost {
				returns++
			}
		}
		if n := countLogLines(e.KgswitchLog(lab.VM.StartHost), `msg="VM is home: neighbours told"`); n != returns {
			t.Errorf("kgswitch on %s told the neighbours %d times that the guest is home, want %d (one per return)", lab.VM.StartHost, n, returns)
		}
		// Numbers from the clock: no hop meets a refusal, neither a move
		// between foreign hosts (no 135) nor a return (one de-registration,
		// accepted); and the home router names the guest's MAC at once.
		for _, h := range hops {
			if r := h.Rejected(); len(r) != 0 {
				t.Errorf("hop %s -> %s: Acknowledgements with statuses %v, want none refused", h.From, h.To, r)
			}
			if h.To != lab.VM.StartHost {
				continue
			}
			ba, ok := h.AcceptedAck()
			if !ok {
				continue // hop reported it
			}
			what := fmt.Sprintf("hop %s -> %s", h.From, h.To)
			d := checkNeighAfterAck(t, neigh, lab.HoA, lab.GuestMAC.String(), ba.At, what)
			// The guest's own announcement after RESUME (virtio-net's,
			// with Override too) may turn the entry before the Ack;
			// kgswitch's first advertisement is the first after it.
			first := "none"
			for _, at := range h.Overrides {
				if !at.Before(ba.At) {
					first = fmt.Sprintf("%+.1f ms", ms(at.Sub(ba.At)))
					break
				}
			}
			t.Logf("%s: rtr's entry for %s names the guest's MAC from %+.1f ms of the Home Agent's Ack of the de-registration (bound %v; negative: the guest's own announcement came first); first Override advertisement after the Ack at %s",
				what, lab.HoA, ms(d), returnNeighBound, first)
		}
		checkQuietReturn(t, ctx, e, attempt, lab.Hosts...)
		return vm
	})
}

// logBinding logs kgswitch's view of the guest's port on host (tap, or
// lab.GuestPort when empty) and the lab Home Agent's events.
func logBinding(t *testing.T, ctx context.Context, e *scenario.Env, host, tap string) {
	t.Helper()
	if tap == "" {
		tap = lab.GuestPort
	}
	st, err := e.Status(ctx, host, tap)
	t.Logf("kgswitch on %s: %+v (%v)", host, st, err)
	evs, err := e.HAEvents()
	if err != nil {
		t.Logf("Home Agent log: %v", err)
		return
	}
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "  %s %s hoa=%s coa=%s seq=%d status=%d lifetime=%d %s\n", ev.Time.Format("15:04:05.000"), ev.Msg, ev.HoA, ev.CoA, ev.Seq, ev.Status, ev.Lifetime, ev.Reason)
	}
	t.Logf("Home Agent events:\n%s", b.String())
}
