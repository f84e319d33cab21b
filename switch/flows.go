package vswitch

import (
	"fmt"
	"maps"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// A VM's OpenFlow rules follow from its state alone: flowsFor says what they
// must be, and syncFlows makes the bridge agree. Every state change calls
// syncFlows, and so do a restart and an ovs-vswitchd that lost its tables, so
// there is one place that decides what a VM's flows are.

// flowsFor returns, per cookie of p, the flows p's state needs; an empty set
// means none.
func (s *Switch) flowsFor(p *vmPort) map[uint64][]*ovs.Flow {
	sets := map[uint64][]*ovs.Flow{portCookie(p.key()): nil, spoofCookie(p.key()): nil}
	if s.dp == nil || p.removed {
		return sets
	}
	switch {
	case p.dep != nil:
		sets[portCookie(p.key())] = s.departureFlows(p, p.takeoverMAC)
	case p.ofport == 0:
		sets[portCookie(p.key())] = s.awaitFlows(p)
	case p.foreign:
		sets[portCookie(p.key())] = s.portFlows(p)
		sets[spoofCookie(p.key())] = s.spoofFlows(p)
	case p.returning:
		sets[portCookie(p.key())] = append(s.returnFlows(p), s.homeFlows(p)...)
		if p.returnPending {
			// A copy of the guest's frames tells kgswitch it runs here; they
			// go on to the home link as ever.
			sets[portCookie(p.key())] = append(sets[portCookie(p.key())], &ovs.Flow{Priority: 210, InPort: p.ofport,
				Matches: []ovs.Match{ovs.DataLinkSource(p.mac.String())}, Actions: []ovs.Action{ovs.Output(s.kgPort), ovs.Normal()}})
		}
	default:
		sets[portCookie(p.key())] = s.homeFlows(p)
	}
	return sets
}

// syncFlows installs p's flows as its state requires, in one bundle.
func (s *Switch) syncFlows(p *vmPort) error {
	if s.dp == nil {
		return nil
	}
	if err := s.deps.Flows.ReplaceSets(s.flowsFor(p)); err != nil {
		return fmt.Errorf("flows of %s: %w", p.name(), err)
	}
	if p.foreign && p.ofport != 0 {
		// OpenFlow port state, not flows: it is lost when ovs-vswitchd
		// restarts, so it is set with the flows every time.
		if err := s.deps.Flows.SetNoFlood(p.iface, true); err != nil {
			return fmt.Errorf("keep LAN floods off %s: %w", p.iface, err)
		}
	}
	return nil
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

// syncAll makes every VM's flows agree with its state, in one bundle: at
// start, and after ovs-vswitchd lost its tables.
func (s *Switch) syncAll() error {
	if s.dp == nil {
		return nil
	}
	all := map[uint64][]*ovs.Flow{}
	for _, p := range s.vms {
		maps.Copy(all, s.flowsFor(p))
	}
	if err := s.deps.Flows.ReplaceSets(all); err != nil {
		return fmt.Errorf("install flows: %w", err)
	}
	for _, p := range s.vms {
		if p.foreign && p.ofport != 0 {
			if err := s.deps.Flows.SetNoFlood(p.iface, true); err != nil {
				return fmt.Errorf("keep LAN floods off %s: %w", p.iface, err)
			}
		}
	}
	return nil
}

// portFlows are a foreign guest's: all it sends goes to kgswitch, and
// kgswitch's frames for it go to it, and nothing else does: a bridge that
// learnt the guest's MAC (from a frame sent before these flows were in) must
// not deliver the foreign LAN's unicast to it.
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
	return []*ovs.Flow{
		{Priority: 200, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort, Matches: []ovs.Match{ovs.IPv6Destination(hoa), ovs.NetworkProtocol(135)}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		// The advertisement leaves kgswitch with the guest's MAC as source;
		// NORMAL would learn that MAC on the internal port.
		{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkSource(p.mac.String())}, Actions: []ovs.Action{ovs.Output(s.uplinkPort)}},
		// The router's MAC for the guest alone (tellRouter).
		{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkDestination(p.mac.String())}, Actions: []ovs.Action{ovs.Output(p.ofport)}},
	}
}

// expectedCookies lists every cookie kgswitch's flows should carry now.
func (s *Switch) expectedCookies() map[uint64]bool {
	want := map[uint64]bool{ovsctl.Cookie: true}
	for _, p := range s.vms {
		for c, fl := range s.flowsFor(p) {
			if len(fl) > 0 {
				want[c] = true
			}
		}
	}
	return want
}

// reconcileFlows removes flows a previous run installed that no VM needs any
// more (a VM dropped from the configuration while kgswitch was down). Flows
// without kgswitch's cookie prefix are never touched.
func (s *Switch) reconcileFlows() {
	if s.dp == nil {
		return
	}
	flows, err := s.deps.Flows.Dump(ovsctl.Cookie, ovsctl.CookieMask)
	if err != nil {
		s.log.Warn("list kgswitch's flows", "err", err)
		return
	}
	want := s.expectedCookies()
	stale := map[uint64][]*ovs.Flow{}
	for _, f := range flows {
		if !want[f.Cookie] {
			stale[f.Cookie] = nil
		}
	}
	if len(stale) == 0 {
		return
	}
	if err := s.deps.Flows.ReplaceSets(stale); err != nil {
		s.log.Warn("remove stale flows", "err", err)
		return
	}
	s.log.Info("removed flows left by a previous run", "cookies", len(stale))
}
