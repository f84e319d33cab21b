package integration

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// Most tests of this package run in parallel (t.Parallel), each in a lab of
// its own: a lab's namespaces, directories and daemons carry its ID (see
// lab.New), so labs do not collide. The others run one at a time, before
// the parallel ones start:
//   - TestNewCleansUpOnFailure looks for what any lab of this process left
//     behind, and TestCleanupStale's own stale lab must not be cleaned up
//     by another test's requireLab;
//   - the tests that hold kgswitch to a loss or delay of tens of
//     milliseconds (TestKgswitchKilledAndRestarted, TestOVSRestart,
//     TestOVSDBOutage, TestDepartureCover, TestMoveBetweenForeignHosts,
//     TestReturnHome, TestHostileHomeLinkProbe, TestHostileHomeLinkTakeover,
//     TestDualStackMove, TestLayoutsCoverAndReturn):
//     the load of other labs on a 2-core machine adds that much, and they
//     fail;
//   - the QEMU migration tests (TestQEMUMigrateWithoutKgswitch,
//     TestQEMUMigrateWithKgswitch, TestQEMUPingPong, TestQEMUDualStack,
//     TestLibvirtMigrate): an emulated (TCG) guest migrated while other labs
//     load the machine crashes now and then right after it resumes (slab
//     corruption, invalid opcode), twice in a row often enough to fail the
//     suite.
//
// The QEMU tests take turns (oneQEMUAtATime), and at most a few labs are
// built at once (newLabWith).

// qemuTurn is held by the QEMU test that runs.
var qemuTurn = make(chan struct{}, 1)

// oneQEMUAtATime waits until no other QEMU test runs, and keeps the others
// waiting until t ends: an emulated guest (TCG) keeps a core busy, a
// migration two, and the migration tests measure timings.
func oneQEMUAtATime(t *testing.T) {
	t.Helper()
	qemuTurn <- struct{}{}
	t.Cleanup(func() { <-qemuTurn })
}

// requireLab fails the test with the reason when this machine cannot run the
// lab, or skips it when KGSWITCH_SKIP_INTEGRATION=1.
func requireLab(t testing.TB) {
	t.Helper()
	if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
		t.Skip("KGSWITCH_SKIP_INTEGRATION=1: integration tests skipped")
	}
	if err := lab.Preflight(); err != nil {
		t.Fatalf("integration test cannot run (set KGSWITCH_SKIP_INTEGRATION=1 to skip): %v", err)
	}
	if err := lab.CleanupStale(t.Logf); err != nil {
		t.Logf("cleaning up stale labs: %v", err)
	}
}

// newLab builds a lab that is closed when the test ends, also on failure.
func newLab(t *testing.T, ctx context.Context) *lab.Lab {
	t.Helper()
	return newLabWith(t, ctx, lab.Options{})
}

// labBuilds bounds how many labs are built at once: building one keeps the
// machine busy for a second or two (namespaces, links, three Open vSwitch
// instances), and tests that start together would otherwise all build at
// once.
var labBuilds = make(chan struct{}, 2)

// newLabWith is newLab with options (their Logf is the test's).
func newLabWith(t testing.TB, ctx context.Context, opt lab.Options) *lab.Lab {
	t.Helper()
	opt.Logf = t.Logf
	labBuilds <- struct{}{}
	start := time.Now()
	l, err := lab.New(ctx, opt)
	<-labBuilds
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Logf("lab.New (extra guests: %v) took %v", opt.ExtraGuests, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	return l
}

var pingReceived = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// ping sends count echo requests from node to dst and fails the test unless
// all are answered.
func ping(t *testing.T, ctx context.Context, l *lab.Lab, node, dst string, count int) {
	t.Helper()
	out, err := l.Run(ctx, node, "ping", "-6", "-c", strconv.Itoa(count), "-W", "2", dst)
	if err != nil {
		t.Fatalf("ping from %s to %s: %v", node, dst, err)
	}
	m := pingReceived.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping from %s to %s: no summary in output:\n%s", node, dst, out)
	}
	if got, want := m[2], strconv.Itoa(count); got != want {
		t.Fatalf("ping from %s to %s: got received = %s, want %s\n%s", node, dst, got, want, out)
	}
}

func TestLabSmoke(t *testing.T) {
	t.Parallel()
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := newLab(t, ctx)

	var daemons []int
	for _, host := range []string{"hostA", "hostB"} {
		h := l.OVS(host)
		pids, err := h.DaemonPIDs()
		if err != nil {
			t.Fatalf("%s: DaemonPIDs: %v", host, err)
		}
		for _, pid := range pids {
			daemons = append(daemons, pid)
		}
		out, err := h.Vsctl(ctx, "get", "bridge", h.Bridge, "datapath_type")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out); got != "netdev" {
			t.Errorf("%s: got datapath_type = %s, want netdev", host, got)
		}
	}

	// cn -> rtr -> home bridge -> hostA's OVS -> vnet3 -> guest.
	ping(t, ctx, l, "cn", lab.HoA.String(), 3)
	fdb, err := l.OVS("hostA").Appctl(ctx, "fdb/show", lab.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fdb, lab.GuestMAC.String()) {
		t.Errorf("hostA fdb/show: got\n%s\nwant the guest's MAC %s learnt", fdb, lab.GuestMAC)
	}
	// cn -> rtr -> foreign bridge -> hostB's OVS -> br0 (the care-of address).
	ping(t, ctx, l, "cn", lab.CareOfAddr.String(), 3)
	// Both OVS hosts' own addresses and the Home Agent from the guest.
	ping(t, ctx, l, "vm", lab.HostAAddr.String(), 1)
	ping(t, ctx, l, "vm", lab.HAAddr.String(), 1)

	// Migrate the guest: on hostB it sits on the foreign link. It keeps its
	// neighbour cache, as a migrated VM does, so it still addresses the home
	// router's MAC; hostB reaching the guest's link-local address proves the
	// port works on hostB's bridge.
	neighBefore := routerNeigh(t, ctx, l)
	if err := l.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatalf("MoveGuest(hostA, hostB): %v", err)
	}
	if got := l.GuestHost(); got != "hostB" {
		t.Errorf("got GuestHost() = %s, want hostB", got)
	}
	if got := routerNeigh(t, ctx, l); got != neighBefore {
		t.Errorf("guest's neighbour entry for the router after MoveGuest: got %q, want %q", got, neighBefore)
	}
	ping(t, ctx, l, "hostB", lab.GuestLinkLocal.String()+"%"+lab.Bridge, 1)
	fdb, err = l.OVS("hostB").Appctl(ctx, "fdb/show", lab.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fdb, lab.GuestMAC.String()) {
		t.Errorf("hostB fdb/show after MoveGuest: got\n%s\nwant the guest's MAC %s learnt", fdb, lab.GuestMAC)
	}
	if err := l.MoveGuest(ctx, "hostA", "hostB"); err == nil {
		t.Errorf("MoveGuest(hostA, hostB) with the guest on hostB: got nil error, want one")
	}
	if err := l.MoveGuest(ctx, "hostB", "hostA"); err != nil {
		t.Fatalf("MoveGuest(hostB, hostA): %v", err)
	}
	ping(t, ctx, l, "cn", lab.HoA.String(), 3)

	// A background process is killed by Close.
	sleeper, err := l.Start(ctx, "ha", t.TempDir()+"/sleep.log", "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("lab.Close took %v", time.Since(start).Round(time.Millisecond))
	if err := l.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}

	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), l.ID+"-") {
			t.Errorf("netns %s remains after Close", e.Name())
		}
	}
	for _, pid := range append(daemons, sleeper.Process.Pid) {
		if lab.ProcessAlive(pid) {
			t.Errorf("pid %d still alive after Close", pid)
		}
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		t.Errorf("lab dir %s: got Stat error %v, want not-exist", l.Dir, err)
	}
}

// TestCleanupStale plants a namespace named as a lab of a process that has
// exited and checks that CleanupStale removes it but not a live lab's.
func TestCleanupStale(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := newLab(t, ctx)

	dead := exitedPID(t)
	name := "kg" + strconv.Itoa(dead) + "x0-cn"
	if out, err := runRoot("ip", "netns", "add", name); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _, _ = runRoot("ip", "netns", "del", name) })

	if err := lab.CleanupStale(t.Logf); err != nil {
		t.Fatalf("CleanupStale: %v", err)
	}
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("stale netns %s: got Stat error %v, want not-exist", name, err)
	}
	if _, err := os.Stat("/run/netns/" + l.NS("cn")); err != nil {
		t.Errorf("live lab's netns %s: %v, want it kept", l.NS("cn"), err)
	}
}

// routerNeigh returns the guest's neighbour cache entry for the router, or
// fails the test if it has none.
func routerNeigh(t *testing.T, ctx context.Context, l *lab.Lab) string {
	t.Helper()
	out, err := l.Run(ctx, "vm", "ip", "-6", "neigh", "show", lab.RouterLinkLocal.String(), "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("guest has no neighbour entry for %s: %q", lab.RouterLinkLocal, out)
	return ""
}

// TestNewCleansUpOnFailure interrupts New at several points through its
// context and checks that it leaves nothing behind when it fails.
func TestNewCleansUpOnFailure(t *testing.T) {
	requireLab(t)
	prefix := "kg" + strconv.Itoa(os.Getpid()) + "x"
	for _, d := range []time.Duration{5, 40, 100, 150, 200, 250, 300} {
		d *= time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), d)
		l, err := lab.New(ctx, lab.Options{})
		cancel()
		if err == nil {
			// Fast enough to finish: nothing to check but a clean Close.
			if err := l.Close(); err != nil {
				t.Errorf("Close after New within %v: %v", d, err)
			}
			continue
		}
		t.Logf("New with %v: %v", d, firstLine(err.Error()))
		for _, dir := range []string{"/run/netns", os.TempDir()} {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), prefix) {
					t.Errorf("New failed after %v but left %s/%s", d, dir, e.Name())
				}
			}
		}
		if out, err := runRoot("pgrep", "-f", "/"+prefix); err == nil {
			t.Errorf("New failed after %v but left processes:\n%s", d, out)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
