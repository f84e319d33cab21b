package vswitch

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/coafilter"
	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// layout3Config is testConfig with the care-of address on eth1, a NIC
// outside OVS; eth0 stays br0's port to the LAN.
const layout3Config = "care_of_interface = \"eth1\"\n" + testConfig

// fakeFilter records the nftables scripts applied.
type fakeFilter struct {
	mu      sync.Mutex
	scripts []string
	fail    error
}

func (f *fakeFilter) Apply(script string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.scripts = append(f.scripts, script)
	return nil
}

func (f *fakeFilter) applied() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.scripts)
}

// In layout 3 kgswitch keeps the host kernel from the care-of NIC's tunnel
// packets while it runs, and no longer once stopped; it registers with the
// Ack read from the NIC, and what the Home Agent tunnels there reaches the
// guest. The VM bridge has the guest's flows and none for the care-of
// address, which is not on it.
func TestLayout3(t *testing.T) {
	nic, filter := datapathtest.NewConn(), &fakeFilter{}
	h := startHarness(t, layout3Config, harnessHost{nic: nic, filter: filter})
	if got, want := filter.applied(), []string{coafilter.Ruleset("eth1", coa, nil)}; !slices.Equal(got, want) {
		t.Fatalf("nftables got %q, want %q", got, want)
	}

	h.arrive(t, "vnet3", 3, guestMAC)
	bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil {
		t.Fatal(err)
	}
	nic.Inject(datapathtest.EthFrame(kgMAC, lanMAC, mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa,
		Sequence: bu.Sequence, Lifetime: bu.Lifetime})))
	nic.Idle()
	if !waitFor(t, h.settle, func() bool { return h.status(t, "vnet3").BindingState == "bound" }) {
		t.Fatalf("not bound by the Ack read from the care-of NIC: %+v", h.status(t, "vnet3"))
	}

	inner := datapathtest.UDPPacket(cn, hoa, 100)
	tun := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(inner))
	netpkt.PutIPv6(tun, len(inner), netpkt.ProtoIPv6, 64, ha, coa)
	nic.Inject(datapathtest.EthFrame(kgMAC, lanMAC, append(tun, inner...)))
	nic.Idle()
	for {
		f := h.nextFrame(t)
		if eth := netpkt.Ethernet(f); eth.EtherType() == netpkt.EtherTypeIPv6 && string(eth.Payload()) == string(inner) {
			break // earlier frames: kgswitch's advertisements to the guest
		}
	}

	flows := h.flows.text()
	for _, f := range flows {
		if strings.Contains(f, "ipv6_dst=2001:db8:3000::3") {
			t.Errorf("a VM bridge flow names the care-of address, which is not on it: %s", f)
		}
	}
	if m := missingFlows(flows, []string{
		"priority=200,in_port=3,dl_src=52:54:00:00:00:10,table=0,idle_timeout=0,actions=output:9",
		"priority=100,in_port=9,table=0,idle_timeout=0,actions=drop",
	}); len(m) > 0 {
		t.Errorf("VM bridge lacks %q; have %q", m, flows)
	}

	h.cancel()
	if err := <-h.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	h.done <- nil // for the harness's cleanup
	if got := filter.applied(); len(got) != 2 || got[1] != coafilter.Removal() {
		t.Errorf("nftables got %q, want the ruleset, then its removal", got)
	}
}

// The ESP of a Home Agent protecting signalling is kept from the host
// kernel once such a Home Agent is served, as the OVS layouts divert it.
func TestLayout3ESP(t *testing.T) {
	cfg, err := config.Parse(layout3Config)
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, Deps{})
	if got, want := s.hostFilterScript(), coafilter.Ruleset("eth1", coa, nil); got != want {
		t.Errorf("without SAs got\n%s\nwant\n%s", got, want)
	}
	back, err := esp.NewSA(0x2000, ha, hoa, esp.AESCBCHMACSHA256, randomKey(t, 16), randomKey(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.SAs = []esp.SA{back}
	if got, want := s.hostFilterScript(), coafilter.Ruleset("eth1", coa, []netip.Addr{ha}); got != want {
		t.Errorf("with SAs got\n%s\nwant\n%s", got, want)
	}
}

// Refusals at start: layout 3 on a host whose care_of_interface is in OVS
// or whose care-of address is on another interface, or without the means
// to read the NIC; nothing is applied to nftables then.
func TestLayout3Refused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bridges map[string]string
		link    string
		noNIC   bool
		want    string
	}{
		{name: "NIC on the VM bridge", link: "eth1",
			want: "care_of_interface eth1 is a port of bridge br0; kgswitch needs it outside OVS"},
		{name: "NIC on another bridge", link: "eth1", bridges: map[string]string{"eth1": "br-ex"},
			want: "care_of_interface eth1 is a port of bridge br-ex"},
		{name: "care-of address elsewhere", link: "br0",
			want: "care-of address 2001:db8:3000::3 is on br0, not on care_of_interface eth1"},
		{name: "no way to read the NIC", link: "eth1", noNIC: true,
			want: "care_of_interface eth1 configured but kgswitch was given no way to read it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse(layout3Config)
			if err != nil {
				t.Fatal(err)
			}
			ifaces := map[string]ovsctl.Interface{"eth0": {Name: "eth0", OFPort: 1}}
			if tc.want != "" && strings.Contains(tc.want, "is a port of bridge") {
				ifaces["eth1"] = ovsctl.Interface{Name: "eth1", OFPort: 2}
			}
			filter := &fakeFilter{}
			deps := Deps{DB: &fakeDB{ifaces: ifaces, bridges: tc.bridges, events: make(chan ovsctl.Event)}, Flows: newFakeFlows(),
				LinkOf: func(netip.Addr) (string, bool) { return tc.link, true }, HostFilter: filter,
				OpenCareOf: func(string, netip.Addr) (datapath.FrameConn, error) {
					return nil, errors.New("not opened in this test")
				}}
			if tc.noNIC {
				deps.OpenCareOf = nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = New(cfg, deps).Run(ctx)
			if !errors.Is(err, errLayout) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got Run() = %v, want a layout error saying %q", err, tc.want)
			}
			if got := filter.applied(); len(got) != 0 {
				t.Errorf("refused, yet applied %q", got)
			}
		})
	}
}
