package vswitch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/mipv6"
)

// The datapath's life, control side: the internal port is created and opened
// off the control loop (ovs-vswitchd may take seconds to create it), the
// datapath starts once it is open, and a failed port is reopened.

// errPortOpening: the internal port is being opened; what needs it waits.
var errPortOpening = errors.New("internal port is being opened")

// portOpened is the result of opening the internal port.
type portOpened struct {
	conn datapath.FrameConn
	// nic is the care-of NIC in host layout 3, nil otherwise.
	nic        datapath.FrameConn
	mac        net.HardwareAddr
	kgPort     int
	uplinkPort int
	// upUplinkPort and upPatchPort: layout 2's ports on the uplink bridge,
	// joined to the VM bridge by patch.
	upUplinkPort, upPatchPort int
	patch                     patchPair
	err                       error
}

// ensureDatapath starts opening the internal port the first time something
// needs it; until it is open, it returns errPortOpening.
func (s *Switch) ensureDatapath() error {
	if s.dp != nil {
		return nil
	}
	if s.opening {
		return errPortOpening
	}
	ports, pair, err := s.uplinkPorts()
	if err != nil {
		return err
	}
	s.opening = true
	if s.dpWait == nil {
		s.dpWait = make(chan struct{})
	}
	ctx := s.runCtx
	go func() {
		r := s.openPort(ctx)
		r.uplinkPort, r.upUplinkPort, r.upPatchPort, r.patch = ports.uplinkPort, ports.upUplinkPort, ports.upPatchPort, pair
		select {
		case s.opened <- r:
		case <-ctx.Done():
			if r.conn != nil {
				r.conn.Close()
			}
			if r.nic != nil {
				r.nic.Close()
			}
		}
	}()
	return errPortOpening
}

// openPort creates the internal port, waits for its OpenFlow number and opens
// it. It runs off the control loop.
func (s *Switch) openPort(ctx context.Context) portOpened {
	if err := s.deps.DB.EnsureInternalPort(ctx, s.cfg.Bridge, s.cfg.InternalPort); err != nil {
		return portOpened{err: fmt.Errorf("create internal port %s: %w", s.cfg.InternalPort, err)}
	}
	var r portOpened
	deadline := time.Now().Add(10 * time.Second)
	for {
		if i, ok := s.deps.DB.Interface(s.cfg.InternalPort); ok && i.OFPort > 0 {
			r.kgPort = i.OFPort
			break
		}
		if time.Now().After(deadline) {
			return portOpened{err: fmt.Errorf("internal port %s got no OpenFlow port number within 10s", s.cfg.InternalPort)}
		}
		select {
		case <-ctx.Done():
			return portOpened{err: ctx.Err()}
		case <-time.After(20 * time.Millisecond):
		}
	}
	conn, mac, err := s.deps.OpenPort(ctx, s.cfg.InternalPort)
	if err != nil {
		return portOpened{err: fmt.Errorf("open internal port %s: %w", s.cfg.InternalPort, err)}
	}
	if s.nicLayout() {
		// Opened with the internal port, and again with it after either
		// failed: the datapath reads both (datapath.ReadAlso).
		nic, err := s.deps.OpenCareOf(s.cfg.CareOfInterface, s.cfg.CareOfAddress)
		if err != nil {
			conn.Close()
			return portOpened{err: fmt.Errorf("open care_of_interface %s: %w", s.cfg.CareOfInterface, err)}
		}
		r.nic = nic
	}
	r.conn, r.mac = conn, mac
	return r
}

// portReady starts the datapath on a freshly opened internal port, puts every
// flow in place and serves the VMs whose ports arrived meanwhile.
func (s *Switch) portReady(r portOpened) {
	s.opening = false
	if r.err != nil {
		s.log.Warn("internal port not ready; retrying", "err", r.err)
		s.dpRetryAt = s.clock.Now().Add(time.Second)
		return
	}
	s.dpRetryAt = time.Time{}
	s.routerMAC, s.kgPort, s.uplinkPort = r.mac, r.kgPort, r.uplinkPort
	s.upUplinkPort, s.upPatchPort, s.patch = r.upUplinkPort, r.upPatchPort, r.patch
	s.dp = datapath.New(r.conn, s.deps.Uplink, s.clock, &s.dpCounters)
	if r.nic != nil {
		s.dp.ReadAlso(r.nic)
	}
	dp, ctx := s.dp, s.runCtx
	go func() {
		if err := dp.Run(ctx); err != nil {
			select {
			case s.dpErr <- err:
			case <-ctx.Done():
			}
		}
	}()
	s.globalInstalled = false
	s.installGlobalFlows()
	s.syncAll()
	s.ovs.reconcileStale()
	s.publish()
	if s.dpWait != nil {
		close(s.dpWait)
		s.dpWait = nil
	}
	s.log.Info("internal port open", "port", s.cfg.InternalPort, "ofport", s.kgPort)
	for _, p := range s.vms {
		if p.ofport != 0 && p.phase == absent {
			i, ok := s.deps.DB.Interface(p.iface)
			if !ok {
				continue
			}
			p.ofport = 0
			s.handleEvent(eventAdded(i))
		}
	}
}

// dropDatapath forgets a datapath whose port failed.
func (s *Switch) dropDatapath() {
	if s.dp != nil {
		// What the kernel dropped on the old socket is counted before
		// the socket, and its counter, go away. A failed port may not
		// answer; then there is nothing more to learn from it.
		_ = s.dp.CollectKernelDrops()
		s.dp.Close()
	}
	s.dp, s.kgPort = nil, 0
	s.globalInstalled = false
}

// recoverDatapath reopens the internal port; portReady makes the bridge's
// flows agree with every VM's phase again.
func (s *Switch) recoverDatapath() {
	s.dpRetryAt = time.Time{}
	if err := s.prepare(); err != nil && !errors.Is(err, errPortOpening) {
		s.log.Warn("internal port not back yet; retrying", "err", err)
		s.dpRetryAt = s.clock.Now().Add(time.Second)
	}
}

// publish gives the datapath a new snapshot of the forwarding state, derived
// from each VM's phase. A guest whose binding now stands has its held frames
// released before the snapshot in which it tunnels is published: that is
// what keeps them ahead of everything it sends later (see
// datapath.ReleaseArrival).
func (s *Switch) publish() {
	if s.dp == nil {
		return
	}
	if s.publishHeld > 0 {
		s.publishDue = true
		return
	}
	now := s.clock.Now()
	f := datapath.NewFIB(s.cfg.CareOfAddress, datapath.TunnelMTU, s.routerMAC)
	for _, p := range s.vms {
		switch p.phase {
		case absent:
			if s.foreignFor(p) && p.vm.MAC != nil {
				f.AddAwaiting(p.vm.MAC, p.key())
			}
		case departed:
			f.AddDeparted(p.dep.hold)
		case returnWaiting, returning:
			f.AddReturning(p.vm.HomeAddress)
			if p.phase == returnWaiting {
				f.AddAwaiting(p.mac, p.key())
			}
		case prepared, abroad:
			tunnel := p.phase == abroad && p.binding.Tunnelling(now)
			f.AddGuest(&datapath.Guest{Key: p.key(), MAC: [6]byte(p.mac), HomeAddr: p.vm.HomeAddress, Prefix: p.vm.Home.Prefix,
				HomeAgent: p.vm.Home.HomeAgent, Tunnel: tunnel, Hold: s.arrivalHold(p, tunnel, now), Pending: p.phase == prepared,
				Registering: p.phase == abroad && registering(p.binding.Snapshot(now).State),
				ND:          p.nd, PTBFrom: p.vm.Home.RouterLinkLocal, Link: p.link,
				HomeAddr4: p.vm.IPv4Address, Gateway4: p.gateway4(), V4: p.v4Responder(), Tunnel4: p.ipv4Tunnelling(now)})
		}
		// Also while returning: the VM may leave again before the Home
		// Agent answered.
		if p.ofport != 0 && p.atHomeHere() && s.holds(p) {
			f.AddAtHome(p.vm.HomeAddress, p.key(), p.mac, p.link)
		}
		if s.watchesHomeLink(p) {
			if mac := s.homeAgentMAC(p.vm.Home, now); mac != nil {
				f.ExpectHomeAgent(p.vm.HomeAddress, mac)
			}
		}
	}
	s.dp.Publish(f)
}

// holdPublish makes the snapshots asked for until the returned function is
// called (and every hold taken meanwhile released) one, published then.
func (s *Switch) holdPublish() (release func()) {
	s.publishHeld++
	return func() {
		s.publishHeld--
		if s.publishHeld == 0 && s.publishDue {
			s.publishDue = false
			s.publish()
		}
	}
}

// arrivalHold returns the hold for what a guest abroad sends while its binding
// is being set up: one per registration, made when the guest is found running
// here. Once tunnel is true it releases the hold into the tunnel and returns
// nil; a binding the Home Agent refused ends it (the retry makes a new one).
func (s *Switch) arrivalHold(p *vmPort, tunnel bool, now time.Time) *datapath.Arrival {
	switch {
	case tunnel:
		if a := p.arrival; a != nil {
			p.arrival = nil
			c := &p.link.Counters
			before := c.Released.Load()
			s.dp.ReleaseArrival(a, s.cfg.CareOfAddress, p.vm.Home.HomeAgent, p.ipv4Tunnelling(now))
			s.log.Info("binding stands: held frames sent through the tunnel", "port", p.name(), "hoa", p.vm.HomeAddress,
				"released", c.Released.Load()-before, "after", now.Sub(p.since).String())
		}
		return nil
	case p.phase != abroad || !s.cfg.Arrival.Enabled || p.binding.Snapshot(now).State == mipv6.StateFailed:
		p.endArrivalHold()
		return nil
	}
	if p.arrival == nil {
		a := s.cfg.Arrival
		p.arrival = datapath.NewArrival(a.BufferFrames, a.BufferBytes, a.MaxHold, &p.link.Counters)
	}
	return p.arrival
}

// registering reports whether a binding in state st has a registration on
// its way (idle: about to be sent): the Home Agent may tunnel to this host
// before its Ack arrives.
func registering(st mipv6.State) bool {
	return st == mipv6.StateIdle || st == mipv6.StateRegistering || st == mipv6.StateRefreshing
}
