package ovsctl

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// This file runs the real thing: a private network namespace with its own
// ovsdb-server and userspace-datapath ovs-vswitchd, driven through DB and
// Flows. It needs root and the openvswitch-switch binaries; it fails
// loudly without them unless KGSWITCH_SKIP_INTEGRATION=1.

var labSeq atomic.Int32

// ovsLab is one private OVS instance. Every object it creates is removed
// by t.Cleanup, also when the test fails.
type ovsLab struct {
	t   *testing.T
	ns  string // network namespace name
	dir string // run, db and log directory (absolute, short: sockets)
}

// requireIntegration fails the test unless the machine can run OVS, or
// skips it when the user opted out.
func requireIntegration(t *testing.T) {
	t.Helper()
	if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
		t.Skip("KGSWITCH_SKIP_INTEGRATION=1: OVS integration test skipped")
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces, ovs-vswitchd)")
	}
	for _, bin := range []string{"ip", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ethtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if _, err := os.Stat(schemaPath); err != nil {
		missing = append(missing, schemaPath)
	}
	if len(missing) > 0 {
		t.Fatalf("OVS integration test cannot run, missing %s (set KGSWITCH_SKIP_INTEGRATION=1 to skip)", strings.Join(missing, ", "))
	}
}

const schemaPath = "/usr/share/openvswitch/vswitch.ovsschema"

// run executes a command and fails the test on error.
func (l *ovsLab) run(name string, args ...string) string {
	l.t.Helper()
	out, err := l.try(name, args...)
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// try executes a command, inside the lab's namespace and with the lab's
// OVS directories in the environment.
func (l *ovsLab) try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", l.ns, name}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.Env = append(os.Environ(), "OVS_RUNDIR="+l.dir, "OVS_LOGDIR="+l.dir, "OVS_DBDIR="+l.dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l *ovsLab) vsctl(args ...string) string {
	l.t.Helper()
	return l.run("ovs-vsctl", append([]string{"--db=" + l.dbSock(), "--timeout=20"}, args...)...)
}

func (l *ovsLab) ofctl(args ...string) string {
	l.t.Helper()
	return l.run("ovs-ofctl", append([]string{"-O", "OpenFlow14"}, args...)...)
}

func (l *ovsLab) dbSock() string { return "unix:" + filepath.Join(l.dir, "db.sock") }

func (l *ovsLab) mgmt(bridge string) string {
	return "unix:" + filepath.Join(l.dir, bridge+".mgmt")
}

// startOVS creates the namespace, the database, both daemons and bridge
// br0 with the userspace datapath.
func startOVS(t *testing.T) *ovsLab {
	t.Helper()
	requireIntegration(t)
	id := fmt.Sprintf("%d-%d", os.Getpid(), labSeq.Add(1))
	dir, err := os.MkdirTemp("/tmp", "kgovs-"+id+"-")
	if err != nil {
		t.Fatal(err)
	}
	l := &ovsLab{t: t, ns: "kgovs-" + id, dir: dir}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"ovs-vswitchd.log", "ovsdb-server.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
					t.Logf("%s (tail):\n%s", f, tail(string(b), 30))
				}
			}
		}
		os.RemoveAll(dir)
	})

	if out, err := exec.Command("ip", "netns", "add", l.ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", l.ns, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", l.ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", l.ns, err, out)
		}
	})
	l.run("ip", "link", "set", "lo", "up")

	l.run("ovsdb-tool", "create", l.dbFile(), schemaPath)
	// Cleanups run last-in first-out: vswitchd stops before ovsdb-server,
	// both before the namespace and directory go.
	l.startDB()
	t.Cleanup(func() { l.stopDaemon("ovsdb-server") })
	l.vsctl("--no-wait", "init")
	l.startSwitch()
	t.Cleanup(func() { l.stopDaemon("ovs-vswitchd") })
	l.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
	return l
}

func (l *ovsLab) dbFile() string { return filepath.Join(l.dir, "conf.db") }

// startDB starts ovsdb-server on the lab's database file and socket; it
// is also how tests restart it.
func (l *ovsLab) startDB() {
	l.t.Helper()
	l.run("ovsdb-server", l.dbFile(),
		"--remote=punix:"+filepath.Join(l.dir, "db.sock"),
		"--pidfile="+filepath.Join(l.dir, "ovsdb-server.pid"),
		"--unixctl="+filepath.Join(l.dir, "ovsdb-server.ctl"),
		"--log-file="+filepath.Join(l.dir, "ovsdb-server.log"),
		"--detach", "--no-chdir")
}

// startSwitch starts ovs-vswitchd on the lab's database and run directory.
func (l *ovsLab) startSwitch() {
	l.t.Helper()
	l.run("ovs-vswitchd", l.dbSock(),
		"--pidfile="+filepath.Join(l.dir, "ovs-vswitchd.pid"),
		"--unixctl="+filepath.Join(l.dir, "ovs-vswitchd.ctl"),
		"--log-file="+filepath.Join(l.dir, "ovs-vswitchd.log"),
		"--detach", "--no-chdir")
}

// killDaemon kills an OVS daemon with SIGKILL, as a crash would, and
// waits until it is gone.
func (l *ovsLab) killDaemon(name string) {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, name+".pid"))
	if err != nil {
		l.t.Fatalf("read %s pid: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		l.t.Fatalf("bad %s pid %q", name, b)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		l.t.Fatalf("kill %s (pid %d): %v", name, pid, err)
	}
	for range 100 {
		if !alive(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.t.Fatalf("%s (pid %d) still alive 2s after SIGKILL", name, pid)
}

// alive reports whether pid runs. A zombie does not: a detached daemon's
// parent is whatever reaps orphans here, which may take its time.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// stopDaemon asks an OVS daemon to exit and kills it if it does not.
func (l *ovsLab) stopDaemon(name string) {
	pidFile := filepath.Join(l.dir, name+".pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	l.try("ovs-appctl", "-t", filepath.Join(l.dir, name+".ctl"), "exit")
	for range 50 {
		if !alive(pid) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.t.Logf("%s (pid %d) ignored exit; killing", name, pid)
	syscall.Kill(pid, syscall.SIGKILL)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// eventLog collects DB events so tests can wait for one that matches.
type eventLog struct {
	ch   <-chan Event
	seen []Event
}

// waitFor returns the first event, old or new, for which ok holds.
func (e *eventLog) waitFor(t *testing.T, what string, ok func(Event) bool) Event {
	t.Helper()
	for _, ev := range e.seen {
		if ok(ev) {
			return ev
		}
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, open := <-e.ch:
			if !open {
				t.Fatalf("events closed while waiting for %s; saw %v", what, e.seen)
			}
			e.seen = append(e.seen, ev)
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event %s within 20s; saw %v", what, e.seen)
		}
	}
}

// drain collects whatever arrives within d.
func (e *eventLog) drain(d time.Duration) []Event {
	var got []Event
	deadline := time.After(d)
	for {
		select {
		case ev, open := <-e.ch:
			if !open {
				return got
			}
			e.seen = append(e.seen, ev)
			got = append(got, ev)
		case <-deadline:
			return got
		}
	}
}

func named(name string, kinds ...EventKind) func(Event) bool {
	return func(ev Event) bool {
		return ev.Iface.Name == name && slices.Contains(kinds, ev.Kind)
	}
}

func TestIntegrationDB(t *testing.T) {
	l := startOVS(t)
	// A port that exists before Dial must be reported as Added.
	l.vsctl("add-port", "br0", "pre", "--", "set", "Interface", "pre", "type=internal")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := Dial(ctx, l.dbSock(), nil)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", l.dbSock(), err)
	}
	defer d.Close()
	ev := &eventLog{ch: d.Events()}

	t.Run("initial rows", func(t *testing.T) {
		for _, name := range []string{"br0", "pre"} {
			got := ev.waitFor(t, "Added "+name, named(name, Added))
			if got.Iface.UUID == "" {
				t.Errorf("got Added %s UUID = \"\", want a row UUID", name)
			}
		}
		if ifc, ok := d.Interface("pre"); !ok || ifc.Type != "internal" {
			t.Errorf("got Interface(pre) = %+v, %v, want type internal, true", ifc, ok)
		}
		var names []string
		for _, i := range d.Interfaces() {
			names = append(names, i.Name)
		}
		if !slices.Contains(names, "pre") || !slices.Contains(names, "br0") || !slices.IsSorted(names) {
			t.Errorf("got Interfaces() names %v, want br0 and pre among them, sorted", names)
		}
	})

	t.Run("add and delete port", func(t *testing.T) {
		l.vsctl("add-port", "br0", "p1", "--", "set", "Interface", "p1", "type=internal", "external_ids:foo=bar")
		got := ev.waitFor(t, "p1 with external_ids foo=bar", func(e Event) bool {
			return named("p1", Added, Updated)(e) && e.Iface.ExternalIDs["foo"] == "bar"
		})
		if got.Iface.Type != "internal" {
			t.Errorf("got p1 Type = %q, want internal", got.Iface.Type)
		}
		got = ev.waitFor(t, "p1 with ofport > 0", func(e Event) bool {
			return named("p1", Added, Updated)(e) && e.Iface.OFPort > 0
		})
		ofport := strings.TrimSpace(l.vsctl("get", "Interface", "p1", "ofport"))
		if strconv.Itoa(got.Iface.OFPort) != ofport {
			t.Errorf("got p1 OFPort = %d, want %s (ovs-vsctl)", got.Iface.OFPort, ofport)
		}
		ev.waitFor(t, "p1 with mac_in_use", func(e Event) bool {
			return named("p1", Added, Updated)(e) && len(e.Iface.MAC) == 6
		})
		ev.waitFor(t, "p1 with ifindex", func(e Event) bool {
			return named("p1", Added, Updated)(e) && e.Iface.IfIndex > 0
		})
		if br, ok := d.BridgeOf("p1"); !ok || br != "br0" {
			t.Errorf("got BridgeOf(p1) = %q, %v, want br0, true", br, ok)
		}
		if ifc, ok := d.Interface("p1"); !ok || ifc.OFPort != got.Iface.OFPort {
			t.Errorf("got Interface(p1) = %+v, %v, want OFPort %d", ifc, ok, got.Iface.OFPort)
		}

		l.vsctl("del-port", "br0", "p1")
		rm := ev.waitFor(t, "Removed p1", named("p1", Removed))
		if rm.Iface.UUID != got.Iface.UUID {
			t.Errorf("got Removed p1 UUID = %s, want %s", rm.Iface.UUID, got.Iface.UUID)
		}
		if _, ok := d.Interface("p1"); ok {
			t.Errorf("got Interface(p1) ok = true after del-port, want false")
		}
		if _, ok := d.BridgeOf("p1"); ok {
			t.Errorf("got BridgeOf(p1) ok = true after del-port, want false")
		}
	})

	t.Run("ifindex and link state", func(t *testing.T) {
		l.run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
		l.run("ip", "link", "set", "v0", "up")
		l.vsctl("add-port", "br0", "v0")
		got := ev.waitFor(t, "v0 with ifindex, link down", func(e Event) bool {
			return named("v0", Added, Updated)(e) && e.Iface.IfIndex > 0 && !e.Iface.LinkUp
		})
		idx := strings.TrimSpace(l.vsctl("get", "Interface", "v0", "ifindex"))
		if strconv.Itoa(got.Iface.IfIndex) != idx {
			t.Errorf("got v0 IfIndex = %d, want %s (ovs-vsctl)", got.Iface.IfIndex, idx)
		}
		// The peer coming up gives v0 carrier: what QEMU reopening a
		// persistent tap looks like.
		l.run("ip", "link", "set", "v1", "up")
		ev.waitFor(t, "v0 Updated with link up", func(e Event) bool { return named("v0", Updated)(e) && e.Iface.LinkUp })
		if ifc, _ := d.Interface("v0"); !ifc.LinkUp {
			t.Errorf("got Interface(v0).LinkUp = false, want true")
		}
		l.run("ip", "link", "set", "v1", "down")
		ev.waitFor(t, "v0 Updated with link down", func(e Event) bool { return named("v0", Updated)(e) && !e.Iface.LinkUp })
	})

	t.Run("EnsureInternalPort", func(t *testing.T) {
		if err := d.EnsureInternalPort(ctx, "br0", "kg0"); err != nil {
			t.Fatalf("EnsureInternalPort(br0, kg0) = %v, want nil", err)
		}
		got := ev.waitFor(t, "kg0 with ofport > 0", func(e Event) bool {
			return named("kg0", Added, Updated)(e) && e.Iface.OFPort > 0
		})
		if got.Iface.Type != "internal" {
			t.Errorf("got kg0 Type = %q, want internal", got.Iface.Type)
		}
		if err := d.EnsureInternalPort(ctx, "br0", "kg0"); err != nil {
			t.Fatalf("second EnsureInternalPort(br0, kg0) = %v, want nil", err)
		}
		for _, e := range ev.drain(time.Second) {
			if e.Iface.Name == "kg0" {
				t.Errorf("got event %v after no-op EnsureInternalPort, want none for kg0", e)
			}
		}
		ports := strings.Fields(l.vsctl("list-ports", "br0"))
		if n := countOf(ports, "kg0"); n != 1 {
			t.Errorf("got kg0 %d times in list-ports br0 = %v, want 1", n, ports)
		}
		if typ := strings.TrimSpace(l.vsctl("get", "Interface", "kg0", "type")); typ != "internal" {
			t.Errorf("got ovs-vsctl get Interface kg0 type = %s, want internal", typ)
		}
		// The tap device exists in vswitchd's namespace.
		if _, err := l.try("ip", "link", "show", "kg0"); err != nil {
			t.Errorf("got ip link show kg0 error %v, want the internal port's device", err)
		}

		l.vsctl("add-br", "br1", "--", "set", "Bridge", "br1", "datapath_type=netdev")
		waitUntil(t, "br1 in cache", func() bool { _, ok := d.BridgeOf("br1"); return ok })
		if err := d.EnsureInternalPort(ctx, "br1", "kg0"); err == nil {
			t.Errorf("EnsureInternalPort(br1, kg0) = nil, want error: kg0 is on br0")
		}
		if err := d.EnsureInternalPort(ctx, "nosuchbr", "kg9"); err == nil {
			t.Errorf("EnsureInternalPort(nosuchbr, kg9) = nil, want error")
		}
		if ports := strings.Fields(l.vsctl("list-ports", "br1")); len(ports) != 0 {
			t.Errorf("got list-ports br1 = %v, want none", ports)
		}
	})

	// kgswitch finds the patch pair joining the VM bridge and the uplink
	// bridge (host layout 2) by the peers and the bridges of patch ports.
	t.Run("patch peers", func(t *testing.T) {
		l.vsctl("--may-exist", "add-br", "br1", "--", "set", "Bridge", "br1", "datapath_type=netdev",
			"--", "add-port", "br0", "pi", "--", "set", "Interface", "pi", "type=patch", "options:peer=pe",
			"--", "add-port", "br1", "pe", "--", "set", "Interface", "pe", "type=patch", "options:peer=pi")
		for name, want := range map[string]struct{ peer, bridge string }{"pi": {"pe", "br0"}, "pe": {"pi", "br1"}} {
			ev.waitFor(t, name+" with its peer", func(e Event) bool {
				return named(name, Added, Updated)(e) && e.Iface.Peer == want.peer && e.Iface.Type == "patch"
			})
			if br, ok := d.BridgeOf(name); !ok || br != want.bridge {
				t.Errorf("got BridgeOf(%s) = %q, %v, want %s", name, br, ok, want.bridge)
			}
		}
		l.vsctl("del-port", "br0", "pi", "--", "del-port", "br1", "pe")
	})

	t.Run("SetExternalIDs", func(t *testing.T) {
		l.vsctl("set", "Interface", "kg0", "external_ids:other=keep", "external_ids:old=x", "external_ids:gone=1")
		if err := d.SetExternalIDs(ctx, "kg0", map[string]string{"kg": "1", "old": "y"}, []string{"gone", "absent"}); err != nil {
			t.Fatalf("SetExternalIDs(kg0) = %v", err)
		}
		want := map[string]string{"other": "keep", "old": "y", "kg": "1"}
		if got := l.externalIDs("kg0"); !maps.Equal(got, want) {
			t.Errorf("got external_ids = %v, want %v", got, want)
		}
		ev.waitFor(t, "kg0 Updated with kg=1", func(e Event) bool {
			return named("kg0", Updated)(e) && maps.Equal(e.Iface.ExternalIDs, want)
		})
		if err := d.SetExternalIDs(ctx, "kg0", nil, []string{"kg"}); err != nil {
			t.Fatalf("SetExternalIDs(kg0, del kg) = %v", err)
		}
		want = map[string]string{"other": "keep", "old": "y"}
		if got := l.externalIDs("kg0"); !maps.Equal(got, want) {
			t.Errorf("got external_ids = %v, want %v", got, want)
		}
		if err := d.SetExternalIDs(ctx, "nosuch", map[string]string{"a": "b"}, nil); err == nil {
			t.Errorf("SetExternalIDs(nosuch) = nil, want error")
		}
	})

	t.Run("Close ends events", func(t *testing.T) {
		d.Close()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case _, open := <-d.Events():
				if !open {
					return
				}
			case <-timeout:
				t.Fatalf("Events not closed 5s after Close")
			}
		}
	})
}

// externalIDs reads external_ids with ovs-vsctl, independently of DB.
func (l *ovsLab) externalIDs(iface string) map[string]string {
	l.t.Helper()
	out := strings.TrimSpace(l.vsctl("--format=json", "--columns=external_ids", "list", "Interface", iface))
	// {"data":[[["map",[["k","v"],...]]]],"headings":["external_ids"]}
	re := regexp.MustCompile(`\["([^"]*)","([^"]*)"\]`)
	got := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		got[m[1]] = m[2]
	}
	return got
}

func countOf(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// flowLines returns dump-flows output lines mentioning cookie, with the
// counters that change between dumps removed, sorted.
func (l *ovsLab) flowLines(cookie uint64) []string {
	l.t.Helper()
	out := l.ofctl("dump-flows", l.mgmt("br0"), fmt.Sprintf("cookie=%#x/-1", cookie))
	volatile := regexp.MustCompile(`(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ?`)
	var lines []string
	for _, ln := range strings.Split(out, "\n") {
		ln = strings.TrimSpace(ln)
		if !strings.HasPrefix(ln, "cookie=") {
			continue
		}
		lines = append(lines, volatile.ReplaceAllString(ln, ""))
	}
	slices.Sort(lines)
	return lines
}
