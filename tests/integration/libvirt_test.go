package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/libvirt"
	"github.com/kgswitch/kgswitch/tests/integration/qemu"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// startLibvirt starts a libvirtd on each of hosts (libvirt.Start) with the
// example hook from configs/ as its qemu hook, reaching kgswitch on that
// host at kgswitch's default control socket. The daemons (and their
// domains) stop when the test ends; their logs go to the test log when it
// failed.
func startLibvirt(t *testing.T, ctx context.Context, e *scenario.Env, hosts ...string) map[string]*libvirt.Daemon {
	t.Helper()
	hook, err := filepath.Abs("../../configs/libvirt-qemu-hook")
	if err != nil {
		t.Fatal(err)
	}
	opts := make([]libvirt.Options, len(hosts))
	for i, h := range hosts {
		// The hook finds kgswitch in PATH: a wrapper that notes each
		// command in hookCalls(e, h), then runs the real one.
		bin := filepath.Join(e.Lab.Dir, "hookbin-"+h)
		wrapper := fmt.Sprintf("#!/bin/sh\necho \"$*\" >>'%s'\nexec '%s' \"$@\"\n", hookCalls(e, h), e.Bin.Kgswitch)
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, "kgswitch"), []byte(wrapper), 0o755); err != nil {
			t.Fatal(err)
		}
		opts[i] = libvirt.Options{Lab: e.Lab, Host: h, Hook: hook, ControlSocket: e.ControlSocket(h), Path: bin, Logf: t.Logf}
	}
	// Each daemon spends seconds probing QEMU's capabilities at start:
	// together, not one after the other.
	started := make([]*libvirt.Daemon, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started[i], errs[i] = libvirt.Start(ctx, opts[i])
		}()
	}
	wg.Wait()
	ds := make(map[string]*libvirt.Daemon)
	for i, h := range hosts {
		d := started[i]
		if d == nil {
			continue
		}
		ds[h] = d
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("stop libvirtd on %s: %v", h, err)
			}
			if !t.Failed() {
				return
			}
			logs, _ := filepath.Glob(filepath.Join(d.Dir, "log", "qemu", "*.log"))
			for _, f := range append([]string{d.Log, d.Log + ".out"}, logs...) {
				if b, err := os.ReadFile(f); err == nil && len(b) > 0 {
					t.Logf("---- %s ----\n%s", f, b)
				}
			}
		})
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return ds
}

// hookCalls is the file where the kgswitch commands libvirt's hook ran on
// host are noted (see startLibvirt).
func hookCalls(e *scenario.Env, host string) string {
	return filepath.Join(e.Lab.Dir, host+"-hook-kgswitch.log")
}

// readHookCalls returns the kgswitch commands libvirt's hook ran on host.
func readHookCalls(t *testing.T, e *scenario.Env, host string) []string {
	t.Helper()
	b, err := os.ReadFile(hookCalls(e, host))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// libvirtHop is one live migration of TestLibvirtMigrate.
type libvirtHop struct {
	from, to  string
	tap       string // the guest's tap on to
	migration libvirt.Migration
	probes    scenario.PingResult
	reached   time.Duration // from the end of virsh migrate to cn's next answer
}

// TestLibvirtMigrate is kgswitch under libvirt, as the README's "With
// libvirt" section sets it up: a libvirtd on hostA (home) and on hostB
// (foreign), the guest a TCG domain whose interface is
// <virtualport type='openvswitch'/> (libvirt creates the tap, plugs it into
// the host's br0 and sets its attached-mac), configs/libvirt-qemu-hook as
// the daemons' qemu hook, and kgswitch on both hosts configured with the
// guest's MAC and home address only: libvirt names the tap vnet0 on hostA
// and vnet1 on hostB (a vnet0 is there already). `virsh migrate --live
// --p2p` moves the guest home -> foreign -> home under cn's 10 ms probes
// and a paced TCP echo stream: after each hop cn reaches the guest again,
// it is the same guest (its heartbeat carries on), kgswitch reports it where
// it is, and the stream ends with every byte intact; the hook ran `kgswitch
// activate` for the boot only, not for the migrations. It prints the probes
// lost per hop.
func TestLibvirtMigrate(t *testing.T) {
	oneQEMUAtATime(t)
	requireLab(t)
	if err := libvirt.Preflight(); err != nil {
		t.Fatalf("libvirt test cannot run (set KGSWITCH_SKIP_INTEGRATION=1 to skip): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e, img := newQEMUEnv(t, ctx)
	hosts := []string{"hostA", "hostB"}
	for _, h := range hosts {
		// The lab's userspace datapath reads each port with AF_PACKET, and
		// the host's kernel sees the guest's frames too: it must not take
		// part in the guest's IPv6 on the tap libvirt makes (qemu.Start
		// does the same for its taps).
		if _, err := e.Lab.Run(ctx, h, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			t.Fatal(err)
		}
	}
	// libvirt names a tap vnetN with the first free N on the host: a vnet0
	// on hostB makes the guest's tap vnet1 there.
	if _, err := e.Lab.Run(ctx, "hostB", "ip", "tuntap", "add", "dev", "vnet0", "mode", "tap"); err != nil {
		t.Fatal(err)
	}

	byMAC := lab.VM
	byMAC.Port = ""
	if err := e.StartHomeAgent(ctx); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	for _, h := range hosts {
		cfg, err := e.WriteConfigWith(h, scenario.Config{Guests: []lab.Guest{byMAC}})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(cfg); err != nil || strings.Contains(string(b), "port =") || strings.Contains(string(b), "vnet") {
			t.Fatalf("kgswitch's configuration on %s names a port (%v):\n%s", h, err, b)
		}
		if err := e.StartKgswitch(ctx, h, cfg); err != nil {
			t.Fatal(err)
		}
	}
	daemons := startLibvirt(t, ctx, e, hosts...)

	dom := libvirt.Domain{Name: "kgs-guest", Image: img}
	vm, err := daemons["hostA"].Create(ctx, dom)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { vm.Close() }()
	boot, err := vm.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hoa := lab.HoA.String()
	if _, err := e.WaitReachable(ctx, "cn", hoa, 15*time.Second); err != nil {
		t.Fatalf("guest booted by libvirt on hostA: %v", err)
	}
	tap := checkLibvirtPort(t, ctx, e, daemons["hostA"], dom, "home")
	t.Logf("guest booted by libvirt on hostA in %v, tap %s; cn reaches it", boot.Round(time.Millisecond), tap)

	// 1 MiB at 48 KiB/s: about 21 s, spanning both hops.
	const total = 1 << 20
	tcp, err := qemu.StartGuestTCP(ctx, e, vm, total, 48<<10, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var hops []libvirtHop
	for _, to := range []string{"hostB", "hostA"} {
		from := vm.Host
		pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := pings.WaitReplies(ctx, time.Time{}, 20, 10*time.Second); err != nil {
			pings.Stop()
			t.Fatalf("before the hop %s -> %s: %v", from, to, err)
		}
		dst, m, err := daemons[from].Migrate(ctx, dom, daemons[to])
		if err != nil {
			pings.Stop()
			t.Fatalf("virsh migrate %s -> %s: %v", from, to, err)
		}
		src := vm
		vm = dst
		src.Close()
		h := libvirtHop{from: from, to: to, migration: m}
		// Reachable again: a second of answers after the migration.
		if err := pings.WaitReplies(ctx, m.End, 100, 30*time.Second); err != nil {
			pings.Stop()
			logBinding(t, ctx, e, to, "")
			t.Fatalf("after the hop %s -> %s cn does not reach the guest: %v", from, to, err)
		}
		if first, ok := pings.FirstReplyAfter(m.End); ok {
			h.reached = first.Sub(m.End)
		}
		h.probes = pings.Stop()
		checkLibvirtHeartbeats(t, ctx, src, dst, m)
		want := "foreign"
		if to == lab.VM.StartHost {
			want = "home"
		}
		h.tap = checkLibvirtPort(t, ctx, e, daemons[to], dom, want)
		t.Logf("hop %s -> %s: virsh migrate took %v; guest on %s's %s; probes every 10 ms: %d of %d lost, longest gap %v\ndestination's domjobinfo --completed:\n%s",
			from, to, m.End.Sub(m.Start).Round(time.Millisecond), to, h.tap, h.probes.Lost, h.probes.Sent,
			h.probes.LongestGap.Round(time.Millisecond), m.JobInfo)
		// A bound with room for a loaded 2-core machine: QEMU's downtime
		// (about 0.4 s under TCG) and, away from home, the Home Agent's DAD
		// (1 s) make most of the gap; the figures are in the table.
		if h.probes.Lost > 300 {
			t.Errorf("hop %s -> %s: %d of %d probes lost (longest gap %v), want at most 300",
				from, to, h.probes.Lost, h.probes.Sent, h.probes.LongestGap.Round(time.Millisecond))
		}
		if c := dst.Crash(); c != "" {
			t.Fatalf("hop %s -> %s: guest console reports a crash: %q", from, to, c)
		}
		hops = append(hops, h)
	}
	client, server, err := tcp.Wait(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	checkStream(t, total, client, server)
	end := tcp.End(client)
	if last := hops[len(hops)-1].migration.End; !end.After(last) {
		t.Errorf("the TCP stream ended at %s, before the last hop (%s): it proves nothing about that hop; make it longer",
			end.Format("15:04:05.000"), last.Format("15:04:05.000"))
	}
	t.Logf("TCP echo stream from cn: %d bytes each way in %.1f s, intact", client.Sent, client.Seconds)

	// kgswitch found the guest on every tap by its MAC: libvirt named them
	// differently (on its return to hostA too: libvirt does not reuse a
	// tap's name at once).
	if tap == hops[0].tap {
		t.Errorf("the guest's tap is %s on hostA and hostB, want different names (vnet0 on hostB is taken)", tap)
	}
	// The hook ran `kgswitch activate` for the boot on hostA (which
	// kgswitch refuses there: the guest is home) and for no incoming
	// migration: the guest's first frame is kgswitch's cue then. It keeps
	// its state in the daemon's /run/kgswitch/incoming, which it creates
	// whenever it runs, and leaves nothing there once the guest runs.
	if got, want := readHookCalls(t, e, "hostA"), []string{"activate " + tap}; !slices.Equal(got, want) {
		t.Errorf("libvirt's hook on hostA ran kgswitch %q, want %q (the boot only)", got, want)
	}
	if got := readHookCalls(t, e, "hostB"); len(got) != 0 {
		t.Errorf("libvirt's hook on hostB ran kgswitch %q, want nothing (a migration in)", got)
	}
	for _, h := range hosts {
		left, err := os.ReadDir(daemons[h].Path("/run/kgswitch/incoming"))
		if err != nil {
			t.Errorf("libvirt's qemu hook did not run on %s: %v", h, err)
		}
		for _, f := range left {
			t.Errorf("libvirt's qemu hook on %s left /run/kgswitch/incoming/%s", h, f.Name())
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "libvirt live migrations (virsh migrate --live --p2p), probes from cn every 10 ms:\n")
	fmt.Fprintf(&b, "  %-16s %-6s %-11s %-9s %-10s %-12s %s\n", "hop", "tap", "virsh took", "downtime", "lost", "longest gap", "first answer after virsh returned")
	for _, h := range hops {
		fmt.Fprintf(&b, "  %-16s %-6s %-11v %-9v %-10s %-12v %+.1f ms\n", h.from+" -> "+h.to, h.tap,
			h.migration.End.Sub(h.migration.Start).Round(time.Millisecond), h.migration.Downtime,
			fmt.Sprintf("%d/%d", h.probes.Lost, h.probes.Sent), h.probes.LongestGap.Round(time.Millisecond), ms(h.reached))
	}
	t.Logf("%s", b.String())
	if c := vm.Crash(); c != "" {
		t.Errorf("guest console reports a crash: %q", c)
	}
}

// checkLibvirtPort checks the guest's tap on d's host: libvirt plugged it
// into the bridge with the guest's MAC as attached-mac, the domain's UUID as
// vm-id and an iface-id, and kgswitch there,
// which knows the guest by that MAC only, serves the port as want ("home",
// or "foreign" and bound). It returns the tap's name.
func checkLibvirtPort(t *testing.T, ctx context.Context, e *scenario.Env, d *libvirt.Daemon, dom libvirt.Domain, want string) string {
	t.Helper()
	tap, err := d.Tap(ctx, dom.Name)
	if err != nil {
		t.Fatal(err)
	}
	ovs := e.Lab.OVS(d.Host)
	if br, err := ovs.Vsctl(ctx, "port-to-br", tap); err != nil || strings.TrimSpace(br) != ovs.Bridge {
		t.Errorf("%s's %s: on bridge %q (%v), want %s", d.Host, tap, strings.TrimSpace(br), err, ovs.Bridge)
	}
	uuid, err := d.Virsh(ctx, "domuuid", dom.Name)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"attached-mac": lab.GuestMAC.String(), "vm-id": strings.TrimSpace(uuid)} {
		if got, err := e.ExternalID(ctx, d.Host, tap, key); err != nil || got != want {
			t.Errorf("%s's %s: external_ids:%s = %q (%v), want %s", d.Host, tap, key, got, err, want)
		}
	}
	if id, err := e.ExternalID(ctx, d.Host, tap, "iface-id"); err != nil || id == "" {
		t.Errorf("%s's %s: external_ids:iface-id = %q (%v), want the virtualport's interfaceid", d.Host, tap, id, err)
	}
	err = wait.Until(ctx, 10*time.Second, 50*time.Millisecond, func() error {
		st, err := e.Status(ctx, d.Host, tap)
		switch {
		case err != nil:
			return err
		case st.Location != want:
			return fmt.Errorf("kgswitch on %s: %s is %s (%s), want %s", d.Host, tap, st.Location, st.Reason, want)
		case want == "foreign" && st.BindingState != "bound":
			return fmt.Errorf("kgswitch on %s: %s is %s, binding %s (%s), want bound", d.Host, tap, st.Location, st.BindingState, st.Reason)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	return tap
}

// checkLibvirtHeartbeats fails the test unless the guest's heartbeat
// carries on on dst where it stopped on src: the same guest, not a reboot.
// dst's console was attached before the guest resumed there.
func checkLibvirtHeartbeats(t *testing.T, ctx context.Context, src, dst *qemu.VM, m libvirt.Migration) {
	t.Helper()
	if err := dst.WaitHeartbeats(ctx, m.Start, 5); err != nil {
		t.Fatalf("after the migration: %v", err)
	}
	srcHB, dstHB := src.Heartbeats(), dst.Heartbeats()
	if len(srcHB) == 0 {
		t.Fatalf("no heartbeat read on %s", src.Host)
	}
	last, first := srcHB[len(srcHB)-1], dstHB[0]
	// A line cut in two by the switchover is lost, so one may be missing.
	if d := first.N - last.N; d < 1 || d > 2 || first.Uptime < last.Uptime {
		t.Errorf("heartbeat %d (uptime %.2f) last on %s, %d (uptime %.2f) first on %s: want the next one", last.N, last.Uptime, src.Host, first.N, first.Uptime, dst.Host)
	}
}
