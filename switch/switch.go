package vswitch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/ndresponder"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// OVSDB is what the control loop needs of the OVS database.
type OVSDB interface {
	Events() <-chan ovsctl.Event
	Interface(name string) (ovsctl.Interface, bool)
	Interfaces() []ovsctl.Interface
	EnsureInternalPort(ctx context.Context, bridge, name string) error
	SetExternalIDs(ctx context.Context, iface string, set map[string]string, del []string) error
}

// external_ids keys. An operator declares a VM on its interface with
// KeyHomeAddress (and optionally KeyMAC, KeyHomeAgent, KeyHomePrefix,
// KeyRouter; without them the home network containing the home address and
// the interface's attached-mac are used); kgswitch mirrors its view of the VM
// into KeyState, KeyCareOf and KeyReason, so `ovs-vsctl list Interface` shows it.
const (
	KeyHomeAddress = "kagemusha-home-address"
	KeyMAC         = "kagemusha-mac"
	KeyHomeAgent   = "kagemusha-home-agent"
	KeyHomePrefix  = "kagemusha-home-prefix"
	KeyRouter      = "kagemusha-router-link-local"
	KeyState       = "kagemusha-state"
	KeyCareOf      = "kagemusha-care-of"
	KeyReason      = "kagemusha-reason"
)

// FlowTable is what the control loop needs of the bridge's OpenFlow tables.
type FlowTable interface {
	// ReplaceSets atomically replaces, per cookie, the flows carrying it.
	ReplaceSets(sets map[uint64][]*ovs.Flow) error
	Delete(cookie uint64) error
	SetNoFlood(port string, on bool) error
	// PacketsByCookie counts, per kgswitch cookie, the packets its flows matched.
	PacketsByCookie() (map[uint64]uint64, error)
	// Dump lists the flows whose cookie matches cookie under mask.
	Dump(cookie, mask uint64) ([]*ovs.Flow, error)
}

// PortOpener opens the internal port once OVS has created its network device,
// and returns it with the device's MAC address.
type PortOpener func(ctx context.Context, name string) (FrameConn, net.HardwareAddr, error)

// Deps are the Switch's connections to the world.
type Deps struct {
	DB       OVSDB
	Flows    FlowTable
	OpenPort PortOpener
	Uplink   Uplink
	Logger   *slog.Logger
	// Store keeps bindings across restarts; nil keeps nothing.
	Store Store
	// NeighborMAC looks up the host's neighbour table (HostNeighbor); nil
	// looks nothing up.
	NeighborMAC func(netip.Addr) net.HardwareAddr
	// SwitchEvents reports ovs-vswitchd going down and coming back (it loses
	// its flow tables); nil when not watched.
	SwitchEvents <-chan ovsctl.SwitchEvent
	// Now and RandSeq default to the wall clock and a random number generator.
	Now     func() time.Time
	RandSeq func() uint16
}

// Errors AddPort returns; the CLI maps them to exit statuses.
var (
	ErrUnknownPort = errors.New("no such interface on the bridge")
	ErrInvalid     = errors.New("invalid binding")
)

// tunnelMTU is the largest inner packet the tunnel carries over a 1500-byte
// uplink: one IPv6 header of overhead.
const tunnelMTU = 1500 - 40

// Switch is the control loop: it owns every piece of per-VM state, and only its
// goroutine (Run) touches it; other goroutines reach it through requests.
type Switch struct {
	cfg  *config.Config
	deps Deps
	log  *slog.Logger

	dp         *Datapath
	routerMAC  net.HardwareAddr
	kgPort     int // OpenFlow port of the internal port
	uplinkPort int
	// globalHAs are the Home Agents the installed host-wide flows divert.
	globalHAs       []netip.Addr
	globalInstalled bool
	// dpCounters are the datapath's counters for frames of no VM.
	dpCounters Counters
	// stored is what the Store held at start; saved is what was last saved.
	stored map[string]StoredBinding
	saved  []byte
	// presentAtStart holds the configured ports already on the bridge when Run
	// began: their VMs did not just come home.
	presentAtStart map[string]bool
	// vms are all the VMs this daemon knows; byKey finds one by home address
	// (its identity everywhere, cookies included); ports finds one by the
	// name of its interface on the bridge, configured or matched.
	vms       []*vmPort
	byKey     map[string]*vmPort
	ports     map[string]*vmPort
	requests  chan func()
	dpRetryAt time.Time // when to try reopening a failed internal port
	// countsMu guards counts (the last flow packet counts read) and
	// countsDone (closed when the query in flight ends; nil when none).
	countsMu   sync.Mutex
	counts     map[uint64]uint64
	countsDone chan struct{}
	// switchDown and dbDown: ovs-vswitchd or ovsdb-server is unreachable.
	switchDown, dbDown bool
	// runCtx and dpErr belong to Run; what Run starts uses them.
	runCtx context.Context
	dpErr  chan error
	buBuf  []byte
}

// vmPort is one configured VM.
type vmPort struct {
	vm    config.VM
	iface string // the VM's interface on this bridge, while it is here
	// fromOVSDB: declared by external_ids on its interface (declaration is
	// what was declared); such a VM goes when the keys go.
	fromOVSDB   bool
	declaration string
	fromAddPort bool              // bound by add-port: kept across configuration reloads
	removed     bool              // forgotten: no flows at all
	mirrored    map[string]string // what external_ids last got
	ofport      int               // 0 while the port is not on this host's bridge
	foreign     bool
	since       time.Time // when the port appeared here
	binding     *mipv6.Binding
	counters    *Counters
	ownLL       *[]netip.Addr
	nd          *ndresponder.Responder
	mac         net.HardwareAddr
	err         string    // why the port could not be served, for status
	nextRA      time.Time // next unsolicited Router Advertisement; zero = none
	// pending: on a foreign host, prepared, the guest not yet running here.
	pending     bool
	seenRunning time.Time // a frame from the guest before its port appeared
	asked       *atomic.Bool
	activated   time.Time
	// dep: the VM left this home host and its frames are held (departure.go).
	dep                    *departed
	departedAt, takeoverAt time.Time
	takeoverMAC            net.HardwareAddr // the Home Agent's, once it took over
	// returning: back on a home host, de-registration in progress;
	// returnPending: the guest does not run here yet.
	returning     bool
	returnPending bool
	naLeft        int       // Override advertisements still to send
	nextNA        time.Time // when the next one is due
}

// New returns a Switch for cfg. Nothing happens until Run.
func New(cfg *config.Config, deps Deps) *Switch {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.RandSeq == nil {
		deps.RandSeq = randSeq
	}
	s := &Switch{cfg: cfg, deps: deps, log: deps.Logger, ports: map[string]*vmPort{}, byKey: map[string]*vmPort{}, requests: make(chan func())}
	for _, vm := range cfg.VMs {
		s.addVMPort(vm)
	}
	return s
}

// addVMPort starts tracking vm.
func (s *Switch) addVMPort(vm config.VM) *vmPort {
	p := &vmPort{vm: vm, counters: &Counters{}, ownLL: new([]netip.Addr)}
	s.vms = append(s.vms, p)
	s.byKey[p.key()] = p
	if vm.Port != "" {
		s.ports[vm.Port] = p
	}
	return p
}

// key is the VM's identity: its home address.
func (p *vmPort) key() string { return p.vm.HomeAddress.String() }

// name is the VM's interface name, as known.
func (p *vmPort) name() string {
	if p.iface != "" {
		return p.iface
	}
	if p.vm.Port != "" {
		return p.vm.Port
	}
	return "-"
}

// match finds the VM an interface that just appeared belongs to: by name,
// then by the iface-id or attached-mac libvirt and OpenStack set on it.
func (s *Switch) match(i ovsctl.Interface) *vmPort {
	if p := s.ports[i.Name]; p != nil {
		return p
	}
	id, mac := i.ExternalIDs["iface-id"], i.ExternalIDs["attached-mac"]
	for _, p := range s.vms {
		if p.vm.Port != "" || p.iface != "" {
			continue
		}
		if (p.vm.IfaceID != "" && p.vm.IfaceID == id) || (p.vm.MAC != nil && strings.EqualFold(p.vm.MAC.String(), mac)) {
			return p
		}
	}
	return nil
}

// Run runs the control loop until ctx ends. On return, flows and bindings stay
// as they are: the VMs are still there and a restarted daemon takes over.
func (s *Switch) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The datapath outlives any request that happens to create it.
	s.runCtx, s.dpErr = ctx, make(chan error, 1)
	defer func() {
		if s.dp != nil {
			s.dp.conn.Close()
		}
	}()
	timer := time.NewTimer(time.Hour)
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
		s.handleEvent(ovsctl.Event{Kind: ovsctl.Added, Iface: i})
	}
	s.reconcileFlows()
	events := s.deps.DB.Events()
	for {
		s.mirrorState()
		s.persist()
		s.armTimer(timer)
		var signal chan []byte
		var activate, leaving chan string
		var tookOver chan takeoverSeen
		if s.dp != nil {
			signal, activate, leaving, tookOver = s.dp.signal, s.dp.activate, s.dp.leaving, s.dp.tookOver
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
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
		case pkt := <-signal:
			s.handleSignal(pkt)
		case key := <-activate:
			if p := s.byKey[key]; p != nil {
				switch {
				case p.returnPending:
					s.beginReturn(p, "first frame from the guest")
				case p.ofport == 0:
					p.seenRunning = s.deps.Now()
				default:
					s.activateGuest(p, "first frame from the guest")
				}
			}
		case key := <-leaving:
			if p := s.byKey[key]; p != nil && p.ofport != 0 && !p.foreign {
				if p.returning {
					s.endReturn(p)
				}
				s.depart(p, "Home Agent probes the home address (DAD)")
			}
		case ev := <-tookOver:
			s.tookOver(ev)
		case fn := <-s.requests:
			fn()
		case ev, ok := <-s.deps.SwitchEvents:
			if !ok {
				s.deps.SwitchEvents = nil
				continue
			}
			s.switchEvent(ev)
		case <-timer.C:
			s.tick()
		case err := <-s.dpErr:
			// ovs-vswitchd restarted (it re-creates its internal ports) or the
			// port was deleted: open it again and put every flow back.
			s.log.Error("internal port failed; reopening it and reinstalling flows", "err", err)
			s.dropDatapath()
			s.recoverDatapath()
		}
	}
}

// switchEvent handles ovs-vswitchd going away and coming back: it comes back
// with empty flow tables and ports without their no-flood bit.
func (s *Switch) switchEvent(ev ovsctl.SwitchEvent) {
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
		if err := s.installGlobalFlows(); err != nil {
			s.log.Error("reinstall host-wide flows", "err", err)
		}
		if err := s.syncAll(); err != nil {
			s.log.Error("reinstall flows", "err", err)
			return
		}
		s.log.Info("ovs-vswitchd is back: flows reinstalled")
	}
}

// dropDatapath forgets a datapath whose port failed.
func (s *Switch) dropDatapath() {
	if s.dp != nil {
		// What the kernel dropped on the old socket is counted before
		// the socket, and its counter, go away. A failed port may not
		// answer; then there is nothing more to learn from it.
		_ = s.dp.collectKernelDrops()
		s.dp.conn.Close()
	}
	s.dp, s.kgPort = nil, 0
	s.globalInstalled = false
}

// recoverDatapath reopens the internal port and makes the bridge's flows agree
// with every VM's state again; on failure it retries a second later.
func (s *Switch) recoverDatapath() {
	if err := s.prepare(); err != nil || s.dp == nil {
		s.log.Warn("internal port not back yet; retrying", "err", err)
		s.dpRetryAt = s.deps.Now().Add(time.Second)
		return
	}
	s.dpRetryAt = time.Time{}
	s.publish()
	s.log.Info("internal port reopened and flows reinstalled")
}

func (s *Switch) armTimer(t *time.Timer) {
	next := s.dpRetryAt
	for _, p := range s.vms {
		for _, d := range []time.Time{p.nextRA, p.nextNA, p.due(), p.departureDue()} {
			if !d.IsZero() && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
	}
	wait := time.Hour
	if !next.IsZero() {
		wait = next.Sub(s.deps.Now())
		if wait < 0 {
			wait = 0
		}
	}
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(wait)
}

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
			s.deactivate(p)
		}
		s.unbindIface(p)
	case ovsctl.Added, ovsctl.Updated:
		p := s.match(ev.Iface)
		p = s.declared(ev.Iface, p)
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
			p.since = s.deps.Now()
			if err := s.activate(p, ev.Iface); err != nil {
				p.err = err.Error()
				s.log.Error("cannot serve VM", "port", p.name(), "hoa", p.vm.HomeAddress, "err", err)
			}
		case ev.Iface.OFPort > 0 && ev.Iface.OFPort != p.ofport:
			// ovs-vswitchd renumbered the port (a restart): same VM, new rules.
			s.log.Info("port renumbered", "port", p.name(), "from", p.ofport, "to", ev.Iface.OFPort)
			p.ofport = ev.Iface.OFPort
			if err := s.syncFlows(p); err != nil {
				s.log.Error("reinstall flows", "port", p.name(), "err", err)
			}
		}
	}
}

// hostPortRenumbered follows a new OpenFlow port number of the internal port
// or the uplink (an operator re-adding one, or ovs-vswitchd honouring a new
// ofport_request): every flow names them by number, so all are reinstalled;
// left alone, tunnel packets would go to whatever port took the old number.
// It reports whether ev was about one of the two.
func (s *Switch) hostPortRenumbered(ev ovsctl.Event) bool {
	var at *int
	switch ev.Iface.Name {
	case s.cfg.InternalPort:
		at = &s.kgPort
	case s.cfg.Uplink:
		at = &s.uplinkPort
	default:
		return false
	}
	if ev.Kind == ovsctl.Removed || s.dp == nil || ev.Iface.OFPort <= 0 || ev.Iface.OFPort == *at {
		return true // a removed internal port fails the datapath, which recovers
	}
	s.log.Info("host port renumbered: reinstalling every flow", "port", ev.Iface.Name, "from", *at, "to", ev.Iface.OFPort)
	*at = ev.Iface.OFPort
	s.globalInstalled = false
	if err := s.installGlobalFlows(); err != nil {
		s.log.Error("reinstall host-wide flows", "err", err)
	}
	if err := s.syncAll(); err != nil {
		s.log.Error("reinstall flows", "err", err)
	}
	return true
}

// declared handles a VM declared on its interface's external_ids: it adds,
// replaces or removes the VM the keys describe, and returns the VM the
// interface now belongs to.
func (s *Switch) declared(i ovsctl.Interface, p *vmPort) *vmPort {
	ids := i.ExternalIDs
	hoa := ids[KeyHomeAddress]
	if p != nil && !p.fromOVSDB {
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
			if err = s.cfg.AddVM(vm); err == nil {
				p = s.addVMPort(vm)
				p.fromOVSDB, p.declaration = true, declarationOf(ids)
				s.log.Info("VM declared on its interface", "port", i.Name, "hoa", addr)
				if err := s.prepare(); err != nil {
					p.err = err.Error()
				}
				return p
			}
		}
	}
	s.log.Error("bad VM declaration in external_ids", "port", i.Name, "err", err)
	s.mirrorIDs(i.Name, map[string]string{KeyState: "error", KeyReason: err.Error()})
	return nil
}

// declarationOf is the part of external_ids that declares a VM.
func declarationOf(ids map[string]string) string {
	return strings.Join([]string{ids[KeyHomeAddress], ids[KeyMAC], ids[KeyHomeAgent], ids[KeyHomePrefix], ids[KeyRouter]}, "|")
}

// removeVM stops serving a VM and forgets it.
func (s *Switch) removeVM(p *vmPort) {
	if p.ofport != 0 {
		s.deactivate(p)
	}
	s.endDeparture(p)
	p.ofport, p.removed = 0, true
	if err := s.syncFlows(p); err != nil {
		s.log.Error("remove flows", "port", p.name(), "err", err)
	}
	if p.iface != "" && !s.dbDown {
		s.mirrorIDs(p.iface, map[string]string{KeyState: "", KeyCareOf: "", KeyReason: ""})
	}
	s.unbindIface(p)
	if p.vm.Port != "" {
		delete(s.ports, p.vm.Port)
	}
	delete(s.byKey, p.key())
	s.vms = slices.DeleteFunc(s.vms, func(q *vmPort) bool { return q == p })
	s.cfg.RemoveVM(p.vm.HomeAddress)
	s.publish()
}

// mirrorState writes kgswitch's view of each present VM into its interface's
// external_ids, when it changed.
func (s *Switch) mirrorState() {
	if s.dbDown {
		return
	}
	now := s.deps.Now()
	for _, p := range s.vms {
		if p.iface == "" || p.ofport == 0 {
			continue
		}
		st := s.portStatus(p, now)
		state := st.Location
		if st.BindingState != "" {
			state += "/" + st.BindingState
		}
		want := map[string]string{KeyState: state, KeyCareOf: st.CareOf, KeyReason: st.Reason}
		if st.Error != "" {
			want[KeyState], want[KeyReason] = "error", st.Error
		}
		if maps.Equal(want, p.mirrored) {
			continue
		}
		if s.mirrorIDs(p.iface, want) {
			p.mirrored = want
		}
	}
}

// mirrorIDs sets kgswitch's keys on an interface, deleting the empty ones.
func (s *Switch) mirrorIDs(iface string, kv map[string]string) bool {
	set, del := map[string]string{}, []string{}
	for k, v := range kv {
		if v == "" {
			del = append(del, k)
		} else {
			set[k] = v
		}
	}
	ctx, cancel := context.WithTimeout(s.runCtx, 2*time.Second)
	defer cancel()
	if err := s.deps.DB.SetExternalIDs(ctx, iface, set, del); err != nil {
		s.log.Debug("mirror state into external_ids", "port", iface, "err", err)
		return false
	}
	return true
}

// unbindIface forgets which interface a VM had, once it left.
func (s *Switch) unbindIface(p *vmPort) {
	if p.iface != "" && p.iface != p.vm.Port {
		delete(s.ports, p.iface)
	}
	p.iface = ""
}

// foreignFor reports whether this host is outside p's home network.
func (s *Switch) foreignFor(p *vmPort) bool {
	return !p.vm.Home.Prefix.Contains(s.cfg.CareOfAddress)
}

// prepare readies the host before any guest arrives: when a configured VM
// would be foreign here, the internal port and host-wide flows are set up at
// start, so a migrated guest's arrival costs one flow bundle, not a port
// creation.
func (s *Switch) prepare() error {
	for _, p := range s.vms {
		if s.foreignFor(p) || s.holds(p) {
			created := s.dp == nil
			if err := s.ensureDatapath(); err != nil {
				return err
			}
			if err := s.installGlobalFlows(); err != nil {
				return err
			}
			if created {
				return s.syncAll()
			}
			return nil
		}
	}
	return nil
}

// activate starts serving a VM whose port just appeared on this host.
func (s *Switch) activate(p *vmPort, iface ovsctl.Interface) error {
	p.err = ""
	p.mac = p.vm.MAC
	if p.mac == nil {
		m, err := config.ParseMAC(iface.ExternalIDs["attached-mac"])
		if err != nil {
			return fmt.Errorf("no MAC for %s: configure one or set external_ids:attached-mac (%v)", p.name(), err)
		}
		p.mac = m
	}
	if !s.foreignFor(p) {
		p.foreign = false
		// Back before the Home Agent took over, or after: nothing more is sent
		// on behalf of a home address whose VM is home.
		s.endDeparture(p)
		if s.presentAtStart[p.key()] {
			// It was here before kgswitch started: nothing came home.
			delete(s.presentAtStart, p.key())
			s.log.Info("VM is at home here; leaving its traffic alone", "port", p.name(), "hoa", p.vm.HomeAddress)
			s.watchHome(p)
			return nil
		}
		return s.returnHome(p)
	}
	p.foreign = true
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
	p.nd = nd
	// One bundle: a migrated guest's first frames may already be on their way.
	if err := s.syncFlows(p); err != nil {
		return err
	}
	if err := s.installGlobalFlows(); err != nil {
		return err
	}
	p.binding = mipv6.NewBinding(p.vm.HomeAddress, p.vm.Home.HomeAgent, s.cfg.CareOfAddress, s.cfg.BindingLifetime, s.deps.RandSeq())
	p.pending = true
	p.asked = new(atomic.Bool)
	s.publish()
	s.log.Info("VM port on a foreign host: prepared, waiting for the guest to run here", "port", p.name(), "hoa", p.vm.HomeAddress,
		"home_agent", p.vm.Home.HomeAgent, "care_of", s.cfg.CareOfAddress)
	if s.presentAtStart[p.key()] {
		// It ran here before kgswitch started.
		delete(s.presentAtStart, p.key())
		s.activateGuest(p, whyAtStart)
	} else if !p.seenRunning.IsZero() && s.deps.Now().Sub(p.seenRunning) < announceMemory {
		s.activateGuest(p, "guest announced itself before its port appeared")
	}
	p.seenRunning = time.Time{}
	return nil
}

// announceMemory is how long a frame from a guest whose port had not appeared
// yet still counts as "it runs here" when the port does appear.
const announceMemory = 10 * time.Second

// activateGuest acts on a move once the guest runs on this host: it registers
// the care-of address and starts the guest's Router Advertisements.
func (s *Switch) activateGuest(p *vmPort, why string) {
	if !p.pending || p.binding == nil {
		return
	}
	p.pending = false
	now := s.deps.Now()
	p.activated = now
	if rec, ok := s.stored[p.key()]; ok && rec.HomeAgent == p.binding.HomeAgent.String() && rec.CareOf == p.binding.CareOf.String() {
		// Numbering continues where the last run stopped; a binding that
		// ran here across a restart resumes as it was.
		delete(s.stored, p.key())
		if p.binding.Restore(now, rec.Sequence, rec.Granted, rec.Expires) && why == whyAtStart {
			s.publish()
			s.log.Info("binding restored after restart", "port", p.name(), "hoa", p.vm.HomeAddress,
				"sequence", rec.Sequence, "lifetime_left", rec.Expires.Sub(now).Round(time.Second).String())
			if p.nd.Advertises() {
				p.nextRA = now
			}
			return
		}
		// Restored but not at start: the guest may have been elsewhere since,
		// so the Home Agent's binding cannot be trusted; register again.
		p.binding = mipv6.NewBinding(p.vm.HomeAddress, p.vm.Home.HomeAgent, s.cfg.CareOfAddress, s.cfg.BindingLifetime, rec.Sequence+1)
	}
	s.publish()
	s.log.Info("guest runs here: registering with its Home Agent", "port", p.name(), "hoa", p.vm.HomeAddress, "trigger", why,
		"after", now.Sub(p.since).String())
	if p.nd.Advertises() {
		// At once: the guest's lifetimes were counting down during the move.
		p.nextRA = now
	}
	if bu, ok := p.binding.Register(now); ok {
		s.sendBU(bu)
	}
}

const whyAtStart = "running here at start"

// persist saves the bindings when they changed.
func (s *Switch) persist() {
	if s.deps.Store == nil {
		return
	}
	m := map[string]StoredBinding{}
	maps.Copy(m, s.stored) // not yet claimed by a VM here: keep for later
	for _, p := range s.vms {
		if p.binding == nil || p.returning {
			continue
		}
		r := p.binding.Record()
		m[p.key()] = StoredBinding{HomeAgent: p.binding.HomeAgent.String(), CareOf: p.binding.CareOf.String(),
			Sequence: r.Sequence, Granted: r.Granted, Expires: r.Expires}
	}
	b, _ := json.Marshal(m)
	if bytes.Equal(b, s.saved) {
		return
	}
	if err := s.deps.Store.Save(m); err != nil {
		s.log.Error("save bindings", "err", err)
		return
	}
	s.saved = b
}

// Activate tells the Switch that the guest on port runs on this host now, for
// automation that knows before the guest's first frame (QEMU's
// pause-before-switchover, a libvirt event).
func (s *Switch) Activate(ctx context.Context, port string) error {
	return s.onPort(ctx, port, func(p *vmPort) error {
		switch {
		case p.ofport == 0:
			return fmt.Errorf("%w: %s", ErrUnknownPort, port)
		case p.returnPending:
			s.beginReturn(p, "activate command")
		case !p.foreign:
			return fmt.Errorf("%w: %s is on its home link; there is nothing to activate", ErrInvalid, port)
		default:
			s.activateGuest(p, "activate command")
		}
		return nil
	})
}

// onPort runs fn in the control loop on the VM whose interface is port.
func (s *Switch) onPort(ctx context.Context, port string, fn func(p *vmPort) error) error {
	var err error
	if e := s.do(ctx, func() {
		p := s.ports[port]
		if p == nil {
			err = fmt.Errorf("%w: %s is not bound to a home address here", ErrUnknownPort, port)
			return
		}
		err = fn(p)
	}); e != nil {
		return e
	}
	return err
}

func (s *Switch) deactivate(p *vmPort) {
	p.ofport = 0
	if p.returning {
		// Gone again before the return completed: no more de-registrations
		// (a late one would remove the next host's binding).
		s.endReturn(p)
	}
	if !p.foreign {
		if err := s.syncFlows(p); err != nil {
			s.log.Error("remove flows", "port", p.name(), "err", err)
		}
		s.depart(p, "port left")
		return
	}
	if err := s.syncFlows(p); err != nil {
		s.log.Error("remove flows", "port", p.name(), "err", err)
	}
	// The VM runs elsewhere now; the next host registers its own care-of address,
	// so no de-registration is sent from here.
	p.binding = nil
	p.nextRA = time.Time{}
	p.foreign = false
	s.publish()
	if err := s.installGlobalFlows(); err != nil {
		s.log.Error("update host-wide flows", "err", err)
	}
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
	p.returning, p.returnPending = true, true
	if err := s.syncFlows(p); err != nil {
		p.returning, p.returnPending = false, false
		return err
	}
	p.binding = mipv6.NewBinding(p.vm.HomeAddress, p.vm.Home.HomeAgent, p.vm.HomeAddress, s.cfg.BindingLifetime, s.deps.RandSeq())
	s.publish()
	s.log.Info("VM port on its home host: waiting for the guest to run here", "port", p.name(), "hoa", p.vm.HomeAddress)
	if !p.seenRunning.IsZero() && s.deps.Now().Sub(p.seenRunning) < announceMemory {
		s.beginReturn(p, "guest announced itself before its port appeared")
	}
	return nil
}

// beginReturn de-registers a guest that runs on its home host again.
func (s *Switch) beginReturn(p *vmPort, why string) {
	if !p.returnPending {
		return
	}
	p.returnPending = false
	if err := s.syncFlows(p); err != nil {
		s.log.Error("flows", "port", p.name(), "err", err)
	}
	s.publish()
	s.log.Info("VM runs on its home link: de-registering from its Home Agent", "port", p.name(), "hoa", p.vm.HomeAddress,
		"home_agent", p.vm.Home.HomeAgent, "trigger", why)
	s.tellRouter(p)
	if bu, ok := p.binding.Deregister(s.deps.Now(), p.vm.HomeAddress); ok {
		s.sendBU(bu)
	}
}

// tellRouter gives a guest back home its home router's real MAC (Override),
// to the guest alone: abroad, kgswitch answered for the router, and a guest
// that resolved it there would keep sending home-link traffic to a MAC that
// does not exist at home.
func (s *Switch) tellRouter(p *vmPort) {
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
		err = s.dp.conn.WriteFrame(frame)
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
		err = s.dp.conn.WriteFrame(frame)
	}
	if err != nil {
		s.log.Warn("send Neighbor Advertisement", "port", p.name(), "err", err)
	}
	s.tellRouter(p)
	p.naLeft--
	p.nextNA = now.Add(time.Second)
	if p.naLeft <= 0 {
		s.log.Info("VM is home: neighbours told", "port", p.name(), "hoa", p.vm.HomeAddress)
		s.endReturn(p)
	}
}

// endReturn removes what returnHome set up; a VM still here keeps the flows of
// a VM at home.
func (s *Switch) endReturn(p *vmPort) {
	p.returning = false
	p.binding = nil
	p.naLeft, p.nextNA = 0, time.Time{}
	if err := s.syncFlows(p); err != nil {
		s.log.Error("remove flows", "port", p.name(), "err", err)
	}
	s.publish()
}

// ensureDatapath creates and opens the internal port the first time a VM is
// served on this host, and installs the flows that bring tunnel and signalling
// packets for the care-of address to it.
func (s *Switch) ensureDatapath() error {
	if s.dp != nil {
		return nil
	}
	uplink, ok := s.deps.DB.Interface(s.cfg.Uplink)
	if !ok || uplink.OFPort <= 0 {
		return fmt.Errorf("uplink %s is not a port of bridge %s", s.cfg.Uplink, s.cfg.Bridge)
	}
	ctx := s.runCtx
	if err := s.deps.DB.EnsureInternalPort(ctx, s.cfg.Bridge, s.cfg.InternalPort); err != nil {
		return fmt.Errorf("create internal port %s: %w", s.cfg.InternalPort, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if i, ok := s.deps.DB.Interface(s.cfg.InternalPort); ok && i.OFPort > 0 {
			s.kgPort = i.OFPort
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("internal port %s got no OpenFlow port number within 10s", s.cfg.InternalPort)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, mac, err := s.deps.OpenPort(ctx, s.cfg.InternalPort)
	if err != nil {
		return fmt.Errorf("open internal port %s: %w", s.cfg.InternalPort, err)
	}
	s.routerMAC = mac
	s.uplinkPort = uplink.OFPort
	s.dp = newDatapath(conn, s.deps.Uplink)
	s.dp.global = &s.dpCounters
	s.publish()
	dp := s.dp
	go func() {
		if err := dp.Run(ctx); err != nil {
			s.dpErr <- err
		}
	}()
	return nil
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
	coa := s.cfg.CareOfAddress.String()
	flows := []*ovs.Flow{
		// Tunnel and Mobility Header packets for the care-of address bypass the host
		// kernel, which has neither ip6_tunnel nor MIP6 and would answer them with
		// Parameter Problems.
		{Priority: 200, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort, Matches: []ovs.Match{ovs.IPv6Destination(coa), ovs.NetworkProtocol(41)}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		{Priority: 200, Protocol: ovs.ProtocolIPv6, InPort: s.uplinkPort, Matches: []ovs.Match{ovs.IPv6Destination(coa), ovs.NetworkProtocol(135)}, Actions: []ovs.Action{ovs.Output(s.kgPort)}},
		// What kgswitch hands back to the host (see fromUplink) goes to the
		// bridge's local port, where the care-of address lives.
		{Priority: 150, Protocol: ovs.ProtocolIPv6, InPort: s.kgPort, Matches: []ovs.Match{ovs.IPv6Destination(coa)}, Actions: []ovs.Action{ovs.Output(ovsLocalPort)}},
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
	}
	return flows
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

// installGlobalFlows (re)installs the host-wide flows; their set depends on
// which Home Agents the served guests use.
func (s *Switch) installGlobalFlows() error {
	if s.dp == nil {
		return nil
	}
	has := s.homeAgents()
	if s.globalInstalled && slices.Equal(has, s.globalHAs) {
		return nil
	}
	if err := s.deps.Flows.ReplaceSets(map[uint64][]*ovs.Flow{ovsctl.Cookie: s.globalFlows()}); err != nil {
		return fmt.Errorf("install host-wide flows: %w", err)
	}
	s.globalInstalled, s.globalHAs = true, has
	return nil
}

// publish gives the datapath a new snapshot of the forwarding state.
func (s *Switch) publish() {
	if s.dp == nil {
		return
	}
	now := s.deps.Now()
	f := &fib{coa: s.cfg.CareOfAddress, mtu: tunnelMTU, routerMAC: s.routerMAC,
		byMAC: map[[6]byte]*guest{}, byHoA: map[netip.Addr]*guest{}, returning: map[netip.Addr]bool{},
		departedByMAC: map[[6]byte]*departed{}, departedByHoA: map[netip.Addr]*departed{}, atHome: map[netip.Addr]string{},
		awaiting: map[[6]byte]string{}}
	for _, p := range s.vms {
		if p.returning {
			f.returning[p.vm.HomeAddress] = true
		}
		if p.ofport == 0 && p.dep == nil && s.foreignFor(p) && p.vm.MAC != nil {
			f.awaiting[[6]byte(p.vm.MAC)] = p.key()
		}
		if p.returnPending && p.mac != nil {
			f.awaiting[[6]byte(p.mac)] = p.key()
		}
		if p.dep != nil {
			f.departedByMAC[p.dep.mac] = p.dep
			f.departedByHoA[p.dep.hoa] = p.dep
		} else if p.ofport != 0 && !p.foreign && s.holds(p) {
			// Also while returning: the VM may leave again before the Home
			// Agent answered.
			f.atHome[p.vm.HomeAddress] = p.key()
		}
		if !p.foreign || p.binding == nil {
			continue
		}
		g := &guest{port: p.key(), mac: [6]byte(p.mac), hoa: p.vm.HomeAddress, prefix: p.vm.Home.Prefix, ha: p.vm.Home.HomeAgent,
			tunnel: p.binding.Tunnelling(now), pending: p.pending, asked: p.asked, nd: p.nd, ptbFrom: p.vm.Home.RouterLinkLocal,
			counters: p.counters, ownLL: p.ownLL}
		f.byMAC[g.mac] = g
		f.byHoA[g.hoa] = g
	}
	s.dp.fib.Store(f)
}

func (s *Switch) sendBU(bu mipv6.BUPacket) {
	s.buBuf = mipv6.AppendBUPacket(s.buBuf[:0], bu)
	if err := s.deps.Uplink.WriteIPv6(s.buBuf, bu.Dst); err != nil {
		s.log.Warn("send Binding Update", "hoa", bu.HomeAddress, "home_agent", bu.Dst, "err", err)
		return
	}
	s.log.Debug("sent Binding Update", "hoa", bu.HomeAddress, "seq", bu.Sequence, "lifetime_s", int(bu.Lifetime)*4)
}

// handleSignal applies a Mobility Header packet the datapath received for the
// care-of address: Binding Acknowledgement, Binding Error or Binding Refresh
// Request. Anything else, or anything that does not match a binding, is
// counted and dropped.
func (s *Switch) handleSignal(pkt []byte) {
	now := s.deps.Now()
	var (
		hoa  netip.Addr
		kind string
		// apply runs the message against the binding of its home address.
		apply func(b *mipv6.Binding) (mipv6.BUPacket, bool, error)
	)
	if ba, err := mipv6.ParseBAPacket(pkt); err == nil {
		hoa, kind = ba.HomeAddress, "Binding Acknowledgement"
		apply = func(b *mipv6.Binding) (mipv6.BUPacket, bool, error) { return b.HandleBA(now, ba) }
	} else if be, err2 := mipv6.ParseBindingErrorPacket(pkt); err2 == nil {
		hoa, kind = be.HomeAddress, "Binding Error"
		apply = func(b *mipv6.Binding) (mipv6.BUPacket, bool, error) { return b.HandleBE(now, be) }
	} else if brr, err3 := mipv6.ParseBRRPacket(pkt); err3 == nil {
		// A Binding Refresh Request reaches the care-of address with the home
		// address in a type 2 routing header or not at all; match by sender
		// and refresh every binding with that Home Agent.
		sent := false
		for _, p := range s.vms {
			if p.binding != nil && p.binding.HomeAgent == brr.Src {
				if bu, ok := p.binding.RefreshNow(now, brr.Src); ok {
					s.sendBU(bu)
					sent = true
				}
			}
		}
		if !sent {
			s.dp.global.drop(DropSignalRejected)
		}
		s.log.Info("Binding Refresh Request", "home_agent", brr.Src, "refreshed", sent)
		return
	} else {
		s.dp.global.drop(DropSignalRejected)
		s.log.Debug("dropped signalling packet", "err", errors.Join(err, err2, err3))
		return
	}
	for _, p := range s.vms {
		if p.binding == nil || p.vm.HomeAddress != hoa {
			continue
		}
		was := p.binding.Tunnelling(now)
		bu, send, err := apply(p.binding)
		if err != nil {
			p.counters.drop(DropSignalRejected)
			s.log.Warn("dropped "+kind, "port", p.name(), "err", err)
			return
		}
		snap := p.binding.Snapshot(now)
		s.log.Info(kind, "port", p.name(), "hoa", hoa, "status", snap.Status, "reason", snap.Reason,
			"state", snap.State.String(), "granted_s", snap.Granted.Seconds(), "after", now.Sub(p.since).String())
		if send {
			s.sendBU(bu)
		}
		if p.returning && snap.State == mipv6.StateDeregistered && p.naLeft == 0 {
			if snap.Status == mipv6.StatusAccepted || snap.Status == mipv6.StatusAcceptedPrefixDiscovery {
				p.naLeft = homeAdvertisements
				s.announceHome(p, now)
			} else {
				s.endReturn(p) // the Home Agent had no binding: nobody to redirect
			}
			return
		}
		if p.binding.Tunnelling(now) != was {
			s.publish()
		}
		return
	}
	s.dp.global.drop(DropSignalRejected)
	s.log.Debug(kind+" for a home address not served here", "hoa", hoa)
}

// due is when the port's binding next needs attention; zero = never.
func (p *vmPort) due() time.Time {
	if p.binding == nil {
		return time.Time{}
	}
	return p.binding.Due()
}

// advertise sends the home router's Router Advertisement to a guest, as the
// home router would every interval.
func (s *Switch) advertise(p *vmPort, now time.Time) {
	p.nextRA = now.Add(p.nd.Interval())
	frame, err := p.nd.AppendRouterAdvertisement(nil, p.mac, allNodes, tunnelMTU)
	if err == nil {
		err = s.dp.conn.WriteFrame(frame)
	}
	if err != nil {
		p.counters.drop(DropWriteError)
		s.log.Warn("send Router Advertisement", "port", p.name(), "err", err)
		return
	}
	p.counters.RASent.Add(1)
}

var allNodes = netip.MustParseAddr("ff02::1")

func (s *Switch) tick() {
	now := s.deps.Now()
	if !s.dpRetryAt.IsZero() && !now.Before(s.dpRetryAt) {
		s.recoverDatapath()
	}
	changed := false
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
		was := p.binding.Tunnelling(now)
		if bu, ok := p.binding.Tick(now); ok {
			s.sendBU(bu)
		}
		changed = changed || p.binding.Tunnelling(now) != was
	}
	// Lapsed bindings stop tunnelling even when no timer changed them.
	if changed || s.dp != nil {
		s.publish()
	}
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

// AddPortRequest binds a port to a home address on the running daemon.
type AddPortRequest struct {
	Port        string `json:"port"`
	HomeAddress string `json:"home_address"`
	MAC         string `json:"mac,omitempty"`
	HomeAgent   string `json:"home_agent,omitempty"`
	HomePrefix  string `json:"home_prefix,omitempty"`
	RouterLL    string `json:"router_link_local,omitempty"`
	// Activate: the guest already runs on this host (a port bound after the
	// guest's first frames went by); register at once.
	Activate bool `json:"activate,omitempty"`
}

// AddPort binds a port that exists on the bridge to a home address, and serves
// it at once.
func (s *Switch) AddPort(ctx context.Context, req AddPortRequest) error {
	var err error
	if e := s.do(ctx, func() { err = s.addPort(ctx, req) }); e != nil {
		return e
	}
	return err
}

func (s *Switch) addPort(ctx context.Context, req AddPortRequest) error {
	iface, ok := s.deps.DB.Interface(req.Port)
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownPort, req.Port)
	}
	hoa, err := netip.ParseAddr(req.HomeAddress)
	if err != nil {
		return fmt.Errorf("%w: home address %q: %v", ErrInvalid, req.HomeAddress, err)
	}
	if old := s.ports[req.Port]; old != nil && old.vm.HomeAddress == hoa {
		return nil // already bound the same way: nothing to do
	}
	vm, err := s.cfg.NewVM(req.Port, hoa, req.MAC, req.HomeAgent, req.HomePrefix, req.RouterLL)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := s.cfg.AddVM(vm); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	p := s.addVMPort(vm)
	p.fromAddPort = true
	if err := s.prepare(); err != nil {
		return err
	}
	if iface.OFPort > 0 {
		s.handleEvent(ovsctl.Event{Kind: ovsctl.Added, Iface: iface})
		if p.err != "" {
			return errors.New(p.err)
		}
		if req.Activate && p.foreign {
			s.activateGuest(p, "add-port --activate")
		}
	}
	return nil
}

// Reload applies a new configuration: VMs added to the file are served, VMs
// removed from it are let go (their flows removed), changed ones are replaced.
// VMs bound by add-port or declared in external_ids stay. Settings that
// define the host itself (bridge, uplink, care-of address, sockets, state
// directory) cannot change without a restart: such a reload is refused and
// the running configuration stays, as it does when nothing is applied.
func (s *Switch) Reload(ctx context.Context, cfg *config.Config) error {
	var err error
	if e := s.do(ctx, func() { err = s.reload(cfg) }); e != nil {
		return e
	}
	return err
}

func (s *Switch) reload(cfg *config.Config) error {
	old := s.cfg
	for _, c := range []struct {
		key      string
		was, now any
	}{
		{"bridge", old.Bridge, cfg.Bridge}, {"ovs_rundir", old.OVSRunDir, cfg.OVSRunDir}, {"uplink", old.Uplink, cfg.Uplink},
		{"care_of_address", old.CareOfAddress, cfg.CareOfAddress}, {"internal_port", old.InternalPort, cfg.InternalPort},
		{"control_socket", old.ControlSocket, cfg.ControlSocket}, {"state_dir", old.StateDir, cfg.StateDir},
	} {
		if c.was != c.now {
			return fmt.Errorf("%s changed from %v to %v: that needs a restart; keeping the running configuration", c.key, c.was, c.now)
		}
	}
	// VMs bound at run time join the new configuration, unless it claims
	// their home address, port, MAC or iface-id itself.
	for _, p := range s.vms {
		if p.fromAddPort || p.fromOVSDB {
			if err := cfg.AddVM(p.vm); err != nil {
				return fmt.Errorf("%v (bound by %s at run time); keeping the running configuration", err, map[bool]string{true: "add-port", false: "external_ids"}[p.fromAddPort])
			}
		}
	}
	want := map[string]config.VM{}
	for _, vm := range cfg.VMs {
		want[vm.HomeAddress.String()] = vm
	}
	removed, added := 0, 0
	for _, p := range slices.Clone(s.vms) {
		if p.fromAddPort || p.fromOVSDB {
			continue
		}
		if vm, ok := want[p.key()]; ok && reflect.DeepEqual(vm, p.vm) {
			delete(want, p.key())
			continue
		}
		s.log.Info("reload: VM removed or changed", "port", p.name(), "hoa", p.vm.HomeAddress)
		s.removeVM(p) // from the old configuration
		removed++
	}
	s.cfg = cfg
	for _, vm := range cfg.VMs {
		if _, ok := want[vm.HomeAddress.String()]; !ok {
			continue
		}
		p := s.addVMPort(vm)
		added++
		s.log.Info("reload: VM added", "port", p.name(), "hoa", vm.HomeAddress)
		if vm.Port != "" {
			if i, ok := s.deps.DB.Interface(vm.Port); ok {
				s.handleEvent(ovsctl.Event{Kind: ovsctl.Added, Iface: i})
			}
		}
		if p.ofport == 0 {
			if err := s.syncFlows(p); err != nil {
				s.log.Error("reload: flows", "port", p.name(), "err", err)
			}
		}
	}
	if err := s.prepare(); err != nil {
		s.log.Error("reload: prepare", "err", err)
	}
	s.globalInstalled = false // home networks may have changed
	if err := s.installGlobalFlows(); err != nil {
		s.log.Error("reload: host-wide flows", "err", err)
	}
	s.log.Info("configuration reloaded", "vms", len(s.vms), "added", added, "removed", removed)
	return nil
}

// PortStatus is one VM's state for `kgswitch status`.
type PortStatus struct {
	Port              string            `json:"port"`
	HomeAddress       string            `json:"home_address"`
	MAC               string            `json:"mac,omitempty"`
	Location          string            `json:"location"` // "home", "foreign" or "absent"
	BindingState      string            `json:"binding_state,omitempty"`
	Reason            string            `json:"reason,omitempty"`
	CareOf            string            `json:"care_of,omitempty"`
	HomeAgent         string            `json:"home_agent"`
	Sequence          uint16            `json:"sequence,omitempty"`
	LifetimeLeftSec   float64           `json:"lifetime_left_s,omitempty"`
	ToTunnelPackets   uint64            `json:"to_tunnel_packets"`
	ToTunnelBytes     uint64            `json:"to_tunnel_bytes"`
	FromTunnelPackets uint64            `json:"from_tunnel_packets"`
	FromTunnelBytes   uint64            `json:"from_tunnel_bytes"`
	NDAnswered        uint64            `json:"nd_answered"`
	RASent            uint64            `json:"ra_sent"`
	LocalPackets      uint64            `json:"local_packets"`
	Held              uint64            `json:"held"`
	Released          uint64            `json:"released"`
	Drops             map[string]uint64 `json:"drops,omitempty"`
	Error             string            `json:"error,omitempty"`
}

// DatapathDrops reports the frames the datapath dropped that belong to no VM
// (malformed, from unknown sources, for unknown home addresses, signalling
// the control loop could not take) and those the kernel dropped before
// kgswitch could read them, by reason.
func (s *Switch) DatapathDrops(ctx context.Context) (map[string]uint64, error) {
	var collectErr error
	err := s.do(ctx, func() {
		if s.dp != nil {
			collectErr = s.dp.collectKernelDrops()
		}
	})
	if err == nil && collectErr != nil {
		s.log.Warn("read the internal port's kernel drop counter", "err", collectErr)
	}
	return s.dpCounters.DropMap(), err
}

// Status reports every VM, sorted by port name.
func (s *Switch) Status(ctx context.Context) ([]PortStatus, error) {
	var out []PortStatus
	spoof := map[int]uint64{} // index in out -> cookie
	err := s.do(ctx, func() {
		now := s.deps.Now()
		for _, p := range s.vms {
			if p.foreign && p.ofport != 0 {
				spoof[len(out)] = spoofCookie(p.key())
			}
			out = append(out, s.portStatus(p, now))
		}
	})
	// OpenFlow is asked outside the control loop: an ovs-vswitchd that does
	// not answer must not stop the loop's timers (binding refreshes).
	if len(spoof) > 0 {
		counts := s.flowCounts(ctx)
		for i, c := range spoof {
			if n := counts[c]; n > 0 {
				out[i].Drops["spoofed-mac"] = n
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out, err
}

// flowCountWait bounds how long status waits for OpenFlow's counters; an
// ovs-vswitchd that does not answer (it stops serving OpenFlow without its
// database) must not make status hang.
const flowCountWait = 500 * time.Millisecond

// flowCounts returns the packet counts of kgswitch's flows per cookie: fresh
// when ovs-vswitchd answers in time, else the last ones read. One query runs
// at a time.
func (s *Switch) flowCounts(ctx context.Context) map[uint64]uint64 {
	s.countsMu.Lock()
	if s.countsDone == nil {
		done := make(chan struct{})
		s.countsDone = done
		go func() {
			c, err := s.deps.Flows.PacketsByCookie()
			s.countsMu.Lock()
			if err == nil {
				s.counts = c
			}
			s.countsDone = nil
			s.countsMu.Unlock()
			close(done)
		}()
	}
	done := s.countsDone
	s.countsMu.Unlock()
	select {
	case <-done:
	case <-time.After(flowCountWait):
	case <-ctx.Done():
	}
	s.countsMu.Lock()
	defer s.countsMu.Unlock()
	return s.counts
}

// portStatus is one VM's status, from the control loop's own state.
func (s *Switch) portStatus(p *vmPort, now time.Time) PortStatus {
	st := PortStatus{Port: p.name(), HomeAddress: p.vm.HomeAddress.String(), HomeAgent: p.vm.Home.HomeAgent.String(),
		Location: "absent", Error: p.err,
		ToTunnelPackets: p.counters.ToTunnelPackets.Load(), ToTunnelBytes: p.counters.ToTunnelBytes.Load(),
		FromTunnelPackets: p.counters.FromTunnelPackets.Load(), FromTunnelBytes: p.counters.FromTunnelBytes.Load(),
		NDAnswered: p.counters.NDAnswered.Load(), RASent: p.counters.RASent.Load(),
		LocalPackets: p.counters.LocalPackets.Load(), Held: p.counters.Held.Load(), Released: p.counters.Released.Load(),
		Drops: p.counters.DropMap()}
	if p.mac != nil {
		st.MAC = p.mac.String()
	}
	if p.ofport != 0 {
		st.Location = "home"
		if p.foreign {
			st.Location = "foreign"
		}
	}
	if p.returning {
		st.Location = "returning"
	}
	if p.dep != nil {
		st.Location = "departed"
	}
	if p.binding != nil {
		snap := p.binding.Snapshot(now)
		st.BindingState, st.Reason, st.CareOf, st.Sequence = snap.State.String(), snap.Reason, snap.CareOf.String(), snap.Sequence
		st.LifetimeLeftSec = snap.LifetimeLeft.Seconds()
	}
	if p.pending || p.returnPending {
		st.BindingState = "waiting-for-guest"
	}
	return st
}
