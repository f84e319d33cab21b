// Package lab builds the kgswitch network-namespace lab: a correspondent node,
// a router, a home link and two foreign links (Linux bridges in one namespace),
// a Home Agent namespace, three hypervisor hosts (one per link, see Hosts) each
// running its own Open vSwitch with the userspace datapath, and a guest whose
// interface is a port of one host's OVS bridge. See the "Lab addressing" table in DESIGN.md.
// With Options.ExtraGuests it also has a second guest of the same home
// network and a second home network with its own Home Agent and guest (see
// Guest, HomeNetwork). With Options.Layout = LayoutPatch every host is built
// in OpenStack's layout: the uplink and the host's address on UplinkBridge,
// joined to Bridge by patch ports (layout.go).
//
// The lab is dual-stack except for the hosts and the second home network:
// the cn link, the home link and the foreign links carry IPv4 too (addr.go),
// and the router runs the home link's DHCPv4 server, from which a guest
// takes its IPv4 home address once StartGuestDHCP4 starts its client
// (dhcp4.go).
//
// The package does not depend on package testing, so integration tests, the
// demo and benchmarks share it. Everything a Lab creates carries its ID
// ("kg<pid>x<n>"): network namespaces are named ID-node and the temp dir
// starts with ID, so labs of parallel processes never collide, and
// CleanupStale can tell labs whose process died.
//
// # OVS internal ports under the userspace datapath
//
// With datapath_type=netdev, ovs-vswitchd creates every internal port (the
// bridge's LOCAL port br0 and ports such as kgswitch's kgs0) as a tap device
// in the network namespace it runs in. What that takes, as found in this lab:
//   - ovs-vswitchd runs inside the host's namespace (so the taps land there)
//     and /dev/net/tun exists; no kernel openvswitch module is needed.
//   - The taps are created administratively down: `ip link set DEV up`.
//     While an internal port is down, OVS drops what it outputs there, and an
//     AF_PACKET socket on it fails with ENETDOWN.
//   - An AF_PACKET socket bound to the tap sees exactly what OpenFlow outputs
//     to the port, and what it sends enters the bridge with in_port = that
//     port. The host kernel also receives what OVS outputs there, so a port
//     meant only for a userspace program should have IPv6 disabled
//     (net.ipv6.conf.DEV.disable_ipv6=1); the NORMAL action floods to it too.
//   - Taps have no TX checksum offload. veths do, and need `ethtool -K DEV tx
//     off`: the userspace datapath forwards frames with partial checksums as
//     they are, which breaks TCP.
//
// Non-internal ports (the veths here) are read by ovs-vswitchd with AF_PACKET,
// so the host kernel still sees every frame arriving on them; the lab disables
// IPv6 on OVS-attached veths (eth0 and the guests' ports in every host) so that only br0
// takes part in IPv6, as with the kernel datapath. A port's netdev must exist
// in the namespace of ovs-vswitchd when it is added, which is why Move
// deletes the port before it moves the device and adds it again afterwards.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options configures New.
type Options struct {
	// Logf, when not nil, receives a line for each step of building and
	// tearing down the lab.
	Logf func(format string, args ...any)
	// ExtraGuests adds a second guest of the home network, VM2 (on hostA),
	// and a second home network, HomeNet2 (bridge home2 in sw, the router
	// on it, its Home Agent's namespace ha2), with its guest VM3 on hostB:
	// the nodes ExtraNodes. Without it New builds only what every test
	// needs, which is faster.
	ExtraGuests bool
	// DHCP4Lease is the lease time of the home link's DHCPv4 server (see
	// StartGuestDHCP4), whole seconds; DefaultDHCP4Lease when zero. A
	// guest renews at half of it (T1), but not before 15 s: busybox
	// 1.35's udhcpc, as measured, renews a lease of 16 s or 20 s after
	// 15 s too, so 30 s is the shortest lease with T1 at half.
	DHCP4Lease time.Duration
	// Layout is how every host's bridges are arranged: LayoutOneBridge
	// (the zero value) or LayoutPatch, OpenStack's.
	Layout HostLayout
}

// Lab is one instance of the lab. Its methods are safe for concurrent use.
type Lab struct {
	// ID is the prefix of every netns name and of Dir: "kg<pid>x<n>".
	ID string
	// Dir is the lab's temp dir (absolute); OVS run dirs live below it.
	Dir string

	logf  func(format string, args ...any)
	ovs   map[string]*OVSHost
	tools tools
	topo  topology
	// dhcp4Lease is Options.DHCP4Lease.
	dhcp4Lease time.Duration
	// layout is Options.Layout.
	layout HostLayout

	// closing is closed by Close; announcers are the background
	// self-announcements of MoveGuest, which Close waits for.
	closing    chan struct{}
	announcers sync.WaitGroup

	mu        sync.Mutex
	netns     []string // created so far, in creation order
	procs     []*exec.Cmd
	guestHost map[string]string // guest node -> host its port is on; "" mid-move
	// dhcp4Clients are the guests' DHCPv4 clients (StartGuestDHCP4).
	dhcp4Clients map[string]*exec.Cmd
	closed       bool
	closeErr     error
}

// labSeq numbers the labs of this process so that several may coexist.
var labSeq atomic.Int64

// New builds the whole lab: namespaces, links, addresses, routes and one OVS
// per host, with the guest attached to hostA. On error it removes whatever it
// had created before returning.
func New(ctx context.Context, opt Options) (*Lab, error) {
	t, err := findTools()
	if err != nil {
		return nil, err
	}
	l := &Lab{
		ID:        fmt.Sprintf("kg%dx%d", os.Getpid(), labSeq.Add(1)-1),
		logf:      opt.Logf,
		tools:     t,
		topo:      newTopology(opt.ExtraGuests),
		guestHost: make(map[string]string),
		closing:   make(chan struct{}),

		dhcp4Lease:   opt.DHCP4Lease,
		dhcp4Clients: make(map[string]*exec.Cmd),
		layout:       opt.Layout,
	}
	switch opt.Layout {
	case LayoutPatch:
		for _, h := range Hosts {
			l.topo.ipConfig[h] = moveIPConfig(l.topo.ipConfig[h], UplinkBridge)
		}
	case LayoutNIC:
		nicTopology(&l.topo, Hosts)
	}
	if opt.DHCP4Lease < 0 || opt.DHCP4Lease%time.Second != 0 {
		return nil, fmt.Errorf("lab: DHCPv4 lease %v: want whole seconds", opt.DHCP4Lease)
	}
	for _, g := range l.topo.guests {
		l.guestHost[g.Node] = g.StartHost
	}
	if l.logf == nil {
		l.logf = func(string, ...any) {}
	}
	if err := l.build(ctx); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup after failed build: %w", cerr))
		}
		return nil, fmt.Errorf("lab %s: %w", l.ID, err)
	}
	return l, nil
}

// NS returns the name of node's network namespace, or "" if node is not one
// of the lab's nodes (Nodes, and ExtraNodes in a lab with
// Options.ExtraGuests).
func (l *Lab) NS(node string) string {
	nodes := l.topo.nodes
	if nodes == nil {
		nodes = Nodes
	}
	for _, n := range nodes {
		if n == node {
			return l.ID + "-" + node
		}
	}
	return ""
}

// Command returns a command that runs argv inside node's namespace
// (`ip netns exec NS argv...`). For an unknown node, the command's Err is set
// so that running it fails.
func (l *Lab) Command(ctx context.Context, node string, argv ...string) *exec.Cmd {
	ns := l.NS(node)
	cmd := exec.CommandContext(ctx, l.tools.ip, append([]string{"netns", "exec", ns}, argv...)...)
	if ns == "" {
		cmd.Err = fmt.Errorf("lab: unknown node %q", node)
	} else if len(argv) == 0 {
		cmd.Err = errors.New("lab: empty command")
	}
	return cmd
}

// LinkMAC is the MAC of interface dev in node.
func (l *Lab) LinkMAC(ctx context.Context, node, dev string) (net.HardwareAddr, error) {
	out, err := l.Run(ctx, node, "cat", "/sys/class/net/"+dev+"/address")
	if err != nil {
		return nil, err
	}
	return net.ParseMAC(strings.TrimSpace(out))
}

// Run runs argv inside node's namespace and returns its combined output. The
// error, if any, includes the command and its output.
func (l *Lab) Run(ctx context.Context, node string, argv ...string) (string, error) {
	return run(l.Command(ctx, node, argv...), node)
}

// Start starts argv in the background inside node's namespace, with stdout
// and stderr appended to logPath. ctx bounds the process's life as in
// exec.CommandContext. Close kills the process (its whole process group) if it
// still runs and reaps it; a caller that wants the exit status calls Wait on
// the returned command before Close.
func (l *Lab) Start(ctx context.Context, node string, logPath string, argv ...string) (*exec.Cmd, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", strings.Join(argv, " "), err)
	}
	defer f.Close() // the child has its own copy
	cmd := l.Command(ctx, node, argv...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so Close also reaches anything it forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 3 * time.Second

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: start on a closed lab")
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s in %s: %w", strings.Join(argv, " "), node, err)
	}
	l.procs = append(l.procs, cmd)
	l.logf("lab %s: started %s in %s (pid %d), log %s", l.ID, strings.Join(argv, " "), node, cmd.Process.Pid, logPath)
	return cmd, nil
}

// Layout returns how the hosts' bridges are arranged (Options.Layout).
func (l *Lab) Layout() HostLayout { return l.layout }

// OVS returns the Open vSwitch of host (one of Hosts), or nil.
func (l *Lab) OVS(host string) *OVSHost { return l.ovs[host] }

// Guests returns the lab's guests: VM, and VM2 and VM3 in a lab built with
// Options.ExtraGuests.
func (l *Lab) Guests() []Guest { return slices.Clone(l.topo.guests) }

// guest returns the lab's guest whose node is name.
func (l *Lab) guest(name string) (Guest, bool) {
	for _, g := range l.topo.guests {
		if g.Node == name {
			return g, true
		}
	}
	return Guest{}, false
}

// GuestHost returns the host (one of Hosts) whose bridge vnet3, the
// guest vm's port, is currently attached to.
func (l *Lab) GuestHost() string { return l.HostOf(VM.Node) }

// HostOf returns the host (one of Hosts) whose bridge the port of guest (a
// Guest's Node: "vm", "vm2", "vm3") is attached to, or "" for no guest of
// the lab or one in the middle of a move.
func (l *Lab) HostOf(guest string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.guestHost[guest]
}

// MoveGuest moves vm, the guest every lab has, from one host to another;
// see Move.
func (l *Lab) MoveGuest(ctx context.Context, from, to string) error {
	return l.Move(ctx, VM.Node, from, to)
}

// Move moves a guest's port (guest is its Node) from one host to another, as
// a live migration does with the VM's tap: it deletes the port from from's
// bridge, moves the netdev into to's namespace, turns TX checksum offload
// off, brings it up and adds it to to's bridge. The guest's own namespace is
// left untouched, so its addresses, routes and neighbour cache survive as
// they would in a migrated VM. (Its eth0 loses carrier for the moment of the
// move; the lab builds the guests with ndisc_evict_nocarrier=0 so that this
// does not flush their neighbour cache.) Then, as QEMU does when the migrated
// guest resumes, it broadcasts RARP self-announcements from the guest's MAC:
// the first before Move returns, four more within 800 ms (see
// announceGaps).
func (l *Lab) Move(ctx context.Context, guest, from, to string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.guest(guest)
	src, dst := l.ovs[from], l.ovs[to]
	switch {
	case !ok:
		return fmt.Errorf("lab: move guest %q: no such guest in this lab", guest)
	case src == nil || dst == nil || from == to:
		return fmt.Errorf("lab: move %s from %q to %q: want two different hosts of %v", guest, from, to, Hosts)
	case l.guestHost[guest] != from:
		return fmt.Errorf("lab: move %s from %s: it is on %s", guest, from, l.guestHost[guest])
	}
	// Each step is timed: a slow move is loss a test would otherwise blame
	// on kgswitch.
	start := time.Now()
	var steps []string
	step := func(name string, f func() error) error {
		t := time.Now()
		err := f()
		steps = append(steps, fmt.Sprintf("%s %v", name, time.Since(t).Round(time.Millisecond)))
		return err
	}
	if err := step("del-port", func() error {
		_, err := src.Vsctl(ctx, "--if-exists", "del-port", Bridge, g.Port)
		return err
	}); err != nil {
		return err
	}
	// From here on the port is no longer on from's bridge.
	l.guestHost[guest] = ""
	if err := step("netns", func() error {
		return l.ipn(ctx, from, "link", "set", g.Port, "netns", l.NS(to))
	}); err != nil {
		return err
	}
	if err := step("add-port", func() error { return l.attachPort(ctx, to, g.Port) }); err != nil {
		return err
	}
	l.guestHost[guest] = to
	if err := step("links up", func() error {
		if err := l.waitLinksUp(ctx, to, g.Port); err != nil {
			return err
		}
		return l.waitLinksUp(ctx, g.Node, Uplink)
	}); err != nil {
		return err
	}
	if err := step("announce", func() error { return l.announceGuest(g) }); err != nil {
		return err
	}
	l.logf("lab %s: moved %s (%s) from %s to %s in %v (%s)", l.ID, guest, g.Port, from, to,
		time.Since(start).Round(time.Millisecond), strings.Join(steps, ", "))
	return nil
}

// WaitAnnounced waits until the guests' self-announcements of every move so
// far are all sent (see Move: the last goes 800 ms after the move), so that
// what follows meets a guest that is quiet, as a migrated one is once QEMU
// is done announcing it. It must not run concurrently with Move.
func (l *Lab) WaitAnnounced(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		l.announcers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("lab: guests' announcements: %w", ctx.Err())
	}
}

// Close tears the lab down: it kills the processes started with Start, the OVS
// daemons and any other process still inside the lab's namespaces (say, one
// run with Command and left running),
// deletes the namespaces (and with them every veth and tap) and removes Dir.
// It is idempotent; later calls return the first call's result.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.closeErr
	}
	l.closed = true
	procs := l.procs
	netns := l.netns
	l.mu.Unlock()
	close(l.closing)
	l.announcers.Wait()

	start := time.Now()
	var errs []error
	for _, cmd := range procs {
		stopCmd(cmd)
	}
	for _, name := range Hosts {
		if h := l.ovs[name]; h != nil {
			if err := h.stop(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i := len(netns) - 1; i >= 0; i-- {
		if err := l.removeNetns(netns[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if l.Dir != "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	l.mu.Lock()
	l.closeErr = errors.Join(errs...)
	l.mu.Unlock()
	l.logf("lab %s: closed in %v", l.ID, time.Since(start).Round(time.Millisecond))
	return l.closeErr
}

// removeNetns kills whatever still runs in netns name and deletes it. A
// namespace lives on while a process is inside it, so killing comes first.
func (l *Lab) removeNetns(name string) error {
	killNetnsProcs(l.tools.ip, name)
	out, err := exec.Command(l.tools.ip, "netns", "del", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// stopCmd ends a command started by Start: SIGTERM to its process group, then
// SIGKILL if it lingers, then reaps it.
func stopCmd(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
}

// run runs cmd and returns its combined output, with an error that names the
// command and includes the output.
func run(cmd *exec.Cmd, where string) (string, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", where, strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// tempDir creates the lab's temp dir. Unix socket paths are limited to 107
// bytes, so a long $TMPDIR falls back to /tmp.
func tempDir(id string) (string, error) {
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	d, err := os.MkdirTemp(base, id+"-")
	if err != nil {
		return "", err
	}
	return filepath.Abs(d)
}
