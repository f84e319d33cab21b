package datapath

import (
	"net/netip"
	"testing"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/mdlayher/ndp"
)

// withHeaders is an IPv6 packet from src to dst whose payload is the
// extension headers exts (each a next header and its body, 8n-2 bytes
// after the next-header and length octets) and then proto's payload.
func withHeaders(src, dst netip.Addr, hopLimit uint8, proto uint8, payload []byte, exts ...ext) []byte {
	var body []byte
	first := proto
	for i := len(exts) - 1; i >= 0; i-- {
		e := exts[i]
		h := append([]byte{first, byte((len(e.body)+2)/8 - 1)}, e.body...)
		if e.kind == protoFragment {
			h = append([]byte{first, 0}, e.body...)
		}
		body = append(h, body...)
		first = e.kind
	}
	body = append(body, payload...)
	pkt := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(body))
	netpkt.PutIPv6(pkt, len(body), first, hopLimit, src, dst)
	return append(pkt, body...)
}

type ext struct {
	kind uint8
	body []byte
}

var (
	destOpts  = ext{protoDestOpts, make([]byte, 6)}
	hopByHop  = ext{protoHopByHop, make([]byte, 6)}
	rh0       = ext{protoRouting, append([]byte{0, 1, 0, 0, 0, 0}, make([]byte, 16)...)}
	rh2       = ext{protoRouting, append([]byte{2, 1, 0, 0, 0, 0}, make([]byte, 16)...)}
	firstFrag = ext{protoFragment, []byte{0, 1, 0, 0, 0, 1}}
	laterFrag = ext{protoFragment, []byte{0, 8, 0, 0, 0, 1}}
)

func TestUpperLayer(t *testing.T) {
	udp := make([]byte, 8)
	for _, tc := range []struct {
		name    string
		pkt     []byte
		proto   uint8
		routing int
		ok      bool
	}{
		{"plain", withHeaders(hoa, cn, 64, 17, udp), 17, -1, true},
		{"options", withHeaders(hoa, cn, 64, 17, udp, hopByHop, destOpts), 17, -1, true},
		{"routing type 0", withHeaders(hoa, cn, 64, 17, udp, rh0), 17, 0, true},
		{"first fragment", withHeaders(hoa, cn, 64, 58, udp, firstFrag), 58, -1, true},
		{"later fragment", withHeaders(hoa, cn, 64, 58, udp, laterFrag), 58, -1, true},
		{"chain too long", withHeaders(hoa, cn, 64, 17, udp, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts), 0, -1, false},
		{"cut short", withHeaders(hoa, cn, 64, 17, nil, ext{protoDestOpts, make([]byte, 14)})[:netpkt.IPv6Len+8], 0, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip := netpkt.IPv6(tc.pkt)
			binaryFix(ip)
			u, ok := upperLayer(ip)
			if ok != tc.ok {
				t.Fatalf("got ok %v, want %v", ok, tc.ok)
			}
			if ok && (u.proto != tc.proto || u.routing != tc.routing) {
				t.Errorf("got proto %d routing %d, want %d %d", u.proto, u.routing, tc.proto, tc.routing)
			}
		})
	}
}

// binaryFix makes the payload length agree with a packet cut by a test.
func binaryFix(ip netpkt.IPv6) {
	n := len(ip) - netpkt.IPv6Len
	ip[4], ip[5] = byte(n>>8), byte(n)
}

// naMessage is an ICMPv6 Neighbor Advertisement for target, Override set.
func naMessage(t *testing.T, src, dst, target netip.Addr) []byte {
	t.Helper()
	msg, err := ndp.MarshalMessageChecksum(&ndp.NeighborAdvertisement{Override: true, TargetAddress: target,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: lanMAC}}}, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// Only what a router of the home link could have forwarded reaches the
// guest from the tunnel, and only while the Home Agent may tunnel to it.
func TestTunnelDeliversOnlyForwardable(t *testing.T) {
	udp := make([]byte, 8)
	ll := netip.MustParseAddr("fe80::66")
	for _, tc := range []struct {
		name        string
		inner       []byte
		tunnel, reg bool
		want        string // drop reason, "" delivered
	}{
		{"bound", withHeaders(cn, hoa, 63, 17, udp), true, false, ""},
		{"registering", withHeaders(cn, hoa, 63, 17, udp), false, true, ""},
		{"not bound", withHeaders(cn, hoa, 63, 17, udp), false, false, "not-bound"},
		{"link-local source", withHeaders(ll, hoa, 63, 17, udp), true, false, "tunnel-link-local"},
		{"advertisement from the router's link-local address", withHeaders(routerLL, hoa, 255, 58, naMessage(t, ha, hoa, routerLL)), true, false, "tunnel-link-local"},
		{"advertisement from a global address", withHeaders(ha, hoa, 255, 58, naMessage(t, ha, hoa, routerLL)), true, false, "tunnel-nd"},
		{"advertisement behind options", withHeaders(ha, hoa, 255, 58, naMessage(t, ha, hoa, routerLL), destOpts), true, false, "tunnel-nd"},
		{"redirect", withHeaders(ha, hoa, 255, 58, append([]byte{137, 0, 0, 0}, make([]byte, 36)...)), true, false, "tunnel-nd"},
		{"echo request", withHeaders(cn, hoa, 63, 58, []byte{128, 0, 0, 0, 0, 1, 0, 1}), true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := datapathtest.NewConn()
			g := boundGuest(t)
			g.Tunnel, g.Registering = tc.tunnel, tc.reg
			d, _ := newTestDatapath(conn, datapathtest.NewUplink(1), g)
			tun := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(tc.inner))
			netpkt.PutIPv6(tun, len(tc.inner), netpkt.ProtoIPv6, 64, ha, coa)
			buf := make([]byte, headroom+maxFrame)
			n := copy(buf[headroom:], ethFrame(kgMAC, lanMAC, append(tun, tc.inner...)))
			d.handle(buf, n, nil)
			d.flush()
			delivered := len(conn.Out) == 1
			if got := g.Link.Counters.DropMap(); tc.want == "" && (!delivered || len(got) != 0) {
				t.Errorf("got delivered %v, drops %v; want delivered", delivered, got)
			} else if tc.want != "" && (delivered || got[tc.want] != 1) {
				t.Errorf("got delivered %v, drops %v; want dropped as %s", delivered, got, tc.want)
			}
		})
	}
}

// What a Home Agent would take as a mobile node's own signalling never
// leaves a guest.
func TestGuestSignallingRefused(t *testing.T) {
	udp := make([]byte, 8)
	for _, tc := range []struct {
		name string
		pkt  []byte
		want string
	}{
		{"plain", withHeaders(hoa, cn, 64, 17, udp), ""},
		{"mobility header", withHeaders(hoa, ha, 64, protoMH, make([]byte, 16)), "guest-mobility-header"},
		{"mobility header behind options", withHeaders(hoa, ha, 64, protoMH, make([]byte, 16), destOpts), "guest-mobility-header"},
		{"routing header type 0", withHeaders(hoa, cn, 64, 17, udp, rh0), "guest-routing-header"},
		{"routing header type 2", withHeaders(hoa, cn, 64, 17, udp, rh2), "guest-routing-header"},
		{"options", withHeaders(hoa, cn, 64, 17, udp, destOpts), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := boundGuest(t)
			up := datapathtest.NewUplink(1)
			d, _ := newTestDatapath(datapathtest.NewConn(), up, g)
			buf := make([]byte, headroom+maxFrame)
			n := copy(buf[headroom:], ethFrame(lanMAC, guestMAC, tc.pkt))
			d.handle(buf, n, nil)
			d.flush()
			sent := len(up.Out) == 1
			if got := g.Link.Counters.DropMap(); (tc.want == "") != sent || (tc.want != "" && got[tc.want] != 1) {
				t.Errorf("got tunnelled %v, drops %v; want drop %q", sent, got, tc.want)
			}
		})
	}
}

// A guest sending from its router's link-local address does not make
// kgswitch stop answering for the router, nor can it take another guest's.
func TestOwnLinkLocalNotTheRouters(t *testing.T) {
	conn := datapathtest.NewConn()
	g := boundGuest(t)
	d, _ := newTestDatapath(conn, datapathtest.NewUplink(1), g)
	buf := make([]byte, headroom+maxFrame)
	send := func(pkt []byte) {
		n := copy(buf[headroom:], ethFrame(lanMAC, guestMAC, pkt))
		d.handle(buf, n, nil)
		d.flush()
	}
	send(withHeaders(routerLL, netip.MustParseAddr("ff02::2"), 255, 58, []byte{133, 0, 0, 0, 0, 0, 0, 0}))
	if g.owns(routerLL) {
		t.Fatal("the router's link-local address was learnt as the guest's")
	}
	ns, err := ndp.MarshalMessageChecksum(&ndp.NeighborSolicitation{TargetAddress: routerLL,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: guestMAC}}}, netip.MustParseAddr("fe80::5054:ff:fe00:10"), routerLL)
	if err != nil {
		t.Fatal(err)
	}
	for len(conn.Out) > 0 {
		<-conn.Out
	}
	send(withHeaders(netip.MustParseAddr("fe80::5054:ff:fe00:10"), routerLL, 255, 58, ns))
	if len(conn.Out) != 1 || g.Link.Counters.NDAnswered.Load() != 1 {
		t.Errorf("got %d frames, %d answered; want the solicitation for the router answered", len(conn.Out), g.Link.Counters.NDAnswered.Load())
	}
}

// FuzzUpperLayer: any header chain is walked without a panic, and what it
// finds lies inside the packet.
func FuzzUpperLayer(f *testing.F) {
	f.Add(withHeaders(hoa, cn, 64, 17, make([]byte, 8), hopByHop, rh0, firstFrag))
	f.Add(withHeaders(hoa, cn, 64, 58, make([]byte, 8), laterFrag))
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, err := netpkt.ParseIPv6(b)
		if err != nil {
			return
		}
		u, ok := upperLayer(ip)
		if ok && len(u.payload) > len(ip) {
			t.Fatalf("upper-layer payload of %d bytes in a packet of %d", len(u.payload), len(ip))
		}
		_ = guestRefusal(ip)
	})
}
