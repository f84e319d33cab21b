package vswitch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/ovsctl"
	"github.com/mdlayher/ndp"
)

func TestForeignPortRegistersAndTunnels(t *testing.T) {
	h := newHarness(t, testConfig)
	bu := h.bind(t)
	if bu.Src != coa || bu.HomeAddress != hoa || bu.Flags != mipv6.FlagA|mipv6.FlagH || bu.Sequence != mipv6.ClockSequence(testEpoch) || bu.Lifetime != 150 {
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
	h := newHarness(t, testConfig+"[arrival]\nenabled = false\n")
	h.arrive(t, "vnet3", 3, guestMAC)
	h.nextSent(t) // the BU
	h.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, 10)))
	h.noFrame(t)
	st, _ := h.sw.Status(context.Background())
	if st[0].Drops["not-bound"] != 1 || st[0].Held != 0 || st[0].BindingState != "registering" {
		t.Errorf("got %+v, want one not-bound drop while registering, with the arrival hold off", st[0])
	}
}

// guestFrame is a frame from the guest to the correspondent whose UDP
// payload is n bytes long: n tells frames apart on the uplink.
func guestFrame(n int) []byte {
	return datapathtest.EthFrame(lanMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, n))
}

// tunnelledPayload checks that s is the guest's packet with an n-byte UDP
// payload, unchanged in a tunnel from the care-of address to the Home Agent,
// and returns n.
func tunnelledPayload(t *testing.T, s datapathtest.Sent) int {
	t.Helper()
	outer, err := netpkt.ParseIPv6(s.Pkt)
	if err != nil || s.Dst != ha || outer.Src() != coa || outer.Dst() != ha || outer.NextHeader() != netpkt.ProtoIPv6 {
		t.Fatalf("got %v -> %v (to %v) next header %d (%v), want a tunnel packet %v -> %v", outer.Src(), outer.Dst(), s.Dst,
			outer.NextHeader(), err, coa, ha)
	}
	n := len(outer.Payload()) - netpkt.IPv6Len - 8
	if !bytes.Equal(outer.Payload(), datapathtest.UDPPacket(hoa, cn, n)) {
		t.Fatalf("inner packet of %d payload bytes changed in the tunnel", n)
	}
	return n
}

// What a guest sends between its activation here and the Home Agent's Ack
// (about 1.1 s of DAD at a first registration) is sent through the tunnel
// right after the Ack, in order, ahead of what it sends next.
func TestArrivalHeldUntilBound(t *testing.T) {
	h := newHarness(t, testConfig)
	h.arrive(t, "vnet3", 3, guestMAC)
	bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil {
		t.Fatal(err)
	}
	for n := 10; n < 14; n++ {
		h.conn.Inject(guestFrame(n))
		h.advance(t, 250*time.Millisecond)
	}
	h.noFrame(t)
	if st := h.status(t, "vnet3"); st.Held != 4 || st.ToTunnelPackets != 0 || st.Drops["not-bound"] != 0 {
		t.Fatalf("got %+v, want 4 held, none tunnelled or dropped", st)
	}
	h.advance(t, 100*time.Millisecond) // the Ack, 1.1 s after the Binding Update
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa,
		Sequence: bu.Sequence, Lifetime: bu.Lifetime})))
	h.settle(t)
	h.conn.Inject(guestFrame(14))
	var got []int
	for range 5 {
		got = append(got, tunnelledPayload(t, h.nextSent(t)))
	}
	if want := []int{10, 11, 12, 13, 14}; !slices.Equal(got, want) {
		t.Errorf("got payloads %v through the tunnel, want %v", got, want)
	}
	h.noFrame(t)
	st := h.status(t, "vnet3")
	if st.BindingState != "bound" || st.Held != 4 || st.Released != 4 || st.ToTunnelPackets != 5 || len(st.Drops) != 1 || st.Drops["inactive"] != 1 {
		t.Errorf("got %+v, want bound, 4 held and released, 5 tunnelled, no drop but the activating RARP", st)
	}
}

// A hold whose binding does not come counts what it held as dropped, and
// frames after it as not bound.
func TestArrivalHoldEnds(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(h *harness, bu mipv6.BUPacket)
		// notBound: the guest's next frame is dropped as not bound (after a
		// refusal; once its port left, it is no guest of this host).
		notBound uint64
	}{
		{"port leaves", func(h *harness, _ mipv6.BUPacket) {
			h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
		}, 0},
		{"Home Agent refuses", func(h *harness, bu mipv6.BUPacket) {
			h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa,
				Status: mipv6.StatusProhibited, Sequence: bu.Sequence})))
		}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig)
			h.arrive(t, "vnet3", 3, guestMAC)
			bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
			if err != nil {
				t.Fatal(err)
			}
			h.conn.Inject(guestFrame(10))
			h.conn.Inject(guestFrame(11))
			h.settle(t)
			tt.end(h, bu)
			h.settle(t)
			h.conn.Inject(guestFrame(12))
			h.noFrame(t)
			st := h.status(t, "vnet3")
			if st.Held != 2 || st.Released != 0 || st.Drops["hold-expired"] != 2 || st.Drops["not-bound"] != tt.notBound || st.ToTunnelPackets != 0 {
				t.Errorf("got %+v, want 2 held and counted expired, %d not bound, none sent", st, tt.notBound)
			}
		})
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
	// The only flows about the VM copy DAD probes for its address, and its
	// own advertisements of it, to kgswitch and let them go on unchanged
	// (NORMAL), and let what kgswitch gives back reach it: its traffic is
	// untouched.
	for _, f := range h.flows.text() {
		copyOnly := strings.Contains(f, "icmpv6_type=135,nd_target=2001:db8:2000::10,table=0,idle_timeout=0,actions=output:9,normal") ||
			strings.Contains(f, "in_port=3,icmpv6_type=136,nd_target=2001:db8:2000::10,table=0,idle_timeout=0,actions=output:9,normal") ||
			strings.Contains(f, "in_port=9,dl_src=02:6b:67:00:00:01,dl_dst=52:54:00:00:00:10,table=0,idle_timeout=0,actions=output:3")
		if !copyOnly && (strings.Contains(f, "in_port=3") || strings.Contains(f, "52:54:00:00:00:10") || strings.Contains(f, "2001:db8:2000::10")) {
			t.Errorf("flow touches the VM's traffic on its home host: %s", f)
		}
	}
}

// The flows that copy the home link's Neighbor Discovery to kgswitch also
// pass it on (NORMAL); were the internal port open to floods, NORMAL would
// hand kgswitch each multicast probe and advertisement a second time.
func TestInternalPortNoFlood(t *testing.T) {
	h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	h.noFrame(t)
	if !waitFor(t, h.settle, func() bool { return internalPortNoFlood(h) }) {
		t.Error("the internal port takes the bridge's floods, want no-flood")
	}
}

// internalPortNoFlood reports whether the internal port has its no-flood bit.
func internalPortNoFlood(h *harness) bool {
	h.flows.mu.Lock()
	defer h.flows.mu.Unlock()
	return h.flows.noFlood[config.DefaultInternalPort]
}

func TestHomePortWithoutDepartureHasNoFlows(t *testing.T) {
	h := newHarness(t, homeHostConfig+"departure_hold = false\n", ovsctl.Interface{Name: "vnet3", OFPort: 3})
	h.noFrame(t)
	if fl := h.flows.text(); len(fl) != 0 {
		t.Errorf("got flows %q with departure cover off, want none", fl)
	}
}

func TestAddPort(t *testing.T) {
	h := newHarness(t, noVMConfig)
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
	if st[0].LocalPackets != 1 || st[0].Held != 1 {
		t.Errorf("got %+v, want one local packet and one held for the tunnel", st[0])
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
