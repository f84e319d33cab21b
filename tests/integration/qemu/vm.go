package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// Config describes one QEMU guest on a lab host.
type Config struct {
	// Lab and Host say where the guest runs: QEMU runs inside Host's network
	// namespace and its tap is a port of Host's OVS bridge.
	Lab  *lab.Lab
	Host string
	// Name names the VM's sockets and logs in Dir; unique per Dir.
	Name string
	// Dir holds the sockets and logs; Lab.Dir when empty. Unix socket paths
	// must stay under 108 bytes.
	Dir   string
	Image Image
	// Tap is the tap device's name (lab.GuestPort when empty): the OVS port
	// kgswitch is configured with.
	Tap string
	// MAC is the guest NIC's MAC address (lab.GuestMAC when nil).
	MAC net.HardwareAddr
	// Addr is the guest's address on eth0 (lab.HoA/64 when invalid), and
	// Gateway its default router (lab.RouterLinkLocal when invalid).
	Addr    netip.Prefix
	Gateway netip.Addr
	// DHCP4 has the guest configure IPv4 on eth0 by DHCP at boot (kernel
	// parameter kgs.dhcp4=1, see init.sh), from the lab's home DHCPv4
	// server when it boots at home; see VM.DHCP4Events and VM.IPv4.
	// Without it the guest is IPv6-only.
	DHCP4 bool
	// MemoryMB is the guest's memory (256 when 0).
	MemoryMB int
	// Incoming starts QEMU with -incoming defer: a migration destination
	// whose guest runs only once Migrate has brought its state over.
	Incoming bool
	// Logf, when not nil, receives a line for each step.
	Logf func(format string, args ...any)
}

// VM is one QEMU process and its guest.
type VM struct {
	Host, Name string
	// QMP is the VM's QMP connection.
	QMP *QMP
	// Started is when QEMU was started.
	Started time.Time
	// ConsoleLog and QEMULog are the files that hold the guest's console
	// (timestamped) and QEMU's own output.
	ConsoleLog, QEMULog string

	cfg      Config
	cmd      *exec.Cmd
	exited   chan struct{}
	con      *console
	conConn  net.Conn
	conFile  *os.File
	sh       *shell
	migSock  string
	tools    vmTools
	closeOne sync.Once
	closeErr error
	// migratedIn is set once a migration into this (Incoming) VM
	// completed: its guest runs here.
	migratedIn atomic.Bool
	// attached is set for a VM of Attach: another program runs its QEMU.
	attached bool
}

type vmTools struct{ qemu, ip, sysctl, ethtool string }

func findVMTools() (vmTools, error) {
	var t vmTools
	var errs []error
	for _, x := range []struct {
		dst       *string
		name, pkg string
	}{
		{&t.qemu, "qemu-system-x86_64", "qemu-system-x86"},
		{&t.ip, "ip", "iproute2"},
		{&t.sysctl, "sysctl", "procps"},
		{&t.ethtool, "ethtool", "ethtool"},
	} {
		p, err := lookTool(x.name)
		if err != nil {
			errs = append(errs, errMissing(x.name, "Debian package "+x.pkg))
		}
		*x.dst = p
	}
	return t, errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Dir == "" {
		c.Dir = c.Lab.Dir
	}
	if c.Tap == "" {
		c.Tap = lab.GuestPort
	}
	if c.MAC == nil {
		c.MAC = lab.GuestMAC
	}
	if !c.Addr.IsValid() {
		c.Addr = netip.PrefixFrom(lab.HoA, lab.HomePrefix.Bits())
	}
	if !c.Gateway.IsValid() {
		c.Gateway = lab.RouterLinkLocal
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 256
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

func (vm *VM) path(suffix string) string {
	return filepath.Join(vm.cfg.Dir, vm.Name+"-"+suffix)
}

// Start creates the VM's tap on its host, adds it to the host's bridge and
// starts QEMU with the guest's NIC on it. As libvirt does, the tap is a
// persistent device made before QEMU runs (`ip tuntap add`) and added to the
// bridge then, and brought up once QEMU has it open; QEMU itself opens it by
// name (script=no) with vnet_hdr=off: with a virtio-net header the guest
// leaves TCP checksums to the host, and the userspace datapath forwards them
// unfilled. The tap must not exist yet (see DetachLabGuest). Close stops QEMU
// and removes the tap.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.Lab == nil || cfg.Lab.OVS(cfg.Host) == nil || cfg.Name == "" {
		return nil, fmt.Errorf("qemu: start: want a lab, one of its hosts %v and a name", lab.Hosts)
	}
	cfg.setDefaults()
	t, err := findVMTools()
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm := &VM{
		Host:       cfg.Host,
		Name:       cfg.Name,
		cfg:        cfg,
		tools:      t,
		exited:     make(chan struct{}),
		con:        newConsole(),
		ConsoleLog: filepath.Join(cfg.Dir, cfg.Name+"-console.log"),
		QEMULog:    filepath.Join(cfg.Dir, cfg.Name+"-qemu.log"),
	}
	vm.migSock = vm.path("mig.sock")
	if err := vm.start(ctx); err != nil {
		if cerr := vm.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("qemu: start %s on %s: %w", cfg.Name, cfg.Host, err)
	}
	return vm, nil
}

func (vm *VM) start(ctx context.Context) error {
	cfg := vm.cfg
	if err := vm.addTap(ctx); err != nil {
		return err
	}
	args := vm.qemuArgs()
	qlog, err := os.OpenFile(vm.QEMULog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer qlog.Close()
	// Not bound to ctx: the VM lives until Close.
	vm.cmd = cfg.Lab.Command(context.Background(), cfg.Host, append([]string{vm.tools.qemu}, args...)...)
	vm.cmd.Stdout, vm.cmd.Stderr = qlog, qlog
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	vm.Started = time.Now()
	if err := vm.cmd.Start(); err != nil {
		return err
	}
	cfg.Logf("qemu %s: started on %s (pid %d): %s", vm.Name, cfg.Host, vm.cmd.Process.Pid, strings.Join(args, " "))
	go func() {
		_ = vm.cmd.Wait() // QEMU's reasons are in QEMULog
		close(vm.exited)
	}()

	// QEMU waits for the console's client before it goes on (wait=on), so
	// that not a line of the boot is lost; the other sockets appear after.
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	dctx, cancel2 := vm.cancelOnExit(dctx)
	defer cancel2()
	if vm.conConn, err = dialUnix(dctx, vm.path("con.sock")); err != nil {
		return vm.withLog(fmt.Errorf("console: %w", err))
	}
	if vm.conFile, err = os.OpenFile(vm.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return err
	}
	go vm.con.run(vm.conConn, vm.conFile)
	if vm.QMP, err = DialQMP(dctx, vm.path("qmp.sock")); err != nil {
		return vm.withLog(err)
	}
	shConn, err := dialUnix(dctx, vm.path("sh.sock"))
	if err != nil {
		return vm.withLog(fmt.Errorf("shell: %w", err))
	}
	vm.sh = newShell(shConn)
	// QEMU has the tap open now (it opens netdevs before the monitor).
	return vm.tapUp(ctx)
}

// cancelOnExit returns a context that also ends when QEMU exits, so that
// waits fail at once, with QEMU's log, when QEMU dies.
func (vm *VM) cancelOnExit(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-vm.exited:
			cancel(errors.New("QEMU exited"))
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

func (vm *VM) qemuArgs() []string {
	cfg := vm.cfg
	appendArgs := fmt.Sprintf("console=ttyS0 quiet panic=-1 kgs.addr=%s kgs.gw=%s", cfg.Addr, cfg.Gateway)
	if cfg.DHCP4 {
		appendArgs += " kgs.dhcp4=1"
	}
	args := []string{
		"-name", "kgs-" + cfg.Name,
		"-nodefaults", "-no-user-config", "-display", "none",
		// KVM is not available (and not needed): TCG boots the guest in ~3 s.
		"-accel", "tcg", "-machine", "pc", "-m", fmt.Sprint(cfg.MemoryMB), "-smp", "1",
		"-no-reboot",
		"-kernel", cfg.Image.Kernel, "-initrd", cfg.Image.Initrd, "-append", appendArgs,
		"-chardev", "socket,id=con0,path=" + vm.path("con.sock") + ",server=on,wait=on",
		"-serial", "chardev:con0",
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=sh0,path=" + vm.path("sh.sock") + ",server=on,wait=off",
		"-device", "virtconsole,chardev=sh0,name=kgs.shell",
		"-qmp", "unix:" + vm.path("qmp.sock") + ",server=on,wait=off",
		"-netdev", "tap,id=n0,ifname=" + cfg.Tap + ",script=no,downscript=no,vnet_hdr=off",
		// romfile=: no PXE option ROM, the kernel is loaded directly.
		"-device", "virtio-net-pci,netdev=n0,mac=" + cfg.MAC.String() + ",romfile=",
	}
	if cfg.Incoming {
		args = append(args, "-incoming", "defer")
	}
	return args
}

// addTap creates the persistent tap and makes it a port of the bridge.
func (vm *VM) addTap(ctx context.Context) error {
	cfg := vm.cfg
	if err := vm.ipn(ctx, "link", "show", cfg.Tap); err == nil {
		return fmt.Errorf("%s already exists on %s (the lab's veth guest? see DetachLabGuest)", cfg.Tap, cfg.Host)
	}
	if err := vm.ipn(ctx, "tuntap", "add", "dev", cfg.Tap, "mode", "tap"); err != nil {
		return err
	}
	// The host must not take part in the guest's IPv6: the userspace
	// datapath reads the port with AF_PACKET and the host kernel sees every
	// frame too (see package lab).
	if _, err := cfg.Lab.Run(ctx, cfg.Host, vm.tools.sysctl, "-q", "-w", "net.ipv6.conf."+cfg.Tap+".disable_ipv6=1"); err != nil {
		return err
	}
	// A port left from an earlier tap of the same name holds a dead socket:
	// remove it before adding the new device.
	ovs := cfg.Lab.OVS(cfg.Host)
	if _, err := ovs.Vsctl(ctx, "--if-exists", "del-port", ovs.Bridge, cfg.Tap, "--", "add-port", ovs.Bridge, cfg.Tap); err != nil {
		return err
	}
	cfg.Logf("qemu %s: tap %s added to %s's %s", vm.Name, cfg.Tap, cfg.Host, ovs.Bridge)
	return nil
}

// tapUp brings the tap up once QEMU holds it, with TX checksum offload off as
// on every port of the lab, and waits until it is operationally up.
func (vm *VM) tapUp(ctx context.Context) error {
	cfg := vm.cfg
	if out, err := cfg.Lab.Run(ctx, cfg.Host, vm.tools.ethtool, "-K", cfg.Tap, "tx", "off"); err != nil &&
		!strings.Contains(out, "Could not change any device features") {
		return err
	}
	if err := vm.ipn(ctx, "link", "set", cfg.Tap, "up"); err != nil {
		return err
	}
	return wait.Until(ctx, 5*time.Second, 20*time.Millisecond, func() error {
		out, err := exec.CommandContext(ctx, vm.tools.ip, "-n", cfg.Lab.NS(cfg.Host), "-o", "link", "show", cfg.Tap).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "state UP") {
			return fmt.Errorf("tap %s on %s not up: %s", cfg.Tap, cfg.Host, out)
		}
		return nil
	})
}

func (vm *VM) ipn(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, vm.tools.ip, append([]string{"-n", vm.cfg.Lab.NS(vm.cfg.Host)}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: ip %s: %v: %s", vm.cfg.Host, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// withLog appends QEMU's output to err: QEMU says why it fails only there.
func (vm *VM) withLog(err error) error {
	b, _ := os.ReadFile(vm.QEMULog)
	if len(b) == 0 {
		return err
	}
	return fmt.Errorf("%w\nQEMU output:\n%s", err, strings.TrimSpace(string(b)))
}

// WaitReady waits until the guest has configured its NIC (init.sh's ready
// line) and returns the time from QEMU's start: the boot time.
func (vm *VM) WaitReady(ctx context.Context) (time.Duration, error) {
	ctx, cancel := vm.cancelOnExit(ctx)
	defer cancel()
	var ready time.Time
	vm.con.wait(ctx.Done(), func() bool { ready = vm.con.ready; return !ready.IsZero() })
	if ready.IsZero() {
		return 0, vm.withLog(fmt.Errorf("qemu %s: guest not ready: %w; console:\n%s", vm.Name, context.Cause(ctx), vm.ConsoleSummary()))
	}
	return ready.Sub(vm.Started), nil
}

// Heartbeats returns the heartbeat lines read so far from this QEMU's
// console.
func (vm *VM) Heartbeats() []Heartbeat {
	vm.con.mu.Lock()
	defer vm.con.mu.Unlock()
	return append([]Heartbeat(nil), vm.con.hbs...)
}

// WaitHeartbeats waits until n heartbeats have been read at or after since.
func (vm *VM) WaitHeartbeats(ctx context.Context, since time.Time, n int) error {
	count := func() int {
		c := 0
		for _, hb := range vm.con.hbs {
			if !hb.At.Before(since) {
				c++
			}
		}
		return c
	}
	if vm.con.wait(ctx.Done(), func() bool { return count() >= n }) {
		return nil
	}
	vm.con.mu.Lock()
	got := count()
	vm.con.mu.Unlock()
	return fmt.Errorf("qemu %s: got %d heartbeats since %s, want %d (%v)", vm.Name, got, since.Format("15:04:05.000"), n, ctx.Err())
}

// Console returns every console line read so far.
func (vm *VM) Console() []ConsoleLine {
	vm.con.mu.Lock()
	defer vm.con.mu.Unlock()
	return append([]ConsoleLine(nil), vm.con.lines...)
}

// ConsoleSummary is the console with heartbeat runs folded, for test logs.
func (vm *VM) ConsoleSummary() string { return summary(vm.Console()) }

// Crash returns the first console line where the guest kernel reports a
// crash (Oops, panic, BUG), or "".
func (vm *VM) Crash() string {
	for _, l := range vm.Console() {
		if crashRe.MatchString(l.Text) {
			return l.Text
		}
	}
	return ""
}

// Shell runs cmd with the guest's sh and returns its output (stdout and
// stderr). A non-zero exit status is an error that includes the output.
// Commands run one at a time; one that never returns blocks the shell, and
// background commands should redirect their output.
func (vm *VM) Shell(ctx context.Context, cmd string) (string, error) {
	out, status, err := vm.sh.run(ctx, cmd)
	if err != nil {
		return out, fmt.Errorf("qemu %s: %w", vm.Name, err)
	}
	if status != 0 {
		return out, fmt.Errorf("qemu %s: guest command %q: exit status %d: %s", vm.Name, cmd, status, strings.TrimSpace(out))
	}
	return out, nil
}

// quit asks QEMU to exit (QMP quit) and waits up to 5 s for it. QEMU may
// close the connection before its reply arrives, so only the exit counts.
func (vm *VM) quit(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := vm.QMP.Execute(qctx, "quit", nil, nil)
	cancel()
	select {
	case <-vm.exited:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("qemu %s: still runs 5s after quit (quit: %v)", vm.Name, err)
	}
}

// Exited is closed when the QEMU process has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// Close stops QEMU (quit over QMP, then signals) and removes the tap from
// the bridge and the host, as libvirt does when a domain stops. It is
// idempotent.
func (vm *VM) Close() error {
	vm.closeOne.Do(func() { vm.closeErr = vm.close() })
	return vm.closeErr
}

func (vm *VM) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var errs []error
	if vm.cmd != nil && vm.cmd.Process != nil {
		quitErr := errors.New("no QMP")
		if vm.QMP != nil {
			quitErr = vm.quit(ctx)
		}
		if quitErr != nil {
			_ = syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-vm.exited:
			case <-time.After(3 * time.Second):
				_ = syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
				<-vm.exited
			}
		}
	}
	if vm.QMP != nil {
		vm.QMP.Close()
	}
	if vm.sh != nil {
		vm.sh.conn.Close()
	}
	if vm.conConn != nil {
		vm.conConn.Close()
	}
	if vm.conFile != nil {
		vm.conFile.Close()
	}
	if vm.attached {
		// Neither the QEMU nor its tap is ours.
		return nil
	}
	cfg := vm.cfg
	if ovs := cfg.Lab.OVS(cfg.Host); ovs != nil {
		if _, err := ovs.Vsctl(ctx, "--if-exists", "del-port", ovs.Bridge, cfg.Tap); err != nil {
			errs = append(errs, err)
		}
	}
	if err := vm.ipn(ctx, "link", "show", cfg.Tap); err == nil {
		if err := vm.ipn(ctx, "link", "del", cfg.Tap); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range []string{"con.sock", "sh.sock", "qmp.sock", "mig.sock"} {
		_ = os.Remove(vm.path(s))
	}
	return errors.Join(errs...)
}

// DetachLabGuest removes the lab's own guest, a network namespace behind a
// veth, from the bridge of the host it is on (ovs-vsctl del-port, then ip
// link del, which deletes both ends), so that a QEMU guest can take its
// port name, MAC and home address.
func DetachLabGuest(ctx context.Context, l *lab.Lab) error {
	host := l.GuestHost()
	ovs := l.OVS(host)
	if ovs == nil {
		return fmt.Errorf("qemu: detach lab guest: it is on no host (%q)", host)
	}
	if _, err := ovs.Vsctl(ctx, "--if-exists", "del-port", ovs.Bridge, lab.GuestPort); err != nil {
		return err
	}
	ip, err := lookTool("ip")
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, ip, "-n", l.NS(host), "link", "del", lab.GuestPort).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu: detach lab guest: ip link del %s on %s: %v: %s", lab.GuestPort, host, err, strings.TrimSpace(string(out)))
	}
	return nil
}
