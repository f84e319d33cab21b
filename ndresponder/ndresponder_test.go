package ndresponder

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/mdlayher/ndp"
)

var (
	guestMAC  = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x10}
	answerMAC = net.HardwareAddr{0x02, 0x6b, 0x67, 0, 0, 1}
	hoa       = netip.MustParseAddr("2001:db8:2000::10")
	guestLL   = netip.MustParseAddr("fe80::5054:ff:fe00:10")
	routerLL  = netip.MustParseAddr("fe80::1")
	routerGUA = netip.MustParseAddr("2001:db8:2000::fffe")
	peer      = netip.MustParseAddr("2001:db8:2000::2")
)

func testResponder(t testing.TB) *Responder {
	r, err := New(HomeLink{
		Prefix:          netip.MustParsePrefix("2001:db8:2000::/64"),
		RouterLinkLocal: routerLL,
		RouterAddrs:     []netip.Addr{routerGUA},
	}, answerMAC)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// nsFrame builds a Neighbor Solicitation frame as a guest would send it.
func nsFrame(t testing.TB, src, target netip.Addr, hopLimit uint8) []byte {
	ns := &ndp.NeighborSolicitation{TargetAddress: target}
	dst := netpkt.SolicitedNode(target)
	if !src.IsUnspecified() {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: guestMAC}}
	}
	msg, err := ndp.MarshalMessageChecksum(ns, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	f := make([]byte, netpkt.EthernetLen+netpkt.IPv6Len, 100)
	netpkt.PutEthernet(f, netpkt.MulticastMAC(dst), guestMAC, netpkt.EtherTypeIPv6)
	netpkt.PutIPv6(f[netpkt.EthernetLen:], len(msg), netpkt.ProtoICMPv6, hopLimit, src, dst)
	return append(f, msg...)
}

func owns(a netip.Addr) bool { return a == hoa || a == guestLL }

func TestRespond(t *testing.T) {
	tests := []struct {
		name       string
		src        netip.Addr
		target     netip.Addr
		want       Decision
		wantRouter bool
	}{
		{"default router", hoa, routerLL, Answered, true},
		{"default router from link-local", guestLL, routerLL, Answered, true},
		{"router global address", hoa, routerGUA, Answered, true},
		{"other home host", hoa, peer, Answered, false},
		{"own home address", hoa, hoa, IgnoredOwnAddress, false},
		{"own link-local", hoa, guestLL, IgnoredOwnAddress, false},
		{"DAD for own address", netip.IPv6Unspecified(), hoa, IgnoredDAD, false},
		{"DAD for another address", netip.IPv6Unspecified(), peer, IgnoredDAD, false},
		{"off-link target", hoa, netip.MustParseAddr("2001:db8:1000::100"), IgnoredOffLink, false},
		{"other link-local", hoa, netip.MustParseAddr("fe80::99"), IgnoredOffLink, false},
	}
	r := testResponder(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, got, err := r.Respond(nil, nsFrame(t, tt.src, tt.target, 255), Guest{MAC: guestMAC, Owns: owns})
			if err != nil {
				t.Fatalf("Respond: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got decision = %v, want %v", got, tt.want)
			}
			if tt.want != Answered {
				if len(out) != 0 {
					t.Fatalf("got %d reply bytes for %v, want none", len(out), got)
				}
				return
			}
			eth := netpkt.Ethernet(out)
			if eth.Dst().String() != guestMAC.String() || eth.Src().String() != answerMAC.String() {
				t.Errorf("got MACs %v -> %v, want %v -> %v", eth.Src(), eth.Dst(), answerMAC, guestMAC)
			}
			ip, err := netpkt.ParseIPv6(eth.Payload())
			if err != nil {
				t.Fatal(err)
			}
			if ip.HopLimit() != 255 || ip.Dst() != tt.src || ip.Src() != tt.target {
				t.Errorf("got IPv6 %v -> %v hop limit %d, want %v -> %v hop limit 255", ip.Src(), ip.Dst(), ip.HopLimit(), tt.target, tt.src)
			}
			if !netpkt.VerifyChecksum(ip.Src(), ip.Dst(), netpkt.ProtoICMPv6, ip.Payload()) {
				t.Errorf("NA checksum does not verify")
			}
			m, err := ndp.ParseMessage(ip.Payload())
			if err != nil {
				t.Fatal(err)
			}
			na, ok := m.(*ndp.NeighborAdvertisement)
			if !ok {
				t.Fatalf("got %T, want *ndp.NeighborAdvertisement", m)
			}
			if na.TargetAddress != tt.target || !na.Solicited || na.Override || na.Router != tt.wantRouter {
				t.Errorf("got NA target %v S=%v O=%v R=%v, want target %v S=true O=false R=%v", na.TargetAddress, na.Solicited, na.Override, na.Router, tt.target, tt.wantRouter)
			}
			if len(na.Options) != 1 || na.Options[0].(*ndp.LinkLayerAddress).Addr.String() != answerMAC.String() {
				t.Errorf("got options %v, want target link-layer address %v", na.Options, answerMAC)
			}
		})
	}
}

// A NUD probe is unicast to the MAC the guest has cached (here the real home
// router's): the answer must confirm that MAC, or the guest's entry fails.
func TestRespondUnicastProbe(t *testing.T) {
	r := testResponder(t)
	realRouter := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
	f := nsFrame(t, hoa, routerLL, 255)
	copy(netpkt.Ethernet(f).Dst(), realRouter)
	// A unicast NS goes to the target address itself, not its solicited-node group.
	ip := netpkt.IPv6(f[netpkt.EthernetLen:])
	msg, _ := ndp.MarshalMessageChecksum(&ndp.NeighborSolicitation{TargetAddress: routerLL}, hoa, routerLL)
	netpkt.PutIPv6(ip, len(msg), netpkt.ProtoICMPv6, 255, hoa, routerLL)
	f = append(f[:netpkt.EthernetLen+netpkt.IPv6Len], msg...)
	out, d, err := r.Respond(nil, f, Guest{MAC: guestMAC, Owns: owns})
	if err != nil || d != Answered {
		t.Fatalf("got %v %v, want an answer", d, err)
	}
	p, _ := netpkt.ParseIPv6(netpkt.Ethernet(out).Payload())
	m, err := ndp.ParseMessage(p.Payload())
	if err != nil {
		t.Fatal(err)
	}
	na := m.(*ndp.NeighborAdvertisement)
	if got := na.Options[0].(*ndp.LinkLayerAddress).Addr.String(); got != realRouter.String() || !na.Router {
		t.Errorf("got target link-layer address %v router %v, want %v, true", got, na.Router, realRouter)
	}
	if got := netpkt.Ethernet(out).Src().String(); got != realRouter.String() {
		t.Errorf("got frame source %v, want %v", got, realRouter)
	}
}

func TestRespondRejects(t *testing.T) {
	r := testResponder(t)
	good := nsFrame(t, hoa, routerLL, 255)
	badHop := nsFrame(t, hoa, routerLL, 64)
	badSum := append([]byte(nil), good...)
	badSum[len(badSum)-1] ^= 0xff
	truncated := good[:len(good)-4]
	notNS := append([]byte(nil), good...)
	notNS[netpkt.EthernetLen+netpkt.IPv6Len] = 128 // echo request
	for _, tt := range []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"short", good[:10]},
		{"hop limit not 255", badHop},
		{"bad checksum", badSum},
		{"truncated", truncated},
		{"echo request", notNS},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := r.Respond(nil, tt.frame, Guest{MAC: guestMAC, Owns: owns})
			if err == nil || len(out) != 0 {
				t.Fatalf("got err = %v, %d reply bytes, want an error and no reply", err, len(out))
			}
		})
	}
}

func TestNewRejectsBadLink(t *testing.T) {
	if _, err := New(HomeLink{Prefix: netip.MustParsePrefix("10.0.0.0/8"), RouterLinkLocal: routerLL}, answerMAC); err == nil {
		t.Error("got nil error for an IPv4 prefix")
	}
	if _, err := New(HomeLink{Prefix: netip.MustParsePrefix("2001:db8::/64"), RouterLinkLocal: routerGUA}, answerMAC); err == nil {
		t.Error("got nil error for a global router address")
	}
}

func FuzzRespond(f *testing.F) {
	f.Add(nsFrame(f, hoa, routerLL, 255))
	f.Add(nsFrame(f, netip.IPv6Unspecified(), hoa, 255))
	r := testResponder(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		out, d, err := r.Respond(nil, frame, Guest{MAC: guestMAC, Owns: owns})
		if err != nil && len(out) != 0 {
			t.Fatalf("reply together with error %v", err)
		}
		if d == Answered && err == nil {
			if _, err := netpkt.ParseIPv6(out[netpkt.EthernetLen:]); err != nil {
				t.Fatalf("answer is not a valid IPv6 packet: %v", err)
			}
		}
	})
}

func TestRouterAdvertisement(t *testing.T) {
	adv := &Advertisement{Interval: 10 * time.Second, HopLimit: 64, RouterLifetime: 30 * time.Second,
		ValidLifetime: 30 * time.Second, PreferredLifetime: 20 * time.Second, OnLink: true, Autonomous: true}
	r, err := New(HomeLink{Prefix: netip.MustParsePrefix("2001:db8:2000::/64"), RouterLinkLocal: routerLL, Advertise: adv}, answerMAC)
	if err != nil {
		t.Fatal(err)
	}
	allNodes := netip.MustParseAddr("ff02::1")
	out, err := r.AppendRouterAdvertisement(nil, guestMAC, allNodes, 1460)
	if err != nil {
		t.Fatal(err)
	}
	eth := netpkt.Ethernet(out)
	if eth.Dst().String() != guestMAC.String() {
		t.Errorf("got destination MAC %v, want the guest's %v (never multicast)", eth.Dst(), guestMAC)
	}
	ip, err := netpkt.ParseIPv6(eth.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if ip.Src() != routerLL || ip.Dst() != allNodes || ip.HopLimit() != 255 || !netpkt.VerifyChecksum(ip.Src(), ip.Dst(), netpkt.ProtoICMPv6, ip.Payload()) {
		t.Errorf("got %v -> %v hop limit %d", ip.Src(), ip.Dst(), ip.HopLimit())
	}
	m, err := ndp.ParseMessage(ip.Payload())
	if err != nil {
		t.Fatal(err)
	}
	ra := m.(*ndp.RouterAdvertisement)
	if ra.RouterLifetime != 30*time.Second || ra.CurrentHopLimit != 64 {
		t.Errorf("got router lifetime %v hop limit %d", ra.RouterLifetime, ra.CurrentHopLimit)
	}
	var mtu uint32
	var pi *ndp.PrefixInformation
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.MTU:
			mtu = o.MTU
		case *ndp.PrefixInformation:
			pi = o
		}
	}
	if mtu != 1460 {
		t.Errorf("got MTU option %d, want 1460", mtu)
	}
	if pi == nil || pi.Prefix != netip.MustParseAddr("2001:db8:2000::") || pi.PrefixLength != 64 || !pi.OnLink || !pi.AutonomousAddressConfiguration ||
		pi.ValidLifetime != 30*time.Second || pi.PreferredLifetime != 20*time.Second {
		t.Errorf("got prefix information %+v", pi)
	}
}

func TestAdvertisementValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		a    Advertisement
		ok   bool
	}{
		{"good", Advertisement{Interval: 10 * time.Second, RouterLifetime: 30 * time.Second, ValidLifetime: 30 * time.Second, PreferredLifetime: 30 * time.Second}, true},
		{"interval not below lifetime", Advertisement{Interval: 30 * time.Second, RouterLifetime: 30 * time.Second, ValidLifetime: 60 * time.Second}, false},
		{"no interval", Advertisement{RouterLifetime: 30 * time.Second}, false},
		{"preferred over valid", Advertisement{Interval: time.Second, ValidLifetime: 10 * time.Second, PreferredLifetime: 20 * time.Second}, false},
		{"router lifetime too long", Advertisement{Interval: time.Second, RouterLifetime: 10000 * time.Second}, false},
	} {
		if err := tt.a.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestUnsolicitedNA(t *testing.T) {
	out, err := AppendUnsolicitedNA(nil, Unsolicited{Target: hoa, LLAddr: guestMAC, From: guestMAC})
	if err != nil {
		t.Fatal(err)
	}
	eth := netpkt.Ethernet(out)
	if eth.Src().String() != guestMAC.String() || eth.Dst().String() != "33:33:00:00:00:01" {
		t.Errorf("got %v -> %v", eth.Src(), eth.Dst())
	}
	ip, err := netpkt.ParseIPv6(eth.Payload())
	if err != nil || ip.Src() != hoa || ip.Dst() != netip.MustParseAddr("ff02::1") || ip.HopLimit() != 255 {
		t.Fatalf("got %v -> %v (%v)", ip.Src(), ip.Dst(), err)
	}
	m, err := ndp.ParseMessage(ip.Payload())
	if err != nil {
		t.Fatal(err)
	}
	na := m.(*ndp.NeighborAdvertisement)
	if !na.Override || na.Solicited || na.Router || na.TargetAddress != hoa || na.Options[0].(*ndp.LinkLayerAddress).Addr.String() != guestMAC.String() {
		t.Errorf("got %+v, want O=1 S=0 R=0 for %v with %v", na, hoa, guestMAC)
	}
}

// With the home router's MAC configured, a guest resolving its router abroad
// learns the real MAC, which still works when it comes home.
func TestRespondWithRouterMAC(t *testing.T) {
	realRouter := net.HardwareAddr{0x42, 0x0d, 0x24, 0x0b, 0xaf, 0x8c}
	r, err := New(HomeLink{Prefix: netip.MustParsePrefix("2001:db8:2000::/64"), RouterLinkLocal: routerLL, RouterMAC: realRouter,
		Advertise: &Advertisement{Interval: time.Second, RouterLifetime: 30 * time.Second}}, answerMAC)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		target netip.Addr
		want   net.HardwareAddr
	}{{routerLL, realRouter}, {peer, answerMAC}} {
		out, _, err := r.Respond(nil, nsFrame(t, hoa, tt.target, 255), Guest{MAC: guestMAC, Owns: owns})
		if err != nil {
			t.Fatal(err)
		}
		p, _ := netpkt.ParseIPv6(netpkt.Ethernet(out).Payload())
		m, _ := ndp.ParseMessage(p.Payload())
		if got := m.(*ndp.NeighborAdvertisement).Options[0].(*ndp.LinkLayerAddress).Addr; got.String() != tt.want.String() {
			t.Errorf("answer for %v: got %v, want %v", tt.target, got, tt.want)
		}
	}
	ra, err := r.AppendRouterAdvertisement(nil, guestMAC, netip.MustParseAddr("ff02::1"), 1460)
	if err != nil {
		t.Fatal(err)
	}
	if src := netpkt.Ethernet(ra).Src(); src.String() != realRouter.String() {
		t.Errorf("RA from %v, want the router's MAC %v", src, realRouter)
	}
}
