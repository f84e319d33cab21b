package vswitch

import (
	"hash/fnv"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// Every use of OpenFlow is in this file. A VM's rules follow from its phase
// alone: flowsFor says what they must be, and syncFlows asks OVS for them.
// Every change of phase calls syncFlows, and so do a restart and an
// ovs-vswitchd that lost its tables, so there is one place that decides what
// a VM's flows are.

// FlowTable is what the control loop needs of the bridge's OpenFlow tables.
type FlowTable interface {
	// ReplaceSets atomically replaces, per cookie, the flows carrying it.
	ReplaceSets(sets map[uint64][]*ovs.Flow) error
	SetNoFlood(port string, on bool) error
	// PacketsByCookie counts, per kgswitch cookie, the packets its flows matched.
	PacketsByCookie() (map[uint64]uint64, error)
	// Dump lists the flows whose cookie matches cookie under mask.
	Dump(cookie, mask uint64) ([]*ovs.Flow, error)
}

// flowSets are flows by cookie: a cookie with no flows means none at all.
type flowSets = map[uint64][]*ovs.Flow

// staleCookies returns, as empty sets, every cookie under kgswitch's prefix
// on the bridge that is not in installed.
func staleCookies(ft FlowTable, installed map[uint64]bool) (flowSets, error) {
	flows, err := ft.Dump(ovsctl.Cookie, ovsctl.CookieMask)
	if err != nil {
		return nil, err
	}
	stale := flowSets{}
	for _, f := range flows {
		if !installed[f.Cookie] {
			stale[f.Cookie] = nil
		}
	}
	return stale, nil
}

// flowsFor returns, per cookie of p, the flows p's phase needs; an empty set
// means none.
func (s *Switch) flowsFor(p *vmPort) map[uint64][]*ovs.Flow {
	port, spoof := portCookie(p.key()), spoofCookie(p.key())
	sets := map[uint64][]*ovs.Flow{port: nil, spoof: nil}
	if s.dp == nil {
		return sets
	}
	switch p.phase {
	case absent:
		sets[port] = s.awaitFlows(p)
	case departed:
		sets[port] = s.departureFlows(p, p.dep.takeoverMAC)
	case prepared, abroad:
		sets[port] = s.portFlows(p)
		sets[spoof] = s.spoofFlows(p)
	case broken:
		if s.foreignFor(p) && p.mac != nil {
			// Kept off the foreign LAN all the same.
			sets[port] = s.portFlows(p)
			sets[spoof] = s.spoofFlows(p)
		}
	case returnWaiting:
		// A copy of the guest's frames tells kgswitch it runs here; they
		// go on to the home link as ever.
		sets[port] = append(append(s.returnFlows(p), s.homeFlows(p)...), &ovs.Flow{Priority: 210, InPort: p.ofport,
			Matches: []ovs.Match{ovs.DataLinkSource(p.mac.String())}, Actions: []ovs.Action{ovs.Output(s.kgPort), ovs.Normal()}})
	case returning:
		sets[port] = append(s.returnFlows(p), s.homeFlows(p)...)
	case home:
		sets[port] = s.homeFlows(p)
	}
	return sets
}

// isolated: the VM's port keeps the foreign LAN's floods off.
func (s *Switch) isolated(p *vmPort) bool {
	return p.ofport != 0 && p.iface != "" && (p.foreignHere() || (p.phase == broken && s.foreignFor(p) && p.mac != nil))
}

// syncFlows asks OVS for p's flows as its phase requires, in one bundle.
func (s *Switch) syncFlows(p *vmPort) {
	if s.dp == nil {
		return
	}
	s.ovs.replace(s.flowsFor(p))
	if s.isolated(p) {
		s.ovs.setNoFlood(p.iface, true)
	}
}

// dropFlows asks OVS to remove every flow of p (a VM forgotten).
func (s *Switch) dropFlows(p *vmPort) {
	if s.dp == nil {
		return
	}
	s.ovs.replace(map[uint64][]*ovs.Flow{portCookie(p.key()): nil, spoofCookie(p.key()): nil})
}

// syncAll asks for every VM's flows, in one bundle: at start, and after
// ovs-vswitchd lost its tables.
func (s *Switch) syncAll() {
	if s.dp == nil {
		return
	}
	all := map[uint64][]*ovs.Flow{}
	for _, p := range s.vms {
		maps.Copy(all, s.flowsFor(p))
	}
	s.ovs.replace(all)
	// NORMAL would flood the home link's multicast to kgswitch besides the
	// copies its flows make (output:kgs0 then NORMAL): a DAD probe or an
	// advertisement would come twice, and a refused one be counted twice.
	// kgswitch gets only what its flows give it.
	s.ovs.setNoFlood(s.cfg.InternalPort, true)
	for _, p := range s.vms {
		if s.isolated(p) {
			s.ovs.setNoFlood(p.iface, true)
		}
	}
}

// portCookie gives each port's flows a cookie of their own under kgswitch's
// prefix, so one VM's flows are replaced without touching another's.
func portCookie(port string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(port))
	c := h.Sum64() &^ (ovsctl.CookieMask | spoofBit)
	if c == 0 {
		c = 1 // cookie ovsctl.Cookie itself is the host-wide flows'
	}
	return ovsctl.Cookie | c
}

// spoofBit marks the cookie of a port's anti-spoofing drop flow, kept apart
// so its packet count is the number of spoofed frames.
const spoofBit = 1 << 47

func spoofCookie(port string) uint64 { return portCookie(port) | spoofBit }

func (s *Switch) globalFlows() []*ovs.Flow {
	if s.nicLayout() {
		// Host layout 3: the care-of address is on no bridge. What
		// arrives for it is read from its NIC (nic.go), and nothing goes
		// back to the host through the bridge: the host kernel keeps what
		// the NIC's socket only copies.
		return []*ovs.Flow{{Priority: 100, InPort: s.kgPort, Actions: []ovs.Action{ovs.Drop()}}}
	}
	coa := s.cfg.CareOfAddress.String()
	flows := []*ovs.Flow{
		// Tunnel and Mobility Header packets for the care-of address bypass the host
		// kernel, which has neither ip6_tunnel nor MIP6 and would answer them with
		// Parameter Problems: IPv6 in IPv6 (41), and IPv4 in IPv6 (4) for
		// guests with an IPv4 home address (RFC 5555).
		{Priority: 200, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort, Matches: []ovs.Match{ovs.IPv6Destination(coa), ovs.NetworkProtocol(41)}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		{Priority: 200, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort, Matches: []ovs.Match{ovs.IPv6Destination(coa), ovs.NetworkProtocol(4)}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		{Priority: 200, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort, Matches: []ovs.Match{ovs.IPv6Destination(coa), ovs.NetworkProtocol(135)}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		// What kgswitch hands back to the host (ICMPv6 from a Home Agent
		// to the host itself) goes to the bridge's local port, where the
		// care-of address lives; in host layout 2 across the patch to the
		// uplink bridge's (hostPortTo).
		{Priority: 150, Protocol: ovs.ProtocolIPv6, InPort: s.kgPort, Matches: []ovs.Match{ovs.IPv6Destination(coa)}, Actions: []ovs.Action{ovs.Output(s.hostPortTo())}},
		// What kgswitch sends goes only where a port flow says.
		{Priority: 100, InPort: s.kgPort, Actions: []ovs.Action{ovs.Drop()}},
	}
	// A Home Agent sends its own packets for a guest (echo replies, ICMP errors)
	// to the care-of address with a type 2 routing header, which the host kernel
	// would refuse; OpenFlow cannot match the routing header, so all ICMPv6 from
	// a served Home Agent comes to kgswitch, which passes on what is the host's.
	for _, ha := range s.homeAgents() {
		flows = append(flows, &ovs.Flow{Priority: 190, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort,
			Matches: []ovs.Match{ovs.IPv6Source(ha.String()), ovs.IPv6Destination(coa), ovs.NetworkProtocol(58)},
			Actions: []ovs.Action{ovs.Output(s.kgPort)}})
		if s.sendsESP(ha) {
			// Its Acks under ESP: next header 50, not 135.
			flows = append(flows, s.espFlow(ha, coa))
		}
	}
	return flows
}

// sendsESP reports whether Home Agent ha protects some VM's signalling.
func (s *Switch) sendsESP(ha netip.Addr) bool {
	return slices.ContainsFunc(s.cfg.SAs, func(sa esp.SA) bool { return sa.Src == ha })
}

// espFlow diverts ESP from Home Agent ha to dst (a care-of address, or a
// returning VM's home address) to kgswitch: the host kernel would drop it.
func (s *Switch) espFlow(ha netip.Addr, dst string) *ovs.Flow {
	return &ovs.Flow{Priority: 200, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort,
		Matches: []ovs.Match{ovs.IPv6Source(ha.String()), ovs.IPv6Destination(dst), ovs.NetworkProtocol(esp.IPProtoESP)},
		Actions: []ovs.Action{ovs.Output(s.kgPort)}}
}

// ovsLocalPort is OpenFlow's OFPP_LOCAL, the bridge's own interface.
const ovsLocalPort = 0xfffe

// homeAgents lists, sorted, the Home Agents of the configured VMs for which
// this host is foreign: any of them may arrive at any time.
func (s *Switch) homeAgents() []netip.Addr {
	var has []netip.Addr
	for _, p := range s.vms {
		if s.foreignFor(p) && !slices.Contains(has, p.vm.Home.HomeAgent) {
			has = append(has, p.vm.Home.HomeAgent)
		}
	}
	slices.SortFunc(has, netip.Addr.Compare)
	return has
}

// installGlobalFlows asks for the host-wide flows when their set changed:
// it depends on which Home Agents the served guests use.
func (s *Switch) installGlobalFlows() {
	if err := s.applyHostFilter(); err != nil {
		s.log.Error("host filter not updated; the host kernel may answer the tunnel with errors", "err", err)
	}
	if s.dp == nil {
		return
	}
	has := s.homeAgents()
	if s.globalInstalled && slices.Equal(has, s.globalHAs) {
		return
	}
	global := s.globalFlows()
	s.ovs.replace(map[uint64][]*ovs.Flow{ovsctl.Cookie: global})
	if s.cfg.UplinkBridge != "" {
		s.ovs.replaceOn(uplinkBridge, map[uint64][]*ovs.Flow{ovsctl.Cookie: s.uplinkBridgeFlows(global)})
	}
	s.globalInstalled, s.globalHAs = true, has
}

// awaitFlows are installed, on a host foreign to a VM whose MAC is known,
// before its port appears: a migrated guest may send (MLD, its RARP
// announcement) within milliseconds of its port appearing, before the port's
// own flows are in. Whatever port its frames come from, they go to kgswitch,
// not to the foreign LAN (where the bridge would also learn the guest's MAC and
// deliver the LAN's unicast to it), and their arrival tells kgswitch the guest
// runs here.
func (s *Switch) awaitFlows(p *vmPort) []*ovs.Flow {
	if !s.foreignFor(p) || p.vm.MAC == nil {
		return nil
	}
	return []*ovs.Flow{
		{Priority: 180, Matches: []ovs.Match{ovs.DataLinkSource(p.vm.MAC.String())}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
	}
}

// portFlows are a foreign guest's: all it sends goes to kgswitch, and
// kgswitch's frames for it go to it, and nothing else does: a bridge that
// learnt the guest's MAC (from a frame sent before these flows were in) must
// not deliver the foreign LAN's unicast to it. "All" is every EtherType: a
// dual-stack guest's IPv4, its ARP and its DHCP broadcasts are its home
// link's business, answered or tunnelled by kgswitch, never the foreign
// LAN's.
func (s *Switch) portFlows(p *vmPort) []*ovs.Flow {
	return []*ovs.Flow{
		{Priority: 200, InPort: p.ofport, Matches: []ovs.Match{ovs.DataLinkSource(p.mac.String())}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkDestination(p.mac.String())}, Actions: []ovs.Action{ovs.Output(p.ofport)}},
		{Priority: 190, Matches: []ovs.Match{ovs.DataLinkDestination(p.mac.String())}, Actions: []ovs.Action{ovs.Drop()}},
	}
}

// spoofFlows drop what a foreign guest sends with another source MAC; they
// have a cookie of their own, whose packet count is the spoofed-mac counter.
func (s *Switch) spoofFlows(p *vmPort) []*ovs.Flow {
	return []*ovs.Flow{{Priority: 190, InPort: p.ofport, Actions: []ovs.Action{ovs.Drop()}}}
}

// returnFlows divert, on the home host, the Home Agent's answer to a
// de-registration (a guest without MIPv6 would answer it with a Parameter
// Problem) and let the Override advertisements out.
func (s *Switch) returnFlows(p *vmPort) []*ovs.Flow {
	hoa := p.vm.HomeAddress.String()
	var under []*ovs.Flow
	if s.underESP(p) {
		under = append(under, s.espFlow(p.vm.Home.HomeAgent, hoa))
	}
	return append(under,
		&ovs.Flow{Priority: 200, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort, Matches: []ovs.Match{ovs.IPv6Destination(hoa), ovs.NetworkProtocol(135)}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		// The advertisement leaves kgswitch with the guest's MAC as source;
		// NORMAL would learn that MAC on the internal port.
		&ovs.Flow{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkSource(p.mac.String())}, Actions: []ovs.Action{ovs.Output(s.uplinkPort)}},
		// The router's MAC for the guest alone (tellRouter).
		&ovs.Flow{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkDestination(p.mac.String())}, Actions: []ovs.Action{ovs.Output(p.ofport)}},
	)
}

// homeFlows are the flows of a VM running on its home host: OpenFlow copies
// DAD probes for its home address to kgswitch (and on, unchanged), the sign
// that the Home Agent is taking over because the VM left.
func (s *Switch) homeFlows(p *vmPort) []*ovs.Flow {
	if !s.holds(p) {
		return nil
	}
	return []*ovs.Flow{{Priority: 210, Protocol: ovs.ProtocolICMPv6, InPort: s.uplinkPort,
		Matches: []ovs.Match{ovs.ICMP6Type(135), ovs.NeighborDiscoveryTarget(p.vm.HomeAddress.String())},
		Actions: []ovs.Action{ovs.Output(s.kgPort), ovs.Normal()}}, s.ownAnswerFlow(p), s.giveBackFlow(p)}
}

// giveBackFlow lets what kgswitch gives back to a VM whose departure was
// undone reach its port. The VM's home flows keep it too: frames taken
// from the home link just before the undo are still on their way through
// kgswitch when those flows replace the departure's, and would be dropped.
func (s *Switch) giveBackFlow(p *vmPort) *ovs.Flow {
	return &ovs.Flow{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkSource(s.routerMAC.String()), ovs.DataLinkDestination(p.mac.String())},
		Actions: []ovs.Action{ovs.Output(p.ofport)}}
}

// ownAnswerFlow copies the VM's own advertisements of its home address to
// kgswitch (and on): its answer to a DAD probe shows it still runs here.
func (s *Switch) ownAnswerFlow(p *vmPort) *ovs.Flow {
	return &ovs.Flow{Priority: 210, Protocol: ovs.ProtocolICMPv6, InPort: p.ofport,
		Matches: []ovs.Match{ovs.ICMP6Type(136), ovs.NeighborDiscoveryTarget(p.vm.HomeAddress.String())},
		Actions: []ovs.Action{ovs.Output(s.kgPort), ovs.Normal()}}
}

// departureFlows catch what the home link sends to a departed VM and the Home
// Agent's takeover advertisement; once the Home Agent's MAC is known, they let
// kgswitch's released frames and its Override advertisement out to the link.
func (s *Switch) departureFlows(p *vmPort, haMAC net.HardwareAddr) []*ovs.Flow {
	hoa := p.vm.HomeAddress.String()
	flows := []*ovs.Flow{
		{Priority: 200, InPort: s.uplinkPort, Matches: []ovs.Match{ovs.DataLinkDestination(p.mac.String())}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		{Priority: 210, Protocol: ovs.ProtocolICMPv6, InPort: s.uplinkPort,
			Matches: []ovs.Match{ovs.ICMP6Type(136), ovs.NeighborDiscoveryTarget(hoa)},
			Actions: []ovs.Action{ovs.Output(s.kgPort), ovs.Normal()}},
	}
	if a4 := p.vm.IPv4Address; a4.IsValid() {
		// A neighbour that lost its ARP entry asks the whole link: a copy
		// is held with the VM's frames (datapath/homelink4.go).
		flows = append(flows, &ovs.Flow{Priority: 210, Protocol: ovs.ProtocolARP, InPort: s.uplinkPort,
			Matches: []ovs.Match{ovs.DataLinkDestination(ethBroadcast), ovs.ARPOperation(1), ovs.ARPTargetProtocolAddress(a4.Addr().String())},
			Actions: []ovs.Action{ovs.Output(s.kgPort), ovs.Normal()}})
	}
	if p.ofport != 0 {
		// The VM's port is still here: its own answer to the probe undoes
		// the departure, and the held frames go back to it.
		flows = append(flows, s.ownAnswerFlow(p), s.giveBackFlow(p))
	}
	if haMAC != nil {
		flows = append(flows,
			&ovs.Flow{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkSource(s.routerMAC.String()), ovs.DataLinkDestination(haMAC.String())},
				Actions: []ovs.Action{ovs.Output(s.uplinkPort)}},
			&ovs.Flow{Priority: 200, Protocol: ovs.ProtocolICMPv6, InPort: s.kgPort,
				Matches: []ovs.Match{ovs.DataLinkSource(s.routerMAC.String()), ovs.ICMP6Type(136), ovs.NeighborDiscoveryTarget(hoa)},
				Actions: []ovs.Action{ovs.Output(s.uplinkPort)}})
		if a4 := p.vm.IPv4Address; a4.IsValid() {
			// kgswitch's gratuitous ARP, which may give only the Home Agent's MAC.
			flows = append(flows, &ovs.Flow{Priority: 200, Protocol: ovs.ProtocolARP, InPort: s.kgPort,
				Matches: []ovs.Match{ovs.DataLinkSource(s.routerMAC.String()), ovs.ARPSourceHardwareAddress(haMAC),
					ovs.ARPSourceProtocolAddress(a4.Addr().String()), ovs.ARPTargetProtocolAddress(a4.Addr().String())},
				Actions: []ovs.Action{ovs.Output(s.uplinkPort)}})
		}
	}
	return flows
}

// ethBroadcast is Ethernet's broadcast address, as OpenFlow matches it.
const ethBroadcast = "ff:ff:ff:ff:ff:ff"

// flowsText is a flow set as text, to tell whether it changed.
func flowsText(fl []*ovs.Flow) string {
	var b strings.Builder
	for _, f := range fl {
		t, err := f.MarshalText()
		if err != nil {
			// Never equal to anything: such a set is always applied (and
			// its error reported by ReplaceSets).
			return "\x00unmarshalable"
		}
		b.Write(t)
		b.WriteByte('\n')
	}
	return b.String()
}
