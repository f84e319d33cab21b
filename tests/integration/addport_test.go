package integration

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// exitCode returns the exit status inside err from lab.Run, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// TestAddPort binds the guest's port on a running daemon that was not told
// about it in its configuration, after the port arrived on the foreign host,
// and checks that the CLI refuses bad input with one line and exit status 2.
func TestAddPort(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	startDaemons(t, ctx, e, false)
	hoa := lab.HoA.String()

	refused := func(name, want string, args ...string) {
		t.Helper()
		out, err := e.Kgswitch(ctx, "hostB", args...)
		if code := exitCode(err); code != 2 {
			t.Errorf("%s: got exit status %d (%v), want 2", name, code, err)
		}
		if !strings.Contains(out, want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("%s: got output %q, want one line containing %q", name, out, want)
		}
	}
	refused("port not on this host", "no such interface on the bridge: vnet3", "add-port", "vnet3", "--hoa", hoa)
	refused("bad address", "not a global IPv6 address", "add-port", "vnet3", "--hoa", "2001:db8:2000::zz")

	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatal(err)
	}
	refused("outside every home network", "no home_network contains it", "add-port", "vnet3", "--hoa", "2001:db8:7777::10")
	if st, err := e.Status(ctx, "hostB", lab.GuestPort); err == nil {
		t.Fatalf("hostB knows %s before add-port: %+v", lab.GuestPort, st)
	}
	// The guest's announcements went by before the port was bound: it runs
	// here already, which --activate says.
	out, err := e.Kgswitch(ctx, "hostB", "add-port", lab.GuestPort, "--hoa", hoa, "--mac", lab.GuestMAC.String(), "--activate")
	if err != nil {
		t.Fatalf("add-port: %v", err)
	}
	if !strings.Contains(out, "vnet3 bound to "+hoa) {
		t.Errorf("got add-port output %q", out)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 40*time.Second); err != nil {
		t.Fatalf("after add-port: %v", err)
	}
	st, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		t.Fatal(err)
	}
	if st.FromTunnelPackets == 0 || st.ToTunnelPackets == 0 || st.NDAnswered == 0 {
		t.Errorf("got counters %+v, want packets both ways through the tunnel and answered NSes", st)
	}
	// Binding the same port the same way again changes nothing.
	if _, err := e.Kgswitch(ctx, "hostB", "add-port", lab.GuestPort, "--hoa", hoa, "--mac", lab.GuestMAC.String()); err != nil {
		t.Errorf("repeated add-port: %v", err)
	}
}
