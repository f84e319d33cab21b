package vswitch

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/ovsctl"
	"github.com/mdlayher/ndp"
)

var realRouterMAC = net.HardwareAddr{0x42, 0x0d, 0x24, 0x0b, 0xaf, 0x8c}

// homeAgentMAC is the Home Agent's MAC, as the home host's neighbour table
// has it.
var homeAgentMAC = net.HardwareAddr{0x02, 0x48, 0x41, 0, 0, 1}

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

// checkHomeNA checks an Override advertisement of the guest's own MAC for
// its home address.
func checkHomeNA(t *testing.T, f []byte) {
	t.Helper()
	eth := netpkt.Ethernet(f)
	ip, _ := netpkt.ParseIPv6(eth.Payload())
	m, err := ndp.ParseMessage(ip.Payload())
	na, ok := m.(*ndp.NeighborAdvertisement)
	if err != nil || !ok || !na.Override || na.TargetAddress != hoa || eth.Src().String() != guestMAC.String() {
		t.Fatalf("got %v (%v), want an Override NA for %v from %v", m, err, hoa, guestMAC)
	}
}

func TestReturnHome(t *testing.T) {
	// answer is how the Home Agent answers the de-registration.
	type answer int
	const (
		accepted answer = iota
		// The Home Agent accepted the first de-registration but its Ack
		// was lost: the retransmission meets no binding (133), and the lost
		// Ack may still come late.
		ackLost
		// The Home Agent never held a binding (the VM was never away).
		noBinding
	)
	for _, tt := range []struct {
		name   string
		answer answer
	}{
		{"binding removed", accepted},
		// The home address is free either way, and the neighbours may
		// still map it to the Home Agent: the Override advertisements go out
		// as for an accepted de-registration.
		{"Ack lost, the retransmission meets no binding", ackLost},
		{"there was no binding", noBinding},
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
			// Numbered from the clock, which is ahead of what the foreign
			// host last sent; and only one.
			if want := mipv6.ClockSequence(h.clk.Now()); bu.Sequence != want {
				t.Errorf("got sequence %d, want the clock's %d", bu.Sequence, want)
			}
			// On arrival the guest is told its router's real MAC (the host's
			// neighbour table knows it), in case it resolved it abroad.
			checkRouterNA(t, h.nextFrame(t))
			h.noFrame(t)
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
			inject := func(status uint8, seq uint16) {
				t.Helper()
				ba := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: hoa, HomeAddress: hoa, Status: status, Sequence: seq})
				if ba[6] != mipv6.IPProtoMH {
					t.Fatalf("BA to the home address carries next header %d, want the Mobility Header directly", ba[6])
				}
				h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, ba))
			}
			switch tt.answer {
			case accepted:
				inject(mipv6.StatusAccepted, bu.Sequence)
			case noBinding:
				inject(mipv6.StatusNotHomeAgent, bu.Sequence)
			case ackLost:
				// No Ack: the de-registration is retransmitted a second
				// later, numbered from the clock again.
				h.advance(t, mipv6.InitialBindackTimeout-time.Millisecond)
				h.noFrame(t)
				h.advance(t, time.Millisecond)
				re, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
				if want := mipv6.ClockSequence(h.clk.Now()); err != nil || re.Lifetime != 0 || re.Sequence != want {
					t.Fatalf("got %+v (%v), want a de-registration numbered %d", re, err, want)
				}
				inject(mipv6.StatusNotHomeAgent, re.Sequence)
			}
			for i := 0; i < homeAdvertisements; i++ {
				if i > 0 {
					// A second apart.
					h.advance(t, time.Second-time.Millisecond)
					h.noFrame(t)
					h.advance(t, time.Millisecond)
				}
				checkHomeNA(t, h.nextFrame(t))
				checkRouterNA(t, h.nextFrame(t))
				if i == 0 && tt.answer == ackLost {
					// The lost Ack, late after all: expected, nothing more.
					inject(mipv6.StatusAccepted, bu.Sequence)
					h.noFrame(t)
				}
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
			st, _ := h.sw.Status(context.Background())
			if st[0].Location != "home" {
				t.Errorf("got %+v, want home", st[0])
			}
			dpDrops, _ := h.sw.DatapathDrops(context.Background())
			if n, m := st[0].Drops["signal-rejected"], dpDrops["signal-rejected"]; n != 0 || m != 0 {
				t.Errorf("got %d signalling packets rejected for the VM and %d for none, want 0", n, m)
			}
			if w := h.warnings(); len(w) != 0 {
				t.Errorf("got warnings or errors logged, want none:\n%s", strings.Join(w, "\n"))
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
	haMAC := homeAgentMAC
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
	// departedHarness is a home host whose VM's port just left.
	departedHarness := func(t *testing.T) *harness {
		t.Helper()
		h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
		waitLocation(t, h, "departed")
		return h
	}
	toVM := func(i int) []byte {
		return datapathtest.EthFrame(guestMAC, lanMAC, datapathtest.UDPPacket(cn, hoa, i))
	}
	t.Run("hold, takeover, release", func(t *testing.T) {
		h := departedHarness(t)
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
		h := departedHarness(t)
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
		h := departedHarness(t)
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
