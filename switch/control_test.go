package vswitch

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/ovsctl"
)

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
	// The last run's numbers ran ahead of the clock (after a 135): the
	// next follows them.
	last := mipv6.ClockSequence(testEpoch) + 4242
	store := &memStore{m: map[string]StoredBinding{hoa.String(): {HomeAgent: ha.String(), CareOf: coa.String(), Sequence: last,
		Granted: time.Minute, Expires: testEpoch.Add(-time.Second)}}}
	h := newHarnessWith(t, testConfig, store, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil || bu.Sequence != last+1 {
		t.Fatalf("got %+v (%v), want a registration with sequence %d", bu, err, last+1)
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
	if !internalPortNoFlood(h) {
		t.Error("no-flood not set again on the internal port")
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
	if want := mipv6.ClockSequence(h.clk.Now()); err != nil || refresh.Sequence != want || refresh.Lifetime != bu.Lifetime {
		t.Fatalf("got %+v (%v), want a refresh with the clock's sequence %d", refresh, err, want)
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

// An external_ids write that fails (the interface not in the database yet)
// is tried again in the next rounds: the mirror is not lost.
func TestMirrorRetriedAfterFailure(t *testing.T) {
	h := newHarness(t, testConfig)
	h.sw.ovs.mirror("tap9", map[string]string{KeyState: "home"})
	h.settle(t)
	if _, ok := h.db.Interface("tap9"); ok {
		t.Fatal("tap9 exists before the test adds it")
	}
	h.db.mu.Lock()
	h.db.ifaces["tap9"] = ovsctl.Interface{Name: "tap9"}
	h.db.mu.Unlock()
	h.sw.ovs.mirror("tap8", map[string]string{KeyState: "other"}) // a later round
	h.settle(t)
	if got := h.db.ids("tap9")[KeyState]; got != "home" {
		t.Errorf("got %s=%q after the interface appeared, want home", KeyState, got)
	}
}
