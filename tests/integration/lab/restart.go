package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// Daemon names an OVS daemon of a host, as KillDaemon and StartDaemon take it.
const (
	OVSDBServer = "ovsdb-server"
	OVSVswitchd = "ovs-vswitchd"
)

// KillDaemon ends the host's daemon (OVSDBServer or OVSVswitchd) with sig, as
// a crash (SIGKILL) or an operator's stop (SIGTERM) would, and waits until it
// is gone. Its database, pid file and sockets stay in RunDir, so StartDaemon
// can bring it back as an init script's restart does.
func (h *OVSHost) KillDaemon(daemon string, sig syscall.Signal) error {
	if daemon != OVSDBServer && daemon != OVSVswitchd {
		return fmt.Errorf("lab: %s: no OVS daemon %q", h.Host, daemon)
	}
	path := filepath.Join(h.RunDir, daemon+".pid")
	pid, err := readPidfile(path)
	if err != nil {
		return fmt.Errorf("lab: %s: kill %s: %w", h.Host, daemon, err)
	}
	// Never signal a process that merely reuses a stale pid.
	if !processMentions(pid, h.RunDir) || !ProcessAlive(pid) {
		return fmt.Errorf("lab: %s: kill %s: pid %d from %s is not running", h.Host, daemon, pid, path)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("lab: %s: kill %s (pid %d): %w", h.Host, daemon, pid, err)
	}
	if !waitGone([]int{pid}, 5*time.Second) {
		return fmt.Errorf("lab: %s: %s (pid %d) survives %v for 5s", h.Host, daemon, pid, sig)
	}
	h.lab.logf("lab %s: %s: %s (pid %d) ended by %v", h.lab.ID, h.Host, daemon, pid, sig)
	return nil
}

// StartDaemon starts the host's daemon (OVSDBServer or OVSVswitchd) again
// after KillDaemon, on the same database, sockets and run dir, with the
// options New gave it. It returns once the daemon serves (--detach): for
// ovs-vswitchd, once it has applied the database, br0's tap exists and every
// port of the bridge has its OpenFlow port number again.
func (h *OVSHost) StartDaemon(ctx context.Context, daemon string) error {
	l := h.lab
	var argv []string
	switch daemon {
	case OVSDBServer:
		argv = append([]string{l.tools.ovsdbServer, filepath.Join(h.RunDir, "conf.db"),
			"--remote=punix:" + filepath.Join(h.RunDir, "db.sock")}, h.daemonArgs(daemon)...)
	case OVSVswitchd:
		argv = append([]string{l.tools.vswitchd, h.DBSock}, h.daemonArgs(daemon)...)
	default:
		return fmt.Errorf("lab: %s: no OVS daemon %q", h.Host, daemon)
	}
	cmd := l.Command(ctx, h.Host, argv...)
	cmd.Env = h.env()
	if _, err := run(cmd, h.Host); err != nil {
		return h.withLog(err, daemon)
	}
	l.logf("lab %s: %s: %s started again", l.ID, h.Host, daemon)
	if daemon == OVSVswitchd {
		return h.waitPorts(ctx)
	}
	return nil
}

// waitPorts waits until br0's tap is in the host's namespace and every
// Interface of the database has an OpenFlow port number.
func (h *OVSHost) waitPorts(ctx context.Context) error {
	err := wait.Until(ctx, 5*time.Second, 20*time.Millisecond, func() error {
		for _, br := range []string{h.Bridge, h.HostBridge()} {
			if err := h.lab.ipn(ctx, h.Host, "link", "show", br); err != nil {
				return err
			}
		}
		out, err := h.Vsctl(ctx, "--bare", "--columns=name,ofport", "list", "Interface")
		if err != nil {
			return err
		}
		return unnumbered(out)
	})
	if err != nil {
		return h.withLog(fmt.Errorf("lab: %s: ports not back after ovs-vswitchd restart: %w", h.Host, err), OVSVswitchd)
	}
	return nil
}

// unnumbered checks `ovs-vsctl --bare --columns=name,ofport list Interface`
// output (name and ofport on consecutive lines, records separated by blank
// lines) for an interface without a positive ofport.
func unnumbered(out string) error {
	var bad []string
	for _, rec := range strings.Split(strings.TrimSpace(out), "\n\n") {
		f := strings.Fields(rec)
		if len(f) != 2 || f[1] == "-1" || f[1] == "0" || f[1] == "[]" {
			bad = append(bad, strings.Join(f, " "))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("interfaces without an OpenFlow port: %v", bad)
	}
	return nil
}

// RestoreHostIP gives br0 the host's address again when it lost it (an
// ovs-vswitchd that recreates its taps at restart drops the addresses the
// host had on them, as the host's network configuration would restore them),
// and brings br0 up. It reports whether anything had to be restored.
func (h *OVSHost) RestoreHostIP(ctx context.Context) (bool, error) {
	if h.CareOfNIC != "" {
		// In no bridge: ovs-vswitchd never touches it.
		return false, nil
	}
	l := h.lab
	br := h.HostBridge()
	out, err := run(l.Command(ctx, h.Host, l.tools.ip, "-o", "-6", "addr", "show", "dev", br, "scope", "global"), h.Host)
	if err != nil {
		return false, err
	}
	up, err := run(l.Command(ctx, h.Host, l.tools.ip, "-o", "link", "show", br), h.Host)
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(out) != "" && strings.Contains(up, ",UP") {
		return false, nil
	}
	if err := l.ipn(ctx, h.Host, "link", "set", br, "up"); err != nil {
		return true, err
	}
	if strings.TrimSpace(out) != "" {
		return true, nil
	}
	var errs []error
	for _, args := range l.topo.ipConfig[h.Host] {
		// Routes via the bridge went with the address; "replace" and
		// "add" of what survived fail harmlessly.
		if err := l.ipn(ctx, h.Host, args...); err != nil && !strings.Contains(err.Error(), "File exists") {
			errs = append(errs, err)
		}
	}
	return true, errors.Join(errs...)
}

// DaemonLog returns the log of the host's daemon (OVSDBServer or
// OVSVswitchd) so far.
func (h *OVSHost) DaemonLog(daemon string) (string, error) {
	b, err := os.ReadFile(filepath.Join(h.RunDir, daemon+".log"))
	return string(b), err
}
