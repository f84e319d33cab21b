package vswitch

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/ndresponder"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/mdlayher/ndp"
)

// A real Home Agent is slow to take a home address over when a VM first leaves
// home (HOME-AGENT.md): about 1 s of DAD before it accepts the binding, then an
// advertisement without the Override flag, so a home router that cached the
// VM's MAC keeps sending there for ~9 s more. The home host still sits on the
// home link and sees all of it, so kgswitch there covers the gap: it holds the
// frames that arrive for the departed VM, and as soon as the Home Agent shows
// it has taken over, overrides the neighbours' caches with the Home Agent's
// MAC and releases the held frames to it.

// departed is a VM that left this (home) host. The datapath queues frames for
// it; the control loop releases them once the Home Agent took over. mu guards
// the queue and the release state: contention exists only during a departure.
type departed struct {
	port      string
	mac       [6]byte
	hoa       netip.Addr
	maxFrames int
	maxHold   time.Duration
	counters  *Counters

	mu       sync.Mutex
	queue    [][]byte
	queuedAt []time.Time
	released bool    // frames now go to haMAC
	haMAC    [6]byte // valid once released

	// lastSeen is when a frame for the old MAC last arrived (unix nanoseconds):
	// once quiet for a while, the neighbours' caches have moved.
	lastSeen atomic.Int64
	// reported makes the takeover reach the control loop once.
	reported atomic.Bool
}

// fromHomeLink handles a frame the home link sent to a departed VM's MAC.
func (d *Datapath) fromHomeLink(f *fib, dep *departed, frame []byte) {
	now := time.Now()
	dep.lastSeen.Store(now.UnixNano())
	dep.mu.Lock()
	defer dep.mu.Unlock()
	if dep.released {
		d.forwardToHomeAgent(f, dep, frame)
		return
	}
	// Drop what has waited too long: the sender retransmits by now, and a
	// stale frame released late only confuses it.
	for len(dep.queue) > 0 && now.Sub(dep.queuedAt[0]) > dep.maxHold {
		dep.queue, dep.queuedAt = dep.queue[1:], dep.queuedAt[1:]
		dep.counters.drop(DropHoldExpired)
	}
	if len(dep.queue) >= dep.maxFrames {
		dep.counters.drop(DropHoldOverflow)
		return
	}
	dep.queue = append(dep.queue, append([]byte(nil), frame...))
	dep.queuedAt = append(dep.queuedAt, now)
	dep.counters.Held.Add(1)
}

// forwardToHomeAgent sends a frame meant for the departed VM to the Home Agent's
// MAC instead, from kgs0's MAC: a source MAC that lives on this host, so the
// home link's switches learn nothing wrong. dep.mu is held.
func (d *Datapath) forwardToHomeAgent(f *fib, dep *departed, frame []byte) {
	copy(frame[0:6], dep.haMAC[:])
	copy(frame[6:12], f.routerMAC)
	if err := d.conn.WriteFrame(frame); err != nil {
		dep.counters.drop(DropWriteError)
		return
	}
	dep.counters.Released.Add(1)
}

// release sends the held frames, in order, to the Home Agent's MAC, and every
// later one too. The control loop calls it once the flow that lets these
// frames out is in place.
func (d *Datapath) release(dep *departed, haMAC net.HardwareAddr) {
	f := d.fib.Load()
	dep.mu.Lock()
	defer dep.mu.Unlock()
	dep.haMAC = [6]byte(haMAC)
	dep.released = true
	now := time.Now()
	for i, fr := range dep.queue {
		if now.Sub(dep.queuedAt[i]) > dep.maxHold {
			dep.counters.drop(DropHoldExpired)
			continue
		}
		d.forwardToHomeAgent(f, dep, fr)
	}
	dep.queue, dep.queuedAt = nil, nil
}

// takeoverSeen is what the datapath reports to the control loop: the Home
// Agent (by its MAC) defends a departed VM's home address now.
type takeoverSeen struct {
	port string
	mac  net.HardwareAddr
}

// homeLinkND handles the Neighbor Discovery that OpenFlow copies to kgswitch on
// a home host: a Neighbor Advertisement for a departed VM's home address with
// another MAC is the Home Agent's takeover (RFC 6275 §10.4.1); a DAD probe for
// the home address of a VM running here means it is leaving: the Home Agent
// probes only after the VM stopped here and resumed elsewhere.
func (d *Datapath) homeLinkND(f *fib, ip netpkt.IPv6) bool {
	if target, mac, ok := neighborAdvert(ip); ok {
		dep := f.departedByHoA[target]
		if dep != nil && [6]byte(mac) != dep.mac && !dep.reported.Swap(true) {
			select {
			case d.tookOver <- takeoverSeen{port: dep.port, mac: append(net.HardwareAddr(nil), mac...)}:
			default:
				dep.reported.Store(false)
			}
		}
		return true
	}
	if target, ok := dadProbe(ip); ok {
		if port, home := f.atHome[target]; home {
			select {
			case d.leaving <- port:
			default:
			}
		}
		return true
	}
	return false
}

// neighborAdvert returns the target and target link-layer address of an
// ICMPv6 Neighbor Advertisement in ip, if it is one.
func neighborAdvert(ip netpkt.IPv6) (netip.Addr, net.HardwareAddr, bool) {
	if ip.NextHeader() != netpkt.ProtoICMPv6 || len(ip.Payload()) < 24 || ip.Payload()[0] != 136 || ip.HopLimit() != 255 {
		return netip.Addr{}, nil, false
	}
	m, err := ndp.ParseMessage(ip.Payload())
	if err != nil {
		return netip.Addr{}, nil, false
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		return netip.Addr{}, nil, false
	}
	for _, o := range na.Options {
		if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Target && len(l.Addr) == 6 {
			return na.TargetAddress, l.Addr, true
		}
	}
	return netip.Addr{}, nil, false
}

// dadProbe reports the target of a Duplicate Address Detection probe (a
// Neighbor Solicitation from the unspecified address, RFC 4862 §5.4.2).
func dadProbe(ip netpkt.IPv6) (netip.Addr, bool) {
	if ip.NextHeader() != netpkt.ProtoICMPv6 || len(ip.Payload()) < 24 || ip.Payload()[0] != 135 || !ip.Src().IsUnspecified() || ip.HopLimit() != 255 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16([16]byte(ip.Payload()[8:24])), true
}

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

// homeFlows are the flows of a VM running on its home host: OpenFlow copies
// DAD probes for its home address to kgswitch (and on, unchanged), the sign
// that the Home Agent is taking over because the VM left.
func (s *Switch) homeFlows(p *vmPort) []*ovs.Flow {
	if !s.holds(p) || s.dp == nil {
		return nil
	}
	return []*ovs.Flow{{Priority: 210, Protocol: ovs.ProtocolICMPv6, InPort: s.uplinkPort,
		Matches: []ovs.Match{ovs.ICMP6Type(135), ovs.NeighborDiscoveryTarget(p.vm.HomeAddress.String())},
		Actions: []ovs.Action{ovs.Output(s.kgPort), ovs.Normal()}}}
}

// watchHome installs the flows of a VM running here, on its home host.
func (s *Switch) watchHome(p *vmPort) {
	if err := s.syncFlows(p); err != nil {
		s.log.Error("install flows", "port", p.name(), "err", err)
	}
	s.publish()
}

// depart starts the cover for a VM that stopped on this home host.
func (s *Switch) depart(p *vmPort, why string) {
	if p.dep != nil || !s.holds(p) || s.dp == nil {
		return
	}
	now := s.deps.Now()
	p.dep = &departed{port: p.key(), mac: [6]byte(p.mac), hoa: p.vm.HomeAddress,
		maxFrames: s.cfg.Departure.BufferFrames, maxHold: s.cfg.Departure.MaxHold, counters: p.counters}
	p.departedAt, p.takeoverAt, p.takeoverMAC = now, time.Time{}, nil
	s.publish()
	if err := s.syncFlows(p); err != nil {
		s.log.Error("install departure flows", "port", p.name(), "err", err)
	}
	s.log.Info("VM left its home host: holding its frames until the Home Agent takes over", "port", p.name(),
		"hoa", p.vm.HomeAddress, "trigger", why)
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
	if haMAC != nil {
		flows = append(flows,
			&ovs.Flow{Priority: 200, InPort: s.kgPort, Matches: []ovs.Match{ovs.DataLinkSource(s.routerMAC.String()), ovs.DataLinkDestination(haMAC.String())},
				Actions: []ovs.Action{ovs.Output(s.uplinkPort)}},
			&ovs.Flow{Priority: 200, Protocol: ovs.ProtocolICMPv6, InPort: s.kgPort,
				Matches: []ovs.Match{ovs.DataLinkSource(s.routerMAC.String()), ovs.ICMP6Type(136), ovs.NeighborDiscoveryTarget(hoa)},
				Actions: []ovs.Action{ovs.Output(s.uplinkPort)}})
	}
	return flows
}

// tookOver acts on the Home Agent's takeover of a departed VM's address.
func (s *Switch) tookOver(ev takeoverSeen) {
	p := s.byKey[ev.port]
	if p == nil || p.dep == nil || !p.takeoverAt.IsZero() || s.dp == nil {
		return
	}
	now := s.deps.Now()
	p.takeoverAt, p.takeoverMAC = now, ev.mac
	if err := s.syncFlows(p); err != nil {
		s.log.Error("install release flows", "port", p.name(), "err", err)
	}
	held := p.counters.Held.Load()
	s.dp.release(p.dep, ev.mac)
	na, err := ndresponder.AppendUnsolicitedNA(nil, ndresponder.Unsolicited{Target: p.vm.HomeAddress, LLAddr: ev.mac, From: s.routerMAC})
	if err == nil {
		err = s.dp.conn.WriteFrame(na)
	}
	if err != nil {
		s.log.Warn("send Override advertisement", "port", p.name(), "err", err)
	}
	s.log.Info("Home Agent took over: neighbours overridden, held frames released", "port", p.name(),
		"hoa", p.vm.HomeAddress, "home_agent_mac", ev.mac.String(), "after", now.Sub(p.departedAt).String(), "held", held)
}

// departureDue is when a departure needs its next look; zero = none.
func (p *vmPort) departureDue() time.Time {
	if p.dep == nil {
		return time.Time{}
	}
	if p.takeoverAt.IsZero() {
		return p.departedAt.Add(departureGiveUp)
	}
	last := time.Unix(0, p.dep.lastSeen.Load())
	if last.Before(p.takeoverAt) {
		last = p.takeoverAt
	}
	return last.Add(departureQuiet)
}

// checkDeparture ends a departure once quiet, or once hopeless.
func (s *Switch) checkDeparture(p *vmPort, now time.Time) {
	if d := p.departureDue(); d.IsZero() || now.Before(d) {
		return
	}
	if p.takeoverAt.IsZero() {
		s.log.Warn("Home Agent never took over a departed VM's address; frames dropped", "port", p.name(), "hoa", p.vm.HomeAddress)
	} else {
		s.log.Info("departed VM's neighbours have moved to the Home Agent", "port", p.name(), "hoa", p.vm.HomeAddress,
			"released", p.counters.Released.Load())
	}
	s.endDeparture(p)
}

// endDeparture removes the cover; the VM is gone or back.
func (s *Switch) endDeparture(p *vmPort) {
	if p.dep == nil {
		return
	}
	p.dep = nil
	s.publish()
	if err := s.syncFlows(p); err != nil {
		s.log.Error("remove departure flows", "port", p.name(), "err", err)
	}
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

// announced reports a frame from a VM whose port is not on this host yet (a
// migrated guest announcing itself as it resumes, faster than OVSDB reports
// its port): the control loop activates it when the port appears.
func (d *Datapath) announced(key string) {
	select {
	case d.activate <- key:
	default:
	}
}
