package vswitch

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kgswitch/kgswitch/clock"
	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// OVSDB is what the control loop needs of the OVS database.
type OVSDB interface {
	Events() <-chan ovsctl.Event
	Interface(name string) (ovsctl.Interface, bool)
	Interfaces() []ovsctl.Interface
	// BridgeOf names the bridge an interface is a port of.
	BridgeOf(iface string) (string, bool)
	EnsureInternalPort(ctx context.Context, bridge, name string) error
	SetExternalIDs(ctx context.Context, iface string, set map[string]string, del []string) error
}

// PortOpener opens the internal port once OVS has created its network device,
// and returns it with the device's MAC address.
type PortOpener func(ctx context.Context, name string) (datapath.FrameConn, net.HardwareAddr, error)

// Deps are the Switch's connections to the world.
type Deps struct {
	DB    OVSDB
	Flows FlowTable
	// UplinkFlows are the uplink bridge's flow tables when the uplink is
	// on a bridge of its own (config UplinkBridge); nil otherwise.
	UplinkFlows FlowTable
	OpenPort    PortOpener
	// OpenCareOf and HostFilter serve host layout 3 (config
	// CareOfInterface; see nic.go); unused otherwise.
	OpenCareOf CareOfOpener
	HostFilter HostFilter
	Uplink     datapath.Uplink
	Logger     *slog.Logger
	// Store keeps bindings across restarts; nil keeps nothing.
	Store Store
	// Ports keeps add-port bindings across restarts; nil keeps none.
	Ports PortStore
	// LinkOf names the host's interface that has an address
	// (hostio.LinkOf); nil: the care-of address's place is not checked.
	LinkOf func(netip.Addr) (string, bool)
	// NeighborMAC looks up the host's neighbour table (hostio.HostNeighbor);
	// nil looks nothing up.
	NeighborMAC func(netip.Addr) net.HardwareAddr
	// SwitchEvents reports ovs-vswitchd going down and coming back (it loses
	// its flow tables); nil when not watched.
	SwitchEvents <-chan ovsctl.SwitchEvent
	// Clock is the time of every decision (retransmissions, refreshes, the
	// hold queue, announcements); nil is the wall clock.
	Clock clock.Clock
}

// Errors AddPort returns; the CLI maps them to exit statuses.
var (
	ErrUnknownPort = errors.New("no such interface on the bridge")
	ErrInvalid     = errors.New("invalid binding")
)

// notBoundError is a port kgswitch serves no VM on. It counts as
// ErrUnknownPort (the same exit status) but does not say so: the port may
// well be on the bridge, and "no such interface" would send the operator
// looking for a port that is there.
type notBoundError string

func (e notBoundError) Error() string        { return string(e) + " is not bound to a home address here" }
func (e notBoundError) Is(target error) bool { return target == ErrUnknownPort }

// Switch is the control loop: it owns every piece of per-VM state, and only its
// goroutine (Run) touches it; other goroutines reach it through requests.
// What it wants of OVS is applied by an ovsQueue on a goroutine of its own,
// so that a slow ovs-vswitchd or ovsdb-server never delays a Binding Update.
type Switch struct {
	// haMACs are the Home Agents' MACs learnt from the host's neighbour
	// table (homeagent.go); haLookupAt is when to look again, zero when
	// every one needed is known.
	haMACs     map[netip.Addr]net.HardwareAddr
	haLookupAt time.Time
	haPokedAt  map[netip.Addr]time.Time
	// espSent is the last ESP sequence number sent on each outbound SA.
	espSent map[espKey]uint32

	cfg   *config.Config
	deps  Deps
	log   *slog.Logger
	clock clock.Clock
	ovs   *ovsQueue

	dp        *datapath.Datapath
	routerMAC net.HardwareAddr
	kgPort    int // OpenFlow port of the internal port
	// uplinkPort is where the uplink's frames enter the VM bridge: the
	// uplink itself, or in host layout 2 the VM bridge's end of the patch
	// pair (see layout.go).
	uplinkPort int
	// In host layout 2: the patch pair joining the two bridges, and the
	// uplink's and the patch's OpenFlow ports on the uplink bridge.
	patch                     patchPair
	upUplinkPort, upPatchPort int
	// filterApplied is the nftables ruleset last applied in host layout 3
	// (nic.go); empty when none.
	filterApplied string
	// globalHAs are the Home Agents the installed host-wide flows divert.
	globalHAs       []netip.Addr
	globalInstalled bool
	// dpCounters are the datapath's counters for frames of no VM.
	dpCounters datapath.Counters
	// stored is what the Store held at start; saved is what was last saved.
	stored map[string]StoredBinding
	saved  []byte
	// presentAtStart holds the configured ports already on the bridge when Run
	// began: their VMs did not just come home.
	presentAtStart map[string]bool
	// vms are all the VMs this daemon knows; byKey finds one by home address
	// (its identity everywhere, cookies included); ports finds one by the
	// name of its interface on the bridge, configured or matched.
	vms   []*vmPort
	byKey map[string]*vmPort
	ports map[string]*vmPort
	// publishHeld counts the changes of many VMs at once (a reload) under
	// way: the datapath gets one snapshot when the last ends (publishDue
	// says one is owed) instead of one per VM, each of which costs O(VMs).
	publishHeld int
	publishDue  bool
	requests    chan func()
	dpRetryAt   time.Time // when to try reopening a failed internal port
	// opening: the internal port is being opened; opened delivers the
	// result; dpWait, when not nil, is closed once it is open.
	opening bool
	opened  chan portOpened
	dpWait  chan struct{}
	// waiting are actions that wait for OVS to apply what was queued before
	// them (see afterOVS).
	waiting []ovsAction
	// countsMu guards counts (the last flow packet counts read) and
	// countsDone (closed when the query in flight ends; nil when none).
	countsMu   sync.Mutex
	counts     map[uint64]uint64
	countsDone chan struct{}
	// switchEvents is Deps.SwitchEvents while it is open.
	switchEvents <-chan ovsctl.SwitchEvent
	// switchDown and dbDown: ovs-vswitchd or ovsdb-server is unreachable.
	switchDown, dbDown bool
	// runCtx and dpErr belong to Run; what Run starts uses them.
	runCtx context.Context
	dpErr  chan error
	buBuf  []byte
	// logLimit keeps floods of rejected signalling out of the log.
	logLimit logLimit
	// iterations counts the times the loop woke: an idle loop must not.
	iterations atomic.Uint64
}

// origin is how the daemon learnt of a VM.
type origin int

const (
	fromConfig  origin = iota // the configuration file
	fromAddPort               // `kgswitch add-port`: kept across reloads
	fromOVSDB                 // external_ids on its interface: goes when the keys go
)

// vmPort is one VM this daemon knows.
type vmPort struct {
	vm     config.VM
	origin origin
	// declaration is what external_ids declared (fromOVSDB).
	declaration string
	// added is the add-port request that bound it (fromAddPort), as saved.
	added    AddPortRequest
	iface    string            // the VM's interface on this bridge, while it is here
	mirrored map[string]string // what external_ids last got
	ofport   int               // 0 while the port is not on this host's bridge
	since    time.Time         // when the port appeared here
	mac      net.HardwareAddr
	link     *datapath.GuestLink // counters and what the datapath learnt, across phases
	// seenRunning: a frame from the guest before its port appeared.
	seenRunning time.Time
	phase       phase
	// ipv4Refused counts the Home Agent's refusals of the IPv4 home
	// address (see noteIPv4).
	ipv4Refused uint64
	vmParts
}

// New returns a Switch for cfg. Nothing happens until Run.
func New(cfg *config.Config, deps Deps) *Switch {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = clock.Real()
	}
	s := &Switch{cfg: cfg, deps: deps, log: deps.Logger, clock: deps.Clock, ports: map[string]*vmPort{},
		byKey: map[string]*vmPort{}, requests: make(chan func()), opened: make(chan portOpened)}
	s.ovs = newOVSQueue(deps.Flows, deps.UplinkFlows, deps.DB, deps.Logger)
	for _, vm := range cfg.VMs {
		s.addVMPort(vm)
	}
	return s
}

// addVMPort starts tracking vm.
func (s *Switch) addVMPort(vm config.VM) *vmPort {
	p := &vmPort{vm: vm, link: &datapath.GuestLink{}}
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

// foreignFor reports whether this host is outside p's home network.
func (s *Switch) foreignFor(p *vmPort) bool {
	return !p.vm.Home.Prefix.Contains(s.cfg.CareOfAddress)
}

// move sets p's phase; a refused move is a bug, logged, and p stays.
func (s *Switch) move(p *vmPort, to phase) bool {
	if err := p.setPhase(to); err != nil {
		s.log.Error("internal error", "port", p.name(), "err", err)
		return false
	}
	return true
}
