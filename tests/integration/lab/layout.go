package lab

import "slices"

// HostLayout is how a lab host's Open vSwitch bridges are arranged (see
// "Host layouts" in README.md).
type HostLayout int

const (
	// LayoutOneBridge: the uplink and the guests' ports on Bridge, the
	// host's address on Bridge's LOCAL port.
	LayoutOneBridge HostLayout = iota
	// LayoutPatch is OpenStack's (Neutron's OVS agent): the guests' ports
	// on Bridge (br-int's role), the uplink on UplinkBridge with the host's
	// address on its LOCAL port, the two bridges joined by the patch ports
	// PatchVM and PatchUplink.
	LayoutPatch
	// LayoutNIC is host layout 3: the host's address on HostNIC, a plain
	// veth in no bridge, into the same LAN as Bridge's uplink, which stays
	// Bridge's own way to the guests' home link.
	LayoutNIC
)

// HostNIC is, in LayoutNIC, each host's NIC outside OVS, holding its
// address.
const HostNIC = "eth1"

// Names of LayoutPatch, as Neutron names a provider bridge's patch pair.
const (
	// UplinkBridge is the bridge of the uplink in LayoutPatch.
	UplinkBridge = "br-ex"
	// PatchVM is the patch port on Bridge, PatchUplink its peer on
	// UplinkBridge.
	PatchVM     = "int-br-ex"
	PatchUplink = "phy-br-ex"
)

func (hl HostLayout) String() string {
	switch hl {
	case LayoutPatch:
		return "patch"
	case LayoutNIC:
		return "nic"
	}
	return "one-bridge"
}

// HostLink is the interface where a host's own packets (its tunnel packets
// and signalling) meet the LAN: the uplink, or in LayoutNIC the host's NIC.
func (hl HostLayout) HostLink() string {
	if hl == LayoutNIC {
		return HostNIC
	}
	return Uplink
}

// HostBridge returns the bridge whose LOCAL port carries the host's address.
func (h *OVSHost) HostBridge() string {
	if h.UplinkBridge != "" {
		return h.UplinkBridge
	}
	return h.Bridge
}

// switchArgs are the ovs-vsctl arguments that create the host's bridges
// with ports on them: in LayoutPatch the uplink goes to UplinkBridge, the
// other ports to Bridge, and the patch pair joins the two.
func (h *OVSHost) switchArgs(ports []string) []string {
	args := []string{"--no-wait", "init", "--", "add-br", h.Bridge, "--", "set", "bridge", h.Bridge, "datapath_type=netdev"}
	if h.UplinkBridge != "" {
		args = append(args, "--", "add-br", h.UplinkBridge, "--", "set", "bridge", h.UplinkBridge, "datapath_type=netdev",
			"--", "add-port", h.Bridge, PatchVM, "--", "set", "interface", PatchVM, "type=patch", "options:peer="+PatchUplink,
			"--", "add-port", h.UplinkBridge, PatchUplink, "--", "set", "interface", PatchUplink, "type=patch", "options:peer="+PatchVM)
	}
	for _, p := range ports {
		br := h.Bridge
		if p == Uplink && h.UplinkBridge != "" {
			br = h.UplinkBridge
		}
		args = append(args, "--", "add-port", br, p)
	}
	return args
}

// numberedPorts are the ports whose OpenFlow numbers startSwitch waits for.
func (h *OVSHost) numberedPorts(ports []string) []string {
	if h.UplinkBridge == "" {
		return ports
	}
	return append(slices.Clone(ports), PatchVM, PatchUplink)
}

// moveIPConfig moves a host's address and routes from Bridge to dev:
// UplinkBridge in LayoutPatch, HostNIC in LayoutNIC.
func moveIPConfig(cmds [][]string, dev string) [][]string {
	out := make([][]string, len(cmds))
	for i, c := range cmds {
		c = slices.Clone(c)
		for j := 1; j < len(c); j++ {
			if c[j-1] == "dev" && c[j] == Bridge {
				c[j] = dev
			}
		}
		out[i] = c
	}
	return out
}

// nicTopology adds to t, for LayoutNIC, each host's HostNIC: a veth into
// the switch's bridge of the host's uplink, named <host>-nic there.
func nicTopology(t *topology, hosts []string) {
	for _, h := range hosts {
		t.veths = append(t.veths, veth{node1: h, name1: HostNIC, node2: "sw", name2: h + "-nic"})
		t.bridgePorts[h+"-nic"] = t.bridgePorts[h]
		t.ipConfig[h] = moveIPConfig(t.ipConfig[h], HostNIC)
	}
}
