package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// The second port the tests put on hostB's bridge: a tap like a VM's that no
// configuration names, and a MAC and home address for it that nobody uses.
const (
	sparePort = "vnet9"
	spareMAC  = "52:54:00:00:00:29"
	spareHoA  = "2001:db8:2000::29"
)

// addSparePort puts sparePort on host's bridge, as a hypervisor does with a
// new VM's tap (an internal port is a tap under the userspace datapath). It
// carries no attached-mac: what kgswitch knows of its VM comes from the CLI
// or from the test's external_ids.
func addSparePort(t *testing.T, ctx context.Context, e *scenario.Env, host string) {
	t.Helper()
	ovs := e.Lab.OVS(host)
	if _, err := ovs.Vsctl(ctx, "add-port", ovs.Bridge, sparePort, "--", "set", "Interface", sparePort, "type=internal"); err != nil {
		t.Fatal(err)
	}
	err := wait.Until(ctx, 5*time.Second, 20*time.Millisecond, func() error {
		out, err := ovs.Vsctl(ctx, "get", "Interface", sparePort, "ofport")
		if err != nil || strings.TrimSpace(out) == "[]" || strings.HasPrefix(strings.TrimSpace(out), "-") {
			return fmt.Errorf("%s has no OpenFlow port number yet (%q, %v)", sparePort, out, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// refusedCLI runs a kgswitch command on host and fails the test unless it
// exits with status code and prints one line containing want. It returns
// that line.
func refusedCLI(t *testing.T, ctx context.Context, e *scenario.Env, host string, code int, want string, args ...string) string {
	t.Helper()
	out, err := e.Kgswitch(ctx, host, args...)
	out = strings.TrimSpace(out)
	if got := exitCode(err); got != code {
		t.Errorf("kgswitch %s: got exit status %d (%v), want %d", strings.Join(args, " "), got, err, code)
	}
	if !strings.Contains(out, want) || strings.Contains(out, "\n") {
		t.Errorf("kgswitch %s: got output %q, want one line containing %q", strings.Join(args, " "), out, want)
	}
	t.Logf("%s: kgswitch %s: exit %d: %s", host, strings.Join(args, " "), exitCode(err), out)
	return out
}

// lists reports whether kgswitch on host lists port or home address hoa.
func lists(t *testing.T, ctx context.Context, e *scenario.Env, host, port, hoa string) bool {
	t.Helper()
	all, err := e.StatusAll(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		if p.Port == port || p.HomeAddress == hoa {
			return true
		}
	}
	return false
}

// flowsNaming returns kgswitch's flows on host that name port or mac.
func flowsNaming(t *testing.T, ctx context.Context, e *scenario.Env, host, port, mac string) []scenario.Flow {
	t.Helper()
	fl, err := e.KgswitchFlows(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	var out []scenario.Flow
	for _, f := range fl {
		if s := f.String(); strings.Contains(s, port) || strings.Contains(s, mac) {
			out = append(out, f)
		}
	}
	return out
}

// keepsTraffic stops each stream once it has carried enough probes to tell,
// and fails the test if it lost more than noise.
func keepsTraffic(t *testing.T, ctx context.Context, streams map[string]*scenario.PingStream) {
	t.Helper()
	for name, s := range streams {
		// A stream that stopped carrying does not get there: Stop counts
		// what it lost.
		_ = s.WaitSent(ctx, 20, 3*time.Second)
		r := s.Stop()
		// One probe in flight while another lab loads the machine may be
		// late enough to count as lost; a binding that broke loses dozens.
		if r.Lost > 1 || r.Sent < 20 {
			t.Errorf("%s: %d of %d probes lost (longest gap %v), want at most 1 lost of at least 20", name, r.Lost, r.Sent, r.LongestGap)
		} else {
			t.Logf("%s: %d/%d probes answered, longest gap %v", name, r.Received, r.Sent, r.LongestGap.Round(time.Millisecond))
		}
	}
}

// TestDeclarationsRefused: with the guest running on the foreign host and its
// traffic flowing through the tunnel, an operator (or a script acting for
// one) tries to bind, on that host, someone else's address or one of
// kgswitch's own ports as a VM, with the CLI and with external_ids. Each
// attempt is refused with a message that says why, nothing of it stays, and
// the guest, its Home Agent and its router keep their traffic.
func TestDeclarationsRefused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, true)
	hoa := lab.HoA.String()
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	addSparePort(t, ctx, e, "hostB")
	addSparePort(t, ctx, e, "hostA")

	// The guest through the tunnel, the Home Agent on the home link, and the
	// home router from the guest (guest → kgswitch → tunnel → Home Agent →
	// router): the addresses the attempts below would steal.
	streams := map[string]*scenario.PingStream{}
	for _, s := range []struct{ node, dst string }{
		{"cn", hoa}, {"cn", lab.HAAddr.String()}, {"vm", lab.RouterHomeAddr.String()},
	} {
		p, err := e.StartPingStream(ctx, s.node, s.dst, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		streams[s.node+" → "+s.dst] = p
		if err := p.WaitReplies(ctx, time.Time{}, 3, 10*time.Second); err != nil {
			t.Fatalf("%s → %s before any attempt: %v", s.node, s.dst, err)
		}
	}
	flowsBefore, err := e.KgswitchFlows(ctx, "hostB")
	if err != nil {
		t.Fatal(err)
	}

	addPort := func(port, addr string, extra ...string) []string {
		return append([]string{"add-port", port, "--hoa", addr, "--mac", spareMAC}, extra...)
	}
	// On the guest's home host too, where the home network's addresses are
	// on the same link as the VMs.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"the Home Agent's address", addPort(sparePort, lab.HAAddr.String()), "home_address 2001:db8:2000::1 is the Home Agent's address"},
		{"the router's address", addPort(sparePort, lab.RouterHomeAddr.String()), "home_address 2001:db8:2000::fffe is an address of the home router"},
		{"the Subnet-Router anycast address", addPort(sparePort, "2001:db8:2000::"), "is the Subnet-Router anycast address of 2001:db8:2000::/64"},
		{"an RFC 2526 anycast address", addPort(sparePort, "2001:db8:2000:0:fdff:ffff:ffff:ff80"), "is a reserved subnet anycast address (RFC 2526)"},
		{"a /0 home prefix", addPort(sparePort, "2001:db8:7777::10", "--home-agent", "2001:db8:7777::1", "--home-prefix", "::/0", "--router", "fe80::1"),
			"home prefix ::/0: want a length from /16 to /126"},
		{"a /127 home prefix", addPort(sparePort, "2001:db8:7777::1", "--home-agent", "2001:db8:7777::", "--home-prefix", "2001:db8:7777::/127", "--router", "fe80::1"),
			"want a length from /16 to /126"},
		{"the bridge's own port", addPort(lab.Bridge, spareHoA), "port br0: the bridge's own (LOCAL) port is never a VM"},
		{"the uplink", addPort(lab.Uplink, spareHoA), "port eth0: the uplink is never a VM"},
		{"the internal port", addPort("kgs0", spareHoA), "port kgs0: kgswitch's internal port is never a VM"},
		{"the guest's home address on another port", addPort(sparePort, hoa), "home_address " + hoa + ": already used by port vnet3"},
	} {
		for _, host := range []string{"hostB", "hostA"} {
			if host == "hostA" && tc.args[1] == "kgs0" {
				// Only a foreign host has an internal port: the home
				// host has no VM to tunnel for.
				continue
			}
			refusedCLI(t, ctx, e, host, 2, tc.want, tc.args...)
			for _, port := range []string{sparePort, lab.Bridge, lab.Uplink, "kgs0"} {
				if lists(t, ctx, e, host, port, "") {
					t.Errorf("%s on %s: kgswitch lists %s after the refusal", tc.name, host, port)
				}
			}
		}
	}
	if st, err := e.Status(ctx, "hostB", lab.GuestPort); err != nil || st.BindingState != "bound" || st.HomeAddress != hoa {
		t.Errorf("the guest after the refused add-ports: %+v (%v), want bound at %s", st, err, hoa)
	}

	// The same theft through OVSDB: kgswitch says in external_ids why it
	// will not serve the declaration.
	ovsB := e.Lab.OVS("hostB")
	for _, tc := range []struct{ addr, reason string }{
		{lab.HAAddr.String(), "is the Home Agent's address"},
		{lab.RouterHomeAddr.String(), "is an address of the home router"},
	} {
		if _, err := ovsB.Vsctl(ctx, "set", "Interface", sparePort, "external_ids:kagemusha-home-address="+tc.addr,
			"external_ids:kagemusha-mac="+spareMAC); err != nil {
			t.Fatal(err)
		}
		if err := e.WaitExternalID(ctx, "hostB", sparePort, "kagemusha-state", "error", 5*time.Second); err != nil {
			t.Error(err)
		}
		if r, err := e.ExternalID(ctx, "hostB", sparePort, "kagemusha-reason"); err != nil || !strings.Contains(r, tc.reason) {
			t.Errorf("declaring %s: got kagemusha-reason %q (%v), want it to contain %q", tc.addr, r, err, tc.reason)
		}
		if lists(t, ctx, e, "hostB", sparePort, tc.addr) {
			t.Errorf("declaring %s: kgswitch lists it", tc.addr)
		}
		if _, err := ovsB.Vsctl(ctx, "remove", "Interface", sparePort, "external_ids", "kagemusha-home-address", "kagemusha-mac",
			"kagemusha-state", "kagemusha-reason"); err != nil {
			t.Fatal(err)
		}
	}

	// A port without a MAC cannot be served on a foreign host: add-port
	// fails, and fails the same way when repeated, instead of finding a
	// half-made binding and reporting success.
	var first string
	for try := range 2 {
		out, err := e.Kgswitch(ctx, "hostB", "add-port", sparePort, "--hoa", spareHoA)
		out = strings.TrimSpace(out)
		if err == nil || !strings.Contains(out, "no MAC for "+sparePort) {
			t.Errorf("add-port without a MAC, try %d: got %q (%v), want a failure naming the missing MAC", try+1, out, err)
		}
		if try == 0 {
			first = out
			t.Logf("add-port without a MAC: exit %d: %s", exitCode(err), out)
		} else if out != first {
			t.Errorf("repeated add-port without a MAC: got %q, want the first try's %q", out, first)
		}
		if lists(t, ctx, e, "hostB", sparePort, spareHoA) {
			t.Errorf("after the failed add-port, try %d: kgswitch lists %s", try+1, sparePort)
		}
	}

	// Nothing of any attempt reached OVS.
	flowsAfter, err := e.KgswitchFlows(ctx, "hostB")
	if err != nil {
		t.Fatal(err)
	}
	if d := czDiff(czFlowStrings(flowsBefore), czFlowStrings(flowsAfter)); d != "" {
		t.Errorf("kgswitch's flows changed across the refused attempts (- before, + after):\n%s", d)
	}
	keepsTraffic(t, ctx, streams)

	// Only root and the socket's group may drive the daemon.
	for _, host := range []string{"hostA", "hostB"} {
		fi, err := os.Stat(e.ControlSocket(host))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
			t.Errorf("%s's control socket: got mode %v, want a socket with 0660", host, fi.Mode())
		}
	}
}

// TestDelPort: del-port unbinds what add-port bound, flows included, and
// refuses ports bound elsewhere; with a state_dir an add-port binding
// outlives a crash of kgswitch, and a del-port outlives a restart.
func TestDelPort(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCzEnv(t, ctx, false, "")
	hoa := lab.HoA.String()
	mac := lab.GuestMAC.String()
	ports := filepath.Join(c.Lab.Dir, "hostB-state", "ports.json")

	// A port that another VM's add-port leaves alone: bound, then unbound,
	// its flows gone while the guest's stay.
	addSparePort(t, ctx, c.Env, "hostB")
	if _, err := c.Kgswitch(ctx, "hostB", "add-port", sparePort, "--hoa", spareHoA, "--mac", spareMAC); err != nil {
		t.Fatalf("add-port %s: %v", sparePort, err)
	}
	if !lists(t, ctx, c.Env, "hostB", sparePort, spareHoA) {
		t.Fatalf("status does not list %s after add-port", sparePort)
	}
	if fl := flowsNaming(t, ctx, c.Env, "hostB", sparePort, spareMAC); len(fl) == 0 {
		t.Errorf("no flow for %s after add-port", sparePort)
	}

	// The guest moves here; add-port binds it, and its traffic flows.
	if err := c.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	if err := c.Lab.WaitAnnounced(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kgswitch(ctx, "hostB", "add-port", lab.GuestPort, "--hoa", hoa, "--mac", mac, "--activate"); err != nil {
		t.Fatalf("add-port %s: %v", lab.GuestPort, err)
	}
	if _, err := c.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitReachable(ctx, "cn", hoa, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	stream, err := c.StartPingStream(ctx, "cn", hoa, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.WaitReplies(ctx, time.Time{}, 3, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	if out, err := c.Kgswitch(ctx, "hostB", "del-port", sparePort); err != nil {
		t.Fatalf("del-port %s: %v", sparePort, err)
	} else if !strings.Contains(out, sparePort) {
		t.Errorf("del-port %s: got output %q, want it to name the port", sparePort, out)
	}
	if lists(t, ctx, c.Env, "hostB", sparePort, spareHoA) {
		t.Errorf("status lists %s after del-port", sparePort)
	}
	if fl := flowsNaming(t, ctx, c.Env, "hostB", sparePort, spareMAC); len(fl) > 0 {
		t.Errorf("flows for %s after del-port:\n%s", sparePort, czFlowList(fl))
	}
	if out := refusedCLI(t, ctx, c.Env, "hostB", 2, sparePort+" is not bound to a home address here", "del-port", sparePort); strings.Contains(out, "no such interface") {
		t.Errorf("del-port of a port on the bridge that is not bound: got %q, which says the port is not there", out)
	}
	if err := stream.WaitReplies(ctx, time.Now(), 5, 5*time.Second); err != nil {
		t.Errorf("the guest after del-port of another port: %v", err)
	}
	keepsTraffic(t, ctx, map[string]*scenario.PingStream{"cn → guest during del-port " + sparePort: stream})

	// Ports bound elsewhere are unbound where they were bound.
	refusedCLI(t, ctx, c.Env, "hostA", 2, "vnet3 is bound in the configuration file: remove it there and reload (SIGHUP)", "del-port", lab.GuestPort)
	if _, err := c.Lab.OVS("hostB").Vsctl(ctx, "set", "Interface", sparePort, "external_ids:kagemusha-home-address="+spareHoA,
		"external_ids:kagemusha-mac="+spareMAC); err != nil {
		t.Fatal(err)
	}
	err = wait.Until(ctx, 5*time.Second, 50*time.Millisecond, func() error {
		if !lists(t, ctx, c.Env, "hostB", sparePort, spareHoA) {
			return errors.New("the external_ids declaration is not served yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	refusedCLI(t, ctx, c.Env, "hostB", 2, "vnet9 is declared in its interface's external_ids: remove the kagemusha-home-address keys there", "del-port", sparePort)
	if !lists(t, ctx, c.Env, "hostB", sparePort, spareHoA) {
		t.Errorf("a refused del-port unbound %s", sparePort)
	}

	// A crash: the add-port binding is in the state directory, and the
	// restarted kgswitch serves the guest again.
	if b, err := os.ReadFile(ports); err != nil || !strings.Contains(string(b), hoa) || strings.Contains(string(b), spareHoA) {
		t.Errorf("%s: got %q (%v), want the guest's add-port binding only", ports, b, err)
	}
	if _, err := scenario.StopKgswitch(c.B, syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if c.B, err = c.RunKgswitch(ctx, "hostB", c.CfgB, "--log-level", "debug"); err != nil {
		t.Fatal(err)
	}
	st, err := c.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second)
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if st.HomeAddress != hoa {
		t.Errorf("after the restart: %s bound to %s, want %s", lab.GuestPort, st.HomeAddress, hoa)
	}
	if n, err := c.Ping(ctx, "cn", hoa, 5); err != nil || n < 4 {
		t.Errorf("after the restart: %d/5 pings answered (%v)", n, err)
	}
	restored, _ := c.waitLog(ctx, 0, 5*time.Second, "add-port binding restored")
	if !strings.Contains(restored, "add-port binding restored") {
		t.Errorf("hostB's log does not say the add-port binding was restored")
	}

	// del-port, then a clean restart: the binding stays gone.
	if _, err := c.Kgswitch(ctx, "hostB", "del-port", lab.GuestPort); err != nil {
		t.Fatalf("del-port %s: %v", lab.GuestPort, err)
	}
	if _, err := c.waitUnbound(ctx, 5*time.Second); err != nil {
		t.Errorf("after del-port: %v", err)
	}
	if b, err := os.ReadFile(ports); err != nil || strings.Contains(string(b), hoa) {
		t.Errorf("%s after del-port: got %q (%v), want no binding of %s", ports, b, err, hoa)
	}
	if _, err := scenario.StopKgswitch(c.B, syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if c.B, err = c.RunKgswitch(ctx, "hostB", c.CfgB, "--log-level", "debug"); err != nil {
		t.Fatal(err)
	}
	// The restart has read its state and synchronised its flows once the
	// external_ids VM, which it learns from OVSDB, is listed again.
	err = wait.Until(ctx, 5*time.Second, 50*time.Millisecond, func() error {
		if !lists(t, ctx, c.Env, "hostB", sparePort, spareHoA) {
			return errors.New("the external_ids declaration is not served yet after the restart")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if lists(t, ctx, c.Env, "hostB", lab.GuestPort, hoa) {
		t.Errorf("after del-port and a restart, kgswitch lists %s again", lab.GuestPort)
	}
	if fl := flowsNaming(t, ctx, c.Env, "hostB", lab.GuestPort, mac); len(fl) > 0 {
		t.Errorf("after del-port and a restart, flows for %s:\n%s", lab.GuestPort, czFlowList(fl))
	}
}
