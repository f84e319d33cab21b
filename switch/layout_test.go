package vswitch

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// layout2Config is testConfig on an OpenStack-like host: VM ports on br0
// (br-int's role), the uplink and the care-of address on br-ex.
const layout2Config = "uplink_bridge = \"br-ex\"\n" + testConfig

// The patch pair of the layout-2 tests: patch-int (ofport 7 on br0) and
// patch-ex (ofport 2 on br-ex, where eth0 is ofport 1).
var (
	patchInt = ovsctl.Interface{Name: "patch-int", Type: "patch", OFPort: 7, Peer: "patch-ex"}
	patchEx  = ovsctl.Interface{Name: "patch-ex", Type: "patch", OFPort: 2, Peer: "patch-int"}
)

// layout2Host is a harness host in layout 2: eth0 and patch-ex on br-ex.
func layout2Host(up *fakeFlows) harnessHost {
	return harnessHost{upFlows: up, bridges: map[string]string{"eth0": "br-ex", "patch-ex": "br-ex"},
		extra: []ovsctl.Interface{patchInt, patchEx}}
}

func TestCheckLayout(t *testing.T) {
	eth0 := ovsctl.Interface{Name: "eth0", OFPort: 1}
	onEx := map[string]string{"eth0": "br-ex", "patch-ex": "br-ex", "patch-ex2": "br-ex"}
	for _, tc := range []struct {
		name    string
		layout2 bool
		ifaces  []ovsctl.Interface
		bridges map[string]string
		want    patchPair
		wantErr []string // substrings of the error; none: no error
		detect  string   // DetectUplinkBridge's answer
	}{
		{name: "1: uplink on the VM bridge", ifaces: []ovsctl.Interface{eth0}},
		{name: "1: uplink not there yet", ifaces: nil},
		{name: "1: uplink on a bridge joined by patch", ifaces: []ovsctl.Interface{eth0, patchInt, patchEx}, bridges: onEx,
			wantErr: []string{"uplink eth0 is on bridge br-ex, not br0", "patch ports patch-int and patch-ex", `set uplink_bridge = "br-ex"`}, detect: "br-ex"},
		{name: "1: uplink on an unjoined bridge", ifaces: []ovsctl.Interface{eth0}, bridges: onEx,
			wantErr: []string{"uplink eth0 is on bridge br-ex, not br0", "kgswitch needs the uplink on br0, or on a bridge joined to br0 by one pair of patch ports"}},
		{name: "2: one patch pair", layout2: true, ifaces: []ovsctl.Interface{eth0, patchInt, patchEx}, bridges: onEx,
			want: patchPair{vmSide: "patch-int", upSide: "patch-ex"}},
		{name: "2: uplink on the VM bridge", layout2: true, ifaces: []ovsctl.Interface{eth0, patchInt, patchEx}, bridges: map[string]string{"patch-ex": "br-ex"},
			wantErr: []string{"uplink eth0 is on bridge br0, not on uplink_bridge br-ex"}},
		{name: "2: no patch pair", layout2: true, ifaces: []ovsctl.Interface{eth0}, bridges: onEx,
			wantErr: []string{"no patch port joins br0 and br-ex (found no patch port on either)"}},
		{name: "2: a patch port whose peer does not name it back", layout2: true, bridges: onEx,
			ifaces:  []ovsctl.Interface{eth0, patchInt, {Name: "patch-ex", Type: "patch", OFPort: 2, Peer: "elsewhere"}},
			wantErr: []string{"no patch port joins br0 and br-ex", `patch-int on br0 with peer "patch-ex"`, `patch-ex on br-ex with peer "elsewhere"`}},
		{name: "2: two patch pairs", layout2: true, bridges: onEx, ifaces: []ovsctl.Interface{eth0, patchInt, patchEx,
			{Name: "patch-int2", Type: "patch", OFPort: 8, Peer: "patch-ex2"}, {Name: "patch-ex2", Type: "patch", OFPort: 3, Peer: "patch-int2"}},
			wantErr: []string{"2 patch port pairs join br0 and br-ex (patch-int/patch-ex, patch-int2/patch-ex2); kgswitch needs exactly one"}},
		{name: "2: nothing there yet", layout2: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := testConfig
			if tc.layout2 {
				text = layout2Config
			}
			cfg, err := config.Parse(text)
			if err != nil {
				t.Fatal(err)
			}
			db := &fakeDB{ifaces: map[string]ovsctl.Interface{}, bridges: tc.bridges}
			for _, i := range tc.ifaces {
				db.ifaces[i.Name] = i
			}
			if got := DetectUplinkBridge(cfg, db); got != tc.detect {
				t.Errorf("DetectUplinkBridge = %q, want %q", got, tc.detect)
			}
			got, err := checkLayout(cfg, db)
			if len(tc.wantErr) == 0 {
				if err != nil || got != tc.want {
					t.Fatalf("got %+v, %v, want %+v, no error", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, errLayout) {
				t.Fatalf("got error %v, want a host layout error", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to say %q", err, w)
				}
			}
		})
	}
}

// A host whose layout kgswitch cannot serve is refused at start, saying
// what was found and what is needed.
func TestRunRefusesUnservableLayout(t *testing.T) {
	cfg, err := config.Parse(testConfig)
	if err != nil {
		t.Fatal(err)
	}
	db := &fakeDB{ifaces: map[string]ovsctl.Interface{"eth0": {Name: "eth0", OFPort: 1}, patchInt.Name: patchInt, patchEx.Name: patchEx},
		bridges: map[string]string{"eth0": "br-ex", "patch-ex": "br-ex"}, events: make(chan ovsctl.Event)}
	sw := New(cfg, Deps{DB: db, Flows: newFakeFlows()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = sw.Run(ctx)
	if !errors.Is(err, errLayout) || !strings.Contains(err.Error(), `uplink eth0 is on bridge br-ex, not br0`) ||
		!strings.Contains(err.Error(), `set uplink_bridge = "br-ex"`) {
		t.Fatalf("got Run() = %v, want a layout error naming br-ex and uplink_bridge", err)
	}
}

// missingFlows returns those of want that no flow of flows contains.
func missingFlows(flows, want []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.ContainsFunc(flows, func(f string) bool { return strings.Contains(f, w) }) {
			missing = append(missing, w)
		}
	}
	return missing
}

// In layout 2 the VM bridge's flows take the patch port for the uplink, and
// the uplink bridge sends what the care-of address receives for kgswitch
// across the patch, not to the host kernel: every diversion on the VM
// bridge has its twin there. A guest then registers and tunnels as in
// layout 1.
func TestLayout2Flows(t *testing.T) {
	up := newFakeFlows()
	h := startHarness(t, layout2Config, layout2Host(up))
	h.bind(t)
	vmWant := []string{
		"priority=200,ipv6,in_port=7,ipv6_dst=2001:db8:3000::3,nw_proto=41,table=0,idle_timeout=0,actions=output:9",
		"priority=200,ipv6,in_port=7,ipv6_dst=2001:db8:3000::3,nw_proto=4,table=0,idle_timeout=0,actions=output:9",
		"priority=200,ipv6,in_port=7,ipv6_dst=2001:db8:3000::3,nw_proto=135,table=0,idle_timeout=0,actions=output:9",
		"priority=190,ipv6,in_port=7,ipv6_src=2001:db8:2000::1,ipv6_dst=2001:db8:3000::3,nw_proto=58,table=0,idle_timeout=0,actions=output:9",
		// What is the host's goes back across the patch.
		"priority=150,ipv6,in_port=9,ipv6_dst=2001:db8:3000::3,table=0,idle_timeout=0,actions=output:7",
		"priority=200,in_port=3,dl_src=52:54:00:00:00:10,table=0,idle_timeout=0,actions=output:9",
	}
	if m := missingFlows(h.flows.text(), vmWant); len(m) > 0 {
		t.Errorf("VM bridge lacks %q; have %q", m, h.flows.text())
	}
	upWant := []string{
		"priority=200,ipv6,in_port=1,ipv6_dst=2001:db8:3000::3,nw_proto=41,table=0,idle_timeout=0,actions=output:2",
		"priority=200,ipv6,in_port=1,ipv6_dst=2001:db8:3000::3,nw_proto=4,table=0,idle_timeout=0,actions=output:2",
		"priority=200,ipv6,in_port=1,ipv6_dst=2001:db8:3000::3,nw_proto=135,table=0,idle_timeout=0,actions=output:2",
		"priority=190,ipv6,in_port=1,ipv6_src=2001:db8:2000::1,ipv6_dst=2001:db8:3000::3,nw_proto=58,table=0,idle_timeout=0,actions=output:2",
		"priority=150,ipv6,in_port=2,ipv6_dst=2001:db8:3000::3,table=0,idle_timeout=0,actions=output:65534",
	}
	upFlows := up.text()
	if m := missingFlows(upFlows, upWant); len(m) > 0 {
		t.Errorf("uplink bridge lacks %q; have %q", m, upFlows)
	}
	if len(upFlows) != len(upWant) {
		t.Errorf("got %d flows on the uplink bridge, want %d: %q", len(upFlows), len(upWant), upFlows)
	}
	if strings.Contains(strings.Join(h.flows.text(), "\n"), "in_port=1,") {
		t.Errorf("a VM bridge flow names the uplink's port on the other bridge: %q", h.flows.text())
	}
	up.mu.Lock()
	_, global := up.flows[ovsctl.Cookie]
	nf := len(up.noFlood)
	up.mu.Unlock()
	if !global || nf != 0 {
		t.Errorf("uplink bridge: host-wide cookie present %v, no-flood bits %d; want the cookie and no bits", global, nf)
	}
}

// Under ESP the Home Agent's Acks are next header 50: that diversion too
// must have its twin on the uplink bridge. The list is derived, so a
// diversion added to globalFlows later is covered as well.
func TestLayout2FlowsFollowGlobalFlows(t *testing.T) {
	up := newFakeFlows()
	h := startHarness(t, layout2Config, layout2Host(up))
	var global, upper []*ovs.Flow
	if err := h.sw.do(context.Background(), func() {
		global = h.sw.globalFlows()
		upper = h.sw.uplinkBridgeFlows(global)
	}); err != nil {
		t.Fatal(err)
	}
	fromUplink := 0
	for _, f := range global {
		if f.InPort == 7 {
			fromUplink++
		}
	}
	if fromUplink == 0 || len(upper) != fromUplink+1 {
		t.Fatalf("got %d uplink bridge flows for %d diversions on the VM bridge, want one each and the hand-back", len(upper), fromUplink)
	}
}

// Stale kgswitch flows on the uplink bridge are removed at start, as on the
// VM bridge, and other flows there are left alone; after ovs-vswitchd
// restarts, the uplink bridge's flows are put back too.
func TestLayout2ReconcileAndRestart(t *testing.T) {
	up := newFakeFlows()
	stale := ovsctl.Cookie | 0x42
	up.flows[stale] = []*ovs.Flow{{Priority: 200, InPort: 1, Actions: []ovs.Action{ovs.Drop()}}}
	up.flows[0x1234] = []*ovs.Flow{{Priority: 0, Actions: []ovs.Action{ovs.Normal()}}}
	h := startHarness(t, layout2Config, layout2Host(up))
	up.mu.Lock()
	_, staleLeft := up.flows[stale]
	_, otherLeft := up.flows[0x1234]
	before := len(up.flows[ovsctl.Cookie])
	up.mu.Unlock()
	if staleLeft || !otherLeft || before == 0 {
		t.Fatalf("uplink bridge after start: stale left %v, other flow left %v, host-wide flows %d; want false, true, some", staleLeft, otherLeft, before)
	}

	h.switchEv <- ovsctl.SwitchEvent{State: ovsctl.SwitchUp} // the first report changes nothing
	h.switchEv <- ovsctl.SwitchEvent{State: ovsctl.SwitchDown}
	up.mu.Lock()
	up.flows = map[uint64][]*ovs.Flow{}
	up.mu.Unlock()
	h.switchEv <- ovsctl.SwitchEvent{State: ovsctl.SwitchUp}
	if !waitFor(t, h.settle, func() bool { return len(up.text()) == before }) {
		t.Fatalf("got %d uplink bridge flows after ovs-vswitchd came back, want %d", len(up.text()), before)
	}
}

// A patch port or the uplink renumbered (re-added by an operator): the
// flows naming it are reinstalled with the new number on both bridges.
func TestLayout2Renumbered(t *testing.T) {
	up := newFakeFlows()
	h := startHarness(t, layout2Config, layout2Host(up))
	for _, tc := range []struct {
		iface    ovsctl.Interface
		onUp, vm string
	}{
		{iface: ovsctl.Interface{Name: "patch-ex", Type: "patch", OFPort: 5, Peer: "patch-int"},
			onUp: "in_port=1,ipv6_dst=2001:db8:3000::3,nw_proto=41,table=0,idle_timeout=0,actions=output:5"},
		{iface: ovsctl.Interface{Name: "eth0", OFPort: 6},
			onUp: "in_port=6,ipv6_dst=2001:db8:3000::3,nw_proto=41,table=0,idle_timeout=0,actions=output:5"},
		{iface: ovsctl.Interface{Name: "patch-int", Type: "patch", OFPort: 8, Peer: "patch-ex"},
			vm: "in_port=8,ipv6_dst=2001:db8:3000::3,nw_proto=41,table=0,idle_timeout=0,actions=output:9"},
	} {
		h.db.mu.Lock()
		h.db.ifaces[tc.iface.Name] = tc.iface
		h.db.mu.Unlock()
		h.db.events <- ovsctl.Event{Kind: ovsctl.Updated, Iface: tc.iface}
		if !waitFor(t, h.settle, func() bool {
			return (tc.onUp == "" || len(missingFlows(up.text(), []string{tc.onUp})) == 0) &&
				(tc.vm == "" || len(missingFlows(h.flows.text(), []string{tc.vm})) == 0)
		}) {
			t.Errorf("%s renumbered to %d: want %q on br-ex, %q on br0; have %q and %q",
				tc.iface.Name, tc.iface.OFPort, tc.onUp, tc.vm, up.text(), h.flows.text())
		}
	}
}

// The care-of address must be on the LOCAL port of the uplink's bridge, or
// on care_of_interface in layout 3: on another interface kgswitch is
// refused at start; on none yet it starts and warns.
func TestCheckCareOf(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		link      string // "" : on no interface
		wantErr   string
	}{
		{name: "1: on br0", cfg: testConfig, link: "br0"},
		{name: "2: on br-ex", cfg: layout2Config, link: "br-ex"},
		{name: "1: on a NIC", cfg: testConfig, link: "eth1",
			wantErr: "care-of address 2001:db8:3000::3 is on eth1, not on br0 (the own port of the uplink's bridge)"},
		{name: "2: on the VM bridge", cfg: layout2Config, link: "br0",
			wantErr: "care-of address 2001:db8:3000::3 is on br0, not on br-ex"},
		{name: "3: on the NIC", cfg: layout3Config, link: "eth1"},
		{name: "3: on br0", cfg: layout3Config, link: "br0",
			wantErr: "care-of address 2001:db8:3000::3 is on br0, not on care_of_interface eth1"},
		{name: "nowhere yet", cfg: testConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			log := &logBuffer{}
			s := New(cfg, Deps{Logger: newTestLogger(log), LinkOf: func(a netip.Addr) (string, bool) {
				if a != coa {
					t.Errorf("LinkOf(%v), want the care-of address %v", a, coa)
				}
				return tc.link, tc.link != ""
			}})
			err = s.checkCareOf()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
			} else if !errors.Is(err, errLayout) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want a layout error saying %q", err, tc.wantErr)
			}
			warned := strings.Contains(log.String(), "care-of address is on no interface")
			if warned != (tc.link == "") {
				t.Errorf("warned %v, want %v; log:\n%s", warned, tc.link == "", log.String())
			}
		})
	}
}

func newTestLogger(l *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// A NIC outside OVS holding the care-of address, with the uplink on the VM
// bridge, is layout 3 whatever the file says; anything less certain is left
// to the checks.
func TestDetectCareOfInterface(t *testing.T) {
	eth0 := ovsctl.Interface{Name: "eth0", OFPort: 1}
	br0 := ovsctl.Interface{Name: "br0", OFPort: 65534}
	for _, tc := range []struct {
		name   string
		cfg    string
		ifaces []ovsctl.Interface
		link   string // where the care-of address is; "" nowhere
		want   string
	}{
		{name: "on a NIC outside OVS", cfg: testConfig, ifaces: []ovsctl.Interface{eth0, br0}, link: "eth1", want: "eth1"},
		{name: "on the VM bridge", cfg: testConfig, ifaces: []ovsctl.Interface{eth0, br0}, link: "br0"},
		{name: "on another OVS port", cfg: testConfig, ifaces: []ovsctl.Interface{eth0, br0, {Name: "eth1", OFPort: 2}}, link: "eth1"},
		{name: "on no interface yet", cfg: testConfig, ifaces: []ovsctl.Interface{eth0, br0}},
		{name: "uplink not in OVSDB yet", cfg: testConfig, ifaces: []ovsctl.Interface{br0}, link: "eth1"},
		{name: "given", cfg: layout3Config, ifaces: []ovsctl.Interface{eth0, br0}, link: "eth1"},
		{name: "layout 2 given", cfg: layout2Config, ifaces: []ovsctl.Interface{eth0, br0}, link: "eth1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			db := &fakeDB{ifaces: map[string]ovsctl.Interface{}}
			for _, i := range tc.ifaces {
				db.ifaces[i.Name] = i
			}
			linkOf := func(netip.Addr) (string, bool) { return tc.link, tc.link != "" }
			if got := DetectCareOfInterface(cfg, db, linkOf); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
