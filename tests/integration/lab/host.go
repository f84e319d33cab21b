package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// tools holds the absolute paths of the programs the lab runs. They are
// resolved once, also in /usr/sbin and /sbin, because a non-login root shell
// (and CI) may lack those in PATH, and `ip netns exec` would search PATH
// again.
type tools struct {
	ip, sysctl, ethtool, busybox     string
	ovsdbTool, ovsdbServer, vswitchd string
	vsctl, ofctl, appctl             string
	schema                           string
}

// schemaPaths are where Debian (and upstream `make install`) put the OVS
// database schema.
var schemaPaths = []string{
	"/usr/share/openvswitch/vswitch.ovsschema",
	"/usr/local/share/openvswitch/vswitch.ovsschema",
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// findTools resolves every program the lab needs and reports all missing
// ones at once, with the Debian package that provides each.
func findTools() (tools, error) {
	var t tools
	var errs []error
	for _, x := range []struct {
		dst       *string
		name, pkg string
	}{
		{&t.ip, "ip", "iproute2"},
		{&t.sysctl, "sysctl", "procps"},
		{&t.ethtool, "ethtool", "ethtool"},
		// The home DHCPv4 server and the guests' client (dhcp4.go).
		{&t.busybox, "busybox", "busybox-static"},
		{&t.ovsdbTool, "ovsdb-tool", "openvswitch-common"},
		{&t.ovsdbServer, "ovsdb-server", "openvswitch-switch"},
		{&t.vswitchd, "ovs-vswitchd", "openvswitch-switch"},
		{&t.vsctl, "ovs-vsctl", "openvswitch-switch"},
		{&t.ofctl, "ovs-ofctl", "openvswitch-common"},
		{&t.appctl, "ovs-appctl", "openvswitch-common"},
	} {
		p, err := lookTool(x.name)
		if err != nil {
			errs = append(errs, errMissing(x.name, "Debian package "+x.pkg))
			continue
		}
		*x.dst = p
	}
	for _, p := range schemaPaths {
		if _, err := os.Stat(p); err == nil {
			t.schema = p
			break
		}
	}
	if t.schema == "" {
		errs = append(errs, errMissing("OVS schema vswitch.ovsschema", "Debian package openvswitch-common; looked in "+strings.Join(schemaPaths, ", ")))
	}
	return t, errors.Join(errs...)
}

// Preflight checks that this machine can run the lab: root, the programs it
// runs (ip, sysctl, ethtool, busybox, the OVS daemons and tools, and ping, which every
// user of the lab needs), the OVS schema, network namespaces and /dev/net/tun
// (the userspace datapath's internal ports are taps). The error names
// everything that is missing.
func Preflight() error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, fmt.Errorf("not root (euid %d): network namespaces and OVS need root", os.Geteuid()))
	}
	if _, err := findTools(); err != nil {
		errs = append(errs, err)
	}
	if _, err := lookTool("ping"); err != nil {
		errs = append(errs, errMissing("ping", "Debian package iputils-ping"))
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		errs = append(errs, fmt.Errorf("network namespaces unsupported: %w", err))
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		errs = append(errs, fmt.Errorf("/dev/net/tun unusable (OVS userspace datapath creates its internal ports as taps): %w", err))
	} else {
		f.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab preflight: %w", err)
	}
	return nil
}

// ProcessAlive reports whether pid exists and is not a zombie (a process
// that exited but was not reaped yet).
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// processMentions reports whether pid's command line contains s.
func processMentions(pid int, s string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte(s))
}

// killNetnsProcs kills every process inside netns name: SIGTERM to all, then
// SIGKILL to those left after a grace period.
func killNetnsProcs(ip, name string) {
	out, err := exec.Command(ip, "netns", "pids", name).Output()
	if err != nil {
		return
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return
	}
	signalAll(pids, syscall.SIGTERM)
	if waitGone(pids, 2*time.Second) {
		return
	}
	signalAll(pids, syscall.SIGKILL)
	waitGone(pids, 2*time.Second)
}

func signalAll(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
}

// waitGone waits up to d for every pid to be gone and reports whether they
// are.
func waitGone(pids []int, d time.Duration) bool {
	return wait.Until(context.Background(), d, 10*time.Millisecond, func() error {
		if anyAlive(pids) {
			return errors.New("still alive")
		}
		return nil
	}) == nil
}

func anyAlive(pids []int) bool {
	for _, pid := range pids {
		if ProcessAlive(pid) {
			return true
		}
	}
	return false
}

// labName matches the names of everything a lab creates: netns ID-node and
// temp dirs ID-random.
var labName = regexp.MustCompile(`^kg([0-9]+)x[0-9]+-`)

// ownerPID returns the pid of the process that created the lab object
// called name, or false if name is not a lab name.
func ownerPID(name string) (int, bool) {
	m := labName.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// netnsRunDir is where `ip netns add` mounts named namespaces.
const netnsRunDir = "/run/netns"

// CleanupStale removes what labs of dead processes left behind: it kills the
// OVS daemons named in pid files under their temp dirs and any process still
// inside their namespaces, deletes the namespaces and removes the dirs. Labs
// whose creating process is still alive (this one's included) are left
// alone. logf may be nil.
func CleanupStale(logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	ip, err := lookTool("ip")
	if err != nil {
		return fmt.Errorf("lab: cleanup: %w", err)
	}
	stale := func(name string) bool {
		pid, ok := ownerPID(name)
		return ok && pid != os.Getpid() && !ProcessAlive(pid)
	}
	var errs []error

	// Daemons first: they keep their namespace alive.
	bases := []string{os.TempDir()}
	if bases[0] != "/tmp" {
		bases = append(bases, "/tmp")
	}
	var dirs []string
	for _, base := range bases {
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if e.IsDir() && stale(e.Name()) {
				dirs = append(dirs, filepath.Join(base, e.Name()))
			}
		}
	}
	for _, dir := range dirs {
		pidfiles, _ := filepath.Glob(filepath.Join(dir, "*", "*.pid"))
		for _, pf := range pidfiles {
			if err := killPidfile(pf, dir); err != nil {
				errs = append(errs, err)
			}
		}
	}

	ents, err := os.ReadDir(netnsRunDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if !stale(e.Name()) {
			continue
		}
		killNetnsProcs(ip, e.Name())
		if out, err := exec.Command(ip, "netns", "del", e.Name()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", e.Name(), err, bytes.TrimSpace(out)))
			continue
		}
		logf("lab: removed stale netns %s", e.Name())
	}
	for _, dir := range dirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		logf("lab: removed stale dir %s", dir)
	}
	return errors.Join(errs...)
}
