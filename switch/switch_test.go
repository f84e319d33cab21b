package vswitch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"regexp"
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
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/ovsctl"
	"github.com/mdlayher/ndp"
)

var (
	hoa      = netip.MustParseAddr("2001:db8:2000::10")
	ha       = netip.MustParseAddr("2001:db8:2000::1")
	coa      = netip.MustParseAddr("2001:db8:3000::3")
	cn       = netip.MustParseAddr("2001:db8:1000::100")
	routerLL = netip.MustParseAddr("fe80::1")
	guestMAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x10}
	kgMAC    = net.HardwareAddr{0x02, 0x6b, 0x67, 0, 0, 1}
	lanMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
)

// testEpoch is when the harness's fake clock starts.
var testEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const testConfig = `
uplink = "eth0"
care_of_address = "2001:db8:3000::3"
[[home_network]]
prefix = "2001:db8:2000::/64"
home_agent = "2001:db8:2000::1"
router_link_local = "fe80::1"
[[vm]]
port = "vnet3"
home_address = "2001:db8:2000::10"
mac = "52:54:00:00:00:10"
`

type fakeDB struct {
	mu     sync.Mutex
	ifaces map[string]ovsctl.Interface
	events chan ovsctl.Event
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
func (f *fakeFlows) Delete(cookie uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.flows, cookie)
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
	cancel   context.CancelFunc
	done     chan error
}

type memStore struct {
	mu sync.Mutex
	m  map[string]StoredBinding
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

func newHarnessAll(t *testing.T, cfgText string, store Store, flows *fakeFlows, ifaces ...ovsctl.Interface) *harness {
	t.Helper()
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
	}
	if h.flows == nil {
		h.flows = &fakeFlows{flows: map[uint64][]*ovs.Flow{}, noFlood: map[string]bool{}}
	}
	h.sw = New(cfg, Deps{
		DB: h.db, Flows: h.flows, Uplink: h.uplink,
		OpenPort: func(context.Context, string) (datapath.FrameConn, net.HardwareAddr, error) {
			h.opens.Add(1)
			return h.conn, kgMAC, nil
		},
		RandSeq:      func() uint16 { return 1000 },
		Clock:        h.clk,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Store:        store,
		SwitchEvents: h.switchEv,
		NeighborMAC: func(a netip.Addr) net.HardwareAddr {
			if a == routerLL {
				return realRouterMAC
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
// At least twice, for what one round set off.
func (h *harness) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for round := 0; ; round++ {
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
		if round >= 1 && !opening {
			return
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
func waitFor(t *testing.T, settle func(*testing.T), cond func() bool) bool {
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

func TestForeignPortRegistersAndTunnels(t *testing.T) {
	h := newHarness(t, testConfig)
	bu := h.bind(t)
	if bu.Src != coa || bu.HomeAddress != hoa || bu.Flags != mipv6.FlagA|mipv6.FlagH || bu.Sequence != 1000 || bu.Lifetime != 150 {
		t.Errorf("got BU %+v", bu)
	}
	flows := h.flows.text()
	for _, want := range []string{
		"priority=200,in_port=3,dl_src=52:54:00:00:00:10,table=0,idle_timeout=0,actions=output:9",
		"priority=190,in_port=3,table=0,idle_timeout=0,actions=drop",
		"priority=190,ipv6,in_port=1,ipv6_src=2001:db8:2000::1,ipv6_dst=2001:db8:3000::3,nw_proto=58,table=0,idle_timeout=0,actions=output:9",
		"priority=150,ipv6,in_port=9,ipv6_dst=2001:db8:3000::3,table=0,idle_timeout=0,actions=output:65534",
		"priority=200,in_port=9,dl_dst=52:54:00:00:00:10,table=0,idle_timeout=0,actions=output:3",
		"priority=200,ipv6,in_port=1,ipv6_dst=2001:db8:3000::3,nw_proto=41,table=0,idle_timeout=0,actions=output:9",
		"priority=200,ipv6,in_port=1,ipv6_dst=2001:db8:3000::3,nw_proto=135,table=0,idle_timeout=0,actions=output:9",
	} {
		found := false
		for _, f := range flows {
			found = found || bytes.Contains([]byte(f), []byte(want))
		}
		if !found {
			t.Errorf("flow %q not installed; have %q", want, flows)
		}
	}
	if !h.flows.noFlood["vnet3"] {
		t.Error("vnet3 not set no-flood")
	}

	// Guest -> CN goes into the tunnel, unchanged inside.
	inner := datapathtest.UDPPacket(hoa, cn, 100)
	h.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, inner))
	s := h.nextSent(t)
	outer, err := netpkt.ParseIPv6(s.Pkt)
	if err != nil || s.Dst != ha || outer.Src() != coa || outer.Dst() != ha || outer.NextHeader() != 41 || outer.HopLimit() != 64 {
		t.Fatalf("got tunnel packet %v -> %v nh %d hl %d (err %v)", outer.Src(), outer.Dst(), outer.NextHeader(), outer.HopLimit(), err)
	}
	if !bytes.Equal(outer.Payload(), inner) {
		t.Error("inner packet changed in the tunnel")
	}

	// HA -> guest: decapsulated and addressed to the guest's MAC.
	back := datapathtest.UDPPacket(cn, hoa, 50)
	tun := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(back))
	netpkt.PutIPv6(tun, len(back), 41, 64, ha, coa)
	tun = append(tun, back...)
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, tun))
	f := h.nextFrame(t)
	eth := netpkt.Ethernet(f)
	if eth.Dst().String() != guestMAC.String() || eth.Src().String() != kgMAC.String() || !bytes.Equal(eth.Payload(), back) {
		t.Fatalf("got frame %v -> %v, payload equal %v", eth.Src(), eth.Dst(), bytes.Equal(eth.Payload(), back))
	}

	st, _ := h.sw.Status(context.Background())
	if st[0].ToTunnelPackets != 1 || st[0].FromTunnelPackets != 1 || st[0].Location != "foreign" || st[0].LifetimeLeftSec <= 0 {
		t.Errorf("got status %+v", st[0])
	}
}

func TestGuestFramesDroppedWithReason(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	spoofed := datapathtest.UDPPacket(netip.MustParseAddr("2001:db8:2000::99"), cn, 10)
	h.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, spoofed))
	mld := datapathtest.UDPPacket(hoa, netip.MustParseAddr("ff02::16"), 10)
	h.conn.Inject(datapathtest.EthFrame(netpkt.MulticastMAC(netip.MustParseAddr("ff02::16")), guestMAC, mld))
	arp := make([]byte, 60)
	netpkt.PutEthernet(arp, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, guestMAC, 0x0806)
	h.conn.Inject(arp)
	h.conn.Inject(guestMAC) // 6 bytes: not even an Ethernet header
	h.noFrame(t)
	// Unknown MAC and a tunnel packet from someone other than the Home Agent.
	h.conn.Inject(datapathtest.EthFrame(kgMAC, net.HardwareAddr{2, 9, 9, 9, 9, 9}, datapathtest.UDPPacket(hoa, cn, 10)))
	back := datapathtest.UDPPacket(cn, hoa, 50)
	tun := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(back))
	netpkt.PutIPv6(tun, len(back), 41, 64, netip.MustParseAddr("2001:db8:6666::1"), coa)
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, append(tun, back...)))
	h.noFrame(t)
	st, _ := h.sw.Status(context.Background())
	for reason, want := range map[string]uint64{"bad-source": 1, "absorbed": 1, "not-ipv6": 1, "bad-tunnel-source": 1} {
		if got := st[0].Drops[reason]; got != want {
			t.Errorf("got drops[%s] = %d, want %d (all: %v)", reason, got, want, st[0].Drops)
		}
	}
}

// Frames of no VM, and the kernel's drops on the internal port, are counted
// for the datapath as a whole; the kernel's count accumulates across reads.
func TestDatapathDropsOfNoVM(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	h.conn.Inject(guestMAC) // 6 bytes: not even an Ethernet header
	h.conn.Inject(datapathtest.EthFrame(kgMAC, net.HardwareAddr{2, 9, 9, 9, 9, 9}, datapathtest.UDPPacket(hoa, cn, 10)))
	h.noFrame(t)
	h.conn.Dropped.Store(7)
	ctx := context.Background()
	if _, err := h.sw.DatapathDrops(ctx); err != nil {
		t.Fatal(err)
	}
	h.conn.Dropped.Store(5)
	got, err := h.sw.DatapathDrops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"malformed": 1, "unknown-source": 1, "socket-overflow": 12}
	if !maps.Equal(got, want) {
		t.Errorf("DatapathDrops = %v, want %v", got, want)
	}
	// They are no VM's.
	st, _ := h.sw.Status(ctx)
	if _, ok := st[0].Drops["socket-overflow"]; ok || st[0].Drops["malformed"] != 0 {
		t.Errorf("VM's drops %v include the datapath's", st[0].Drops)
	}
}

// When the internal port or the uplink gets a new OpenFlow number, every
// flow that names the old one is replaced.
func TestHostPortRenumbered(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	mentions := func(port int) int {
		n := 0
		for _, f := range h.flows.text() {
			if regexp.MustCompile(fmt.Sprintf(`(in_port=|output:)%d(,|$)`, port)).MatchString(f) {
				n++
			}
		}
		return n
	}
	if mentions(9) == 0 || mentions(1) == 0 {
		t.Fatalf("flows name neither the internal port (9) nor the uplink (1):\n%s", strings.Join(h.flows.text(), "\n"))
	}
	h.db.add(ovsctl.Interface{Name: "kgs0", Type: "internal", OFPort: 19})
	h.db.add(ovsctl.Interface{Name: "eth0", OFPort: 11})
	h.settle(t)
	if n := mentions(9) + mentions(1); n > 0 || mentions(19) == 0 || mentions(11) == 0 {
		t.Errorf("after renumbering, %d flows still name ports 9 or 1:\n%s", n, strings.Join(h.flows.text(), "\n"))
	}
}

func TestNotBoundYetDrops(t *testing.T) {
	h := newHarness(t, testConfig)
	h.arrive(t, "vnet3", 3, guestMAC)
	h.nextSent(t) // the BU
	h.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, 10)))
	h.noFrame(t)
	st, _ := h.sw.Status(context.Background())
	if st[0].Drops["not-bound"] != 1 || st[0].BindingState != "registering" {
		t.Errorf("got %+v, want one not-bound drop while registering", st[0])
	}
}

func TestNeighborSolicitationAnswered(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	ns := &ndp.NeighborSolicitation{TargetAddress: routerLL, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: guestMAC}}}
	dst := netpkt.SolicitedNode(routerLL)
	msg, _ := ndp.MarshalMessageChecksum(ns, hoa, dst)
	ip := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(msg))
	netpkt.PutIPv6(ip, len(msg), 58, 255, hoa, dst)
	h.conn.Inject(datapathtest.EthFrame(netpkt.MulticastMAC(dst), guestMAC, append(ip, msg...)))
	f := h.nextFrame(t)
	p, err := netpkt.ParseIPv6(netpkt.Ethernet(f).Payload())
	if err != nil {
		t.Fatal(err)
	}
	m, err := ndp.ParseMessage(p.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if na, ok := m.(*ndp.NeighborAdvertisement); !ok || na.TargetAddress != routerLL || !na.Router {
		t.Fatalf("got %#v, want an NA for the router with R set", m)
	}
}

func TestPacketTooBig(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	big := datapathtest.UDPPacket(hoa, cn, datapath.TunnelMTU) // 40+8+1460 > 1460
	h.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, big))
	f := h.nextFrame(t)
	p, err := netpkt.ParseIPv6(netpkt.Ethernet(f).Payload())
	if err != nil {
		t.Fatal(err)
	}
	icmp := p.Payload()
	if p.Dst() != hoa || p.Src() != routerLL || icmp[0] != 2 || !netpkt.VerifyChecksum(p.Src(), p.Dst(), 58, icmp) {
		t.Fatalf("got %v -> %v type %d, want a valid Packet Too Big to the guest", p.Src(), p.Dst(), icmp[0])
	}
	if mtu := uint32(icmp[4])<<24 | uint32(icmp[5])<<16 | uint32(icmp[6])<<8 | uint32(icmp[7]); mtu != datapath.TunnelMTU {
		t.Errorf("got MTU %d, want %d", mtu, datapath.TunnelMTU)
	}
	if len(p) > 1280 {
		t.Errorf("got a %d-byte ICMPv6 error, want at most 1280", len(p))
	}
}

func TestHomePortLeftAlone(t *testing.T) {
	h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	h.noFrame(t)
	st, _ := h.sw.Status(context.Background())
	if st[0].Location != "home" || st[0].BindingState != "" {
		t.Errorf("got %+v, want at home with no binding", st[0])
	}
	// The only flow about the VM copies DAD probes for its address to kgswitch
	// and lets them go on unchanged (NORMAL): its traffic is untouched.
	for _, f := range h.flows.text() {
		if strings.Contains(f, "in_port=3") || strings.Contains(f, "52:54:00:00:00:10") ||
			(strings.Contains(f, "2001:db8:2000::10") && !strings.Contains(f, "icmpv6_type=135,nd_target=2001:db8:2000::10,table=0,idle_timeout=0,actions=output:9,normal")) {
			t.Errorf("flow touches the VM's traffic on its home host: %s", f)
		}
	}
}

func TestHomePortWithoutDepartureHasNoFlows(t *testing.T) {
	h := newHarness(t, homeHostConfig+"departure_hold = false\n", ovsctl.Interface{Name: "vnet3", OFPort: 3})
	h.noFrame(t)
	if fl := h.flows.text(); len(fl) != 0 {
		t.Errorf("got flows %q with departure cover off, want none", fl)
	}
}

func TestAddPort(t *testing.T) {
	h := newHarness(t, `
uplink = "eth0"
care_of_address = "2001:db8:3000::3"
[[home_network]]
prefix = "2001:db8:2000::/64"
home_agent = "2001:db8:2000::1"
router_link_local = "fe80::1"
`)
	ctx := context.Background()
	if err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet9", HomeAddress: "2001:db8:2000::10"}); !errors.Is(err, ErrUnknownPort) {
		t.Fatalf("got %v, want ErrUnknownPort", err)
	}
	h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3, ExternalIDs: map[string]string{"attached-mac": "52:54:00:00:00:10"}})
	if err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet3", HomeAddress: "2001:db8:7::10"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v for a home address outside every home network, want ErrInvalid", err)
	}
	if err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet3", HomeAddress: "2001:db8:2000::10", Activate: true}); err != nil {
		t.Fatal(err)
	}
	if s := h.nextSent(t); s.Dst != ha {
		t.Fatalf("got BU to %v, want %v", s.Dst, ha)
	}
	st, _ := h.sw.Status(ctx)
	if len(st) != 1 || st[0].MAC != "52:54:00:00:00:10" || st[0].BindingState != "registering" {
		t.Fatalf("got %+v", st)
	}
	if err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet3", HomeAddress: "2001:db8:2000::10"}); err != nil {
		t.Fatalf("same binding twice: %v", err)
	}
}

func TestPortRemovedStopsServing(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
	h.settle(t)
	if st := h.status(t, "vnet3"); st.Location != "absent" {
		t.Fatalf("still %+v", st)
	}
	for _, f := range h.flows.text() {
		if bytes.Contains([]byte(f), []byte("in_port=3")) {
			t.Errorf("flow for the departed port left behind: %s", f)
		}
	}
	h.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, 10)))
	h.noFrame(t)
}

func TestSignalling(t *testing.T) {
	h := newHarness(t, testConfig)
	h.arrive(t, "vnet3", 3, guestMAC)
	bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil {
		t.Fatal(err)
	}
	inject := func(pkt []byte) { h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, pkt)) }
	status := func() PortStatus {
		st, _ := h.sw.Status(context.Background())
		return st[0]
	}
	// A BA for another sequence number or from another node is dropped and counted.
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: bu.Sequence + 7, Lifetime: 150}))
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: netip.MustParseAddr("2001:db8:2000::66"), Dst: coa, HomeAddress: hoa, Sequence: bu.Sequence, Lifetime: 150}))
	h.noFrame(t)
	if st := status(); st.Drops["signal-rejected"] != 2 || st.BindingState != "registering" {
		t.Fatalf("got %+v, want 2 rejected BAs and still registering", st)
	}
	// 135: resend at once with the Home Agent's number plus one.
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Status: mipv6.StatusSequenceOutOfWindow, Sequence: 50000}))
	bu2, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil || bu2.Sequence != 50001 {
		t.Fatalf("got BU %+v (%v), want sequence 50001", bu2, err)
	}
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: 50001, Lifetime: 150}))
	h.settle(t)
	if st := status(); st.BindingState != "bound" {
		t.Fatalf("not bound: %+v", st)
	}
	// A Binding Refresh Request from the Home Agent: refresh at once.
	inject(mipv6.AppendBRRPacket(nil, mipv6.BRRPacket{Src: ha, Dst: coa}))
	if bu3, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil || bu3.Sequence != 50002 || bu3.Lifetime != 150 {
		t.Fatalf("got %+v (%v), want a refresh with sequence 50002", bu3, err)
	}
	// The Home Agent lost the binding: register again as soon as the rate
	// limit (3 Binding Updates a second) allows.
	inject(mipv6.AppendBindingErrorPacket(nil, mipv6.BEPacket{Src: ha, Dst: coa, Status: mipv6.BEStatusUnknownBinding, HomeAddress: hoa}))
	h.advance(t, time.Second)
	if bu4, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil || bu4.Sequence != 50003 {
		t.Fatalf("got %+v (%v), want a new registration with sequence 50003", bu4, err)
	}
	if st := status(); st.Reason != "home agent lost the binding" {
		t.Errorf("got reason %q", st.Reason)
	}
	// Garbage to the care-of address is counted, not fatal.
	inject([]byte{0x60, 0, 0, 0, 0, 8, 135, 64})
	h.noFrame(t)
}

const twoGuestConfig = `
uplink = "eth0"
care_of_address = "2001:db8:3000::3"
[[home_network]]
prefix = "2001:db8:2000::/64"
home_agent = "2001:db8:2000::1"
router_link_local = "fe80::1"
[home_network.advertise]
interval = "1s"
router_lifetime = "30s"
valid_lifetime = "30s"
preferred_lifetime = "30s"
[[home_network]]
prefix = "2001:db8:5000::/64"
home_agent = "2001:db8:5000::1"
router_link_local = "fe80::1"
[[vm]]
port = "vnet3"
home_address = "2001:db8:2000::10"
mac = "52:54:00:00:00:10"
[[vm]]
port = "vnet4"
home_address = "2001:db8:2000::11"
mac = "52:54:00:00:00:11"
[[vm]]
port = "vnet5"
home_address = "2001:db8:5000::12"
mac = "52:54:00:00:00:12"
`

// raFrom reports whether frame is a Router Advertisement to mac and returns it.
func raFrom(frame []byte, mac net.HardwareAddr) (*ndp.RouterAdvertisement, bool) {
	eth := netpkt.Ethernet(frame)
	if eth.Dst().String() != mac.String() {
		return nil, false
	}
	ip, err := netpkt.ParseIPv6(eth.Payload())
	if err != nil || ip.NextHeader() != 58 {
		return nil, false
	}
	m, err := ndp.ParseMessage(ip.Payload())
	if err != nil {
		return nil, false
	}
	ra, ok := m.(*ndp.RouterAdvertisement)
	return ra, ok
}

func isRA(frame []byte, mac net.HardwareAddr) bool {
	_, ok := raFrom(frame, mac)
	return ok
}

func TestRouterAdvertisements(t *testing.T) {
	h := newHarness(t, twoGuestConfig)
	h.bind(t)
	// One at once on arrival, then one a second.
	if f := h.nextFrame(t); !isRA(f, guestMAC) {
		t.Fatalf("first frame is not an RA to the guest: % x", f)
	}
	h.advance(t, time.Second-time.Millisecond)
	h.noFrame(t)
	h.advance(t, time.Millisecond)
	if f := h.nextFrame(t); !isRA(f, guestMAC) {
		t.Fatalf("frame a second later is not an RA to the guest: % x", f)
	}
	// A Router Solicitation is answered at once.
	rs := &ndp.RouterSolicitation{}
	msg, _ := ndp.MarshalMessageChecksum(rs, hoa, netip.MustParseAddr("ff02::2"))
	ip := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(msg))
	netpkt.PutIPv6(ip, len(msg), 58, 255, hoa, netip.MustParseAddr("ff02::2"))
	h.conn.Inject(datapathtest.EthFrame(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 2}, guestMAC, append(ip, msg...)))
	f := h.nextFrame(t)
	ra, ok := raFrom(f, guestMAC)
	if !ok || ra.RouterLifetime != 30*time.Second {
		t.Fatalf("got %v, want an RA with router lifetime 30s", ra)
	}
	if p, _ := netpkt.ParseIPv6(netpkt.Ethernet(f).Payload()); p.Dst() != hoa {
		t.Errorf("got RA to %v, want to the soliciting %v", p.Dst(), hoa)
	}
}

func TestGuestsOfOneHomeLinkTalkDirectly(t *testing.T) {
	h := newHarness(t, twoGuestConfig)
	mac4 := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x11}
	mac5 := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x12}
	h.arrive(t, "vnet3", 3, guestMAC)
	h.arrive(t, "vnet4", 4, mac4)
	h.arrive(t, "vnet5", 5, mac5)
	for i := 0; i < 3; i++ {
		h.nextSent(t) // three Binding Updates
	}
	// Drain the arrival RAs.
	for {
		h.settle(t)
		select {
		case <-h.conn.Out:
			continue
		default:
		}
		break
	}
	hoa4 := netip.MustParseAddr("2001:db8:2000::11")
	hoa5 := netip.MustParseAddr("2001:db8:5000::12")
	pkt := datapathtest.UDPPacket(hoa, hoa4, 30)
	h.conn.Inject(datapathtest.EthFrame(kgMAC, guestMAC, pkt))
	var f []byte
	for {
		f = h.nextFrame(t)
		if _, isRA := raFrom(f, netpkt.Ethernet(f).Dst()); !isRA {
			break
		}
	}
	if eth := netpkt.Ethernet(f); eth.Dst().String() != mac4.String() || !bytes.Equal(eth.Payload(), pkt) {
		t.Fatalf("got frame to %v, want the packet unchanged to %v", eth.Dst(), mac4)
	}
	// A guest of another home network is not a neighbour: no direct path (and not
	// bound yet, so nothing leaves at all).
	h.conn.Inject(datapathtest.EthFrame(kgMAC, guestMAC, datapathtest.UDPPacket(hoa, hoa5, 30)))
	h.settle(t)
	select {
	case s := <-h.uplink.Out:
		t.Fatalf("unbound guest's packet went to the uplink for %v", s.Dst)
	default:
	}
	for {
		select {
		case f := <-h.conn.Out:
			if eth := netpkt.Ethernet(f); eth.Dst().String() == mac5.String() {
				if _, isRA := raFrom(f, mac5); !isRA {
					t.Fatalf("packet crossed to a guest of another home network")
				}
			}
			continue
		default:
		}
		break
	}
	st, _ := h.sw.Status(context.Background())
	if st[0].LocalPackets != 1 || st[0].Drops["not-bound"] != 1 {
		t.Errorf("got %+v, want one local packet and one not-bound drop", st[0])
	}
}

func TestHomeAgentOwnPacketsReachGuest(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	// The Home Agent's echo reply to the guest: to the care-of address with a
	// type 2 routing header carrying the home address (RFC 6275 §9.3.2).
	echo := []byte{129, 0, 0, 0, 0x12, 0x34, 0, 1, 'k', 'g'}
	c := netpkt.Checksum(ha, hoa, 58, echo)
	echo[2], echo[3] = byte(c>>8), byte(c)
	rh := make([]byte, 24)
	rh[0], rh[1], rh[2], rh[3] = 58, 2, 2, 1
	a := hoa.As16()
	copy(rh[8:], a[:])
	pkt := make([]byte, netpkt.IPv6Len)
	netpkt.PutIPv6(pkt, len(rh)+len(echo), 43, 64, ha, coa)
	pkt = append(append(pkt, rh...), echo...)
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, pkt))
	f := h.nextFrame(t)
	eth := netpkt.Ethernet(f)
	ip, err := netpkt.ParseIPv6(eth.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if eth.Dst().String() != guestMAC.String() || ip.Src() != ha || ip.Dst() != hoa || ip.NextHeader() != 58 || !bytes.Equal(ip.Payload(), echo) {
		t.Fatalf("got %v -> %v nh %d payload % x, want %v -> %v ICMPv6 % x", ip.Src(), ip.Dst(), ip.NextHeader(), ip.Payload(), ha, hoa, echo)
	}
	if !netpkt.VerifyChecksum(ip.Src(), ip.Dst(), 58, ip.Payload()) {
		t.Error("ICMPv6 checksum invalid after the routing header was processed")
	}

	// ICMPv6 from the Home Agent to the host itself goes back unchanged (to LOCAL).
	plain := make([]byte, netpkt.IPv6Len)
	echo2 := []byte{128, 0, 0, 0, 0, 1, 0, 1}
	c = netpkt.Checksum(ha, coa, 58, echo2)
	echo2[2], echo2[3] = byte(c>>8), byte(c)
	netpkt.PutIPv6(plain, len(echo2), 58, 64, ha, coa)
	in := datapathtest.EthFrame(kgMAC, lanMAC, append(plain, echo2...))
	h.conn.Inject(in)
	if got := h.nextFrame(t); !bytes.Equal(got, in) {
		t.Fatalf("got % x, want the frame back unchanged % x", got, in)
	}

	// A routing header naming a home address whose Home Agent did not send it.
	netpkt.PutIPv6(pkt, len(rh)+len(echo), 43, 64, netip.MustParseAddr("2001:db8:9::1"), coa)
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, pkt))
	h.noFrame(t)
	st, _ := h.sw.Status(context.Background())
	if st[0].Drops["bad-tunnel-source"] != 1 {
		t.Errorf("got drops %v, want one bad-tunnel-source", st[0].Drops)
	}
}

const homeHostConfig = `
uplink = "eth0"
care_of_address = "2001:db8:2000::2"
[[home_network]]
prefix = "2001:db8:2000::/64"
home_agent = "2001:db8:2000::1"
router_link_local = "fe80::1"
[[vm]]
port = "vnet3"
home_address = "2001:db8:2000::10"
mac = "52:54:00:00:00:10"
`

var realRouterMAC = net.HardwareAddr{0x42, 0x0d, 0x24, 0x0b, 0xaf, 0x8c}

func checkRouterNA(t *testing.T, f []byte) {
	t.Helper()
	eth := netpkt.Ethernet(f)
	ip, _ := netpkt.ParseIPv6(eth.Payload())
	m, err := ndp.ParseMessage(ip.Payload())
	na, ok := m.(*ndp.NeighborAdvertisement)
	if err != nil || !ok || !na.Override || !na.Router || na.TargetAddress != routerLL ||
		na.Options[0].(*ndp.LinkLayerAddress).Addr.String() != realRouterMAC.String() || eth.Dst().String() != guestMAC.String() {
		t.Fatalf("got %v (%v) to %v, want an Override router NA for %v with %v to the guest alone", m, err, eth.Dst(), routerLL, realRouterMAC)
	}
}

func TestReturnHome(t *testing.T) {
	for _, tt := range []struct {
		name    string
		status  uint8
		wantNAs int
	}{
		{"binding removed", mipv6.StatusAccepted, homeAdvertisements},
		{"there was no binding", mipv6.StatusNotHomeAgent, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, homeHostConfig)
			h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
			// Nothing goes to the Home Agent until the guest runs here.
			waitStatus(t, h, "waiting", func(st []PortStatus) bool {
				return st[0].Location == "returning" && st[0].BindingState == "waiting-for-guest"
			})
			h.noFrame(t) // no de-registration before the guest runs here
			if !strings.Contains(strings.Join(h.flows.text(), "\n"), "priority=210,in_port=3,dl_src=52:54:00:00:00:10,table=0,idle_timeout=0,actions=output:9,normal") {
				t.Errorf("no flow copying the returning guest's frames to kgswitch: %q", h.flows.text())
			}
			h.conn.Inject(datapathtest.RARP(guestMAC))
			s := h.nextSent(t)
			bu, err := mipv6.ParseBUPacket(s.Pkt)
			if err != nil {
				t.Fatal(err)
			}
			if bu.Lifetime != 0 || bu.Src != hoa || bu.HomeAddress != hoa || s.Dst != ha {
				t.Fatalf("got %+v to %v, want a de-registration from the home address to the Home Agent", bu, s.Dst)
			}
			// Two more at once, half the sequence space apart each.
			for i := 0; i < 2; i++ {
				b2, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
				if err != nil || b2.Lifetime != 0 {
					t.Fatalf("burst %d: got %+v (%v), want a de-registration", i, b2, err)
				}
			}
			flows := strings.Join(h.flows.text(), "\n")
			for _, want := range []string{"ipv6_dst=2001:db8:2000::10,nw_proto=135", "in_port=9,dl_src=52:54:00:00:00:10"} {
				if !strings.Contains(flows, want) {
					t.Errorf("no flow with %q:\n%s", want, flows)
				}
			}
			if st, _ := h.sw.Status(context.Background()); st[0].Location != "returning" || st[0].BindingState != "deregistering" {
				t.Errorf("got %+v", st[0])
			}
			// The Home Agent answers the home address directly, no routing header.
			ba := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: hoa, HomeAddress: hoa, Status: tt.status, Sequence: bu.Sequence})
			if ba[6] != mipv6.IPProtoMH {
				t.Fatalf("BA to the home address carries next header %d, want the Mobility Header directly", ba[6])
			}
			// On arrival the guest is told its router's real MAC (the host's
			// neighbour table knows it), in case it resolved it abroad.
			checkRouterNA(t, h.nextFrame(t))
			h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, ba))
			for i := 0; i < tt.wantNAs; i++ {
				if i > 0 {
					// A second apart.
					h.advance(t, time.Second-time.Millisecond)
					h.noFrame(t)
					h.advance(t, time.Millisecond)
				}
				f := h.nextFrame(t)
				eth := netpkt.Ethernet(f)
				ip, _ := netpkt.ParseIPv6(eth.Payload())
				m, err := ndp.ParseMessage(ip.Payload())
				na, ok := m.(*ndp.NeighborAdvertisement)
				if err != nil || !ok || !na.Override || na.TargetAddress != hoa || eth.Src().String() != guestMAC.String() {
					t.Fatalf("frame %d: got %v (%v), want an Override NA for %v from %v", i, m, err, hoa, guestMAC)
				}
				checkRouterNA(t, h.nextFrame(t))
			}
			h.settle(t)
			if strings.Contains(strings.Join(h.flows.text(), "\n"), "dl_src=52:54:00:00:00:10") {
				t.Fatalf("return flows left after the return: %q", h.flows.text())
			}
			for _, f := range h.flows.text() {
				if strings.Contains(f, "ipv6_dst=2001:db8:2000::10") {
					t.Errorf("flow left after the return: %s", f)
				}
			}
			h.noFrame(t)
			if st, _ := h.sw.Status(context.Background()); st[0].Location != "home" {
				t.Errorf("got %+v, want home", st[0])
			}
		})
	}
}

func TestActivation(t *testing.T) {
	t.Run("first frame", func(t *testing.T) {
		h := newHarness(t, testConfig)
		h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
		// The port is there, the guest is not running here yet: nothing may
		// reach the Home Agent, and the flows are already in place.
		h.noFrame(t)
		st, _ := h.sw.Status(context.Background())
		if st[0].BindingState != "waiting-for-guest" || st[0].Location != "foreign" {
			t.Fatalf("got %+v, want foreign and waiting-for-guest", st[0])
		}
		if len(h.flows.text()) == 0 {
			t.Error("no flows installed while waiting: the guest's first frame would go to the LAN")
		}
		h.conn.Inject(datapathtest.RARP(guestMAC))
		h.conn.Inject(datapathtest.RARP(guestMAC)) // a burst asks once
		bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
		if err != nil || bu.Lifetime == 0 {
			t.Fatalf("got %+v (%v), want a registration", bu, err)
		}
		h.settle(t)
		select {
		case s := <-h.uplink.Out:
			t.Fatalf("a second BU at once (%d bytes): the burst asked twice", len(s.Pkt))
		default:
		}
		st, _ = h.sw.Status(context.Background())
		if st[0].Drops["inactive"] < 1 || st[0].BindingState != "registering" {
			t.Errorf("got %+v, want the announcement counted inactive and registering", st[0])
		}
	})
	t.Run("activate command", func(t *testing.T) {
		h := newHarness(t, testConfig)
		ctx := context.Background()
		if err := h.sw.Activate(ctx, "vnet3"); !errors.Is(err, ErrUnknownPort) {
			t.Fatalf("activate before the port exists: got %v, want ErrUnknownPort", err)
		}
		h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
		h.noFrame(t)
		if err := h.sw.Activate(ctx, "vnet3"); err != nil {
			t.Fatal(err)
		}
		if _, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil {
			t.Fatal(err)
		}
		if err := h.sw.Activate(ctx, "vnet3"); err != nil {
			t.Fatalf("second activate: %v", err)
		}
		h.noFrame(t)
	})
	t.Run("running here at start", func(t *testing.T) {
		h := newHarness(t, testConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		if _, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("home port cannot be activated", func(t *testing.T) {
		h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		if err := h.sw.Activate(context.Background(), "vnet3"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("got %v, want ErrInvalid", err)
		}
	})
}

// naFrame builds a Neighbor Advertisement for target with target link-layer
// address mac, as the Home Agent sends it at takeover (no Override).
func naFrame(src netip.Addr, mac net.HardwareAddr, target netip.Addr) []byte {
	na := &ndp.NeighborAdvertisement{Router: true, TargetAddress: target,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}}}
	dst := netip.MustParseAddr("ff02::1")
	msg, _ := ndp.MarshalMessageChecksum(na, src, dst)
	ip := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(msg))
	netpkt.PutIPv6(ip, len(msg), 58, 255, src, dst)
	return datapathtest.EthFrame(netpkt.MulticastMAC(dst), mac, append(ip, msg...))
}

func TestDeparture(t *testing.T) {
	haMAC := net.HardwareAddr{0x02, 0x48, 0x41, 0, 0, 1}
	status := func(h *harness) PortStatus {
		st, _ := h.sw.Status(context.Background())
		return st[0]
	}
	waitLocation := func(t *testing.T, h *harness, want string) {
		t.Helper()
		if !waitFor(t, h.settle, func() bool { return status(h).Location == want }) {
			t.Fatalf("got %+v, want location %s", status(h), want)
		}
	}
	toVM := func(i int) []byte {
		return datapathtest.EthFrame(guestMAC, lanMAC, datapathtest.UDPPacket(cn, hoa, i))
	}
	t.Run("hold, takeover, release", func(t *testing.T) {
		h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
		waitLocation(t, h, "departed")
		flows := strings.Join(h.flows.text(), "\n")
		for _, want := range []string{"priority=200,in_port=1,dl_dst=52:54:00:00:00:10", "icmpv6_type=136,nd_target=2001:db8:2000::10"} {
			if !strings.Contains(flows, want) {
				t.Errorf("no flow with %q:\n%s", want, flows)
			}
		}
		// Frames for the departed VM are held, in order, answered by nothing.
		for i := 1; i <= 5; i++ {
			h.conn.Inject(toVM(i))
		}
		// The Home Agent's own DAD probe is neither held nor answered.
		ns := &ndp.NeighborSolicitation{TargetAddress: hoa}
		sn := netpkt.SolicitedNode(hoa)
		msg, _ := ndp.MarshalMessageChecksum(ns, netip.IPv6Unspecified(), sn)
		ip := make([]byte, netpkt.IPv6Len)
		netpkt.PutIPv6(ip, len(msg), 58, 255, netip.IPv6Unspecified(), sn)
		h.conn.Inject(datapathtest.EthFrame(netpkt.MulticastMAC(sn), haMAC, append(ip, msg...)))
		h.noFrame(t)
		if st := status(h); st.Held != 5 {
			t.Fatalf("got held %d, want 5", st.Held)
		}
		// An advertisement naming the VM's own MAC is not a takeover.
		h.conn.Inject(naFrame(hoa, guestMAC, hoa))
		h.noFrame(t)
		// The Home Agent takes over: held frames go to its MAC in order, then
		// the Override advertisement.
		h.conn.Inject(naFrame(ha, haMAC, hoa))
		for i := 1; i <= 5; i++ {
			f := h.nextFrame(t)
			eth := netpkt.Ethernet(f)
			want := toVM(i)
			if eth.Dst().String() != haMAC.String() || eth.Src().String() != kgMAC.String() || !bytes.Equal(eth.Payload(), want[14:]) {
				t.Fatalf("released frame %d: got %v -> %v, payload equal %v", i, eth.Src(), eth.Dst(), bytes.Equal(eth.Payload(), want[14:]))
			}
		}
		f := h.nextFrame(t)
		p, _ := netpkt.ParseIPv6(netpkt.Ethernet(f).Payload())
		m, err := ndp.ParseMessage(p.Payload())
		na, ok := m.(*ndp.NeighborAdvertisement)
		if err != nil || !ok || !na.Override || na.TargetAddress != hoa || na.Options[0].(*ndp.LinkLayerAddress).Addr.String() != haMAC.String() {
			t.Fatalf("got %v (%v), want an Override NA giving the Home Agent's MAC for %v", m, err, hoa)
		}
		if src := netpkt.Ethernet(f).Src().String(); src != kgMAC.String() {
			t.Errorf("Override NA from MAC %v, want kgs0's %v (the Home Agent's MAC must not be learnt on this port)", src, kgMAC)
		}
		if !strings.Contains(strings.Join(h.flows.text(), "\n"), "dl_src=02:6b:67:00:00:01,dl_dst=02:48:41:00:00:01,table=0,idle_timeout=0,actions=output:1") {
			t.Errorf("no flow lets released frames out to the uplink: %q", h.flows.text())
		}
		// Later frames for the old MAC go straight on.
		h.conn.Inject(toVM(6))
		if f := h.nextFrame(t); netpkt.Ethernet(f).Dst().String() != haMAC.String() {
			t.Fatalf("later frame to %v, want the Home Agent", netpkt.Ethernet(f).Dst())
		}
		if st := status(h); st.Released != 6 {
			t.Errorf("got released %d, want 6", st.Released)
		}
		// The VM comes back: nothing more on its behalf.
		h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
		waitLocation(t, h, "returning")
		for _, f := range h.flows.text() {
			if strings.Contains(f, "in_port=1,dl_dst=52:54:00:00:00:10") {
				t.Errorf("departure flow left after the VM came back: %s", f)
			}
		}
	})
	t.Run("ends once the link is quiet after the takeover", func(t *testing.T) {
		h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
		waitLocation(t, h, "departed")
		h.conn.Inject(naFrame(ha, haMAC, hoa))
		if f := h.nextFrame(t); len(f) == 0 {
			t.Fatal("no Override advertisement")
		}
		// A frame for the old MAC 3 s later keeps the cover 5 s beyond it.
		h.advance(t, 3*time.Second)
		h.conn.Inject(toVM(1))
		if f := h.nextFrame(t); netpkt.Ethernet(f).Dst().String() != haMAC.String() {
			t.Fatalf("frame to %v, want the Home Agent", netpkt.Ethernet(f).Dst())
		}
		h.advance(t, departureQuiet-time.Millisecond)
		if st := status(h); st.Location != "departed" {
			t.Fatalf("got %+v before the link was quiet for %v, want departed", st, departureQuiet)
		}
		h.advance(t, time.Millisecond)
		if st := status(h); st.Location != "absent" {
			t.Fatalf("got %+v after the quiet period, want absent", st)
		}
		for _, f := range h.flows.text() {
			if strings.Contains(f, "dl_dst=52:54:00:00:00:10") {
				t.Errorf("departure flow left after the cover ended: %s", f)
			}
		}
	})
	t.Run("gives up when the Home Agent never takes over", func(t *testing.T) {
		h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
		waitLocation(t, h, "departed")
		h.conn.Inject(toVM(1))
		h.advance(t, departureGiveUp-time.Millisecond)
		if st := status(h); st.Location != "departed" || st.Held != 1 {
			t.Fatalf("got %+v, want still departed with 1 held", st)
		}
		h.advance(t, time.Millisecond)
		if st := status(h); st.Location != "absent" {
			t.Fatalf("got %+v after %v, want absent", st, departureGiveUp)
		}
		h.noFrame(t) // the held frame is never released
	})
	t.Run("DAD probe means leaving", func(t *testing.T) {
		h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		ns := &ndp.NeighborSolicitation{TargetAddress: hoa}
		sn := netpkt.SolicitedNode(hoa)
		msg, _ := ndp.MarshalMessageChecksum(ns, netip.IPv6Unspecified(), sn)
		ip := make([]byte, netpkt.IPv6Len)
		netpkt.PutIPv6(ip, len(msg), 58, 255, netip.IPv6Unspecified(), sn)
		h.conn.Inject(datapathtest.EthFrame(netpkt.MulticastMAC(sn), haMAC, append(ip, msg...)))
		waitLocation(t, h, "departed")
		h.noFrame(t) // and the probe is not answered
	})
	t.Run("deactivate command", func(t *testing.T) {
		h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		if err := h.sw.Deactivate(context.Background(), "vnet9"); !errors.Is(err, ErrUnknownPort) {
			t.Errorf("got %v, want ErrUnknownPort", err)
		}
		if err := h.sw.Deactivate(context.Background(), "vnet3"); err != nil {
			t.Fatal(err)
		}
		waitLocation(t, h, "departed")
	})
	t.Run("switched off", func(t *testing.T) {
		h := newHarness(t, homeHostConfig+"departure_hold = false\n", ovsctl.Interface{Name: "vnet3", OFPort: 3})
		h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
		waitLocation(t, h, "absent")
		h.conn.Inject(toVM(1))
		h.noFrame(t)
		if st := status(h); st.Held != 0 {
			t.Errorf("held %d frames with the cover off", st.Held)
		}
		if err := h.sw.Deactivate(context.Background(), "vnet3"); !errors.Is(err, ErrInvalid) {
			t.Errorf("got %v, want ErrInvalid", err)
		}
	})
}

const noVMConfig = `
uplink = "eth0"
care_of_address = "2001:db8:3000::3"
[[home_network]]
prefix = "2001:db8:2000::/64"
home_agent = "2001:db8:2000::1"
router_link_local = "fe80::1"
`

func waitStatus(t *testing.T, h *harness, what string, ok func([]PortStatus) bool) []PortStatus {
	t.Helper()
	var st []PortStatus
	if !waitFor(t, h.settle, func() bool {
		st, _ = h.sw.Status(context.Background())
		return ok(st)
	}) {
		t.Fatalf("%s: got %+v", what, st)
	}
	return st
}

func TestDeclaredInExternalIDs(t *testing.T) {
	h := newHarness(t, noVMConfig)
	ids := map[string]string{KeyHomeAddress: "2001:db8:2000::10", "attached-mac": "52:54:00:00:00:10"}
	h.db.add(ovsctl.Interface{Name: "tap7", OFPort: 7, ExternalIDs: ids})
	waitStatus(t, h, "declared VM prepared", func(st []PortStatus) bool {
		return len(st) == 1 && st[0].Port == "tap7" && st[0].BindingState == "waiting-for-guest" && st[0].MAC == "52:54:00:00:00:10"
	})
	h.conn.Inject(datapathtest.RARP(guestMAC))
	if bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil || bu.HomeAddress != hoa {
		t.Fatalf("got %+v (%v)", bu, err)
	}
	// kgswitch's view is mirrored on the interface.
	if !waitFor(t, h.settle, func() bool { return h.db.ids("tap7")[KeyState] == "foreign/registering" }) {
		t.Fatalf("got external_ids %v, want %s=foreign/registering", h.db.ids("tap7"), KeyState)
	}
	if got := h.db.ids("tap7")[KeyCareOf]; got != "2001:db8:3000::3" {
		t.Errorf("got %s=%q", KeyCareOf, got)
	}
	// The operator removes the declaration: the VM goes, with its flows.
	h.db.events <- ovsctl.Event{Kind: ovsctl.Updated, Iface: ovsctl.Interface{Name: "tap7", OFPort: 7, ExternalIDs: map[string]string{"attached-mac": "52:54:00:00:00:10"}}}
	waitStatus(t, h, "declaration removed", func(st []PortStatus) bool { return len(st) == 0 })
	for _, f := range h.flows.text() {
		if strings.Contains(f, "in_port=7") {
			t.Errorf("flow left for a VM no longer declared: %s", f)
		}
	}
}

func TestBadDeclarationIsReported(t *testing.T) {
	h := newHarness(t, noVMConfig)
	h.db.add(ovsctl.Interface{Name: "tap7", OFPort: 7, ExternalIDs: map[string]string{KeyHomeAddress: "2001:db8:7777::10"}})
	if !waitFor(t, h.settle, func() bool { return h.db.ids("tap7")[KeyState] == "error" }) {
		t.Fatalf("got external_ids %v, want %s=error", h.db.ids("tap7"), KeyState)
	}
	if r := h.db.ids("tap7")[KeyReason]; !strings.Contains(r, "no home_network contains it") {
		t.Errorf("got reason %q", r)
	}
	if st, _ := h.sw.Status(context.Background()); len(st) != 0 {
		t.Errorf("got %+v, want no VM", st)
	}
}

func TestMatchedByIfaceID(t *testing.T) {
	h := newHarness(t, noVMConfig+`
[[vm]]
iface_id = "5f1c-vm-one"
home_address = "2001:db8:2000::10"
`)
	// libvirt names the tap per host; OpenStack's iface-id and libvirt's
	// attached-mac follow the VM.
	ids := map[string]string{"iface-id": "5f1c-vm-one", "attached-mac": "52:54:00:00:00:10"}
	h.db.add(ovsctl.Interface{Name: "vnet9", OFPort: 9 + 10, ExternalIDs: ids})
	waitStatus(t, h, "matched by iface-id", func(st []PortStatus) bool {
		return len(st) == 1 && st[0].Port == "vnet9" && st[0].Location == "foreign"
	})
	h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet9"}}
	waitStatus(t, h, "gone", func(st []PortStatus) bool { return st[0].Location == "absent" })
	h.db.add(ovsctl.Interface{Name: "vnet12", OFPort: 12 + 10, ExternalIDs: ids})
	waitStatus(t, h, "back under another name", func(st []PortStatus) bool {
		return st[0].Port == "vnet12" && st[0].Location == "foreign"
	})
	// An unrelated interface is not taken.
	h.db.add(ovsctl.Interface{Name: "vnet13", OFPort: 23, ExternalIDs: map[string]string{"iface-id": "other"}})
	h.noFrame(t)
	if st, _ := h.sw.Status(context.Background()); len(st) != 1 || st[0].Port != "vnet12" {
		t.Errorf("got %+v", st)
	}
}

func TestRestartResumesBinding(t *testing.T) {
	store := &memStore{}
	h := newHarnessWith(t, testConfig, store)
	bu := h.bind(t)
	h.settle(t)
	if b, ok := store.get(hoa.String()); !ok || b.Sequence != bu.Sequence || b.Expires.IsZero() {
		t.Fatalf("binding not saved: %+v", store.m)
	}
	h.cancel()
	<-h.done
	h.done <- nil // the cleanup waits for it

	// kgswitch starts again with the guest running on its port.
	h2 := newHarnessWith(t, testConfig, store, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	st := waitStatus(t, h2, "restored", func(st []PortStatus) bool { return len(st) == 1 && st[0].BindingState == "bound" })
	if st[0].Reason != "restored" || st[0].Sequence != bu.Sequence {
		t.Errorf("got %+v, want restored with sequence %d", st[0], bu.Sequence)
	}
	h2.settle(t)
	select {
	case s := <-h2.uplink.Out:
		if b, err := mipv6.ParseBUPacket(s.Pkt); err == nil {
			t.Fatalf("restart re-registered from scratch: %+v", b)
		}
		t.Fatal("unexpected packet to the uplink")
	default:
	}
	// Traffic flows at once.
	h2.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, 10)))
	if s := h2.nextSent(t); s.Dst != ha {
		t.Fatalf("got %v, want the tunnel to the Home Agent", s.Dst)
	}
}

func TestRestartAfterExpiryContinuesNumbering(t *testing.T) {
	store := &memStore{m: map[string]StoredBinding{hoa.String(): {HomeAgent: ha.String(), CareOf: coa.String(), Sequence: 4242,
		Granted: time.Minute, Expires: testEpoch.Add(-time.Second)}}}
	h := newHarnessWith(t, testConfig, store, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil || bu.Sequence != 4243 {
		t.Fatalf("got %+v (%v), want a registration with sequence 4243", bu, err)
	}
}

func TestReload(t *testing.T) {
	h := newHarness(t, twoGuestConfig)
	h.arrive(t, "vnet3", 3, guestMAC)
	h.nextSent(t)
	h.arrive(t, "vnet4", 4, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x11})
	h.nextSent(t)
	ctx := context.Background()
	// A host-defining setting cannot change on reload.
	bad, err := config.Parse(strings.Replace(twoGuestConfig, "2001:db8:3000::3", "2001:db8:3000::4", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.sw.Reload(ctx, bad); err == nil || !strings.Contains(err.Error(), "care_of_address changed") {
		t.Fatalf("got %v, want a refusal naming care_of_address", err)
	}
	if st, _ := h.sw.Status(ctx); len(st) != 3 {
		t.Fatalf("refused reload changed the VMs: %+v", st)
	}
	// vnet4 removed, vnet5 unchanged, vnet6 added.
	text := strings.Replace(twoGuestConfig, "[[vm]]\nport = \"vnet4\"\nhome_address = \"2001:db8:2000::11\"\nmac = \"52:54:00:00:00:11\"\n", "", 1) +
		"[[vm]]\nport = \"vnet6\"\nhome_address = \"2001:db8:2000::16\"\nmac = \"52:54:00:00:00:16\"\n"
	cfg, err := config.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.sw.Reload(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	st, _ := h.sw.Status(ctx)
	var ports []string
	for _, p := range st {
		ports = append(ports, p.Port+"="+p.Location+"/"+p.BindingState)
	}
	if got := strings.Join(ports, " "); got != "vnet3=foreign/registering vnet5=absent/ vnet6=absent/" {
		t.Errorf("got %s, want vnet3 untouched, vnet4 gone, vnet6 added", got)
	}
	for _, f := range h.flows.text() {
		if strings.Contains(f, "in_port=4,") {
			t.Errorf("flow left for the removed VM: %s", f)
		}
	}
	// The removed VM's port is nobody's now: its announcement registers nothing.
	h.conn.Inject(datapathtest.RARP(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x11}))
	h.settle(t)
	select {
	case s := <-h.uplink.Out:
		t.Fatalf("packet to %v for a VM removed by reload", s.Dst)
	default:
	}
}

// After ovs-vswitchd restarts, its internal port is a new device and its flow
// tables are empty: kgswitch reopens the port and puts every flow back.
func TestInternalPortReopened(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	before := len(h.flows.text())
	opens := h.opens.Load()
	// ovs-vswitchd restarts: flows gone, the old port dead. The harness hands
	// out a fresh conn on the next open.
	old := h.conn
	h.flows.mu.Lock()
	h.flows.flows = map[uint64][]*ovs.Flow{}
	h.flows.mu.Unlock()
	h.conn = datapathtest.NewConn()
	old.Dropped.Store(4) // never asked for before the port died
	old.Close()
	if !waitFor(t, h.settle, func() bool { return h.opens.Load() != opens && len(h.flows.text()) == before }) {
		t.Fatalf("port opened %d times, %d flows, want a reopen and %d flows", h.opens.Load(), len(h.flows.text()), before)
	}
	// Traffic goes through the new port, and the binding was not disturbed.
	h.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, 10)))
	if s := h.nextSent(t); s.Dst != ha {
		t.Fatalf("got %v", s.Dst)
	}
	if st, _ := h.sw.Status(context.Background()); st[0].BindingState != "bound" {
		t.Errorf("got %+v", st[0])
	}
	// The old socket's drops were counted before it went.
	if d, err := h.sw.DatapathDrops(context.Background()); err != nil || d["socket-overflow"] != 4 {
		t.Errorf("DatapathDrops = %v, %v; want socket-overflow=4 from the old port", d, err)
	}
}

// A migrated guest may announce itself before OVSDB reports its port here:
// its frames go to kgswitch (not the foreign LAN) and count as "it runs here".
func TestAnnouncedBeforePortAppears(t *testing.T) {
	h := newHarness(t, testConfig)
	if !strings.Contains(strings.Join(h.flows.text(), "\n"), "priority=180,dl_src=52:54:00:00:00:10,table=0,idle_timeout=0,actions=output:9") {
		t.Fatalf("no flow diverting the absent guest's MAC to kgswitch: %q", h.flows.text())
	}
	h.conn.Inject(datapathtest.RARP(guestMAC))
	h.noFrame(t)
	h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
	if bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil || bu.Lifetime == 0 {
		t.Fatalf("got %+v (%v), want a registration as soon as the port appears", bu, err)
	}
	flows := strings.Join(h.flows.text(), "\n")
	if strings.Contains(flows, "priority=180") || !strings.Contains(flows, "priority=190,dl_dst=52:54:00:00:00:10,table=0,idle_timeout=0,actions=drop") {
		t.Errorf("got flows %s, want the port's own (and the LAN kept off the guest's MAC)", flows)
	}
}

// A restarted kgswitch removes the flows of a VM dropped from its
// configuration while it was down, keeps the others', and never touches a
// flow without its cookie.
func TestStaleFlowsReconciled(t *testing.T) {
	h := &harness{flows: &fakeFlows{flows: map[uint64][]*ovs.Flow{
		portCookie("2001:db8:2000::99"): {{Priority: 200, InPort: 7, Actions: []ovs.Action{ovs.Drop()}}},
		0x1234:                          {{Priority: 5, Actions: []ovs.Action{ovs.Normal()}}},
	}, noFlood: map[string]bool{}}}
	h2 := newHarnessFlows(t, testConfig, h.flows, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	h2.nextSent(t) // the guest was running here: it registers at once
	h2.flows.mu.Lock()
	defer h2.flows.mu.Unlock()
	if _, ok := h2.flows.flows[portCookie("2001:db8:2000::99")]; ok {
		t.Error("stale VM's flows survived the restart")
	}
	if _, ok := h2.flows.flows[0x1234]; !ok {
		t.Error("a flow without kgswitch's cookie was removed")
	}
	if len(h2.flows.flows[portCookie(hoa.String())]) == 0 {
		t.Error("the running VM's flows are missing")
	}
}

// ovs-vswitchd restarted: its tables are empty and no-flood bits gone, while
// the internal port (a persistent tap) survives. kgswitch puts it all back.
func TestSwitchRestartReinstallsFlows(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	before := len(h.flows.text())
	h.switchEv <- ovsctl.SwitchEvent{State: ovsctl.SwitchUp} // the first report changes nothing
	h.switchEv <- ovsctl.SwitchEvent{State: ovsctl.SwitchDown}
	h.flows.mu.Lock()
	h.flows.flows = map[uint64][]*ovs.Flow{}
	h.flows.noFlood = map[string]bool{}
	h.flows.mu.Unlock()
	h.switchEv <- ovsctl.SwitchEvent{State: ovsctl.SwitchUp}
	if !waitFor(t, h.settle, func() bool { return len(h.flows.text()) == before }) {
		t.Fatalf("got %d flows after ovs-vswitchd came back, want %d", len(h.flows.text()), before)
	}
	h.flows.mu.Lock()
	nf := h.flows.noFlood["vnet3"]
	h.flows.mu.Unlock()
	if !nf {
		t.Error("no-flood not set again on vnet3")
	}
	if st, _ := h.sw.Status(context.Background()); st[0].BindingState != "bound" {
		t.Errorf("got %+v", st[0])
	}
}

// After a restart, a VM declared in external_ids and running here resumes at
// once: it will not announce itself again.
func TestDeclaredVMRunningAtStart(t *testing.T) {
	ids := map[string]string{KeyHomeAddress: "2001:db8:2000::10", "attached-mac": "52:54:00:00:00:10"}
	h := newHarness(t, noVMConfig, ovsctl.Interface{Name: "tap7", OFPort: 7, ExternalIDs: ids})
	if bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil || bu.HomeAddress != hoa {
		t.Fatalf("got %+v (%v), want a registration at start", bu, err)
	}
}

// A refresh goes out when it is due even while ovsdb-server does not answer:
// OVSDB writes wait on their own goroutine, never in the control loop.
func TestRefreshOnTimeWhileOVSDBStalls(t *testing.T) {
	h := newHarness(t, testConfig)
	bu := h.bind(t)
	h.db.mu.Lock()
	h.db.stall = make(chan struct{})
	h.db.mu.Unlock()
	defer close(h.db.stall)
	// A change of state to mirror: the write hangs.
	h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3, ExternalIDs: map[string]string{"touched": "1"}})
	h.sw.do(context.Background(), func() { h.sw.vms[0].mirrored = nil })
	// 600 s granted: the refresh is due with a quarter left, at 450 s.
	h.clk.Advance(450 * time.Second)
	s := h.nextSent(t)
	refresh, err := mipv6.ParseBUPacket(s.Pkt)
	if err != nil || refresh.Sequence != bu.Sequence+1 || refresh.Lifetime != bu.Lifetime {
		t.Fatalf("got %+v (%v), want a refresh with sequence %d", refresh, err, bu.Sequence+1)
	}
	if st := h.status(t, "vnet3"); st.BindingState != "refreshing" {
		t.Errorf("got %+v, want refreshing", st)
	}
}

// With nothing to do, the control loop waits: it does not turn (a loop that
// spins takes a core from the guests).
func TestIdleLoopWaits(t *testing.T) {
	h := newHarness(t, testConfig)
	h.bind(t)
	h.settle(t)
	before := h.sw.iterations.Load()
	<-time.After(50 * time.Millisecond) // real time passing, nothing happening
	if turns := h.sw.iterations.Load() - before; turns > 0 {
		t.Errorf("the idle control loop turned %d times in 50 ms, want 0", turns)
	}
}
