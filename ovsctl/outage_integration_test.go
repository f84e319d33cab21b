package ovsctl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-openvswitch/ovs"
)

func TestIntegrationOVSDBOutage(t *testing.T) {
	l := startOVS(t)
	l.vsctl("add-port", "br0", "p1", "--", "set", "Interface", "p1", "type=internal")
	l.vsctl("add-port", "br0", "pre", "--", "set", "Interface", "pre", "type=internal")
	p1Port := strings.TrimSpace(l.vsctl("get", "Port", "p1", "_uuid"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := Dial(ctx, l.dbSock(), nil)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", l.dbSock(), err)
	}
	defer d.Close()
	ev := &eventLog{ch: d.Events()}
	p1 := ev.waitFor(t, "p1 with ofport", func(e Event) bool { return named("p1", Added, Updated)(e) && e.Iface.OFPort > 0 })
	ev.waitFor(t, "Added pre", named("pre", Added))
	if !d.isConnected() {
		t.Errorf("got Connected() = false after Dial, want true")
	}

	l.killDaemon("ovsdb-server")
	down := time.Now()
	ev.waitFor(t, "Disconnected", kind(Disconnected))
	if took := time.Since(down); took > 2*time.Second {
		t.Errorf("Disconnected came %v after ovsdb-server died, want within 2s", took)
	}
	iDown := len(ev.seen) - 1
	if d.isConnected() {
		t.Errorf("got Connected() = true after Disconnected, want false")
	}
	if ifc, ok := d.Interface("p1"); !ok || ifc.UUID != p1.Iface.UUID || ifc.OFPort != p1.Iface.OFPort {
		t.Errorf("got Interface(p1) while disconnected = %+v, %v, want the last known row %+v", ifc, ok, p1.Iface)
	}
	if br, ok := d.BridgeOf("p1"); !ok || br != "br0" {
		t.Errorf("got BridgeOf(p1) while disconnected = %q, %v, want br0, true", br, ok)
	}
	start := time.Now()
	if err := d.EnsureInternalPort(ctx, "br0", "kg0"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("got EnsureInternalPort while disconnected = %v, want ErrNotConnected", err)
	}
	if err := d.SetExternalIDs(ctx, "p1", map[string]string{"a": "b"}, nil); !errors.Is(err, ErrNotConnected) {
		t.Errorf("got SetExternalIDs while disconnected = %v, want ErrNotConnected", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("writes while disconnected took %v to fail, want < 1s", took)
	}

	// While the server is down the database changes under it: p1 goes,
	// p2 comes, pre gets an external_id. Only a resync can tell.
	txn := fmt.Sprintf(`["Open_vSwitch",
		{"op":"mutate","table":"Bridge","where":[["name","==","br0"]],"mutations":[["ports","delete",["uuid",%q]]]},
		{"op":"insert","table":"Interface","row":{"name":"p2","type":"internal"},"uuid-name":"i2"},
		{"op":"insert","table":"Port","row":{"name":"p2","interfaces":["named-uuid","i2"]},"uuid-name":"pp2"},
		{"op":"mutate","table":"Bridge","where":[["name","==","br0"]],"mutations":[["ports","insert",["named-uuid","pp2"]]]},
		{"op":"mutate","table":"Interface","where":[["name","==","pre"]],"mutations":[["external_ids","insert",["map",[["k","v"]]]]]}]`, p1Port)
	l.run("ovsdb-tool", "transact", l.dbFile(), txn)
	l.startDB()
	up := time.Now()
	ev.waitFor(t, "Reconnected", kind(Reconnected))
	if took := time.Since(up); took > 5*time.Second {
		t.Errorf("Reconnected came %v after ovsdb-server restarted, want within 5s", took)
	}
	iUp := len(ev.seen) - 1
	if !d.isConnected() {
		t.Errorf("got Connected() = false after Reconnected, want true")
	}
	for what, ok := range map[string]func(Event) bool{
		"Removed p1":       func(e Event) bool { return named("p1", Removed)(e) && e.Iface.UUID == p1.Iface.UUID },
		"Added p2":         named("p2", Added),
		"Updated pre, k=v": func(e Event) bool { return named("pre", Updated)(e) && e.Iface.ExternalIDs["k"] == "v" },
	} {
		if i := indexOf(ev.seen, iDown, ok); i < 0 || i > iUp {
			t.Errorf("got %s at event %d, want between Disconnected (%d) and Reconnected (%d); events %v", what, i, iDown, iUp, ev.seen[iDown:])
		}
	}
	if _, ok := d.Interface("p1"); ok {
		t.Errorf("got Interface(p1) ok after Reconnected, want false (deleted while disconnected)")
	}
	if br, ok := d.BridgeOf("p2"); !ok || br != "br0" {
		t.Errorf("got BridgeOf(p2) = %q, %v, want br0, true", br, ok)
	}

	// Normal service: vswitchd (reconnected too) numbers p2, ovs-vsctl
	// edits are seen, writes work.
	ev.waitFor(t, "p2 with ofport", func(e Event) bool { return named("p2", Updated)(e) && e.Iface.OFPort > 0 })
	l.vsctl("add-port", "br0", "p3", "--", "set", "Interface", "p3", "type=internal")
	ev.waitFor(t, "Added p3", named("p3", Added))
	if err := d.EnsureInternalPort(ctx, "br0", "kg0"); err != nil {
		t.Fatalf("EnsureInternalPort after reconnection = %v", err)
	}
	ev.waitFor(t, "Added kg0", named("kg0", Added))
	if err := d.SetExternalIDs(ctx, "kg0", map[string]string{"a": "b"}, nil); err != nil {
		t.Fatalf("SetExternalIDs after reconnection = %v", err)
	}
	ev.waitFor(t, "kg0 a=b", func(e Event) bool { return named("kg0", Updated)(e) && e.Iface.ExternalIDs["a"] == "b" })

	// A restart right away, faster than the backoff: still reported as a
	// disconnection and a reconnection, and the service goes on.
	from := len(ev.seen)
	l.killDaemon("ovsdb-server")
	l.startDB()
	ev.waitFor(t, "Reconnected after quick restart", func(e Event) bool {
		return e.Kind == Reconnected && indexOf(ev.seen, from, kind(Reconnected)) >= 0
	})
	if i := indexOf(ev.seen, from, kind(Disconnected)); i < 0 {
		t.Errorf("got no Disconnected for the quick restart; events %v", ev.seen[from:])
	}
	l.vsctl("del-port", "br0", "p3")
	ev.waitFor(t, "Removed p3", named("p3", Removed))

	// Close while disconnected ends Events, and nothing comes back.
	l.killDaemon("ovsdb-server")
	from = len(ev.seen)
	ev.waitFor(t, "Disconnected before Close", func(e Event) bool {
		return e.Kind == Disconnected && indexOf(ev.seen, from, kind(Disconnected)) >= 0
	})
	d.Close()
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-d.Events():
		case <-timeout:
			t.Fatalf("Events still open 5s after Close")
		}
	}
	if err := d.SetExternalIDs(ctx, "kg0", map[string]string{"a": "c"}, nil); !errors.Is(err, ErrNotConnected) {
		t.Errorf("got SetExternalIDs after Close = %v, want ErrNotConnected", err)
	}
}

// noFlood reports whether ovs-ofctl show lists port with NO_FLOOD.
func (l *ovsLab) noFlood(port string) bool {
	show := l.run("ovs-ofctl", "-O", "OpenFlow10", "show", l.mgmt("br0"))
	return regexp.MustCompile(`\(` + regexp.QuoteMeta(port) + `\)[^\n]*\n\s*config:\s*NO_FLOOD`).MatchString(show)
}

func TestIntegrationSwitchRestart(t *testing.T) {
	l := startOVS(t)
	l.vsctl("add-port", "br0", "kg0", "--", "set", "Interface", "kg0", "type=internal")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := Dial(ctx, l.dbSock(), nil)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", l.dbSock(), err)
	}
	defer d.Close()
	ev := &eventLog{ch: d.Events()}
	kg0 := ev.waitFor(t, "kg0 with ofport and ifindex", func(e Event) bool {
		return named("kg0", Added, Updated)(e) && e.Iface.OFPort > 0 && e.Iface.IfIndex > 0
	})

	f := NewFlows(l.mgmt("br0"), nil)
	sw := f.WatchSwitch(ctx)
	next := func(want SwitchState, within time.Duration) {
		t.Helper()
		select {
		case e, ok := <-sw:
			if !ok || e.State != want {
				t.Fatalf("got switch event %+v (open %v), want %v", e, ok, want)
			}
		case <-time.After(within):
			t.Fatalf("no %v within %v", want, within)
		}
	}
	next(SwitchUp, 5*time.Second)

	const foreign = 0x1234
	l.ofctl("add-flow", l.mgmt("br0"), fmt.Sprintf("cookie=%#x,priority=5,arp,actions=NORMAL", foreign))
	install := func() error {
		return f.ReplaceSets(map[uint64][]*ovs.Flow{
			Cookie | 1: {{Priority: 100, InPort: kg0.Iface.OFPort, Actions: []ovs.Action{ovs.Drop()}}},
			Cookie | 2: {
				{Priority: 90, Protocol: ovs.ProtocolIPv6, Actions: []ovs.Action{ovs.Normal()}},
				{Priority: 91, Protocol: ovs.ProtocolICMPv6, Actions: []ovs.Action{ovs.Normal()}},
			},
		})
	}
	if err := install(); err != nil {
		t.Fatal(err)
	}
	if err := f.SetNoFlood("kg0", true); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Count(Cookie, CookieMask); err != nil || n != 3 {
		t.Errorf("got Count(Cookie, CookieMask) = %d, %v, want 3", n, err)
	}

	l.killDaemon("ovs-vswitchd")
	next(SwitchDown, 2*time.Second)
	if _, err := f.Count(Cookie, CookieMask); err == nil {
		t.Errorf("got Count with ovs-vswitchd dead: nil error, want error")
	}
	restart := time.Now()
	l.startSwitch()
	next(SwitchUp, 5*time.Second)
	// What a consumer does on SwitchUp: look, then reinstall.
	if n, err := f.Count(Cookie, CookieMask); err != nil || n != 0 {
		t.Errorf("got Count(Cookie, CookieMask) after restart = %d, %v, want 0 (flows are lost)", n, err)
	}
	if l.noFlood("kg0") {
		t.Errorf("kg0 still NO_FLOOD after restart; the doc says the bit is lost")
	}
	if err := install(); err != nil {
		t.Fatalf("reinstall after restart = %v", err)
	}
	if err := f.SetNoFlood("kg0", true); err != nil {
		t.Fatalf("SetNoFlood after restart = %v", err)
	}
	t.Logf("flows back %v after starting ovs-vswitchd", time.Since(restart))
	if took := time.Since(restart); took > 2*time.Second {
		t.Errorf("flows back %v after starting ovs-vswitchd, want within 2s", took)
	}
	if got, err := f.Cookies(); err != nil || !maps.Equal(got, map[uint64]int{Cookie | 1: 1, Cookie | 2: 2}) {
		t.Errorf("got Cookies() after reinstall = %v, %v, want 1 flow for cookie 1 and 2 for cookie 2", got, err)
	}

	// OVSDB shows nothing of the restart (persistent taps): this is why
	// WatchSwitch exists. Logged, not asserted: it is OVS's business.
	for _, e := range ev.drain(time.Second) {
		t.Logf("OVSDB event after ovs-vswitchd restart: %v", e)
	}
	if ifc, _ := d.Interface("kg0"); ifc.IfIndex != kg0.Iface.IfIndex || ifc.OFPort != kg0.Iface.OFPort {
		t.Logf("kg0 changed across the restart: ifindex %d -> %d, ofport %d -> %d", kg0.Iface.IfIndex, ifc.IfIndex, kg0.Iface.OFPort, ifc.OFPort)
	}

	cancel()
	for range sw {
	}
}

// pid returns the process id of an OVS daemon from its pidfile.
func (l *ovsLab) pid(name string) int {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, name+".pid"))
	if err != nil {
		l.t.Fatalf("read %s pid: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		l.t.Fatalf("bad %s pid %q", name, b)
	}
	return pid
}

func TestIntegrationOVSDBHung(t *testing.T) {
	l := startOVS(t)
	oldEvery, oldTimeout := probeInterval, probeTimeout
	probeInterval, probeTimeout = 300*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { probeInterval, probeTimeout = oldEvery, oldTimeout })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := Dial(ctx, l.dbSock(), nil)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", l.dbSock(), err)
	}
	defer d.Close()
	ev := &eventLog{ch: d.Events()}
	ev.waitFor(t, "Added br0", named("br0", Added))

	// A stopped server keeps the socket open: only the echo probe can
	// tell it is gone.
	pid := l.pid("ovsdb-server")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	stopped := time.Now()
	// A write sent to the silent server fails once the probe gives up,
	// not when its (long) context expires.
	if err := d.SetExternalIDs(ctx, "br0", map[string]string{"a": "b"}, nil); !errors.Is(err, ErrNotConnected) {
		t.Errorf("got SetExternalIDs to a stopped server = %v, want ErrNotConnected", err)
	}
	if took := time.Since(stopped); took > 3*time.Second {
		t.Errorf("SetExternalIDs to a stopped server took %v to fail, want within 3s", took)
	}
	ev.waitFor(t, "Disconnected", kind(Disconnected))
	if took := time.Since(stopped); took > 3*time.Second {
		t.Errorf("Disconnected came %v after ovsdb-server stopped, want within 3s", took)
	}
	if _, ok := d.Interface("br0"); !ok {
		t.Errorf("got Interface(br0) ok = false while disconnected, want the last known row")
	}
	for _, e := range ev.drain(time.Second) {
		t.Errorf("got event %v while the server is still stopped, want none", e)
	}
	if d.isConnected() {
		t.Errorf("got Connected() = true while the server is stopped, want false")
	}
	resume()
	ev.waitFor(t, "Reconnected", kind(Reconnected))
	l.vsctl("add-port", "br0", "p1", "--", "set", "Interface", "p1", "type=internal")
	ev.waitFor(t, "Added p1", named("p1", Added))
}
