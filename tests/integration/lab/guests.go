package lab

import (
	"net"
	"net/netip"
	"slices"
)

// HomeNetwork is one home link of the lab: a Linux bridge in sw with the
// router and a Home Agent on it.
type HomeNetwork struct {
	// Bridge is the link's Linux bridge in sw ("home", "home2").
	Bridge string
	// Prefix is the link's prefix (RFC 6275, section 2: the home subnet
	// prefix).
	Prefix netip.Prefix
	// RouterAddr is the router's global address on the link, and
	// RouterLinkLocal its link-local address there, the guests' default
	// router.
	RouterAddr, RouterLinkLocal netip.Addr
	// HANode is the node (namespace) the link's Home Agent runs in, with
	// HAAddr on its eth0.
	HANode string
	HAAddr netip.Addr
	// Prefix4 is the link's IPv4 subnet, RouterAddr4 the router's IPv4
	// address there (gateway and DHCPv4 server) and HAAddr4 the Home
	// Agent's; all zero on a home link without IPv4 (HomeNet2).
	Prefix4              netip.Prefix
	RouterAddr4, HAAddr4 netip.Addr
}

// The lab's home networks. HomeNet2 exists only in a lab built with
// Options.ExtraGuests.
var (
	// HomeNet is the home link of the guests vm and vm2.
	HomeNet = HomeNetwork{Bridge: "home", Prefix: HomePrefix, RouterAddr: RouterHomeAddr,
		RouterLinkLocal: RouterLinkLocal, HANode: "ha", HAAddr: HAAddr,
		Prefix4: HomePrefix4, RouterAddr4: RouterHomeAddr4, HAAddr4: HAAddr4}
	// HomeNet2 is a second home network, vm3's, with its own Home Agent in
	// ha2. Its router link-local address is the same fe80::1 as HomeNet's,
	// so a guest cannot tell the two routers apart by address either.
	HomeNet2 = HomeNetwork{Bridge: "home2", Prefix: HomePrefix2, RouterAddr: RouterHomeAddr2,
		RouterLinkLocal: RouterLinkLocal, HANode: "ha2", HAAddr: HAAddr2}
)

// Guest is one guest VM of the lab: a namespace (Node) whose only interface
// eth0 (MAC, HoA/64, default route via the home router's link-local address)
// is a veth whose peer, Port, is an OVS port of the host the guest runs on.
type Guest struct {
	Node string
	Port string
	MAC  net.HardwareAddr
	// HoA is the guest's home address (RFC 6275, section 2), in Home.Prefix.
	HoA netip.Addr
	// HoA4 is the guest's IPv4 home address (RFC 5555), in Home.Prefix4:
	// the home DHCPv4 server's static lease for MAC. It is zero for a guest
	// that has none (the DHCPv4 server gives it a pool address, if any).
	HoA4 netip.Addr
	Home HomeNetwork
	// StartHost is the host whose bridge Port is on when New returns.
	StartHost string
}

// LinkLocal returns the guest's link-local address, formed from its MAC as a
// modified EUI-64 interface identifier (RFC 4291, appendix A); the lab builds
// the guests with addr_gen_mode=0, which does the same.
func (g Guest) LinkLocal() netip.Addr {
	m := g.MAC
	a := [16]byte{0xfe, 0x80, 8: m[0] ^ 0x02, 9: m[1], 10: m[2], 11: 0xff, 12: 0xfe, 13: m[3], 14: m[4], 15: m[5]}
	return netip.AddrFrom16(a)
}

// The lab's guests. VM2 and VM3 exist only in a lab built with
// Options.ExtraGuests.
var (
	// VM is the guest every lab has: vm on hostA, port GuestPort.
	VM = Guest{Node: "vm", Port: GuestPort, MAC: GuestMAC, HoA: HoA, HoA4: HoA4, Home: HomeNet, StartHost: "hostA"}
	// VM2 is a second guest of VM's home network, also starting on hostA.
	VM2 = Guest{Node: "vm2", Port: "vnet4", MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x11},
		HoA: netip.MustParseAddr("2001:db8:2000::11"), Home: HomeNet, StartHost: "hostA"}
	// VM3 is a guest of HomeNet2. No host is on its home link, so it starts
	// away from home, on hostB: kgswitch there registers it when it starts,
	// and its Home Agent's first registration (DAD) finds nothing.
	VM3 = Guest{Node: "vm3", Port: "vnet5", MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x12},
		HoA: netip.MustParseAddr("2001:db8:5000::12"), Home: HomeNet2, StartHost: "hostB"}
)

// ExtraNodes are the nodes a lab built with Options.ExtraGuests has beyond
// Nodes.
var ExtraNodes = []string{"ha2", "vm2", "vm3"}

// topology is everything build wires: nodes, veths, bridges and addresses.
type topology struct {
	nodes       []string
	guests      []Guest
	veths       []veth
	bridges     []string
	bridgePorts map[string]string
	ipConfig    map[string][][]string
	sysctls     map[string][]string
}

// guestIPConfig gives a guest its home address and default route.
func guestIPConfig(g Guest) [][]string {
	return [][]string{
		{"addr", "add", netip.PrefixFrom(g.HoA, g.Home.Prefix.Bits()).String(), "dev", "eth0", "nodad"},
		{"route", "add", "default", "via", g.Home.RouterLinkLocal.String(), "dev", "eth0"},
	}
}

// newTopology returns the base lab, plus the second home network with ha2,
// vm2 and vm3 when extra is set.
func newTopology(extra bool) topology {
	t := topology{
		nodes:       slices.Clone(Nodes),
		guests:      []Guest{VM},
		veths:       slices.Clone(veths),
		bridges:     slices.Clone(bridges),
		bridgePorts: make(map[string]string),
		ipConfig:    make(map[string][][]string),
		sysctls:     make(map[string][]string),
	}
	for k, v := range bridgePorts {
		t.bridgePorts[k] = v
	}
	for k, v := range ipConfig {
		t.ipConfig[k] = slices.Clone(v)
	}
	for k, v := range nodeSysctls {
		t.sysctls[k] = v
	}
	if !extra {
		return t
	}
	t.nodes = append(t.nodes, ExtraNodes...)
	t.guests = append(t.guests, VM2, VM3)
	t.bridges = append(t.bridges, HomeNet2.Bridge)
	t.veths = append(t.veths,
		veth{node1: "rtr", name1: "home2", node2: "sw", name2: "rtr-home2"},
		veth{node1: "ha2", name1: "eth0", node2: "sw", name2: "ha2"},
	)
	t.bridgePorts["rtr-home2"] = HomeNet2.Bridge
	t.bridgePorts["ha2"] = HomeNet2.Bridge
	t.ipConfig["rtr"] = append(t.ipConfig["rtr"],
		[]string{"addr", "add", netip.PrefixFrom(RouterHomeAddr2, HomePrefix2.Bits()).String(), "dev", "home2", "nodad"},
		[]string{"addr", "add", RouterLinkLocal.String() + "/64", "dev", "home2", "nodad"},
	)
	t.ipConfig["ha2"] = [][]string{
		{"addr", "add", netip.PrefixFrom(HAAddr2, HomePrefix2.Bits()).String(), "dev", "eth0", "nodad"},
		{"route", "add", "default", "via", RouterLinkLocal.String(), "dev", "eth0"},
	}
	t.sysctls["ha2"] = nodeSysctls["ha"]
	for _, g := range []Guest{VM2, VM3} {
		t.veths = append(t.veths, veth{node1: g.Node, name1: "eth0", node2: g.StartHost, name2: g.Port, mac1: g.MAC.String()})
		t.ipConfig[g.Node] = guestIPConfig(g)
		t.sysctls[g.Node] = nodeSysctls["vm"]
	}
	return t
}
