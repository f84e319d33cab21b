package vswitch

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/ndresponder"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// external_ids keys. An operator declares a VM on its interface with
// KeyHomeAddress (and optionally KeyMAC, KeyHomeAgent, KeyHomePrefix,
// KeyRouter; without them the home network containing the home address and
// the interface's attached-mac are used; KeyIPv4Address and KeyIPv4Gateway
// for a dual-stack VM, as add-port's --hoa4 and --gateway4); kgswitch mirrors its view of the VM
// into KeyState, KeyCareOf and KeyReason (KeyIPv4 too for a dual-stack VM),
// so `ovs-vsctl list Interface` shows it.
const (
	KeyHomeAddress = "kagemusha-home-address"
	KeyMAC         = "kagemusha-mac"
	KeyHomeAgent   = "kagemusha-home-agent"
	KeyHomePrefix  = "kagemusha-home-prefix"
	KeyRouter      = "kagemusha-router-link-local"
	KeyIPv4Address = "kagemusha-ipv4-address"
	KeyIPv4Gateway = "kagemusha-ipv4-gateway"
	KeyState       = "kagemusha-state"
	KeyCareOf      = "kagemusha-care-of"
	KeyReason      = "kagemusha-reason"
	KeyIPv4        = "kagemusha-ipv4"
)

// eventAdded is the event of an interface that appeared on the bridge.
func eventAdded(i ovsctl.Interface) ovsctl.Event { return ovsctl.Event{Kind: ovsctl.Added, Iface: i} }

func (s *Switch) handleEvent(ev ovsctl.Event) {
	if s.hostPortRenumbered(ev) {
		return
	}
	switch ev.Kind {
	case ovsctl.Removed:
		p := s.ports[ev.Iface.Name]
		if p == nil || p.iface != ev.Iface.Name {
			return
		}
		if p.ofport != 0 {
			s.log.Info("port left this host", "port", p.name(), "hoa", p.vm.HomeAddress)
			s.leave(p)
		}
		s.unbindIface(p)
	case ovsctl.Added, ovsctl.Updated:
		p := s.declared(ev.Iface, s.match(ev.Iface))
		if p == nil {
			return
		}
		if p.iface == "" {
			p.iface = ev.Iface.Name
			s.ports[p.iface] = p
		}
		switch {
		case ev.Iface.OFPort > 0 && p.ofport == 0:
			p.ofport = ev.Iface.OFPort
			p.since = s.clock.Now()
			if err := s.arrive(p, ev.Iface); errors.Is(err, errPortOpening) {
				// Served once the internal port is open (portReady).
				s.log.Info("VM port here; waiting for the internal port", "port", p.name(), "hoa", p.vm.HomeAddress)
			} else if err != nil {
				s.move(p, broken)
				p.err = err.Error()
				s.syncFlows(p)
				s.publish()
				s.log.Error("cannot serve VM", "port", p.name(), "hoa", p.vm.HomeAddress, "err", err)
			}
		case ev.Iface.OFPort > 0 && ev.Iface.OFPort != p.ofport:
			// ovs-vswitchd renumbered the port (a restart): same VM, new rules.
			s.log.Info("port renumbered", "port", p.name(), "from", p.ofport, "to", ev.Iface.OFPort)
			p.ofport = ev.Iface.OFPort
			s.syncFlows(p)
		}
	}
}

// hostPortRenumbered follows a new OpenFlow port number of the internal port,
// the uplink or, in host layout 2, either end of the patch pair (an operator re-adding one, or ovs-vswitchd honouring a new
// ofport_request): every flow names them by number, so all are reinstalled;
// left alone, tunnel packets would go to whatever port took the old number.
// It reports whether ev was about one of the two.
func (s *Switch) hostPortRenumbered(ev ovsctl.Event) bool {
	at := s.uplinkPortRef(ev.Iface.Name)
	if ev.Iface.Name == s.cfg.InternalPort {
		at = &s.kgPort
	}
	if at == nil {
		return false
	}
	if ev.Kind == ovsctl.Removed || s.dp == nil || ev.Iface.OFPort <= 0 || ev.Iface.OFPort == *at {
		return true // a removed internal port fails the datapath, which recovers
	}
	s.log.Info("host port renumbered: reinstalling every flow", "port", ev.Iface.Name, "from", *at, "to", ev.Iface.OFPort)
	*at = ev.Iface.OFPort
	s.globalInstalled = false
	s.installGlobalFlows()
	s.syncAll()
	return true
}

// declared handles a VM declared on its interface's external_ids: it adds,
// replaces or removes the VM the keys describe, and returns the VM the
// interface now belongs to.
func (s *Switch) declared(i ovsctl.Interface, p *vmPort) *vmPort {
	ids := i.ExternalIDs
	hoa := ids[KeyHomeAddress]
	if p != nil && p.origin != fromOVSDB {
		return p // configured or bound by add-port: those win
	}
	if p != nil && p.declaration == declarationOf(ids) {
		return p
	}
	if p != nil {
		// The keys changed or went away: the old declaration ends.
		s.log.Info("VM declaration on the interface changed", "port", i.Name, "hoa", p.vm.HomeAddress)
		s.removeVM(p)
		p = nil
	}
	if hoa == "" {
		return nil
	}
	addr, err := netip.ParseAddr(hoa)
	if err == nil {
		var vm config.VM
		if vm, err = s.cfg.NewVM(i.Name, addr, ids[KeyMAC], ids[KeyHomeAgent], ids[KeyHomePrefix], ids[KeyRouter]); err == nil {
			if err = s.setIPv4(&vm, ids[KeyIPv4Address], ids[KeyIPv4Gateway]); err != nil {
				err = errors.New(ipv4KeyNames.Replace(err.Error()))
			} else if err = s.cfg.AddVM(vm); err == nil {
				p = s.addVMPort(vm)
				p.origin, p.declaration = fromOVSDB, declarationOf(ids)
				s.log.Info("VM declared on its interface", "port", i.Name, "hoa", addr)
				if err := s.prepare(); err != nil {
					s.log.Error("prepare for the declared VM", "port", i.Name, "err", err)
				}
				return p
			}
		}
	}
	s.log.Error("bad VM declaration in external_ids", "port", i.Name, "err", err)
	if !s.dbDown {
		s.ovs.mirror(i.Name, map[string]string{KeyState: "error", KeyReason: err.Error()})
	}
	return nil
}

// declarationOf is the part of external_ids that declares a VM.
func declarationOf(ids map[string]string) string {
	return strings.Join([]string{ids[KeyHomeAddress], ids[KeyMAC], ids[KeyHomeAgent], ids[KeyHomePrefix], ids[KeyRouter],
		ids[KeyIPv4Address], ids[KeyIPv4Gateway]}, "|")
}

// removeVM stops serving a VM and forgets it.
func (s *Switch) removeVM(p *vmPort) { s.removeVMs([]*vmPort{p}) }

// removeVMs stops serving VMs and forgets them, with one pass over the
// lists of VMs and one snapshot for all: a reload that drops thousands
// would otherwise cost the square of their number.
func (s *Switch) removeVMs(ps []*vmPort) {
	if len(ps) == 0 {
		return
	}
	defer s.holdPublish()()
	gone := make(map[*vmPort]bool, len(ps))
	hoas := make(map[netip.Addr]bool, len(ps))
	for _, p := range ps {
		if p.ofport != 0 {
			s.leave(p)
		}
		if p.phase == departed {
			s.move(p, absent)
		}
		s.dropFlows(p)
		if p.iface != "" && !s.dbDown {
			s.ovs.mirror(p.iface, map[string]string{KeyState: "", KeyCareOf: "", KeyReason: "", KeyIPv4: ""})
		}
		s.unbindIface(p)
		if p.vm.Port != "" {
			delete(s.ports, p.vm.Port)
		}
		delete(s.byKey, p.key())
		gone[p], hoas[p.vm.HomeAddress] = true, true
	}
	s.vms = slices.DeleteFunc(s.vms, func(q *vmPort) bool { return gone[q] })
	s.cfg.RemoveVMs(hoas)
	s.publish()
}

// unbindIface forgets which interface a VM had, once it left.
func (s *Switch) unbindIface(p *vmPort) {
	if p.iface != "" && p.iface != p.vm.Port {
		delete(s.ports, p.iface)
	}
	p.iface = ""
}

// prepare readies the host before any guest arrives: when a configured VM
// would be foreign here, the internal port and host-wide flows are set up at
// start, so a migrated guest's arrival costs one flow bundle, not a port
// creation.
func (s *Switch) prepare() error {
	for _, p := range s.vms {
		if s.foreignFor(p) || s.holds(p) {
			if err := s.ensureDatapath(); err != nil && !errors.Is(err, errPortOpening) {
				return err
			}
			s.installGlobalFlows()
			return nil
		}
	}
	return nil
}

// arrive starts serving a VM whose port just appeared on this host.
func (s *Switch) arrive(p *vmPort, iface ovsctl.Interface) error {
	p.mac = p.vm.MAC
	if p.mac == nil {
		m, err := config.ParseMAC(iface.ExternalIDs["attached-mac"])
		if err != nil {
			return fmt.Errorf("no MAC for %s: configure one or set external_ids:attached-mac (%v)", p.name(), err)
		}
		p.mac = m
	}
	if !s.foreignFor(p) {
		// Back before the Home Agent took over, or after: nothing more is sent
		// on behalf of a home address whose VM is home.
		if s.presentAtStart[p.key()] {
			// It was here before kgswitch started: nothing came home.
			delete(s.presentAtStart, p.key())
			s.log.Info("VM is at home here; leaving its traffic alone", "port", p.name(), "hoa", p.vm.HomeAddress)
			s.move(p, absent)
			s.move(p, home)
			s.syncFlows(p)
			s.publish()
			return nil
		}
		return s.returnHome(p)
	}
	if err := s.ensureDatapath(); err != nil {
		return err
	}
	nd, err := ndresponder.New(ndresponder.HomeLink{
		Prefix: p.vm.Home.Prefix, RouterLinkLocal: p.vm.Home.RouterLinkLocal, RouterAddrs: p.vm.Home.RouterAddrs,
		Advertise: p.vm.Home.Advertise, RouterMAC: p.vm.Home.RouterMAC,
	}, s.routerMAC)
	if err != nil {
		return err
	}
	v4, err := newV4Guest(p.vm, p.mac, s.routerMAC)
	if err != nil {
		return err
	}
	s.move(p, absent)
	if !s.move(p, prepared) {
		return fmt.Errorf("cannot prepare a VM that is %s", p.phase)
	}
	p.nd, p.v4 = nd, v4
	p.binding = s.newBinding(p)
	p.link.ResetActivation()
	// One bundle: a migrated guest's first frames may already be on their way.
	s.syncFlows(p)
	s.installGlobalFlows()
	s.publish()
	s.log.Info("VM port on a foreign host: prepared, waiting for the guest to run here", "port", p.name(), "hoa", p.vm.HomeAddress,
		"home_agent", p.vm.Home.HomeAgent, "care_of", s.cfg.CareOfAddress)
	if s.presentAtStart[p.key()] {
		// It ran here before kgswitch started.
		delete(s.presentAtStart, p.key())
		s.activateGuest(p, whyAtStart)
	} else if !p.seenRunning.IsZero() && s.clock.Now().Sub(p.seenRunning) < announceMemory {
		s.activateGuest(p, "guest announced itself before its port appeared")
	}
	p.seenRunning = time.Time{}
	return nil
}

// announceMemory is how long a frame from a guest whose port had not appeared
// yet still counts as "it runs here" when the port does appear.
const announceMemory = 10 * time.Second

const whyAtStart = "running here at start"

// activateGuest acts on a move once the guest runs on this host: it registers
// the care-of address and starts the guest's Router Advertisements.
func (s *Switch) activateGuest(p *vmPort, why string) {
	if p.phase != prepared {
		return
	}
	s.move(p, abroad)
	now := s.clock.Now()
	if rec, ok := s.stored[p.key()]; ok && rec.HomeAgent == p.binding.HomeAgent.String() && rec.CareOf == p.binding.CareOf.String() {
		// Numbering continues where the last run stopped; a binding that
		// ran here across a restart resumes as it was.
		delete(s.stored, p.key())
		if p.binding.Restore(now, rec.Sequence, rec.Granted, rec.Expires) && why == whyAtStart {
			p.binding.RestoreIPv4(rec.IPv4)
			s.publish()
			s.log.Info("binding restored after restart", "port", p.name(), "hoa", p.vm.HomeAddress,
				"sequence", rec.Sequence, "lifetime_left", rec.Expires.Sub(now).Round(time.Second).String())
			if p.nd.Advertises() {
				p.nextRA = now
			}
			return
		}
		// Restored but not at start: the guest may have been elsewhere since,
		// so the Home Agent's binding cannot be trusted; register again,
		// numbered after the stored number where that is ahead of the clock.
		p.binding = s.newBinding(p)
		p.binding.Restore(now, rec.Sequence, 0, time.Time{})
	}
	s.publish()
	s.log.Info("guest runs here: registering with its Home Agent", "port", p.name(), "hoa", p.vm.HomeAddress, "trigger", why,
		"after", now.Sub(p.since).String())
	// The Binding Ack comes back through the host-wide flows: the Binding
	// Update waits for them.
	s.afterOVS(func() {
		if p.phase != abroad {
			return
		}
		now := s.clock.Now()
		if p.nd.Advertises() {
			// At once: the guest's lifetimes were counting down during the move.
			p.nextRA = now
		}
		if bu, ok := p.binding.Register(now); ok {
			s.sendBU(bu)
		}
	})
}

// leave handles a VM's port leaving this host (or the VM being forgotten).
func (s *Switch) leave(p *vmPort) {
	p.ofport = 0
	if p.atHomeHere() {
		// Gone before a return completed: no more de-registrations (a late
		// one would remove the next host's binding).
		s.depart(p, "port left")
		if p.phase != departed {
			s.move(p, absent)
		}
		s.syncFlows(p)
		s.publish()
		return
	}
	if p.phase == departed {
		s.syncFlows(p)
		return
	}
	// The VM runs elsewhere now; the next host registers its own care-of address,
	// so no de-registration is sent from here.
	s.move(p, absent)
	s.syncFlows(p)
	s.publish()
	s.installGlobalFlows()
}

// returnHome runs when a VM's port appears on a host of its home link: it may
// have come back from abroad, with the Home Agent still holding a binding and
// the home link's neighbours still sending to the Home Agent. kgswitch
// de-registers on the VM's behalf from its home address (RFC 6275 §11.5.4) and,
// once the Home Agent confirms, advertises the VM's MAC for its home address
// with the Override flag. The VM's own traffic is left alone throughout; only
// the Binding Acknowledgement (which would otherwise reach a guest without
// MIPv6) is diverted to kgswitch.
func (s *Switch) returnHome(p *vmPort) error {
	if err := s.ensureDatapath(); err != nil {
		return err
	}
	// Like an arrival abroad, a return is acted on only once the guest runs
	// here: a de-registration while it still runs abroad would cut it off
	// there for the rest of the migration.
	if p.phase == departed {
		s.move(p, absent)
	}
	if !s.move(p, returnWaiting) {
		return fmt.Errorf("cannot wait for a returning VM that is %s", p.phase)
	}
	p.binding = mipv6.NewBinding(p.vm.HomeAddress, p.vm.Home.HomeAgent, p.vm.HomeAddress, s.cfg.BindingLifetime)
	s.syncFlows(p)
	s.publish()
	s.log.Info("VM port on its home host: waiting for the guest to run here", "port", p.name(), "hoa", p.vm.HomeAddress)
	if !p.seenRunning.IsZero() && s.clock.Now().Sub(p.seenRunning) < announceMemory {
		s.beginReturn(p, "guest announced itself before its port appeared")
	}
	p.seenRunning = time.Time{}
	return nil
}

// beginReturn de-registers a guest that runs on its home host again.
func (s *Switch) beginReturn(p *vmPort, why string) {
	if p.phase != returnWaiting {
		return
	}
	s.move(p, returning)
	s.syncFlows(p)
	s.publish()
	s.log.Info("VM runs on its home link: de-registering from its Home Agent", "port", p.name(), "hoa", p.vm.HomeAddress,
		"home_agent", p.vm.Home.HomeAgent, "trigger", why)
	// The Home Agent's answer and the router's advertisement need the
	// return's flows.
	s.afterOVS(func() {
		if p.phase != returning {
			return
		}
		s.tellRouter(p)
		s.tellGateway(p)
		if bu, ok := p.binding.Deregister(s.clock.Now(), p.vm.HomeAddress); ok {
			s.sendBU(bu)
		}
	})
}

// tellRouter gives a guest back home its home router's real MAC (Override),
// to the guest alone: abroad, kgswitch answered for the router, and a guest
// that resolved it there would keep sending home-link traffic to a MAC that
// does not exist at home.
func (s *Switch) tellRouter(p *vmPort) {
	if s.dp == nil {
		return
	}
	mac := p.vm.Home.RouterMAC
	if mac == nil && s.deps.NeighborMAC != nil {
		mac = s.deps.NeighborMAC(p.vm.Home.RouterLinkLocal)
	}
	if mac == nil {
		s.log.Debug("home router's MAC unknown; cannot correct a returning guest's entry", "port", p.name())
		return
	}
	frame, err := ndresponder.AppendUnsolicitedNA(nil, ndresponder.Unsolicited{Target: p.vm.Home.RouterLinkLocal, LLAddr: mac,
		From: mac, To: p.mac, Router: true})
	if err == nil {
		err = s.dp.Send(frame)
	}
	if err != nil {
		s.log.Warn("send router advertisement to returning guest", "port", p.name(), "err", err)
	}
}

// homeAdvertisements is how many Override advertisements announce a guest back
// home (MAX_NEIGHBOR_ADVERTISEMENT, RFC 4861 §10), one a second.
const homeAdvertisements = 3

// announceHome sends one Override advertisement for a guest back home.
func (s *Switch) announceHome(p *vmPort, now time.Time) {
	frame, err := ndresponder.AppendUnsolicitedNA(nil, ndresponder.Unsolicited{Target: p.vm.HomeAddress, LLAddr: p.mac, From: p.mac})
	if err == nil {
		err = s.dp.Send(frame)
	}
	if err != nil {
		s.log.Warn("send Neighbor Advertisement", "port", p.name(), "err", err)
	}
	s.tellRouter(p)
	s.announce4(p, p.mac, p.mac)
	s.tellGateway(p)
	p.naLeft--
	p.nextNA = now.Add(time.Second)
	if p.naLeft <= 0 {
		s.log.Info("VM is home: neighbours told", "port", p.name(), "hoa", p.vm.HomeAddress)
		s.endReturn(p)
	}
}

// endReturn ends a return: the VM is at home, with the flows of a VM at home.
func (s *Switch) endReturn(p *vmPort) {
	s.move(p, home)
	s.syncFlows(p)
	s.publish()
}
