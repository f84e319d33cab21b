package vswitch

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/kgswitch/kgswitch/clock"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// Run runs the control loop until ctx ends. On return, flows and bindings stay
// as they are: the VMs are still there and a restarted daemon takes over.
// Host layout 3's nftables table goes (see removeHostFilter).
func (s *Switch) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The datapath outlives any request that happens to create it.
	s.runCtx, s.dpErr = ctx, make(chan error, 1)
	// A host whose bridges kgswitch cannot serve is refused at once, with
	// what was found: flows on the wrong bridge would pass the guests'
	// frames by, and the host kernel answer the tunnel with errors.
	if s.cfg.UplinkBridge != "" && s.deps.UplinkFlows == nil {
		return fmt.Errorf("%w: uplink_bridge %s configured but kgswitch was given no OpenFlow connection to it", errLayout, s.cfg.UplinkBridge)
	}
	if s.nicLayout() && (s.deps.OpenCareOf == nil || s.deps.HostFilter == nil) {
		return fmt.Errorf("%w: care_of_interface %s configured but kgswitch was given no way to read it or to filter the host's packets", errLayout, s.cfg.CareOfInterface)
	}
	if _, err := checkLayout(s.cfg, s.deps.DB); err != nil {
		return err
	}
	if err := s.checkCareOf(); err != nil {
		return err
	}
	if s.nicLayout() {
		// Removed last, once the datapath stopped reading (defers run
		// in reverse).
		if err := s.applyHostFilter(); err != nil {
			return err
		}
		defer s.removeHostFilter()
	}
	defer func() {
		if s.dp != nil {
			s.dp.Close()
		}
	}()
	go s.ovs.run(ctx)
	timer := s.clock.NewTimer(time.Hour)
	defer timer.Stop()
	s.stored = map[string]StoredBinding{}
	if s.deps.Store != nil {
		st, err := s.deps.Store.Load()
		if err != nil {
			s.log.Error("cannot read saved bindings; registering from scratch", "err", err)
		} else {
			s.stored = st
		}
	}
	s.restoreESPSequences()
	s.restorePorts()
	s.presentAtStart = map[string]bool{}
	var present []ovsctl.Interface
	for _, i := range s.deps.DB.Interfaces() {
		if p := s.declared(i, s.match(i)); p != nil && i.OFPort > 0 {
			s.presentAtStart[p.key()] = true
			present = append(present, i)
		}
	}
	if err := s.prepare(); err != nil {
		// Not fatal: the uplink may be added later; activate retries.
		s.log.Error("prepare for arriving guests", "err", err)
	}
	// The VMs already here are served before anything else, so that the
	// flows a previous run left are recognised as current, not stale.
	for _, i := range present {
		s.handleEvent(eventAdded(i))
	}
	events := s.deps.DB.Events()
	s.switchEvents = s.deps.SwitchEvents
	for {
		s.mirrorState()
		s.persist()
		s.armTimer(timer)
		var ev datapath.Events
		if s.dp != nil {
			ev = s.dp.Events()
		}
		if err := s.step(ctx, events, ev, timer); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// What the loop waits on, in the order of step's cases.
const (
	caseDone = iota
	caseOVSDB
	caseSignal
	caseActivate
	caseHomeLink
	caseTookOver
	caseRefused
	caseOpened
	caseApplied
	caseSwitch
	caseTimer
	casePortFailed
	numReports // the cases above are reports; a request or the default follows
)

// step waits for one thing to happen and handles it; it returns ctx's error
// when ctx ended, or why the loop cannot go on. Whatever the datapath, OVS or
// the clock reported is handled before the next request, so a request sees
// its effect: the first select takes a ready report, the second waits for a
// report or a request. (reflect.Select, so that both passes share one list.)
func (s *Switch) step(ctx context.Context, events <-chan ovsctl.Event, ev datapath.Events, timer clock.Timer) error {
	cases := make([]reflect.SelectCase, numReports, numReports+1)
	for i, ch := range [numReports]any{caseDone: ctx.Done(), caseOVSDB: events, caseSignal: ev.Signal, caseActivate: ev.Activate,
		caseHomeLink: ev.HomeLink, caseTookOver: ev.TookOver, caseRefused: ev.TunnelRefused, caseOpened: s.opened, caseApplied: s.ovs.applied,
		caseSwitch: s.switchEvents, caseTimer: timer.C(), casePortFailed: s.dpErr} {
		cases[i] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)}
	}
	i, v, ok := reflect.Select(append(cases, reflect.SelectCase{Dir: reflect.SelectDefault}))
	if i == numReports {
		i, v, ok = reflect.Select(append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.requests)}))
	}
	// Counted as it wakes, before anything is handled: a request's caller
	// sees its own turn counted when the request returns.
	s.iterations.Add(1)
	switch i {
	case caseDone:
		return ctx.Err()
	case caseOVSDB:
		return s.dbEvent(v.Interface().(ovsctl.Event), ok)
	case caseSignal:
		s.handleSignal(v.Interface().([]byte))
	case caseActivate:
		s.guestSeen(v.String())
	case caseHomeLink:
		s.homeLinkEvent(v.Interface().(datapath.HomeLinkEvent))
	case caseTookOver:
		s.tookOver(v.Interface().(datapath.Takeover))
	case caseRefused:
		s.tunnelRefused(v.String())
	case caseOpened:
		s.portReady(v.Interface().(portOpened))
	case caseApplied:
		s.ovsApplied(v.Uint())
	case caseSwitch:
		s.switchEvent(v.Interface().(ovsctl.SwitchEvent), ok)
	case caseTimer:
		s.tick()
	case casePortFailed:
		s.portFailed(v.Interface().(error))
	default: // a request
		v.Interface().(func())()
	}
	return nil
}

// portFailed handles a failed internal port: ovs-vswitchd restarted (it
// re-creates its internal ports) or the port was deleted. It is opened again
// and every flow put back.
func (s *Switch) portFailed(err error) {
	s.log.Error("internal port failed; reopening it and reinstalling flows", "err", err)
	s.ovs.forget()
	s.dropDatapath()
	s.recoverDatapath()
}

// dbEvent handles a change in OVSDB; ok false means the stream ended.
func (s *Switch) dbEvent(ev ovsctl.Event, ok bool) error {
	if !ok {
		return errors.New("OVSDB event stream ended")
	}
	s.handleEvent(ev)
	switch ev.Kind {
	case ovsctl.Disconnected:
		s.log.Warn("OVSDB connection lost; forwarding goes on, reconnecting")
		s.dbDown = true
	case ovsctl.Reconnected:
		s.log.Info("OVSDB connection back")
		s.dbDown = false
		for _, p := range s.vms {
			p.mirrored = nil // write it all again
		}
	}
	return nil
}

// guestSeen acts on a frame from a guest that kgswitch waits for: it runs on
// this host now.
func (s *Switch) guestSeen(key string) {
	p := s.byKey[key]
	if p == nil {
		return
	}
	switch {
	case p.phase == returnWaiting:
		s.beginReturn(p, "first frame from the guest")
	case p.ofport == 0:
		p.seenRunning = s.clock.Now()
	default:
		s.activateGuest(p, "first frame from the guest")
	}
}

// switchEvent handles ovs-vswitchd going away and coming back: it comes back
// with empty flow tables and ports without their no-flood bit. ok false means
// nobody watches any more.
func (s *Switch) switchEvent(ev ovsctl.SwitchEvent, ok bool) {
	if !ok {
		s.switchEvents = nil
		return
	}
	switch ev.State {
	case ovsctl.SwitchDown:
		if !s.switchDown {
			s.log.Warn("ovs-vswitchd unreachable", "err", ev.Err)
		}
		s.switchDown = true
	case ovsctl.SwitchUp:
		if !s.switchDown {
			return // the first report, at start
		}
		s.switchDown = false
		s.globalInstalled = false
		s.ovs.forget()
		s.installGlobalFlows()
		s.syncAll()
		s.log.Info("ovs-vswitchd is back: reinstalling flows")
	}
}

func (s *Switch) armTimer(t clock.Timer) {
	next := s.dpRetryAt
	for _, p := range s.vms {
		for _, d := range []time.Time{p.nextRA, p.nextNA, p.due(), p.departureDue()} {
			if !d.IsZero() && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
	}
	if !s.haLookupAt.IsZero() && (next.IsZero() || s.haLookupAt.Before(next)) {
		next = s.haLookupAt
	}
	wait := time.Hour
	if !next.IsZero() {
		wait = max(next.Sub(s.clock.Now()), 0)
	}
	t.Reset(wait)
}

// due is when the port's binding next needs attention; zero = never.
func (p *vmPort) due() time.Time {
	if p.binding == nil {
		return time.Time{}
	}
	return p.binding.Due()
}

func (s *Switch) tick() {
	now := s.clock.Now()
	if !s.haLookupAt.IsZero() && !now.Before(s.haLookupAt) {
		s.learnHomeAgents(now)
	}
	if !s.dpRetryAt.IsZero() && !now.Before(s.dpRetryAt) {
		s.recoverDatapath()
	}
	for _, p := range s.vms {
		if s.dp != nil && !p.nextRA.IsZero() && !now.Before(p.nextRA) {
			s.advertise(p, now)
		}
		if s.dp != nil && !p.nextNA.IsZero() && !now.Before(p.nextNA) {
			s.announceHome(p, now)
		}
		s.checkDeparture(p, now)
		if p.binding == nil {
			continue
		}
		if bu, ok := p.binding.Tick(now); ok {
			s.sendBU(bu)
		}
	}
	// Lapsed bindings stop tunnelling even when no timer changed them.
	s.publish()
}

// do runs fn in the control loop and waits for it.
func (s *Switch) do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case s.requests <- func() { fn(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ovsAction is an action that must wait until OVS applied generation gen of
// what the control loop asked of it.
type ovsAction struct {
	gen uint64
	fn  func()
}

// afterOVS runs fn once OVS has applied everything asked of it so far: at
// once when nothing is outstanding. Frames that need a flow (a Binding Ack
// coming back, an advertisement going out) are sent this way.
func (s *Switch) afterOVS(fn func()) {
	gen := s.ovs.queuedGen()
	if s.ovs.appliedGen() >= gen {
		fn()
		return
	}
	s.waiting = append(s.waiting, ovsAction{gen, fn})
}

// ovsApplied runs the actions that waited for generation gen or earlier.
func (s *Switch) ovsApplied(gen uint64) {
	rest := s.waiting[:0]
	var run []func()
	for _, a := range s.waiting {
		if a.gen <= gen {
			run = append(run, a.fn)
		} else {
			rest = append(rest, a)
		}
	}
	s.waiting = rest
	for _, fn := range run {
		fn()
	}
}
