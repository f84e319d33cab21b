package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

func TestOfctlArgs(t *testing.T) {
	const target = "unix:/run/x/br0.mgmt"
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"command only", []string{"dump-flows"}, []string{"dump-flows", target}},
		{"command and flow", []string{"add-flow", "priority=1,actions=drop"}, []string{"add-flow", target, "priority=1,actions=drop"}},
		{"short option with value", []string{"-O", "OpenFlow13", "dump-flows", "table=0"}, []string{"-O", "OpenFlow13", "dump-flows", target, "table=0"}},
		{"long option", []string{"--protocols=OpenFlow13", "--names", "dump-ports-desc"}, []string{"--protocols=OpenFlow13", "--names", "dump-ports-desc", target}},
		{"options only", []string{"--strict"}, []string{"--strict", target}},
		{"empty", nil, []string{target}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ofctlArgs(tc.args, target)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ofctlArgs(%q) mismatch (-want +got):\n%s", tc.args, diff)
			}
		})
	}
}

func TestLinksNotUp(t *testing.T) {
	const out = `1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 52:54:00:00:00:10 brd ff:ff:ff:ff:ff:ff link-netns kg1x0-hostA
4: vnet3@if2: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noop state LOWERLAYERDOWN mode DEFAULT group default qlen 1000\    link/ether aa:bb:cc:dd:ee:ff brd ff:ff:ff:ff:ff:ff
5: br0: <BROADCAST,MULTICAST,PROMISC,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UNKNOWN mode DEFAULT group default qlen 1000\    link/ether aa:bb:cc:dd:ee:01 brd ff:ff:ff:ff:ff:ff
`
	for _, tc := range []struct {
		devs []string
		want []string
	}{
		{[]string{"eth0"}, nil},
		{[]string{"eth0", "vnet3"}, []string{"vnet3"}},
		{[]string{"br0", "missing"}, []string{"br0", "missing"}},
	} {
		if diff := cmp.Diff(tc.want, linksNotUp(out, tc.devs)); diff != "" {
			t.Errorf("linksNotUp(%q) mismatch (-want +got):\n%s", tc.devs, diff)
		}
	}
}

func TestOwnerPID(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wantPID int
		wantOK  bool
	}{
		{"kg1234x0-cn", 1234, true},
		{"kg1234x17-hostA", 1234, true},
		{"kg1234x0-123456789", 1234, true},
		{"kg1234-cn", 0, false},
		{"kgx0-cn", 0, false},
		{"kg1234x0", 0, false},
		{"xkg1234x0-cn", 0, false},
		{"ns1", 0, false},
	} {
		pid, ok := ownerPID(tc.name)
		if pid != tc.wantPID || ok != tc.wantOK {
			t.Errorf("ownerPID(%q) = %d, %v, want %d, %v", tc.name, pid, ok, tc.wantPID, tc.wantOK)
		}
	}
}

func TestProcessAlive(t *testing.T) {
	if !ProcessAlive(os.Getpid()) {
		t.Errorf("ProcessAlive(own pid) = false, want true")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(cmd.Process.Pid) {
		t.Errorf("ProcessAlive(reaped pid %d) = true, want false", cmd.Process.Pid)
	}
	// A zombie counts as dead: detached OVS daemons are reaped by init, not
	// by us, so Close must not wait for that.
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	if err := wait.Until(context.Background(), 5*time.Second, time.Millisecond, func() error {
		if ProcessAlive(zombie.Process.Pid) {
			return fmt.Errorf("ProcessAlive(zombie %d) still true", zombie.Process.Pid)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestNSAndCommand(t *testing.T) {
	l := &Lab{ID: "kg1x2", tools: tools{ip: "/usr/sbin/ip"}}
	for _, node := range Nodes {
		if got, want := l.NS(node), "kg1x2-"+node; got != want {
			t.Errorf("NS(%q) = %q, want %q", node, got, want)
		}
	}
	for _, node := range append([]string{"nosuch"}, ExtraNodes...) {
		if got := l.NS(node); got != "" {
			t.Errorf("NS(%q) without ExtraGuests = %q, want \"\"", node, got)
		}
	}
	extra := &Lab{ID: "kg1x3", topo: newTopology(true)}
	for _, node := range append(slices.Clone(Nodes), ExtraNodes...) {
		if got, want := extra.NS(node), "kg1x3-"+node; got != want {
			t.Errorf("with ExtraGuests: NS(%q) = %q, want %q", node, got, want)
		}
	}
	cmd := l.Command(context.Background(), "vm", "ip", "addr")
	if got, want := strings.Join(cmd.Args, " "), "/usr/sbin/ip netns exec kg1x2-vm ip addr"; got != want {
		t.Errorf("Command args = %q, want %q", got, want)
	}
	if err := l.Command(context.Background(), "nosuch", "true").Run(); err == nil {
		t.Errorf("Command(nosuch).Run() = nil, want an error")
	}
}

// TestInterfaceNames checks what the kernel would reject late: interface
// names must fit IFNAMSIZ (15 bytes) and be unique within each namespace; and
// that every node, bridge port and guest of both topologies is wired.
func TestInterfaceNames(t *testing.T) {
	for _, extra := range []bool{false, true} {
		topo := newTopology(extra)
		seen := make(map[string]bool)
		add := func(node, dev string) {
			if len(dev) > 15 {
				t.Errorf("extra=%v: interface %s in %s: %d bytes, want <= 15", extra, dev, node, len(dev))
			}
			if seen[node+"/"+dev] {
				t.Errorf("extra=%v: interface %s created twice in %s", extra, dev, node)
			}
			if !slices.Contains(topo.nodes, node) {
				t.Errorf("extra=%v: veth end %s in %s, which is no node of %v", extra, dev, node, topo.nodes)
			}
			seen[node+"/"+dev] = true
		}
		for _, v := range topo.veths {
			add(v.node1, v.name1)
			add(v.node2, v.name2)
		}
		for port, br := range topo.bridgePorts {
			if !seen["sw/"+port] {
				t.Errorf("extra=%v: bridge port %s (of %s) is no veth end in sw", extra, port, br)
			}
			if !slices.Contains(topo.bridges, br) {
				t.Errorf("extra=%v: bridge port %s is on %s, which is no bridge of %v", extra, port, br, topo.bridges)
			}
		}
		for _, g := range topo.guests {
			if !seen[g.StartHost+"/"+g.Port] || !seen[g.Node+"/"+Uplink] {
				t.Errorf("extra=%v: guest %s: want veth %s/%s - %s/%s", extra, g.Node, g.Node, Uplink, g.StartHost, g.Port)
			}
			if !g.Home.Prefix.Contains(g.HoA) || len(topo.ipConfig[g.Node]) == 0 {
				t.Errorf("extra=%v: guest %s: HoA %v outside %v or no addresses", extra, g.Node, g.HoA, g.Home.Prefix)
			}
		}
		want := len(Nodes)
		if extra {
			want += len(ExtraNodes)
		}
		if len(topo.nodes) != want {
			t.Errorf("extra=%v: got %d nodes %v, want %d", extra, len(topo.nodes), topo.nodes, want)
		}
	}
	// The base topology is what it was before ExtraGuests existed.
	if base := newTopology(false); len(base.guests) != 1 || len(base.veths) != len(veths) || len(base.bridges) != len(bridges) {
		t.Errorf("newTopology(false): got %d guests, %d veths, %d bridges, want 1, %d, %d", len(base.guests), len(base.veths), len(base.bridges), len(veths), len(bridges))
	}
}

// TestGuestLinkLocal checks the modified EUI-64 link-local address (RFC
// 4291, appendix A) against the kernel's, as recorded in GuestLinkLocal.
func TestGuestLinkLocal(t *testing.T) {
	for _, tc := range []struct {
		g    Guest
		want string
	}{
		{VM, GuestLinkLocal.String()},
		{VM2, "fe80::5054:ff:fe00:11"},
		{VM3, "fe80::5054:ff:fe00:12"},
	} {
		if got := tc.g.LinkLocal().String(); got != tc.want {
			t.Errorf("%s.LinkLocal() = %s, want %s", tc.g.Node, got, tc.want)
		}
	}
}

// TestRARPAnnounce checks the announcement frame byte for byte against the
// layout of QEMU's announce_self_create (RFC 903 RARP, opcode 3).
func TestRARPAnnounce(t *testing.T) {
	got := rarpAnnounce(GuestMAC)
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
		0x52, 0x54, 0x00, 0x00, 0x00, 0x10, // source: the guest
		0x80, 0x35, // RARP
		0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet, IPv4, address lengths
		0x00, 0x03, // request reverse
		0x52, 0x54, 0x00, 0x00, 0x00, 0x10, 0, 0, 0, 0, // sender: the guest, no address
		0x52, 0x54, 0x00, 0x00, 0x00, 0x10, 0, 0, 0, 0, // target: the guest, no address
	}
	want = append(want, make([]byte, 60-len(want))...)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rarpAnnounce(%v) mismatch (-want +got):\n%s", GuestMAC, diff)
	}
}
