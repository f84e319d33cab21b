package vswitch

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/ndresponder"
)

// The departure cover, control half: a VM that leaves its home host is
// departed; the datapath holds its frames (datapath.Departed) until the Home
// Agent shows it took the home address over, and then kgswitch overrides the
// home link's neighbour caches with the Home Agent's MAC and releases the
// frames to it (docs/home-agents.md says why a real Home Agent needs this);
// for a dual-stack VM, its IPv4 home address likewise (home4.go).

// departureQuiet is how long no frame may arrive for a departed VM's old MAC,
// after the Home Agent took over, before the home host stops forwarding: by
// then every neighbour that talked to the VM has moved to the Home Agent.
const departureQuiet = 5 * time.Second

// departureGiveUp ends a departure whose Home Agent never took over (it
// refused the binding, or the VM went to a host without kgswitch).
const departureGiveUp = 60 * time.Second

// holds reports whether the departure cover applies to p.
func (s *Switch) holds(p *vmPort) bool {
	return s.cfg.Departure.Enabled && !p.vm.NoDepartureHold && !s.foreignFor(p)
}

// depart starts the cover for a VM that stopped on this home host.
func (s *Switch) depart(p *vmPort, why string) {
	if p.phase == departed || !p.atHomeHere() || !s.holds(p) || s.dp == nil {
		return
	}
	if !s.move(p, departed) {
		return
	}
	var hoa4 netip.Addr
	if p.vm.IPv4Address.IsValid() {
		hoa4 = p.vm.IPv4Address.Addr()
	}
	p.dep = &departure{hold: datapath.NewDeparted(p.key(), p.mac, p.vm.HomeAddress, hoa4, s.cfg.Departure.BufferFrames,
		s.cfg.Departure.MaxHold, &p.link.Counters), at: s.clock.Now()}
	s.publish()
	s.syncFlows(p)
	s.log.Info("VM left its home host: holding its frames until the Home Agent takes over", "port", p.name(),
		"hoa", p.vm.HomeAddress, "trigger", why)
}

// tookOver acts on the Home Agent's takeover of a departed VM's address: once
// the flows that let kgswitch's frames out are in, the held frames go to the
// Home Agent and an Override advertisement points the home link at it.
func (s *Switch) tookOver(ev datapath.Takeover) {
	p := s.byKey[ev.Key]
	if p == nil || p.phase != departed || !p.dep.takeoverAt.IsZero() || s.dp == nil {
		return
	}
	dep := p.dep
	dep.takeoverAt, dep.takeoverMAC = s.clock.Now(), ev.MAC
	s.syncFlows(p)
	s.afterOVS(func() {
		if p.dep != dep || s.dp == nil {
			return
		}
		held := p.link.Counters.Held.Load()
		// The IPv4 neighbours are pointed at the Home Agent before the
		// held frames reach it: its answers to the held ARP requests then
		// agree with what the announcement said.
		s.announce4(p, ev.MAC, s.routerMAC)
		s.dp.Release(dep.hold, ev.MAC)
		na, err := ndresponder.AppendUnsolicitedNA(nil, ndresponder.Unsolicited{Target: p.vm.HomeAddress, LLAddr: ev.MAC, From: s.routerMAC})
		if err == nil {
			err = s.dp.Send(na)
		}
		if err != nil {
			s.log.Warn("send Override advertisement", "port", p.name(), "err", err)
		}
		s.log.Info("Home Agent took over: neighbours overridden, held frames released", "port", p.name(),
			"hoa", p.vm.HomeAddress, "home_agent_mac", ev.MAC.String(), "after", dep.takeoverAt.Sub(dep.at).String(), "held", held)
	})
}

// departureDue is when a departure needs its next look; zero = none.
func (p *vmPort) departureDue() time.Time {
	if p.phase != departed {
		return time.Time{}
	}
	if p.dep.takeoverAt.IsZero() {
		return p.dep.at.Add(departureGiveUp)
	}
	last := p.dep.hold.LastSeen()
	if last.Before(p.dep.takeoverAt) {
		last = p.dep.takeoverAt
	}
	return last.Add(departureQuiet)
}

// checkDeparture ends a departure once quiet, or once hopeless.
func (s *Switch) checkDeparture(p *vmPort, now time.Time) {
	if d := p.departureDue(); d.IsZero() || now.Before(d) {
		return
	}
	if p.dep.takeoverAt.IsZero() {
		s.log.Warn("Home Agent never took over a departed VM's address; frames dropped", "port", p.name(), "hoa", p.vm.HomeAddress)
	} else {
		s.log.Info("departed VM's neighbours have moved to the Home Agent", "port", p.name(), "hoa", p.vm.HomeAddress,
			"released", p.link.Counters.Released.Load())
	}
	// A VM told to depart by `kgswitch deactivate` whose port stayed is home
	// again as far as this host can tell.
	if p.ofport != 0 {
		s.move(p, home)
	} else {
		s.move(p, absent)
	}
	s.publish()
	s.syncFlows(p)
}

// Deactivate tells a home host that the VM on port stopped here (for
// automation that knows first, such as QEMU's migration completion).
func (s *Switch) Deactivate(ctx context.Context, port string) error {
	return s.onPort(ctx, port, func(p *vmPort) error {
		switch {
		case s.foreignFor(p):
			return fmt.Errorf("%w: %s is not on its home host; nothing to cover", ErrInvalid, port)
		case !s.holds(p):
			return fmt.Errorf("%w: departure cover is switched off for %s", ErrInvalid, port)
		}
		s.depart(p, "deactivate command")
		return nil
	})
}
