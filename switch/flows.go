package vswitch

import (
	"fmt"

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
	if s.dp == nil {
		return sets
	}
	switch {
	case p.dep != nil:
		sets[portCookie(p.key())] = s.departureFlows(p, p.takeoverMAC)
	case p.ofport == 0:
	case p.foreign:
		sets[portCookie(p.key())] = s.portFlows(p)
		sets[spoofCookie(p.key())] = s.spoofFlows(p)
	case p.returning:
		sets[portCookie(p.key())] = append(s.returnFlows(p), s.homeFlows(p)...)
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

// portFlows are a foreign guest's: all it sends goes to kgswitch, and
// kgswitch's frames for it go to it.
func (s *Switch) portFlows(p *vmPort) []*ovs.Flow {
	return []*ovs.Flow{
		{Priority: 200, InPort: p.ofport, Matches: []ovs.Match{ovs.DataLinkSource(p.mac.String())}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkDestination(p.mac.String())}, Actions: []ovs.Action{ovs.Output(p.ofport)}},
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
