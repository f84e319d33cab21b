package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// Sysctls applied to each namespace right after it is created, before any
// interface exists, so that every interface inherits them through "default".
// No node autoconfigures from Router Advertisements (none are sent anyway),
// and no address waits for Duplicate Address Detection: automatic link-local
// addresses would otherwise be tentative for a second after each link comes
// up.
var (
	baseSysctls = []string{
		"net.ipv6.conf.all.accept_ra=0",
		"net.ipv6.conf.default.accept_ra=0",
		"net.ipv6.conf.all.accept_dad=0",
		"net.ipv6.conf.default.accept_dad=0",
	}
	nodeSysctls = map[string][]string{
		// The switch namespace only bridges: its bridges and ports must not
		// speak IPv6 themselves (MLD reports, link-local addresses).
		"sw": {"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"},
		// The router forwards IPv4 too, but only as a real foreign network's
		// router would: it answers ARP only for an address of the link
		// asked on (arp_ignore=1) and drops what arrives from a source it
		// would not route back there (strict reverse path filter, RFC
		// 3704). So IPv4 of the guest's home subnet that leaks onto a
		// foreign link goes nowhere, and a test sees the leak instead of a
		// working path.
		"rtr": {
			"net.ipv6.conf.all.forwarding=1",
			"net.ipv4.ip_forward=1",
			"net.ipv4.conf.all.arp_ignore=1",
			"net.ipv4.conf.all.rp_filter=1",
		},
		// The lab Home Agent forwards decapsulated traffic and answers
		// Neighbor Solicitations for bound home addresses (proxy ND).
		"ha": {
			"net.ipv6.conf.all.forwarding=1",
			"net.ipv6.conf.all.proxy_ndp=1",
			"net.ipv6.conf.default.proxy_ndp=1",
		},
		// A live-migrated VM's NIC never loses carrier, so its neighbour
		// cache survives the move. The guest's veth does lose carrier while
		// MoveGuest moves its peer; keep the kernel from flushing the cache
		// then.
		"vm": {
			"net.ipv6.conf.default.addr_gen_mode=0", // EUI-64: GuestLinkLocal
			"net.ipv6.conf.all.ndisc_evict_nocarrier=0",
			"net.ipv6.conf.default.ndisc_evict_nocarrier=0",
			"net.ipv4.conf.all.arp_evict_nocarrier=0",
			"net.ipv4.conf.default.arp_evict_nocarrier=0",
		},
	}
)

// veth is one veth pair, each end created directly in its namespace so that
// nothing ever appears in the root namespace.
type veth struct {
	node1, name1 string
	node2, name2 string
	mac1         string // optional MAC of end 1
}

var veths = []veth{
	{node1: "cn", name1: "eth0", node2: "rtr", name2: "cn0"},
	{node1: "rtr", name1: "home0", node2: "sw", name2: "rtr-home"},
	{node1: "rtr", name1: "fgn0", node2: "sw", name2: "rtr-fgn"},
	{node1: "ha", name1: "eth0", node2: "sw", name2: "ha"},
	{node1: "hostA", name1: Uplink, node2: "sw", name2: "hostA"},
	{node1: "hostB", name1: Uplink, node2: "sw", name2: "hostB"},
	{node1: "rtr", name1: "fgn2", node2: "sw", name2: "rtr-fgn2"},
	{node1: "hostC", name1: Uplink, node2: "sw", name2: "hostC"},
	{node1: "vm", name1: "eth0", node2: "hostA", name2: GuestPort, mac1: GuestMAC.String()},
}

// bridgePorts maps each port in sw to its bridge.
var bridgePorts = map[string]string{
	"rtr-home": "home",
	"ha":       "home",
	"hostA":    "home",
	"rtr-fgn":  "foreign",
	"hostB":    "foreign",
	"rtr-fgn2": "foreign2",
	"hostC":    "foreign2",
}

// bridges are the Linux bridges in sw, one per link; bridgePorts names them.
var bridges = []string{"home", "foreign", "foreign2"}

// ipConfig is, per node, the `ip` commands (without -n) that give it its
// addresses and routes (those of addr.go), run after all links exist.
var ipConfig = map[string][][]string{
	"cn": {
		{"addr", "add", inPrefix(CNAddr, CNPrefix), "dev", "eth0", "nodad"},
		{"route", "add", "default", "via", RouterCNAddr.String(), "dev", "eth0"},
		{"addr", "add", inPrefix(CNAddr4, CNPrefix4), "dev", "eth0"},
		{"route", "add", "default", "via", RouterCNAddr4.String(), "dev", "eth0"},
	},
	"rtr": {
		{"addr", "add", inPrefix(RouterCNAddr, CNPrefix), "dev", "cn0", "nodad"},
		{"addr", "add", inPrefix(RouterHomeAddr, HomePrefix), "dev", "home0", "nodad"},
		{"addr", "add", linkLocal(RouterLinkLocal), "dev", "home0", "nodad"},
		{"addr", "add", inPrefix(RouterForeignAddr, ForeignPrefix), "dev", "fgn0", "nodad"},
		{"addr", "add", linkLocal(RouterLinkLocal), "dev", "fgn0", "nodad"},
		{"addr", "add", inPrefix(RouterForeignAddrC, ForeignPrefixC), "dev", "fgn2", "nodad"},
		{"addr", "add", linkLocal(RouterLinkLocal), "dev", "fgn2", "nodad"},
		{"addr", "add", inPrefix(RouterCNAddr4, CNPrefix4), "dev", "cn0"},
		{"addr", "add", inPrefix(RouterHomeAddr4, HomePrefix4), "dev", "home0"},
		{"addr", "add", inPrefix(RouterForeignAddr4, ForeignPrefix4), "dev", "fgn0"},
		{"addr", "add", inPrefix(RouterForeignAddr4C, ForeignPrefix4C), "dev", "fgn2"},
	},
	"ha": {
		{"addr", "add", inPrefix(HAAddr, HomePrefix), "dev", "eth0", "nodad"},
		{"route", "add", "default", "via", RouterLinkLocal.String(), "dev", "eth0"},
		{"addr", "add", inPrefix(HAAddr4, HomePrefix4), "dev", "eth0"},
		{"route", "add", "default", "via", RouterHomeAddr4.String(), "dev", "eth0"},
	},
	"hostA": {
		{"addr", "add", inPrefix(HostAAddr, HomePrefix), "dev", Bridge, "nodad"},
		{"route", "add", "default", "via", RouterLinkLocal.String(), "dev", Bridge},
	},
	"hostB": {
		{"addr", "add", inPrefix(CareOfAddr, ForeignPrefix), "dev", Bridge, "nodad"},
		{"route", "add", "default", "via", RouterLinkLocal.String(), "dev", Bridge},
	},
	"hostC": {
		{"addr", "add", inPrefix(CareOfAddrC, ForeignPrefixC), "dev", Bridge, "nodad"},
		{"route", "add", "default", "via", RouterLinkLocal.String(), "dev", Bridge},
	},
	// The guest's IPv4 address comes from DHCPv4 (StartGuestDHCP4).
	"vm": {
		{"addr", "add", inPrefix(HoA, HomePrefix), "dev", "eth0", "nodad"},
		{"route", "add", "default", "via", RouterLinkLocal.String(), "dev", "eth0"},
	},
}

// inPrefix formats a as an interface address of prefix p ("a/len").
func inPrefix(a netip.Addr, p netip.Prefix) string {
	return netip.PrefixFrom(a, p.Bits()).String()
}

// linkLocal formats a as a link-local interface address ("a/64").
func linkLocal(a netip.Addr) string { return netip.PrefixFrom(a, 64).String() }

func (l *Lab) build(ctx context.Context) error {
	start := time.Now()
	dir, err := tempDir(l.ID)
	if err != nil {
		return err
	}
	l.Dir = dir
	l.logf("lab %s: dir %s", l.ID, dir)

	l.ovs = make(map[string]*OVSHost, len(Hosts))
	for _, h := range Hosts {
		l.ovs[h] = l.newOVSHost(h)
	}
	// Per-node work is independent between nodes, so run it in parallel: it
	// is mostly waiting for short-lived ip/sysctl processes.
	if err := l.eachNode(func(node string) error {
		if err := l.addNetns(ctx, node); err != nil {
			return err
		}
		if err := l.sysctl(ctx, node, append(append([]string{}, baseSysctls...), l.topo.sysctls[node]...)...); err != nil {
			return err
		}
		if h := l.ovs[node]; h != nil {
			return h.startDB(ctx)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, b := range l.topo.bridges {
		if err := l.ipn(ctx, "sw", "link", "add", b, "type", "bridge",
			"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
			return err
		}
		if err := l.ipn(ctx, "sw", "link", "set", b, "up"); err != nil {
			return err
		}
	}
	for _, v := range l.topo.veths {
		args := []string{"link", "add", v.name1, "netns", l.NS(v.node1)}
		if v.mac1 != "" {
			args = append(args, "address", v.mac1)
		}
		args = append(args, "type", "veth", "peer", "name", v.name2, "netns", l.NS(v.node2))
		if _, err := run(exec.CommandContext(ctx, l.tools.ip, args...), "lab"); err != nil {
			return err
		}
	}

	if err := l.eachNode(func(node string) error {
		if l.ovs[node] != nil {
			return l.buildHost(ctx, node)
		}
		if err := l.buildPlainNode(ctx, node); err != nil {
			return err
		}
		if node == dhcp4ServerNode {
			return l.startDHCP4Server(ctx)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := l.eachNode(func(node string) error {
		return l.waitLinksUp(ctx, node, l.vethEnds(node)...)
	}); err != nil {
		return err
	}
	l.logf("lab %s: built in %v", l.ID, time.Since(start).Round(time.Millisecond))
	return nil
}

// eachNode runs f for every node concurrently and joins the errors.
func (l *Lab) eachNode(f func(node string) error) error {
	errs := make([]error, len(l.topo.nodes))
	var wg sync.WaitGroup
	for i, node := range l.topo.nodes {
		wg.Go(func() { errs[i] = f(node) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Lab) addNetns(ctx context.Context, node string) error {
	ns := l.NS(node)
	// Recorded first: an interrupted `ip netns add` may still have made it.
	l.mu.Lock()
	l.netns = append(l.netns, ns)
	l.mu.Unlock()
	if _, err := run(exec.CommandContext(ctx, l.tools.ip, "netns", "add", ns), "lab"); err != nil {
		return err
	}
	return l.ipn(ctx, node, "link", "set", "lo", "up")
}

// buildPlainNode configures a node without OVS: TX checksum offload off and
// link up on every veth end, then addresses and routes.
func (l *Lab) buildPlainNode(ctx context.Context, node string) error {
	for _, dev := range l.vethEnds(node) {
		if err := l.ethtoolTxOff(ctx, node, dev); err != nil {
			return err
		}
		if node == "sw" {
			if err := l.ipn(ctx, node, "link", "set", dev, "master", l.topo.bridgePorts[dev]); err != nil {
				return err
			}
		}
		if err := l.ipn(ctx, node, "link", "set", dev, "up"); err != nil {
			return err
		}
	}
	return l.configureIP(ctx, node)
}

// buildHost readies the host's veth ends, starts the host's ovs-vswitchd with
// br0 (userspace datapath) holding the uplink and the ports of the guests
// that start there, and gives br0 the host's address.
func (l *Lab) buildHost(ctx context.Context, node string) error {
	h := l.ovs[node]
	ports := slices.DeleteFunc(l.vethEnds(node), func(dev string) bool { return dev == h.CareOfNIC })
	for _, dev := range ports {
		if err := l.preparePort(ctx, node, dev); err != nil {
			return err
		}
	}
	if err := h.startSwitch(ctx, ports); err != nil {
		return err
	}
	if err := l.ipn(ctx, node, "link", "set", Bridge, "up"); err != nil {
		return err
	}
	if h.UplinkBridge != "" {
		// As br-int in OpenStack: the host takes no part in the guests'
		// bridge; its address is on the uplink bridge.
		if err := l.sysctl(ctx, node, "net.ipv6.conf."+Bridge+".disable_ipv6=1"); err != nil {
			return err
		}
		if err := l.ipn(ctx, node, "link", "set", h.UplinkBridge, "up"); err != nil {
			return err
		}
	}
	if h.CareOfNIC != "" {
		// The host's address is on a NIC of its own, in no bridge; it
		// takes no part in the guests' bridge.
		if err := l.sysctl(ctx, node, "net.ipv6.conf."+Bridge+".disable_ipv6=1"); err != nil {
			return err
		}
		if err := l.ethtoolTxOff(ctx, node, h.CareOfNIC); err != nil {
			return err
		}
		if err := l.ipn(ctx, node, "link", "set", h.CareOfNIC, "up"); err != nil {
			return err
		}
	}
	return l.configureIP(ctx, node)
}

// attachPort readies a veth end in a host's namespace and adds it to br0.
func (l *Lab) attachPort(ctx context.Context, node, dev string) error {
	if err := l.preparePort(ctx, node, dev); err != nil {
		return err
	}
	_, err := l.ovs[node].Vsctl(ctx, "--may-exist", "add-port", Bridge, dev)
	return err
}

// preparePort readies a veth end in a host's namespace for br0: IPv6 off
// (the host kernel would otherwise see, and answer, IPv6 arriving on the
// port too, because the userspace datapath reads ports with AF_PACKET rather
// than stealing frames from the kernel), TX checksum offload off, link up.
func (l *Lab) preparePort(ctx context.Context, node, dev string) error {
	if err := l.sysctl(ctx, node, "net.ipv6.conf."+dev+".disable_ipv6=1"); err != nil {
		return err
	}
	if err := l.ethtoolTxOff(ctx, node, dev); err != nil {
		return err
	}
	return l.ipn(ctx, node, "link", "set", dev, "up")
}

// configureIP gives node its addresses and routes (topology.ipConfig) with
// one `ip -batch` rather than a process per command, which keeps New fast
// now that most nodes have IPv4 as well.
func (l *Lab) configureIP(ctx context.Context, node string) error {
	cmds := l.topo.ipConfig[node]
	if len(cmds) == 0 {
		return nil
	}
	var batch strings.Builder
	for _, args := range cmds {
		batch.WriteString(strings.Join(args, " ") + "\n")
	}
	cmd := exec.CommandContext(ctx, l.tools.ip, "-n", l.NS(node), "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if _, err := run(cmd, node); err != nil {
		return fmt.Errorf("%w\nbatch:\n%s", err, batch.String())
	}
	return nil
}

// waitLinksUp waits until every dev in node is operationally up. The kernel
// applies a carrier change asynchronously (linkwatch, up to a second later),
// and until then the device's queueing discipline is noop, which drops every
// frame sent through it: without the wait, the first packets after New or
// MoveGuest would be lost.
func (l *Lab) waitLinksUp(ctx context.Context, node string, devs ...string) error {
	return wait.Until(ctx, 5*time.Second, 20*time.Millisecond, func() error {
		out, err := run(exec.CommandContext(ctx, l.tools.ip, "-n", l.NS(node), "-o", "link", "show"), node)
		if err != nil {
			return wait.Fatal(err)
		}
		if down := linksNotUp(out, devs); len(down) > 0 {
			return fmt.Errorf("%s: links %v not up:\n%s", node, down, out)
		}
		return nil
	})
}

// linksNotUp returns those of devs that `ip -o link show` output does not
// list with operational state UP.
func linksNotUp(ipOut string, devs []string) []string {
	up := make(map[string]bool)
	for _, line := range strings.Split(ipOut, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		for i := 2; i+1 < len(f); i++ {
			if f[i] == "state" {
				up[name] = f[i+1] == "UP"
				break
			}
		}
	}
	var down []string
	for _, d := range devs {
		if !up[d] {
			down = append(down, d)
		}
	}
	return down
}

// vethEnds lists the veth ends created in node.
func (l *Lab) vethEnds(node string) []string {
	var devs []string
	for _, v := range l.topo.veths {
		if v.node1 == node {
			devs = append(devs, v.name1)
		}
		if v.node2 == node {
			devs = append(devs, v.name2)
		}
	}
	return devs
}

// ipn runs `ip -n NS args...`.
func (l *Lab) ipn(ctx context.Context, node string, args ...string) error {
	_, err := run(exec.CommandContext(ctx, l.tools.ip, append([]string{"-n", l.NS(node)}, args...)...), node)
	return err
}

func (l *Lab) sysctl(ctx context.Context, node string, settings ...string) error {
	_, err := l.Run(ctx, node, append([]string{l.tools.sysctl, "-q", "-w"}, settings...)...)
	return err
}

// ethtoolTxOff turns TX checksum offload off: the veth would otherwise hand
// frames with partial checksums to the userspace datapath, which forwards
// them as they are, and TCP through OVS breaks.
func (l *Lab) ethtoolTxOff(ctx context.Context, node, dev string) error {
	_, err := l.Run(ctx, node, l.tools.ethtool, "-K", dev, "tx", "off")
	return err
}

// newOVSHost describes host's OVS; start brings it up.
func (l *Lab) newOVSHost(host string) *OVSHost {
	dir := filepath.Join(l.Dir, host)
	h := &OVSHost{
		Host:   host,
		NS:     l.NS(host),
		RunDir: dir,
		DBSock: "unix:" + filepath.Join(dir, "db.sock"),
		Bridge: Bridge,
		lab:    l,
	}
	switch l.layout {
	case LayoutPatch:
		h.UplinkBridge = UplinkBridge
	case LayoutNIC:
		h.CareOfNIC = HostNIC
	}
	return h
}

// errMissing formats a Preflight failure.
func errMissing(what, hint string) error {
	return fmt.Errorf("%s missing (%s)", what, hint)
}
