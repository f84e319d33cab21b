package vswitch

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/clock/clocktest"
	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/ovsctl"
)

var (
	hoa      = datapathtest.HomeAddr
	ha       = datapathtest.HomeAgent
	coa      = datapathtest.CareOf
	cn       = datapathtest.CN
	routerLL = datapathtest.RouterLL
	guestMAC = datapathtest.GuestMAC
	kgMAC    = datapathtest.KgMAC
	lanMAC   = datapathtest.LanMAC
)

// testEpoch is when the harness's fake clock starts.
var testEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// The harness's configurations are built from these parts: the lab's home
// network, and its guest on vnet3.
const (
	homeNetwork = `
[[home_network]]
prefix = "2001:db8:2000::/64"
home_agent = "2001:db8:2000::1"
router_link_local = "fe80::1"
`
	vnet3VM = `
[[vm]]
port = "vnet3"
home_address = "2001:db8:2000::10"
mac = "52:54:00:00:00:10"
`
	// noVMConfig is a foreign host (hostB) with no VM configured.
	noVMConfig = `
uplink = "eth0"
care_of_address = "2001:db8:3000::3"
` + homeNetwork
	// testConfig is a foreign host expecting the guest on vnet3.
	testConfig = noVMConfig + vnet3VM
	// homeHostConfig is the guest's home host (hostA).
	homeHostConfig = `
uplink = "eth0"
care_of_address = "2001:db8:2000::2"
` + homeNetwork + vnet3VM
)

type fakeDB struct {
	mu     sync.Mutex
	ifaces map[string]ovsctl.Interface
	// bridges are the interfaces' bridges where not br0.
	bridges map[string]string
	events  chan ovsctl.Event
	// stall, when not nil, holds every external_ids write until closed.
	stall chan struct{}
}

func (d *fakeDB) Events() <-chan ovsctl.Event { return d.events }
func (d *fakeDB) Interface(name string) (ovsctl.Interface, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.ifaces[name]
	return i, ok
}
func (d *fakeDB) BridgeOf(name string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ifaces[name]; !ok {
		return "", false
	}
	if br, ok := d.bridges[name]; ok {
		return br, true
	}
	return config.DefaultBridge, true
}
func (d *fakeDB) EnsureInternalPort(_ context.Context, bridge, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ifaces[name] = ovsctl.Interface{Name: name, Type: "internal", OFPort: 9}
	return nil
}
func (d *fakeDB) Interfaces() []ovsctl.Interface {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []ovsctl.Interface
	for _, i := range d.ifaces {
		out = append(out, i)
	}
	return out
}
func (d *fakeDB) SetExternalIDs(_ context.Context, iface string, set map[string]string, del []string) error {
	d.mu.Lock()
	stall := d.stall
	d.mu.Unlock()
	if stall != nil {
		<-stall // an ovsdb-server that never answers, whatever the caller's deadline
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.ifaces[iface]
	if !ok {
		return errors.New("no such interface")
	}
	ids := maps.Clone(i.ExternalIDs)
	if ids == nil {
		ids = map[string]string{}
	}
	for _, k := range del {
		delete(ids, k)
	}
	maps.Copy(ids, set)
	i.ExternalIDs = ids
	d.ifaces[iface] = i
	return nil
}
func (d *fakeDB) ids(iface string) map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.ifaces[iface].ExternalIDs)
}
func (d *fakeDB) add(i ovsctl.Interface) {
	d.mu.Lock()
	d.ifaces[i.Name] = i
	d.mu.Unlock()
	d.events <- ovsctl.Event{Kind: ovsctl.Added, Iface: i}
}

type fakeFlows struct {
	mu      sync.Mutex
	flows   map[uint64][]*ovs.Flow
	noFlood map[string]bool
}

func (f *fakeFlows) ReplaceSets(sets map[uint64][]*ovs.Flow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for cookie, fl := range sets {
		if len(fl) == 0 {
			delete(f.flows, cookie)
			continue
		}
		f.flows[cookie] = fl
	}
	return nil
}
func (f *fakeFlows) SetNoFlood(port string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noFlood[port] = on
	return nil
}
func (f *fakeFlows) PacketsByCookie() (map[uint64]uint64, error) { return map[uint64]uint64{}, nil }
func (f *fakeFlows) Dump(cookie, mask uint64) ([]*ovs.Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*ovs.Flow
	for c, fl := range f.flows {
		if c&mask != cookie&mask {
			continue
		}
		for _, x := range fl {
			y := *x
			y.Cookie = c
			out = append(out, &y)
		}
	}
	return out, nil
}
func (f *fakeFlows) text() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, fl := range f.flows {
		for _, x := range fl {
			b, _ := x.MarshalText()
			out = append(out, string(b))
		}
	}
	return out
}

type harness struct {
	clk      *clocktest.Clock
	switchEv chan ovsctl.SwitchEvent
	opens    atomic.Int32
	sw       *Switch
	conn     *datapathtest.Conn
	uplink   *datapathtest.Uplink
	db       *fakeDB
	flows    *fakeFlows
	upFlows  *fakeFlows // the uplink bridge's, in host layout 2
	cancel   context.CancelFunc
	done     chan error
	log      *logBuffer
}

// logBuffer keeps what the Switch logs, for tests that check its levels.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// warnings returns the lines logged at WARN or above.
func (h *harness) warnings() []string {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	var out []string
	for _, line := range strings.Split(h.log.buf.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			out = append(out, line)
		}
	}
	return out
}

type memStore struct {
	mu    sync.Mutex
	m     map[string]StoredBinding
	ports []AddPortRequest
}

func (s *memStore) Load() (map[string]StoredBinding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m), nil
}
func (s *memStore) Save(m map[string]StoredBinding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = maps.Clone(m)
	return nil
}
func (s *memStore) LoadPorts() ([]AddPortRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ports), nil
}
func (s *memStore) SavePorts(reqs []AddPortRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ports = slices.Clone(reqs)
	return nil
}
func (s *memStore) get(k string) (StoredBinding, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[k]
	return b, ok
}

// newHarness starts a Switch; ifaces are on the bridge before it starts.
func newHarness(t *testing.T, cfgText string, ifaces ...ovsctl.Interface) *harness {
	return newHarnessWith(t, cfgText, nil, ifaces...)
}

func newHarnessWith(t *testing.T, cfgText string, store Store, ifaces ...ovsctl.Interface) *harness {
	return newHarnessAll(t, cfgText, store, nil, ifaces...)
}

func newHarnessFlows(t *testing.T, cfgText string, flows *fakeFlows, ifaces ...ovsctl.Interface) *harness {
	return newHarnessAll(t, cfgText, nil, flows, ifaces...)
}

func newHarnessAll(t testing.TB, cfgText string, store Store, flows *fakeFlows, ifaces ...ovsctl.Interface) *harness {
	t.Helper()
	return startHarness(t, cfgText, harnessHost{store: store, flows: flows}, ifaces...)
}

// harnessHost is what a harness's host has besides its configuration.
type harnessHost struct {
	store Store
	flows *fakeFlows
	// upFlows, when not nil, is the uplink bridge's flow table (host
	// layout 2); bridges are the interfaces not on br0, and extra the
	// interfaces in the database before kgswitch starts.
	upFlows *fakeFlows
	bridges map[string]string
	extra   []ovsctl.Interface
	// nic and filter, when not nil, are the care-of NIC and the nftables
	// of host layout 3.
	nic    *datapathtest.Conn
	filter *fakeFilter
}

func newFakeFlows() *fakeFlows {
	return &fakeFlows{flows: map[uint64][]*ovs.Flow{}, noFlood: map[string]bool{}}
}

func startHarness(t testing.TB, cfgText string, host harnessHost, ifaces ...ovsctl.Interface) *harness {
	t.Helper()
	store, flows := host.store, host.flows
	cfg, err := config.Parse(cfgText)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		clk:      clocktest.New(testEpoch),
		conn:     datapathtest.NewConn(),
		uplink:   datapathtest.NewUplink(16),
		db:       &fakeDB{ifaces: map[string]ovsctl.Interface{"eth0": {Name: "eth0", OFPort: 1}}, events: make(chan ovsctl.Event, 16)},
		flows:    flows,
		done:     make(chan error, 1),
		switchEv: make(chan ovsctl.SwitchEvent, 4),
		log:      &logBuffer{},
	}
	if h.flows == nil {
		h.flows = newFakeFlows()
	}
	h.db.bridges = host.bridges
	for _, i := range host.extra {
		h.db.ifaces[i.Name] = i
	}
	var upFlows FlowTable
	if host.upFlows != nil {
		upFlows, h.upFlows = host.upFlows, host.upFlows
	}
	var ports PortStore
	if ms, ok := store.(*memStore); ok {
		ports = ms
	}
	deps := Deps{}
	if host.nic != nil {
		deps.OpenCareOf = func(nic string, a netip.Addr) (datapath.FrameConn, error) {
			if nic != cfg.CareOfInterface || a != cfg.CareOfAddress {
				t.Errorf("OpenCareOf(%s, %v), want care_of_interface and care_of_address", nic, a)
			}
			return host.nic, nil
		}
	}
	if host.filter != nil {
		deps.HostFilter = host.filter
	}
	h.sw = New(cfg, Deps{
		OpenCareOf: deps.OpenCareOf, HostFilter: deps.HostFilter,
		DB: h.db, Flows: h.flows, UplinkFlows: upFlows, Uplink: h.uplink, Ports: ports,
		OpenPort: func(context.Context, string) (datapath.FrameConn, net.HardwareAddr, error) {
			h.opens.Add(1)
			return h.conn, kgMAC, nil
		},
		Clock:        h.clk,
		Logger:       slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Store:        store,
		SwitchEvents: h.switchEv,
		NeighborMAC: func(a netip.Addr) net.HardwareAddr {
			switch a {
			case routerLL:
				return realRouterMAC
			case ha:
				return homeAgentMAC
			}
			return nil
		},
	})
	for _, i := range ifaces {
		h.db.add(i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.sw.Run(ctx) }()
	// Once settled, Run has taken stock of what was on the bridge at start,
	// opened its internal port if it needs one and installed its flows.
	h.settle(t)
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// settle returns once kgswitch has handled everything it was given: the
// internal port is open if it was being opened, the datapath read every
// injected frame, OVS applied what the control loop asked of it, and the
// control loop took what they reported (it takes reports before requests).
// Rounds repeat until two in a row find no port being opened.
func (h *harness) settle(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for quiet := 0; quiet < 2; {
		if h.opens.Load() > 0 {
			idle := make(chan struct{})
			go func() { h.conn.Idle(); close(idle) }()
			select {
			case <-idle:
			case <-ctx.Done():
				t.Fatal("the datapath did not read the injected frames")
			}
		}
		if err := h.sw.ovs.wait(ctx); err != nil {
			t.Fatalf("OVS queue: %v", err)
		}
		opening := false
		if err := h.sw.do(ctx, func() { opening = h.sw.opening }); err != nil {
			t.Fatalf("control loop: %v", err)
		}
		// Done after two rounds in a row with the port open (or not
		// needed): the second applies what the first one's reports asked.
		if opening {
			quiet = 0
		} else {
			quiet++
		}
	}
}

// advance lets kgswitch handle what it was given so far, then moves the
// fake clock by d and lets kgswitch act on that.
func (h *harness) advance(t *testing.T, d time.Duration) {
	t.Helper()
	h.settle(t)
	h.clk.Advance(d)
	h.settle(t)
}

// waitFor settles kgswitch until cond holds, for at most 5 s, and reports
// whether it does: the caller says what was wrong. It returns settled, so
// what the change that made cond hold asked of OVS is applied too.
func waitFor(t *testing.T, settle func(testing.TB), cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		settle(t)
		if cond() {
			settle(t)
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// status is the status of the VM on port.
func (h *harness) status(t *testing.T, port string) PortStatus {
	t.Helper()
	st, err := h.sw.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st {
		if p.Port == port {
			return p
		}
	}
	t.Fatalf("no VM on %s: %+v", port, st)
	return PortStatus{}
}

func (h *harness) nextSent(t *testing.T) datapathtest.Sent {
	t.Helper()
	select {
	case s := <-h.uplink.Out:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent to the uplink")
	}
	return datapathtest.Sent{}
}

func (h *harness) nextFrame(t *testing.T) []byte {
	t.Helper()
	select {
	case f := <-h.conn.Out:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written to the internal port")
	}
	return nil
}

func (h *harness) noFrame(t *testing.T) {
	t.Helper()
	h.settle(t)
	select {
	case f := <-h.conn.Out:
		t.Fatalf("unexpected frame to the internal port: % x", f)
	case s := <-h.uplink.Out:
		bu, err := mipv6.ParseBUPacket(s.Pkt)
		t.Fatalf("unexpected packet to the uplink for %v: %+v %v", s.Dst, bu, err)
	default:
	}
}

// arrive puts a guest's port on the bridge and lets the guest announce itself
// as a resumed QEMU guest does.
func (h *harness) arrive(t *testing.T, name string, ofport int, mac net.HardwareAddr) {
	t.Helper()
	h.db.add(ovsctl.Interface{Name: name, OFPort: ofport})
	if !waitFor(t, h.settle, func() bool { return h.status(t, name).BindingState == "waiting-for-guest" }) {
		t.Fatalf("%s not prepared: %+v", name, h.status(t, name))
	}
	h.conn.Inject(datapathtest.RARP(mac))
}

// bind brings vnet3 up on the (foreign) host and completes its registration.
func (h *harness) bind(t *testing.T) mipv6.BUPacket {
	t.Helper()
	h.arrive(t, "vnet3", 3, guestMAC)
	s := h.nextSent(t)
	if s.Dst != ha {
		t.Fatalf("got BU to %v, want %v", s.Dst, ha)
	}
	bu, err := mipv6.ParseBUPacket(s.Pkt)
	if err != nil {
		t.Fatalf("BU does not parse: %v", err)
	}
	ba := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Status: 0, Sequence: bu.Sequence, Lifetime: bu.Lifetime})
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, ba))
	h.settle(t)
	if st := h.status(t, "vnet3"); st.BindingState != "bound" {
		t.Fatalf("binding not bound: %+v", st)
	}
	return bu
}
