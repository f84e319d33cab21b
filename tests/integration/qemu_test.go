package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/qemu"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
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
	vm, err := qemu.Start(ctx, qemu.Config{Lab: e.Lab, Host: host, Name: name, Image: img, Incoming: incoming, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
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
	return vm
}

// bootVM starts a guest on host and waits until it is up and cn reaches it.
func bootVM(t *testing.T, ctx context.Context, e *scenario.Env, img qemu.Image, host, name string) *qemu.VM {
	t.Helper()
	vm := startVM(t, ctx, e, img, host, name, false)
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

// guestTCP is a paced TCP echo stream from cn to tcpcheck serving in a QEMU
// guest.
type guestTCP struct {
	client *exec.Cmd
	out    bytes.Buffer
	vm     *qemu.VM
}

// startGuestTCP starts tcpcheck serve in the guest and tcpcheck send on cn
// towards the guest's home address: total bytes at rate bytes/s, giving up
// after timeout.
func startGuestTCP(t *testing.T, ctx context.Context, e *scenario.Env, vm *qemu.VM, total, rate int64, timeout time.Duration) *guestTCP {
	t.Helper()
	if _, err := vm.Shell(ctx, fmt.Sprintf("rm -f /tmp/serve.*; tcpcheck serve -listen '[::]:5001' -timeout %s >/tmp/serve.json 2>/tmp/serve.err &", timeout)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := vm.Shell(ctx, "cat /tmp/serve.err")
		if err == nil && strings.Contains(out, "listening") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcpcheck serve in the guest: not listening after 10s (%v): %q", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := &guestTCP{vm: vm}
	s.client = e.Lab.Command(ctx, "cn", e.Bin.TCPCheck, "send", "-to", "["+lab.HoA.String()+"]:5001",
		"-bytes", fmt.Sprint(total), "-rate", fmt.Sprint(rate), "-timeout", timeout.String())
	s.client.Stdout = &s.out
	if err := s.client.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// wait returns both ends' reports; vm is where the server runs by now.
func (s *guestTCP) wait(t *testing.T, ctx context.Context, vm *qemu.VM) (client, server scenario.TCPReport) {
	t.Helper()
	cerr := s.client.Wait()
	if err := json.Unmarshal(s.out.Bytes(), &client); err != nil {
		t.Fatalf("tcpcheck send on cn (%v): %q", cerr, s.out.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := vm.Shell(ctx, "cat /tmp/serve.json")
		if err == nil && strings.HasPrefix(out, "{") {
			if err := json.Unmarshal([]byte(out), &server); err != nil {
				t.Fatalf("tcpcheck serve in the guest: %q: %v", out, err)
			}
			return client, server
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcpcheck serve in the guest: no report after 10s (%v): %q", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkTCP fails the test unless the echo stream went through intact.
func checkTCP(t *testing.T, total int64, client, server scenario.TCPReport) {
	t.Helper()
	if client.Error != "" || server.Error != "" {
		t.Errorf("TCP stream broke: cn %q, guest %q", client.Error, server.Error)
	}
	if client.Sent != total || server.Received != client.Sent || server.ReceivedSH != client.SentSHA {
		t.Errorf("guest received %d bytes (sha256 %.12s), cn sent %d of %d (sha256 %.12s)", server.Received, server.ReceivedSH, client.Sent, total, client.SentSHA)
	}
	if client.Received != client.Sent || client.ReceivedSH != client.SentSHA {
		t.Errorf("cn got %d echoed bytes (sha256 %.12s), sent %d (sha256 %.12s)", client.Received, client.ReceivedSH, client.Sent, client.SentSHA)
	}
}

// TestQEMUBoot boots a real guest on hostA, the home host: it configures its
// home address, writes its heartbeat, answers on its command shell, and cn
// reaches it on the home link with ping and with an intact TCP echo stream
// (which proves the tap carries correct checksums: vnet_hdr=off).
func TestQEMUBoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, img := newQEMUEnv(t, ctx)
	vm := bootVM(t, ctx, e, img, "hostA", "A")

	since := time.Now()
	if err := vm.WaitHeartbeats(ctx, since, 5); err != nil {
		t.Fatal(err)
	}
	hbs := vm.Heartbeats()
	if n := len(hbs); n < 5 || hbs[n-1].N-hbs[n-5].N != 4 {
		t.Errorf("heartbeats not consecutive: %+v", hbs[max(0, n-5):])
	}

	// The link-local address comes up to a second after ready (see init.sh).
	var out string
	for deadline := time.Now().Add(3 * time.Second); ; {
		var err error
		out, err = vm.Shell(ctx, "cat /sys/class/net/eth0/address; ip -6 addr show dev eth0; ip -6 route show default")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, lab.GuestLinkLocal.String()) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
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
	client, server := s.wait(t, ctx, vm)
	checkTCP(t, total, client, server)
	t.Logf("TCP echo from cn: %d bytes each way in %.2f s", client.Sent, client.Seconds)
	if c := vm.Crash(); c != "" {
		t.Errorf("guest console reports a crash: %q", c)
	}
}

// migrateWithRetry runs one migration attempt, and once more if the
// destination's guest crashed (the console shows an Oops or panic): a rare
// fault of the emulated guest right after it resumes, not kgswitch's. The
// attempt returns the destination VM; both consoles are logged either way.
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, img := newQEMUEnv(t, ctx)
	hoa := lab.HoA.String()
	migrateWithRetry(t, func(n int) *qemu.VM {
		src := bootVM(t, ctx, e, img, "hostA", fmt.Sprintf("A%d", n))
		pings, err := e.StartPingStream(ctx, "cn", hoa, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		dst := startVM(t, ctx, e, img, "hostB", fmt.Sprintf("B%d", n), true)
		rep := migrate(t, ctx, src, dst)
		checkHeartbeatsContinue(t, ctx, src, dst, rep)
		if dst.Crash() != "" {
			pings.Stop()
			src.Close()
			dst.Close()
			return dst
		}
		time.Sleep(2 * time.Second)
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

// TestQEMUMigrateWithKgswitch live-migrates the guest from hostA (home) to
// hostB (foreign) with kgswitch on both hosts and the lab Home Agent: cn's
// pings and a TCP echo stream must reach the guest at its home address again
// after the switchover. It reports QEMU's downtime, the STOP->RESUME pause
// and the probes lost.
func TestQEMUMigrateWithKgswitch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, img := newQEMUEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	hoa := lab.HoA.String()
	migrateWithRetry(t, func(n int) *qemu.VM {
		src := bootVM(t, ctx, e, img, "hostA", fmt.Sprintf("A%d", n))
		// At home kgswitch may be de-registering (it cannot know whether the
		// guest had a binding); it must not take the guest for a foreign one.
		if st, err := e.Status(ctx, "hostA", lab.GuestPort); err != nil || st.Location == "foreign" {
			t.Errorf("hostA status with the guest at home: %+v (%v), want it not foreign", st, err)
		} else {
			t.Logf("kgswitch on hostA with the guest at home: location %q, binding %q", st.Location, st.BindingState)
		}
		// 2 MiB at 96 KiB/s: about 21 s, spanning the migration and the
		// Home Agent's takeover.
		const total = 2 << 20
		tcp := startGuestTCP(t, ctx, e, src, total, 96<<10, 50*time.Second)
		pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)

		// The destination QEMU opens its tap, and the port appears on
		// hostB's bridge, before the migration starts, as with libvirt.
		dst := startVM(t, ctx, e, img, "hostB", fmt.Sprintf("B%d", n), true)
		rep := migrate(t, ctx, src, dst)
		checkHeartbeatsContinue(t, ctx, src, dst, rep)
		if dst.Crash() != "" {
			pings.Stop()
			src.Close()
			dst.Close()
			return dst
		}

		if _, err := e.WaitReachable(ctx, "cn", hoa, 30*time.Second); err != nil {
			pings.Stop()
			logBinding(t, ctx, e)
			t.Fatalf("after the migration to hostB: %v", err)
		}
		t.Logf("cn reaches the guest again %v after the migration completed", time.Since(rep.Completed).Round(time.Millisecond))
		client, server := tcp.wait(t, ctx, dst)
		time.Sleep(500 * time.Millisecond)
		res := pings.Stop()
		checkTCP(t, total, client, server)
		logBinding(t, ctx, e)
		if st, err := e.Status(ctx, "hostB", lab.GuestPort); err != nil || st.Location != "foreign" || st.BindingState != "bound" {
			t.Errorf("hostB status after the migration: %+v (%v), want foreign and bound", st, err)
		}
		t.Logf("QEMU downtime %v, STOP->RESUME %v; pings every 10 ms: %d sent, %d lost, longest gap %v (ended %v after RESUME)",
			rep.Downtime, rep.Pause().Round(time.Microsecond), res.Sent, res.Lost, res.LongestGap.Round(time.Millisecond),
			res.FirstAfter.Sub(rep.Resume).Round(time.Millisecond))
		t.Logf("TCP stream: %d bytes each way in %.1f s", client.Sent, client.Seconds)
		return dst
	})
}

// logBinding logs kgswitch's view on hostB and the Binding Acknowledgements
// the Home Agent sent.
func logBinding(t *testing.T, ctx context.Context, e *scenario.Env) {
	t.Helper()
	st, err := e.Status(ctx, "hostB", lab.GuestPort)
	t.Logf("kgswitch on hostB: %+v (%v)", st, err)
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
