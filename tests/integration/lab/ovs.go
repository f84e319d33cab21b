package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// OVSHost is one simulated hypervisor's Open vSwitch: an ovsdb-server and an
// ovs-vswitchd running inside the host's namespace, with every socket, pid
// file and log in RunDir.
type OVSHost struct {
	// Host is the node name, one of Hosts.
	Host string
	// NS is the host's network namespace.
	NS string
	// RunDir is the absolute directory holding conf.db, db.sock, the daemons'
	// pid files, control sockets and logs, and the bridge's management socket.
	RunDir string
	// DBSock is the OVSDB remote, "unix:RunDir/db.sock", as ovs-vsctl
	// --db and libovsdb expect it.
	DBSock string
	// Bridge is the bridge's name, "br0" (datapath_type=netdev): the
	// guests' ports are on it.
	Bridge string
	// UplinkBridge is, in LayoutPatch, the bridge of the uplink and the
	// host's address, "br-ex"; "" when the uplink is on Bridge.
	UplinkBridge string
	// CareOfNIC is, in LayoutNIC, the host's NIC outside OVS holding its
	// address (HostNIC); "" otherwise.
	CareOfNIC string

	lab *Lab
}

// ovsDaemons are the daemons each host runs, in start order.
var ovsDaemons = []string{"ovsdb-server", "ovs-vswitchd"}

// ovsTimeout bounds each ovs-vsctl and ovs-ofctl call.
const ovsTimeout = "--timeout=10"

// MgmtSocket returns the path of br0's OpenFlow management socket.
func (h *OVSHost) MgmtSocket() string { return filepath.Join(h.RunDir, h.Bridge+".mgmt") }

// Vsctl runs `ovs-vsctl --db=DBSock args...` and returns its output.
func (h *OVSHost) Vsctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, h.lab.tools.vsctl, append([]string{"--db=" + h.DBSock, ovsTimeout}, args...)...)
	cmd.Env = h.env()
	return run(cmd, h.Host)
}

// Ofctl runs ovs-ofctl against br0 through its management socket. args are
// the ovs-ofctl options and command with the switch argument left out: it is
// inserted after the command, so Ofctl(ctx, "-O", "OpenFlow13", "dump-flows")
// runs `ovs-ofctl -O OpenFlow13 dump-flows unix:RunDir/br0.mgmt`. Options
// must come first; long ones in --name=value form.
func (h *OVSHost) Ofctl(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{ovsTimeout}, ofctlArgs(args, "unix:"+h.MgmtSocket())...)
	cmd := exec.CommandContext(ctx, h.lab.tools.ofctl, argv...)
	cmd.Env = h.env()
	return run(cmd, h.Host)
}

// Appctl runs `ovs-appctl -t RunDir/ovs-vswitchd.ctl args...`, for example
// "fdb/show br0" or "dpctl/dump-flows".
func (h *OVSHost) Appctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, h.lab.tools.appctl,
		append([]string{"-t", filepath.Join(h.RunDir, "ovs-vswitchd.ctl"), ovsTimeout}, args...)...)
	cmd.Env = h.env()
	return run(cmd, h.Host)
}

// DaemonPIDs returns the pids of the host's ovsdb-server and ovs-vswitchd,
// keyed by program name, as read from their pid files.
func (h *OVSHost) DaemonPIDs() (map[string]int, error) {
	pids := make(map[string]int)
	for _, d := range ovsDaemons {
		pid, err := readPidfile(filepath.Join(h.RunDir, d+".pid"))
		if err != nil {
			return nil, err
		}
		pids[d] = pid
	}
	return pids, nil
}

// ofctlArgs inserts target as the switch argument after the ovs-ofctl command
// in args, skipping leading options and the values of the short options that
// take one.
func ofctlArgs(args []string, target string) []string {
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") {
		switch args[i] {
		case "-O", "-F", "-P", "-t":
			i++ // its value
		}
		i++
	}
	if i >= len(args) {
		return append(append([]string{}, args...), target)
	}
	out := make([]string, 0, len(args)+1)
	out = append(out, args[:i+1]...)
	out = append(out, target)
	return append(out, args[i+1:]...)
}

// env points the OVS tools' defaults (run, log and database dirs) at RunDir,
// so nothing of the system OVS is used; ovs-vswitchd puts the bridges'
// management sockets in OVS_RUNDIR.
func (h *OVSHost) env() []string {
	return append(os.Environ(),
		"OVS_RUNDIR="+h.RunDir,
		"OVS_LOGDIR="+h.RunDir,
		"OVS_DBDIR="+h.RunDir,
	)
}

// startDB creates the host's database and starts ovsdb-server in the host's
// namespace. It needs no link, so New runs it while it still wires them.
func (h *OVSHost) startDB(ctx context.Context) error {
	l := h.lab
	if err := os.MkdirAll(h.RunDir, 0o755); err != nil {
		return err
	}
	db := filepath.Join(h.RunDir, "conf.db")
	tool := exec.CommandContext(ctx, l.tools.ovsdbTool, "create", db, l.tools.schema)
	tool.Env = h.env()
	if _, err := run(tool, h.Host); err != nil {
		return err
	}
	// --detach returns once the daemon is ready to serve, so no polling is
	// needed afterwards.
	server := l.Command(ctx, h.Host, append([]string{l.tools.ovsdbServer, db,
		"--remote=punix:" + filepath.Join(h.RunDir, "db.sock")}, h.daemonArgs("ovsdb-server")...)...)
	server.Env = h.env()
	if _, err := run(server, h.Host); err != nil {
		return h.withLog(err, "ovsdb-server")
	}
	return nil
}

// daemonArgs are the options both OVS daemons get: every file in RunDir,
// and detach once ready.
func (h *OVSHost) daemonArgs(name string) []string {
	return []string{
		"--pidfile=" + filepath.Join(h.RunDir, name+".pid"),
		"--unixctl=" + filepath.Join(h.RunDir, name+".ctl"),
		"--log-file=" + filepath.Join(h.RunDir, name+".log"),
		"-vconsole:warn",
		"--detach",
	}
}

// startSwitch writes br0 (userspace datapath) with ports into the database
// started by startDB, then starts ovs-vswitchd in the host's namespace.
// Every port's netdev must exist in that namespace. Writing the
// configuration before ovs-vswitchd runs saves a reconfiguration round per
// command: ovs-vswitchd applies it all at start-up, and --detach returns
// only once it has.
func (h *OVSHost) startSwitch(ctx context.Context, ports []string) error {
	l := h.lab
	if _, err := h.Vsctl(ctx, h.switchArgs(ports)...); err != nil {
		return err
	}
	vswitchd := l.Command(ctx, h.Host, append([]string{l.tools.vswitchd, h.DBSock},
		h.daemonArgs("ovs-vswitchd")...)...)
	vswitchd.Env = h.env()
	if _, err := run(vswitchd, h.Host); err != nil {
		return h.withLog(err, "ovs-vswitchd")
	}
	// The LOCAL ports' taps must now exist in the host's namespace, and
	// every port must have its OpenFlow port number.
	for _, br := range []string{h.Bridge, h.HostBridge()} {
		if err := l.ipn(ctx, h.Host, "link", "show", br); err != nil {
			return h.withLog(fmt.Errorf("bridge tap missing: %w", err), "ovs-vswitchd")
		}
	}
	ports = h.numberedPorts(ports)
	if len(ports) > 0 {
		var get []string
		for _, p := range ports {
			get = append(get, "--", "get", "interface", p, "ofport")
		}
		out, err := h.Vsctl(ctx, get[1:]...)
		if err != nil {
			return err
		}
		ofports := strings.Fields(out)
		for i, p := range ports {
			if n, err := strconv.Atoi(ofports[min(i, len(ofports)-1)]); len(ofports) != len(ports) || err != nil || n <= 0 {
				return h.withLog(fmt.Errorf("port %s: got ofports %q for %v", p, out, ports), "ovs-vswitchd")
			}
		}
	}
	l.logf("lab %s: %s: OVS up, %s datapath_type=netdev, uplink bridge %q, ports %v, run dir %s", l.ID, h.Host, h.Bridge, h.UplinkBridge, ports, h.RunDir)
	return nil
}

// withLog appends the tail of daemon's log to err: the daemons say why they
// fail only there.
func (h *OVSHost) withLog(err error, daemon string) error {
	b, rerr := os.ReadFile(filepath.Join(h.RunDir, daemon+".log"))
	if rerr != nil || len(b) == 0 {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return fmt.Errorf("%w\n%s log tail:\n%s", err, daemon, strings.Join(lines, "\n"))
}

// stop ends both daemons by their pid files, ovs-vswitchd first.
func (h *OVSHost) stop() error {
	var errs []error
	for i := len(ovsDaemons) - 1; i >= 0; i-- {
		if err := killPidfile(filepath.Join(h.RunDir, ovsDaemons[i]+".pid"), h.RunDir); err != nil {
			errs = append(errs, fmt.Errorf("%s: stop %s: %w", h.Host, ovsDaemons[i], err))
		}
	}
	return errors.Join(errs...)
}

func readPidfile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad pid file %s: %q", path, b)
	}
	return pid, nil
}

// killPidfile ends the process named in the pid file at path, provided its
// command line mentions mark (the lab dir): a stale pid file must not make us
// kill an unrelated process that reuses the pid. A missing pid file means the
// daemon never started.
func killPidfile(path, mark string) error {
	pid, err := readPidfile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !processMentions(pid, mark) {
		return nil
	}
	return killAndWait(pid)
}

// killAndWait sends SIGTERM, then SIGKILL after a grace period, and waits
// until pid is gone or a zombie (the daemons detached, so their parent is
// init, which reaps them).
func killAndWait(pid int) error {
	pids := []int{pid}
	signalAll(pids, syscall.SIGTERM)
	if waitGone(pids, 3*time.Second) {
		return nil
	}
	signalAll(pids, syscall.SIGKILL)
	if waitGone(pids, 3*time.Second) {
		return nil
	}
	return fmt.Errorf("pid %d survives SIGKILL", pid)
}
