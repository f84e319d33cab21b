package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// Options configures one libvirtd on a lab host.
type Options struct {
	// Lab and Host say where the daemon runs: in Host's network namespace,
	// with Host's Open vSwitch as the one libvirt plugs taps into.
	Lab  *lab.Lab
	Host string
	// Dir holds the daemon's private /run, /etc/libvirt, /var/lib/libvirt,
	// /var/log/libvirt and /var/cache/libvirt; Lab.Dir/libvirt-HOST when
	// empty. Unix socket paths under it must stay under 108 bytes.
	Dir string
	// Hook, when not empty, is the path of a script installed as the
	// daemon's qemu hook (/etc/libvirt/hooks/qemu as the daemon sees it).
	Hook string
	// ControlSocket, when not empty, is kgswitch's control socket on this
	// host: the daemon sees it at kgswitch's default path,
	// /run/kgswitch/kgswitch.sock, so that a hook's `kgswitch activate`
	// reaches it as it would on a real host.
	ControlSocket string
	// Path is prepended to the daemon's PATH, which its hooks inherit: the
	// directory of the kgswitch binary the hook runs.
	Path string
	// Logf, when not nil, receives a line for each step.
	Logf func(format string, args ...any)
}

// Daemon is one libvirtd (Debian's, system mode) running in a lab host's
// network namespace with directories of its own.
//
// A libvirtd run as root uses fixed paths (/run/libvirt, /etc/libvirt,
// /var/lib/libvirt, ...): only libvirtd.conf can be named on its command
// line, and qemu.conf, the hooks, the domains' state, the sockets and the
// capabilities cache cannot. Two of them on one machine would share all
// that. So each runs in a mount namespace of its own (unshare -m) in which
// Dir's subdirectories are bind-mounted over those paths, /run included:
// the daemon, the QEMUs it starts and the programs it runs (ovs-vsctl,
// hooks) see a machine of their own, as on a real hypervisor, and the same
// path (a guest's console socket, /run/kgs-vm/NAME-con.sock) names a
// different file on each host, so a domain's XML migrates unchanged.
type Daemon struct {
	Host string
	// Dir is the root of the daemon's directories (see Options.Dir).
	Dir string
	// Addr is the host's lab address, on which the daemon takes connections
	// from other daemons (TCP port 16509) and migrations into its QEMUs.
	Addr netip.Addr
	// URI is the connection URI for virsh run outside the namespace: the
	// daemon's unix socket, found through Dir.
	URI string
	// TCPURI is the URI another lab host's daemon connects to, the
	// destination of `virsh migrate --p2p`.
	TCPURI string
	// Log is the daemon's log file (and its stdout and stderr go to
	// Log+".out").
	Log string

	lab    *lab.Lab
	virsh  string
	cmd    *exec.Cmd
	exited chan struct{} // closed once libvirtd has exited
	logf   func(string, ...any)
}

// The mount points a daemon gets a private copy of, and the subdirectory of
// Dir mounted on each.
var privateDirs = []struct{ sub, target string }{
	// /run: libvirt's sockets and pid files (/run/libvirt), /run/openvswitch
	// (where ovs-vsctl finds the database, see Start), /run/kgswitch (the
	// hook's state and kgswitch's control socket) and the guests' console
	// sockets (/run/kgs-vm). Mounting all of /run hides the system's
	// (/run/dbus included: libvirt then runs without systemd-machined and
	// firewalld, which the lab has not got either).
	{"run", "/run"},
	// libvirtd.conf, qemu.conf and hooks/qemu.
	{"etc", "/etc/libvirt"},
	// The domains' state (/var/lib/libvirt/qemu).
	{"lib", "/var/lib/libvirt"},
	{"log", "/var/log/libvirt"},
	// The QEMU capabilities cache: probed once per daemon, a few seconds.
	{"cache", "/var/cache/libvirt"},
}

// GuestSocketDir is the directory, as the daemon and its QEMUs see it,
// where the domains of DomainXML put their console sockets.
const GuestSocketDir = "/run/kgs-vm"

// Preflight checks what running libvirt in the lab needs beyond the lab and
// QEMU (lab.Preflight, qemu.Preflight): libvirtd and virsh, unshare and
// mount. The error names everything that is missing.
func Preflight() error {
	var errs []error
	for _, x := range []struct{ name, pkg string }{
		{"libvirtd", "libvirt-daemon-system"},
		{"virsh", "libvirt-clients"},
		{"unshare", "util-linux"},
		{"mount", "mount"},
	} {
		if _, err := lookTool(x.name); err != nil {
			errs = append(errs, fmt.Errorf("%s missing (Debian package %s; scripts/install-deps.sh installs it)", x.name, x.pkg))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("libvirt preflight: %w", err)
	}
	return nil
}

// Start writes the daemon's configuration, starts libvirtd in Host's
// namespace and waits until it answers virsh. Close stops it and every
// domain it runs.
func Start(ctx context.Context, opt Options) (*Daemon, error) {
	ovs := opt.Lab.OVS(opt.Host)
	addr := lab.HostAddr(opt.Host)
	if ovs == nil || !addr.IsValid() {
		return nil, fmt.Errorf("libvirt: %q is not a lab host", opt.Host)
	}
	if opt.Dir == "" {
		opt.Dir = filepath.Join(opt.Lab.Dir, "libvirt-"+opt.Host)
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	virsh, err := lookTool("virsh")
	if err != nil {
		return nil, Preflight()
	}
	d := &Daemon{
		Host:   opt.Host,
		Dir:    opt.Dir,
		Addr:   addr,
		URI:    "qemu+unix:///system?socket=" + filepath.Join(opt.Dir, "run", "libvirt", "libvirt-sock"),
		TCPURI: "qemu+tcp://[" + addr.String() + "]/system",
		Log:    filepath.Join(opt.Dir, "log", "libvirtd.log"),
		lab:    opt.Lab,
		virsh:  virsh,
		logf:   opt.Logf,
	}
	if err := d.start(ctx, opt, ovs); err != nil {
		return nil, errors.Join(fmt.Errorf("libvirt: start libvirtd on %s: %w", opt.Host, err), d.Close())
	}
	return d, nil
}

func (d *Daemon) start(ctx context.Context, opt Options, ovs *lab.OVSHost) error {
	for _, sub := range []string{"etc/hooks", "run/kgswitch", "run/kgs-vm", "lib", "log", "cache"} {
		if err := os.MkdirAll(filepath.Join(d.Dir, sub), 0o755); err != nil {
			return err
		}
	}
	// libvirt plugs a <virtualport type='openvswitch'/> interface's tap in
	// with `ovs-vsctl add-port`, which talks to the database at its compiled
	// in default, unix:/run/openvswitch/db.sock. libvirt runs it with an
	// environment of its own (no OVS_RUNDIR or OVS_DB), so the host's
	// database is made to be there: its run directory is the daemon's
	// /run/openvswitch.
	if err := os.Symlink(ovs.RunDir, filepath.Join(d.Dir, "run", "openvswitch")); err != nil {
		return err
	}
	if opt.ControlSocket != "" {
		if err := os.Symlink(opt.ControlSocket, filepath.Join(d.Dir, "run", "kgswitch", "kgswitch.sock")); err != nil {
			return err
		}
	}
	if opt.Hook != "" {
		b, err := os.ReadFile(opt.Hook)
		if err != nil {
			return err
		}
		// libvirtd looks for its hooks when it starts: the script must be
		// there before.
		if err := os.WriteFile(filepath.Join(d.Dir, "etc", "hooks", "qemu"), b, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(d.Dir, "etc", "libvirtd.conf"), []byte(d.libvirtdConf()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d.Dir, "etc", "qemu.conf"), []byte(d.qemuConf()), 0o644); err != nil {
		return err
	}

	unshare, err := lookTool("unshare")
	if err != nil {
		return err
	}
	libvirtd, err := lookTool("libvirtd")
	if err != nil {
		return err
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, m := range privateDirs {
		fmt.Fprintf(&script, "mount --bind %s %s\n", shellQuote(filepath.Join(d.Dir, m.sub)), m.target)
	}
	// --listen: without it libvirtd ignores listen_tcp.
	fmt.Fprintf(&script, "exec %s --listen --config /etc/libvirt/libvirtd.conf\n", shellQuote(libvirtd))
	out, err := os.OpenFile(d.Log+".out", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	// Not bound to ctx: the daemon lives until Close. --propagation private:
	// the bind mounts stay inside the daemon's mount namespace.
	d.cmd = d.lab.Command(context.Background(), d.Host, unshare, "--mount", "--propagation", "private", "sh", "-c", script.String())
	d.cmd.Stdout, d.cmd.Stderr = out, out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The hooks inherit PATH (libvirt passes PATH on to what it runs).
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if opt.Path != "" {
		path = opt.Path + ":" + path
	}
	d.cmd.Env = []string{"PATH=" + path, "HOME=" + d.Dir, "LC_ALL=C"}
	if err := d.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = d.cmd.Wait() // its reasons are in its log
		close(exited)
	}()
	d.exited = exited
	// The first connection waits while libvirtd probes QEMU's capabilities
	// (about 5 s under TCG, once per daemon: the cache is per host).
	start := time.Now()
	err = wait.Until(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		select {
		case <-exited:
			return wait.Fatal(fmt.Errorf("libvirtd exited: %s", d.logTail()))
		default:
		}
		_, err := d.Virsh(ctx, "version")
		return err
	})
	if err != nil {
		return err
	}
	d.logf("libvirt %s: libvirtd up in %v (pid %d), %s and %s", d.Host, time.Since(start).Round(time.Millisecond), d.cmd.Process.Pid, d.URI, d.TCPURI)
	return nil
}

// libvirtdConf is the daemon's libvirtd.conf.
func (d *Daemon) libvirtdConf() string {
	return fmt.Sprintf(`# Written by tests/integration/libvirt for lab host %[1]s.
# Migrations are peer to peer (virsh migrate --p2p): this daemon connects to
# the destination's over TCP inside the lab, without TLS or authentication
# (the lab's namespaces reach nothing else).
listen_tls = 0
listen_tcp = 1
listen_addr = "%[2]s"
auth_tcp = "none"
# virsh (root, outside the namespace) comes in on the unix socket.
auth_unix_rw = "none"
auth_unix_ro = "none"
# Every lab host is the same machine: the same SMBIOS UUID (or none), which
# libvirt takes as its host UUID and compares in a migration, refusing "to
# migrate guest to the same host".
host_uuid = "%[3]s"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`, d.Host, d.Addr, hostUUID(d.Host))
}

// qemuConf is the daemon's qemu.conf.
func (d *Daemon) qemuConf() string {
	return fmt.Sprintf(`# Written by tests/integration/libvirt for lab host %[1]s.
# QEMU runs as root, as the lab's own QEMUs do: Debian's default user,
# libvirt-qemu, could not open the kernel and initramfs in the test cache
# or the lab's directories, and nothing here needs confining.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
# No cgroups (no systemd here, and the lab's hosts share the machine's) and
# no private /dev per QEMU.
cgroup_controllers = [ ]
namespaces = [ ]
# QEMU's output goes to /var/log/libvirt/qemu/DOMAIN.log directly, not
# through virtlogd, which the lab does not run.
stdio_handler = "file"
# Incoming migrations listen on the host's lab address, and the source is
# told to connect there: libvirt's default is the host name, which names
# the same machine on every lab host.
migration_address = "%[2]s"
migration_host = "%[2]s"
`, d.Host, d.Addr)
}

// hostUUID is a UUID of its own for each lab host.
func hostUUID(host string) string {
	var n uint64
	for _, c := range host {
		n = n*31 + uint64(c)
	}
	return fmt.Sprintf("6b677377-6974-4368-8000-%012x", n&0xffffffffffff)
}

// Virsh runs `virsh -c URI args...` and returns its output (stdout and
// stderr); the error includes it.
func (d *Daemon) Virsh(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.virsh, append([]string{"-q", "-c", d.URI}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: virsh %s: %v: %s", d.Host, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Path returns where path, as the daemon sees it (under /run), is outside
// its mount namespace.
func (d *Daemon) Path(path string) string {
	rel, ok := strings.CutPrefix(path, "/run/")
	if !ok {
		panic("libvirt: Daemon.Path: " + path + " is not under /run")
	}
	return filepath.Join(d.Dir, "run", rel)
}

// logTail is the end of the daemon's log and of its output.
func (d *Daemon) logTail() string {
	var b strings.Builder
	for _, f := range []string{d.Log, d.Log + ".out"} {
		data, err := os.ReadFile(f)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		fmt.Fprintf(&b, "\n%s:\n%s", f, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return b.String()
}

// Close destroys every domain the daemon runs (libvirt removes their taps
// from the bridge), stops libvirtd and kills any QEMU of it that is left.
// It is idempotent.
func (d *Daemon) Close() error {
	var errs []error
	if d.cmd != nil && d.cmd.Process != nil && d.exited != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		select {
		case <-d.exited:
		default:
			if out, err := d.Virsh(ctx, "list", "--name"); err == nil {
				for _, name := range strings.Fields(out) {
					if _, err := d.Virsh(ctx, "destroy", name); err != nil {
						errs = append(errs, err)
					}
				}
			}
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
				<-d.exited
			}
		}
	}
	// QEMU outlives libvirtd (it runs in a session of its own); a domain
	// that could not be destroyed is killed by its pid file.
	pidfiles, _ := filepath.Glob(filepath.Join(d.Dir, "run", "libvirt", "qemu", "*.pid"))
	for _, f := range pidfiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || !lab.ProcessAlive(pid) {
			continue
		}
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !strings.Contains(string(cmdline), "qemu") {
			continue
		}
		errs = append(errs, fmt.Errorf("libvirt %s: QEMU %d (%s) left running: killed", d.Host, pid, filepath.Base(f)))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	d.cmd = nil
	return errors.Join(errs...)
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
