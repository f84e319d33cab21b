package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
)

var (
	hoa4 = datapathtest.HomeAddr4
	gw4  = datapathtest.Gateway4
	cn4  = datapathtest.CN4
	// neighbour4 is on the guest's home subnet, not on this host.
	neighbour4 = netip.MustParseAddr("192.0.2.20")

	ethFrame4   = datapathtest.EthFrame4
	ipv4Packet  = datapathtest.IPv4Packet
	udpPacket4  = datapathtest.UDPPacket4
	peerMAC     = [6]byte{0x52, 0x54, 0, 0, 0, 0x11}
	peerHoA4    = netip.MustParsePrefix("192.0.2.11/24")
	arpForGW    = datapathtest.ARPRequest(guestMAC, hoa4.Addr(), gw4)
	arpResponse = []byte("an ARP reply")
)

// fakeV4 is an IPv4 responder that answers (or not) everything it is given
// with arpResponse and keeps a copy of each frame.
type fakeV4 struct {
	answer bool
	err    error
	got    [][]byte
}

func (r *fakeV4) Respond(out, frame []byte) ([]byte, bool, error) {
	r.got = append(r.got, append([]byte(nil), frame...))
	if r.err != nil || !r.answer {
		return out, false, r.err
	}
	return append(out, arpResponse...), true, nil
}

// boundGuest4 is boundGuest with an IPv4 home address, its gateway, and a
// responder that answers.
func boundGuest4(tb testing.TB) *Guest {
	g := boundGuest(tb)
	g.HomeAddr4, g.Gateway4, g.V4, g.Tunnel4 = hoa4, gw4, &fakeV4{answer: true}, true
	return g
}

// udp4To is the guest's UDP packet to dst with a payload of n bytes, TTL ttl
// and DF as given.
func udp4To(dst netip.Addr, ttl uint8, df bool, n int) []byte {
	p := udpPacket4(hoa4.Addr(), dst, n)
	p[8] = ttl
	if !df {
		p[6] = 0
	}
	netpkt.IPv4(p).SetChecksum()
	return p
}

// dhcp is a DHCP message from the guest's client port to the server port,
// from src to dst (RFC 2131 §4.1), its body left zero.
func dhcp(src, dst netip.Addr) []byte {
	udp := make([]byte, 8+240)
	binary.BigEndian.PutUint16(udp[0:2], dhcpClientPort)
	binary.BigEndian.PutUint16(udp[2:4], dhcpServerPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	return ipv4Packet(src, dst, 64, netpkt.ProtoUDP, false, udp)
}

// handleOne runs frame through d as Run does and flushes.
func handleOne(d *Datapath, frame []byte) {
	buf := make([]byte, headroom+maxFrame)
	n := copy(buf[headroom:], frame)
	d.handle(buf, n, nil)
	d.flush()
}

// tunnelled4 returns the inner IPv4 packets of what reached up, after
// checking each went from the care-of address to the Home Agent as IPv4 in
// IPv6.
func tunnelled4(t *testing.T, up *datapathtest.Uplink) []netpkt.IPv4 {
	t.Helper()
	var got []netpkt.IPv4
	for {
		select {
		case s := <-up.Out:
			outer, err := netpkt.ParseIPv6(s.Pkt)
			if err != nil || s.Dst != ha || outer.Src() != coa || outer.Dst() != ha || outer.NextHeader() != netpkt.ProtoIPv4 || outer.HopLimit() != tunnelHopLimit {
				t.Fatalf("got %v -> %v (to %v) next header %d (%v); want IPv4 in IPv6 %v -> %v", outer.Src(), outer.Dst(), s.Dst, outer.NextHeader(), err, coa, ha)
			}
			inner, err := netpkt.ParseIPv4(outer.Payload())
			if err != nil || len(inner) != len(outer.Payload()) {
				t.Fatalf("got inner packet %x: %v", outer.Payload(), err)
			}
			got = append(got, inner)
		default:
			return got
		}
	}
}

// What a guest sends over IPv4, by destination and source, as its home
// gateway would forward it.
func TestGuestIPv4(t *testing.T) {
	ttl1 := func(p []byte) []byte { p[8] = 1; netpkt.IPv4(p).SetChecksum(); return p }
	badSum := udp4To(cn4, 64, true, 20)
	badSum[11] ^= 1
	shortIHL := udp4To(cn4, 64, true, 20)
	shortIHL[0] = 0x44
	longTotal := udp4To(cn4, 64, true, 20)
	binary.BigEndian.PutUint16(longTotal[2:4], uint16(len(longTotal)+1))
	netpkt.IPv4(longTotal).SetChecksum()
	for _, tc := range []struct {
		name   string
		frame  []byte
		edit   func(g *Guest)
		tunnel int    // packets into the tunnel
		ttl    uint8  // of the first tunnelled packet
		local  bool   // delivered to the peer guest
		icmp   []byte // type, code of an ICMP error back to the guest
		drop   string
	}{
		{name: "routed: TTL decremented", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, 20)), tunnel: 1, ttl: 63},
		{name: "home subnet: not routed at home, TTL kept", frame: ethFrame4(lanMAC, guestMAC, udp4To(neighbour4, 64, true, 20)), tunnel: 1, ttl: 64},
		{name: "home subnet, TTL 1", frame: ethFrame4(lanMAC, guestMAC, udp4To(neighbour4, 1, true, 20)), tunnel: 1, ttl: 1},
		{name: "guest of the home subnet here", frame: ethFrame4(lanMAC, guestMAC, udp4To(peerHoA4.Addr(), 64, true, 20)), local: true},
		{name: "exactly the tunnel MTU", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, TunnelMTU-28)), tunnel: 1, ttl: 63},
		{name: "spoofed source", frame: ethFrame4(lanMAC, guestMAC, udpPacket4(netip.MustParseAddr("192.0.2.99"), cn4, 20)), drop: "bad-source"},
		{name: "foreign LAN's address as source", frame: ethFrame4(lanMAC, guestMAC, udpPacket4(netip.MustParseAddr("203.0.113.5"), cn4, 20)), drop: "bad-source"},
		{name: "limited broadcast", frame: ethFrame4(lanMAC, guestMAC, udp4To(netip.MustParseAddr("255.255.255.255"), 64, false, 20)), drop: "absorbed"},
		{name: "subnet broadcast", frame: ethFrame4(lanMAC, guestMAC, udp4To(netip.MustParseAddr("192.0.2.255"), 64, false, 20)), drop: "absorbed"},
		{name: "multicast", frame: ethFrame4(lanMAC, guestMAC, udp4To(netip.MustParseAddr("224.0.0.251"), 255, false, 20)), drop: "absorbed"},
		{name: "spoofed broadcast", frame: ethFrame4(lanMAC, guestMAC, udpPacket4(netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("255.255.255.255"), 20)), drop: "absorbed"},
		{name: "loopback destination", frame: ethFrame4(lanMAC, guestMAC, udp4To(netip.MustParseAddr("127.0.0.1"), 64, true, 20)), drop: "martian"},
		{name: "this-network destination", frame: ethFrame4(lanMAC, guestMAC, udp4To(netip.MustParseAddr("0.1.2.3"), 64, true, 20)), drop: "martian"},
		{name: "link-local destination", frame: ethFrame4(lanMAC, guestMAC, udp4To(netip.MustParseAddr("169.254.1.1"), 64, true, 20)), drop: "link-local"},
		{name: "bad header checksum", frame: ethFrame4(lanMAC, guestMAC, badSum), drop: "malformed"},
		{name: "header length 16", frame: ethFrame4(lanMAC, guestMAC, shortIHL), drop: "malformed"},
		{name: "total length beyond the frame", frame: ethFrame4(lanMAC, guestMAC, longTotal), drop: "malformed"},
		{name: "TTL 1: Time Exceeded", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 1, true, 20)), icmp: []byte{11, 0}, drop: "ttl-expired"},
		{name: "TTL 0: Time Exceeded", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 0, true, 20)), icmp: []byte{11, 0}, drop: "ttl-expired"},
		{name: "TTL 1 without a gateway address: no answer", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 1, true, 20)), edit: func(g *Guest) { g.Gateway4 = netip.Addr{} }, drop: "ttl-expired"},
		{name: "TTL 1 of an ICMP error: no answer", frame: ethFrame4(lanMAC, guestMAC, ttl1(ipv4Packet(hoa4.Addr(), cn4, 1, netpkt.ProtoICMPv4, false, append([]byte{icmp4DestUnreachable, 3}, make([]byte, 34)...)))), drop: "ttl-expired"},
		{name: "TTL 1 of a later fragment: no answer", frame: ethFrame4(lanMAC, guestMAC, laterFragment(udp4To(cn4, 1, false, 20))), drop: "ttl-expired"},
		{name: "too big with DF: Fragmentation Needed", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, TunnelMTU-27)), icmp: []byte{3, 4}, drop: "too-big"},
		{name: "not bound", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, 20)), edit: func(g *Guest) { g.Tunnel, g.Tunnel4 = false, false }, drop: "not-bound"},
		{name: "IPv6 bound, IPv4 not accepted", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, 20)), edit: func(g *Guest) { g.Tunnel4 = false }, drop: "not-bound"},
		{name: "IPv6 bound, IPv4 not accepted: not held", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, 20)),
			edit: func(g *Guest) { g.Tunnel4, g.Hold = false, NewArrival(8, 0, time.Minute, &g.Link.Counters) }, drop: "not-bound"},
		{name: "pending", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, 20)), edit: func(g *Guest) { g.Pending = true }, drop: "inactive"},
		{name: "guest without IPv4", frame: ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, 20)), edit: func(g *Guest) { g.HomeAddr4 = netip.Prefix{} }, drop: "not-ipv6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, up := datapathtest.NewConn(), datapathtest.NewUplink(64)
			g := boundGuest4(t)
			if tc.edit != nil {
				tc.edit(g)
			}
			d, _ := newTestDatapath(conn, up, g)
			f := NewFIB(coa, TunnelMTU, kgMAC)
			f.AddGuest(g)
			peer := &Guest{Key: "peer", MAC: peerMAC, HomeAddr: netip.MustParseAddr("2001:db8:2000::11"), Prefix: homePfx, HomeAgent: ha,
				Tunnel: true, HomeAddr4: peerHoA4, Link: &GuestLink{}}
			f.AddGuest(peer)
			d.Publish(f)
			sent := netpkt.Ethernet(tc.frame).Payload()
			handleOne(d, tc.frame)

			got := tunnelled4(t, up)
			if len(got) != tc.tunnel {
				t.Fatalf("got %d packets tunnelled, want %d", len(got), tc.tunnel)
			}
			if tc.tunnel > 0 {
				in := got[0]
				if in.TTL() != tc.ttl || !bytes.Equal(in[12:], sent[12:]) || !bytes.Equal(in[:8], sent[:8]) {
					t.Errorf("got inner %x, want the guest's %x with TTL %d", []byte(in[:20]), sent[:20], tc.ttl)
				}
				if c := g.Link.Counters.ToTunnelPackets.Load(); c != 1 || g.Link.Counters.ToTunnelBytes.Load() != uint64(len(sent)) {
					t.Errorf("got %d packets, %d bytes counted to the tunnel, want 1, %d", c, g.Link.Counters.ToTunnelBytes.Load(), len(sent))
				}
			}
			var frames [][]byte
			for len(conn.Out) > 0 {
				frames = append(frames, <-conn.Out)
			}
			switch {
			case tc.local:
				eth := netpkt.Ethernet(frames[0])
				if len(frames) != 1 || [6]byte(eth.Dst()) != peerMAC || eth.EtherType() != netpkt.EtherTypeIPv4 || !bytes.Equal(eth.Payload(), sent) {
					t.Errorf("got %d frames (%x), want the packet unchanged to the peer guest", len(frames), frames)
				}
				if g.Link.Counters.LocalPackets.Load() != 1 {
					t.Errorf("got LocalPackets = %d, want 1", g.Link.Counters.LocalPackets.Load())
				}
			case tc.icmp != nil:
				if len(frames) != 1 {
					t.Fatalf("got %d frames back, want one ICMP error", len(frames))
				}
				checkICMPv4Error(t, frames[0], tc.icmp[0], tc.icmp[1], sent)
			case len(frames) != 0:
				t.Errorf("got %d frames back, want none", len(frames))
			}
			drops := g.Link.Counters.DropMap()
			if tc.drop == "" && len(drops) != 0 || tc.drop != "" && (len(drops) != 1 || drops[tc.drop] != 1) {
				t.Errorf("got drops %v, want %q", drops, tc.drop)
			}
		})
	}
}

// laterFragment makes p a fragment other than the first.
func laterFragment(p []byte) []byte {
	binary.BigEndian.PutUint16(p[6:8], 185)
	netpkt.IPv4(p).SetChecksum()
	return p
}

// checkICMPv4Error checks that frame is an ICMP error of type typ and code
// from the guest's gateway to the guest, quoting invoking.
func checkICMPv4Error(t *testing.T, frame []byte, typ, code uint8, invoking []byte) {
	t.Helper()
	eth := netpkt.Ethernet(frame)
	ip, err := netpkt.ParseIPv4(eth.Payload())
	if err != nil || [6]byte(eth.Dst()) != [6]byte(guestMAC) || eth.EtherType() != netpkt.EtherTypeIPv4 ||
		ip.Src() != gw4 || ip.Dst() != hoa4.Addr() || ip.Protocol() != netpkt.ProtoICMPv4 || len(ip) > maxICMPv4 {
		t.Fatalf("got frame %x (%v), want ICMP from %v to %v of at most 576 bytes", frame, err, gw4, hoa4.Addr())
	}
	icmp := ip.Payload()
	if icmp[0] != typ || icmp[1] != code || netpkt.InternetChecksum(icmp) != 0 {
		t.Errorf("got ICMP type %d code %d checksum sum %#x, want %d %d valid", icmp[0], icmp[1], netpkt.InternetChecksum(icmp), typ, code)
	}
	wantMTU := uint32(0)
	if typ == icmp4DestUnreachable && code == icmp4FragNeeded {
		wantMTU = TunnelMTU
	}
	if got := binary.BigEndian.Uint32(icmp[4:8]); got != wantMTU {
		t.Errorf("got next-hop MTU field = %d, want = %d", got, wantMTU)
	}
	quote := icmp[8:]
	if len(quote) < 28 || !bytes.Equal(quote, invoking[:len(quote)]) {
		t.Errorf("got quote %x, want the start of the guest's packet %x", quote, invoking[:28])
	}
}

// ARP and DHCP go to the guest's responder and nowhere else; without one
// they are dropped.
func TestGuestARPAndDHCP(t *testing.T) {
	discover := dhcp(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"))
	renewal := dhcp(hoa4.Addr(), gw4)
	for _, tc := range []struct {
		name     string
		frame    []byte
		v4       *fakeV4
		noIPv4   bool
		unbound  bool // neither home address bound yet
		asked    bool
		answered bool
		drop     string
	}{
		{name: "ARP answered", frame: arpForGW, v4: &fakeV4{answer: true}, asked: true, answered: true},
		{name: "ARP the home link would not answer", frame: arpForGW, v4: &fakeV4{}, asked: true, drop: "arp-dhcp-ignored"},
		{name: "ARP malformed", frame: arpForGW, v4: &fakeV4{err: errors.New("short")}, asked: true, drop: "malformed"},
		{name: "ARP without a responder", frame: arpForGW, drop: "arp-dhcp-ignored"},
		{name: "ARP from a guest without IPv4", frame: arpForGW, v4: &fakeV4{answer: true}, noIPv4: true, drop: "not-ipv6"},
		{name: "DHCP discover", frame: ethFrame4(lanMAC, guestMAC, discover), v4: &fakeV4{answer: true}, asked: true, answered: true},
		{name: "DHCP renewal to the server", frame: ethFrame4(lanMAC, guestMAC, renewal), v4: &fakeV4{answer: true}, asked: true, answered: true},
		{name: "DHCP without a responder", frame: ethFrame4(lanMAC, guestMAC, discover), drop: "arp-dhcp-ignored"},
		// The home link answers whether or not the Home Agent binds
		// anything: a guest that lost its lease abroad gets it back.
		{name: "ARP answered before any binding", frame: arpForGW, v4: &fakeV4{answer: true}, unbound: true, asked: true, answered: true},
		{name: "DHCP answered before any binding", frame: ethFrame4(lanMAC, guestMAC, discover), v4: &fakeV4{answer: true}, unbound: true, asked: true, answered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, up := datapathtest.NewConn(), datapathtest.NewUplink(4)
			g := boundGuest4(t)
			g.V4 = nil
			if tc.v4 != nil {
				g.V4 = tc.v4
			}
			if tc.noIPv4 {
				g.HomeAddr4 = netip.Prefix{}
			}
			if tc.unbound {
				g.Tunnel, g.Tunnel4 = false, false
			}
			d, _ := newTestDatapath(conn, up, g)
			handleOne(d, tc.frame)
			if tc.v4 != nil && (len(tc.v4.got) == 1) != tc.asked {
				t.Errorf("got responder asked %d times, want %v", len(tc.v4.got), tc.asked)
			}
			if tc.asked && !bytes.Equal(tc.v4.got[0], tc.frame) {
				t.Errorf("got responder given %x, want the guest's frame", tc.v4.got[0])
			}
			if len(up.Out) != 0 {
				t.Errorf("got %d packets to the uplink, want none", len(up.Out))
			}
			if tc.answered {
				if len(conn.Out) != 1 || !bytes.Equal(<-conn.Out, arpResponse) || g.Link.Counters.V4Answered.Load() != 1 {
					t.Errorf("got the answer not sent, or V4Answered = %d", g.Link.Counters.V4Answered.Load())
				}
			} else if len(conn.Out) != 0 {
				t.Errorf("got %d frames back, want none", len(conn.Out))
			}
			drops := g.Link.Counters.DropMap()
			if tc.drop == "" && len(drops) != 0 || tc.drop != "" && (len(drops) != 1 || drops[tc.drop] != 1) {
				t.Errorf("got drops %v, want %q", drops, tc.drop)
			}
		})
	}
}

// reassemble puts IPv4 fragments back together as their destination
// would, checking each against the tunnel's MTU and RFC 791's rules, and
// returns the first fragment's header and the data.
func reassemble(t *testing.T, frags []netpkt.IPv4, lastMF bool, base int) (first netpkt.IPv4, data []byte) {
	t.Helper()
	next := base
	for i, fr := range frags {
		if len(fr) > TunnelMTU {
			t.Fatalf("fragment %d: got %d bytes, want at most %d", i, len(fr), TunnelMTU)
		}
		if fr.FragmentOffset() != next {
			t.Fatalf("fragment %d: got offset %d, want %d", i, fr.FragmentOffset(), next)
		}
		last := i == len(frags)-1
		if mf := fr.MoreFragments(); mf != (!last || lastMF) || fr.DontFragment() {
			t.Fatalf("fragment %d: got MF %v DF %v", i, mf, fr.DontFragment())
		}
		if !last && len(fr.Payload())%8 != 0 {
			t.Fatalf("fragment %d: got %d data bytes, not a multiple of 8", i, len(fr.Payload()))
		}
		data = append(data, fr.Payload()...)
		next += len(fr.Payload()) / 8
	}
	return frags[0], data
}

// A packet without DF that the tunnel cannot carry whole goes as fragments.
func TestGuestIPv4Fragmented(t *testing.T) {
	// Record Route (not copied into later fragments) and Router Alert
	// (copied), then End of Option List.
	rr := []byte{7, 7, 4, 0, 0, 0, 0}
	ra := []byte{0x94, 4, 0, 0}
	withOptions := func(p []byte) []byte {
		opts := append(append(append([]byte(nil), rr...), ra...), 0)
		q := append(append(append([]byte(nil), p[:20]...), opts...), p[20:]...)
		q[0] = 0x45 + byte(len(opts)/4)
		binary.BigEndian.PutUint16(q[2:4], uint16(len(q)))
		netpkt.IPv4(q).SetChecksum()
		return q
	}
	asFragment := func(p []byte) []byte { // a middle fragment at offset 800 bytes
		binary.BigEndian.PutUint16(p[6:8], netpkt.IPv4MoreFragments|100)
		netpkt.IPv4(p).SetChecksum()
		return p
	}
	for _, tc := range []struct {
		name   string
		pkt    []byte
		frags  int
		lastMF bool
		base   int
	}{
		{name: "one byte too many", pkt: udp4To(cn4, 64, false, TunnelMTU-27), frags: 2},
		{name: "64 KiB", pkt: udp4To(cn4, 64, false, 65535-28), frags: 46},
		{name: "with options", pkt: withOptions(udp4To(cn4, 64, false, 4000)), frags: 3},
		{name: "a fragment already", pkt: asFragment(udp4To(cn4, 64, false, 3000)), frags: 3, lastMF: true, base: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := datapathtest.NewUplink(64)
			g := boundGuest4(t)
			d, _ := newTestDatapath(datapathtest.NewConn(), up, g)
			sent := netpkt.IPv4(append([]byte(nil), tc.pkt...))
			handleOne(d, ethFrame4(lanMAC, guestMAC, tc.pkt))
			frags := tunnelled4(t, up)
			if len(frags) != tc.frags {
				t.Fatalf("got %d fragments, want %d", len(frags), tc.frags)
			}
			first, data := reassemble(t, frags, tc.lastMF, tc.base)
			if !bytes.Equal(data, sent.Payload()) {
				t.Errorf("got %d bytes reassembled, not the guest's %d", len(data), len(sent.Payload()))
			}
			if !bytes.Equal(first.Options(), sent.Options()) {
				t.Errorf("got first fragment's options %x, want %x", first.Options(), sent.Options())
			}
			for i, fr := range frags {
				if fr.TTL() != 63 || fr.ID() != sent.ID() || fr.Protocol() != sent.Protocol() || fr.Src() != sent.Src() || fr.Dst() != sent.Dst() {
					t.Errorf("fragment %d: got header %x, want the guest's %x with TTL 63", i, []byte(fr[:20]), []byte(sent[:20]))
				}
				if i > 0 && len(sent.Options()) > 0 && !bytes.Equal(fr.Options(), ra) {
					t.Errorf("fragment %d: got options %x, want only the copied %x", i, fr.Options(), ra)
				}
			}
			c := &g.Link.Counters
			if c.ToTunnelPackets.Load() != uint64(tc.frags) || len(c.DropMap()) != 0 {
				t.Errorf("got %d packets to the tunnel, drops %v; want %d, none", c.ToTunnelPackets.Load(), c.DropMap(), tc.frags)
			}
		})
	}
}

func TestCopiedOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []byte
		want []byte
	}{
		{"none", nil, nil},
		{"not copied", []byte{7, 7, 4, 0, 0, 0, 0, 0}, nil},
		{"copied, padded", []byte{1, 0x94, 4, 0, 0, 0, 0, 0}, []byte{0x94, 4, 0, 0}},
		{"after End of Option List", []byte{0, 0x94, 4, 0, 0, 0, 0, 0}, nil},
		{"length past the end", []byte{0x94, 9, 0, 0}, nil},
		{"length 0", []byte{0x83, 0, 0, 0}, nil},
		{"loose source route, odd length", []byte{0x83, 7, 4, 1, 2, 3, 4, 0}, []byte{0x83, 7, 4, 1, 2, 3, 4, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dst [40]byte
			n := copiedOptions(dst[:], tc.opts)
			if !bytes.Equal(dst[:n], tc.want) && !(n == 0 && tc.want == nil) {
				t.Errorf("got %x, want = %x", dst[:n], tc.want)
			}
		})
	}
}

// What the Home Agent tunnels over IPv4 reaches the guest only as what a
// router could have forwarded to it.
func TestTunnelIPv4(t *testing.T) {
	other := netip.MustParseAddr("2001:db8:9999::1")
	badSum := udpPacket4(cn4, hoa4.Addr(), 20)
	badSum[11] ^= 1
	for _, tc := range []struct {
		name        string
		outerSrc    netip.Addr
		inner       []byte
		tunnel, reg bool
		// v6only: the IPv6 home address is bound, the IPv4 one is not.
		v6only bool
		drop   string // the guest's drop reason
		global string // a drop of no VM
	}{
		{name: "bound", outerSrc: ha, inner: udpPacket4(cn4, hoa4.Addr(), 20), tunnel: true},
		{name: "registering", outerSrc: ha, inner: udpPacket4(cn4, hoa4.Addr(), 20), reg: true},
		{name: "TTL 1", outerSrc: ha, inner: ipv4Packet(cn4, hoa4.Addr(), 1, netpkt.ProtoUDP, false, make([]byte, 8)), tunnel: true},
		{name: "not bound", outerSrc: ha, inner: udpPacket4(cn4, hoa4.Addr(), 20), drop: "not-bound"},
		{name: "IPv6 bound, IPv4 refused", outerSrc: ha, inner: udpPacket4(cn4, hoa4.Addr(), 20), v6only: true, drop: "not-bound"},
		{name: "IPv4 refused, refreshing", outerSrc: ha, inner: udpPacket4(cn4, hoa4.Addr(), 20), v6only: true, reg: true, drop: "not-bound"},
		{name: "not from the Home Agent", outerSrc: other, inner: udpPacket4(cn4, hoa4.Addr(), 20), tunnel: true, drop: "bad-tunnel-source"},
		{name: "loopback source", outerSrc: ha, inner: udpPacket4(netip.MustParseAddr("127.0.0.1"), hoa4.Addr(), 20), tunnel: true, drop: "martian"},
		{name: "this-network source", outerSrc: ha, inner: udpPacket4(netip.MustParseAddr("0.0.0.0"), hoa4.Addr(), 20), tunnel: true, drop: "martian"},
		{name: "broadcast source", outerSrc: ha, inner: udpPacket4(netip.MustParseAddr("255.255.255.255"), hoa4.Addr(), 20), tunnel: true, drop: "martian"},
		{name: "multicast source", outerSrc: ha, inner: udpPacket4(netip.MustParseAddr("224.0.0.1"), hoa4.Addr(), 20), tunnel: true, drop: "tunnel-link-local"},
		{name: "link-local source", outerSrc: ha, inner: udpPacket4(netip.MustParseAddr("169.254.7.7"), hoa4.Addr(), 20), tunnel: true, drop: "tunnel-link-local"},
		{name: "unknown IPv4 home address", outerSrc: ha, inner: udpPacket4(cn4, netip.MustParseAddr("192.0.2.99"), 20), tunnel: true, global: "unknown-home"},
		{name: "bad inner checksum", outerSrc: ha, inner: badSum, tunnel: true, global: "malformed"},
		{name: "IPv6 inside next header 4", outerSrc: ha, inner: udpPacket(cn, hoa, 20), tunnel: true, global: "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := datapathtest.NewConn()
			g := boundGuest4(t)
			g.Tunnel, g.Tunnel4, g.Registering = tc.tunnel || tc.v6only, tc.tunnel, tc.reg
			global := &Counters{}
			d, _ := newTestDatapath(conn, datapathtest.NewUplink(1), g)
			d.global = global
			handleOne(d, tunnel4Frame(tc.outerSrc, tc.inner, 6))
			delivered := len(conn.Out) == 1
			if want := tc.drop == "" && tc.global == ""; delivered != want {
				t.Fatalf("got delivered %v, want %v (drops %v, global %v)", delivered, want, g.Link.Counters.DropMap(), global.DropMap())
			}
			if delivered {
				eth := netpkt.Ethernet(<-conn.Out)
				if [6]byte(eth.Dst()) != [6]byte(guestMAC) || [6]byte(eth.Src()) != [6]byte(kgMAC) || eth.EtherType() != netpkt.EtherTypeIPv4 || !bytes.Equal(eth.Payload(), tc.inner) {
					t.Errorf("got frame %x, want the inner packet unchanged to the guest as IPv4", []byte(eth))
				}
				if c := &g.Link.Counters; c.FromTunnelPackets.Load() != 1 || c.FromTunnelBytes.Load() != uint64(len(tc.inner)) {
					t.Errorf("got %d packets %d bytes from the tunnel, want 1, %d", c.FromTunnelPackets.Load(), c.FromTunnelBytes.Load(), len(tc.inner))
				}
			}
			if got := g.Link.Counters.DropMap(); tc.drop != "" && (len(got) != 1 || got[tc.drop] != 1) || tc.drop == "" && len(got) != 0 {
				t.Errorf("got drops %v, want %q", got, tc.drop)
			}
			if got := global.DropMap(); tc.global != "" && (len(got) != 1 || got[tc.global] != 1) || tc.global == "" && len(got) != 0 {
				t.Errorf("got global drops %v, want %q", got, tc.global)
			}
		})
	}
}

// tunnel4Frame is an IPv4-in-IPv6 frame from outerSrc to the care-of
// address carrying inner, followed by pad bytes of Ethernet padding.
func tunnel4Frame(outerSrc netip.Addr, inner []byte, pad int) []byte {
	tun := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(inner)+pad)
	netpkt.PutIPv6(tun, len(inner), netpkt.ProtoIPv4, 64, outerSrc, coa)
	return ethFrame(kgMAC, lanMAC, append(append(tun, inner...), make([]byte, pad)...))
}

// While the binding is set up, the guest's IPv4 waits in the arrival hold
// with its IPv6, and leaves in order, each as what it is; unless the Home
// Agent bound IPv6 alone, which leaves the guest's IPv4 nowhere to go.
func TestArrivalHoldIPv4(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ipv4     bool
		want     []uint8 // next headers tunnelled, in order
		released uint64
		notBound uint64
	}{
		{name: "IPv4 bound too", ipv4: true, want: []uint8{netpkt.ProtoIPv4, netpkt.ProtoIPv6, netpkt.ProtoIPv4}, released: 2, notBound: 1},
		{name: "IPv6 bound alone", want: []uint8{netpkt.ProtoIPv6}, released: 1, notBound: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := datapathtest.NewUplink(16)
			g := boundGuest4(t)
			g.Tunnel, g.Tunnel4 = false, false
			g.Hold = NewArrival(8, 0, time.Minute, &g.Link.Counters)
			d, _ := newTestDatapath(datapathtest.NewConn(), up, g)
			handleOne(d, ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, 10)))
			handleOne(d, guestFrame(100))
			handleOne(d, ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, TunnelMTU-27))) // too big: not held
			if len(up.Out) != 0 {
				t.Fatalf("got %d packets tunnelled before the release", len(up.Out))
			}
			d.ReleaseArrival(g.Hold, coa, ha, tc.ipv4)
			// Handled with the snapshot of before the release.
			handleOne(d, ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, true, 11)))
			var got []uint8
			for len(up.Out) > 0 {
				got = append(got, netpkt.IPv6((<-up.Out).Pkt).NextHeader())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got next headers %v tunnelled, want %v", got, tc.want)
			}
			if c := &g.Link.Counters; c.Held.Load() != 2 || c.Released.Load() != tc.released || c.Drops[DropNotBound].Load() != tc.notBound {
				t.Errorf("got %d held, %d released, %d not bound; want 2, %d, %d", c.Held.Load(), c.Released.Load(), c.Drops[DropNotBound].Load(), tc.released, tc.notBound)
			}
		})
	}
}

// The Home Agent's refusal of a tunnelled IPv4 packet is a hint like that
// of an IPv6 one.
func TestTunnelRefusedHintIPv4(t *testing.T) {
	inner := udpPacket4(hoa4.Addr(), cn4, 100)
	pkt := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(inner))
	netpkt.PutIPv6(pkt, len(inner), netpkt.ProtoIPv4, 64, coa, ha)
	ours := append(pkt, inner...)
	for _, tc := range []struct {
		name  string
		quote int
		hint  bool
	}{
		{"whole", 0, true},
		{"cut after the inner header", netpkt.IPv6Len + netpkt.IPv4Len, true},
		{"cut inside the inner header", netpkt.IPv6Len + netpkt.IPv4Len - 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := boundGuest4(t)
			d, _ := newTestDatapath(datapathtest.NewConn(), datapathtest.NewUplink(1), g)
			handleOne(d, ethFrame(kgMAC, lanMAC, icmpError(icmpDestUnreachable, ha, coa, ours, tc.quote)))
			if got := g.Link.Counters.TunnelRefused.Load() == 1; got != tc.hint {
				t.Errorf("got hint %v, want %v", got, tc.hint)
			}
		})
	}
}

// tcpSuperFrame4 is tcpSuperFrame for IPv4: one routed frame with payload
// bytes of TCP data, DF set, the TCP checksum left to an offload.
func tcpSuperFrame4(payload int, flags byte) ([]byte, []byte) {
	v6, data := tcpSuperFrame(payload, flags)
	tcp := netpkt.Ethernet(v6).Payload()[netpkt.IPv6Len:]
	ip := ipv4Packet(hoa4.Addr(), cn4, 64, protoTCP, true, tcp)
	return ethFrame4(lanMAC, guestMAC, ip), data
}

// A TCP packet bigger than any link (a guest's segmentation offload at
// work) leaves as segments that fit the tunnel, not as Fragmentation Needed.
func TestSegmentTCP4(t *testing.T) {
	const ack = 0x10
	frame, data := tcpSuperFrame4(20000, ack|tcpPSH|tcpFIN|tcpCWR)
	up := datapathtest.NewUplink(64)
	g := boundGuest4(t)
	conn := datapathtest.NewConn()
	d, _ := newTestDatapath(conn, up, g)
	handleOne(d, frame)
	segs := tunnelled4(t, up)
	if len(segs) < 2 || len(conn.Out) != 0 {
		t.Fatalf("got %d segments and %d frames back, want segments only", len(segs), len(conn.Out))
	}
	var got []byte
	seq := uint32(0xfffff000)
	for i, s := range segs {
		last := i == len(segs)-1
		tcp := s.Payload()
		if len(s) > TunnelMTU || s.TTL() != 63 || s.ID() != 0x1234+uint16(i) || !s.DontFragment() || s.Src() != hoa4.Addr() || s.Dst() != cn4 {
			t.Fatalf("segment %d: got %d bytes, header %x", i, len(s), []byte(s[:20]))
		}
		if netpkt.Checksum4(s.Src(), s.Dst(), protoTCP, tcp) != 0 {
			t.Fatalf("segment %d: TCP checksum does not verify", i)
		}
		if got := binary.BigEndian.Uint32(tcp[4:8]); got != seq {
			t.Fatalf("segment %d: got seq %#x, want %#x", i, got, seq)
		}
		wantFlags := byte(ack)
		if i == 0 {
			wantFlags |= tcpCWR
		}
		if last {
			wantFlags |= tcpPSH | tcpFIN
		}
		if tcp[13] != wantFlags {
			t.Errorf("segment %d: got flags %#x, want %#x", i, tcp[13], wantFlags)
		}
		got = append(got, tcp[32:]...)
		seq += uint32(len(tcp) - 32)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("got %d bytes of data through the segments, want the guest's %d", len(got), len(data))
	}
	if c := &g.Link.Counters; c.ToTunnelPackets.Load() != uint64(len(segs)) || len(c.DropMap()) != 0 {
		t.Errorf("got %d to the tunnel, drops %v; want %d, none", c.ToTunnelPackets.Load(), c.DropMap(), len(segs))
	}
}
