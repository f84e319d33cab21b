package v4responder

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	guestMAC   = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x10}
	answerMAC  = net.HardwareAddr{0x02, 0x6b, 0x67, 0, 0, 1}
	gatewayMAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x01}
	peerMAC    = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x02}
	broadMAC   = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	hoa4       = netip.MustParseAddr("192.0.2.10")
	gateway    = netip.MustParseAddr("192.0.2.1")
	peer       = netip.MustParseAddr("192.0.2.2")
	other      = netip.MustParseAddr("192.0.2.77")
	guest      = Guest{MAC: guestMAC, Addr: hoa4}
)

func testLink() HomeLink4 {
	return HomeLink4{
		Subnet:     netip.MustParsePrefix("192.0.2.0/24"),
		Gateway:    gateway,
		GatewayMAC: gatewayMAC,
		Neighbors:  map[netip.Addr]net.HardwareAddr{peer: peerMAC},
		DNS:        []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("198.51.100.53")},
		LeaseTime:  time.Hour,
		DomainName: "home.example",
		MTU:        1460,
	}
}

func testResponder(t testing.TB, link HomeLink4) *Responder {
	r, err := New(link, answerMAC)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func encode(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// arpFrame builds an ARP request as a guest sends it.
func arpFrame(t testing.TB, dstMAC, sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
	return encode(t,
		&layers.Ethernet{SrcMAC: guestMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, Operation: layers.ARPRequest,
			SourceHwAddress: sha, SourceProtAddress: spa.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: tpa.AsSlice()})
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*HomeLink4)
	}{
		{"IPv6 subnet", func(l *HomeLink4) { l.Subnet = netip.MustParsePrefix("2001:db8::/64") }},
		{"unmasked subnet", func(l *HomeLink4) { l.Subnet = netip.MustParsePrefix("192.0.2.1/24") }},
		{"gateway off the subnet", func(l *HomeLink4) { l.Gateway = netip.MustParseAddr("198.51.100.1") }},
		{"gateway is the broadcast address", func(l *HomeLink4) { l.Gateway = netip.MustParseAddr("192.0.2.255") }},
		{"short gateway MAC", func(l *HomeLink4) { l.GatewayMAC = l.GatewayMAC[:4] }},
		{"neighbour off the subnet", func(l *HomeLink4) { l.Neighbors[netip.MustParseAddr("198.51.100.2")] = peerMAC }},
		{"neighbour without a MAC", func(l *HomeLink4) { l.Neighbors[other] = nil }},
		{"IPv6 DNS server", func(l *HomeLink4) { l.DNS = []netip.Addr{netip.MustParseAddr("2001:db8::53")} }},
		{"no lease time", func(l *HomeLink4) { l.LeaseTime = 0 }},
		{"fractional lease time", func(l *HomeLink4) { l.LeaseTime = 1500 * time.Millisecond }},
		{"infinite lease time", func(l *HomeLink4) { l.LeaseTime = 0xffffffff * time.Second }},
		{"MTU below 68", func(l *HomeLink4) { l.MTU = 67 }},
		{"options beyond what every client accepts", func(l *HomeLink4) {
			l.DomainName = strings.Repeat("x", 250)
			for i := range 10 {
				l.DNS = append(l.DNS, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
			}
		}},
		{"IPv6 server identifier", func(l *HomeLink4) { l.ServerID = netip.MustParseAddr("2001:db8::1") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLink()
			tt.mod(&l)
			if _, err := New(l, answerMAC); err == nil {
				t.Errorf("New accepted %+v", l)
			}
		})
	}
	if _, err := New(testLink(), answerMAC[:5]); err == nil {
		t.Errorf("New accepted a 5-byte answering MAC")
	}
}

func TestRespondARP(t *testing.T) {
	noMACs := testLink()
	noMACs.GatewayMAC, noMACs.Neighbors = nil, nil
	tests := []struct {
		name    string
		link    HomeLink4
		dstMAC  net.HardwareAddr
		sha     net.HardwareAddr
		spa     netip.Addr
		tpa     netip.Addr
		want    Decision
		wantMAC net.HardwareAddr
	}{
		{"gateway, real MAC known", testLink(), broadMAC, guestMAC, hoa4, gateway, Answered, gatewayMAC},
		{"gateway, real MAC unknown", noMACs, broadMAC, guestMAC, hoa4, gateway, Answered, answerMAC},
		{"known neighbour", testLink(), broadMAC, guestMAC, hoa4, peer, Answered, peerMAC},
		{"unknown neighbour", testLink(), broadMAC, guestMAC, hoa4, other, Answered, answerMAC},
		{"unicast poll keeps the cached MAC", noMACs, gatewayMAC, guestMAC, hoa4, gateway, Answered, gatewayMAC},
		{"probe for own address", testLink(), broadMAC, guestMAC, netip.IPv4Unspecified(), hoa4, IgnoredProbe, nil},
		{"probe for another address", testLink(), broadMAC, guestMAC, netip.IPv4Unspecified(), other, IgnoredProbe, nil},
		{"announcement", testLink(), broadMAC, guestMAC, hoa4, hoa4, IgnoredOwnAddress, nil},
		{"off-link target", testLink(), broadMAC, guestMAC, hoa4, netip.MustParseAddr("198.51.100.7"), IgnoredOffLink, nil},
		{"subnet broadcast address", testLink(), broadMAC, guestMAC, hoa4, netip.MustParseAddr("192.0.2.255"), IgnoredOffLink, nil},
		{"network address", testLink(), broadMAC, guestMAC, hoa4, netip.MustParseAddr("192.0.2.0"), IgnoredOffLink, nil},
		{"sender address not the guest's", testLink(), broadMAC, guestMAC, other, gateway, IgnoredOtherSender, nil},
		{"sender MAC not the guest's", testLink(), broadMAC, peerMAC, hoa4, gateway, IgnoredOtherSender, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testResponder(t, tt.link)
			out, got, err := r.Respond(nil, arpFrame(t, tt.dstMAC, tt.sha, tt.spa, tt.tpa), guest)
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
			p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
			if el := p.ErrorLayer(); el != nil {
				t.Fatalf("reply does not decode: %v", el.Error())
			}
			eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			arp := p.Layer(layers.LayerTypeARP).(*layers.ARP)
			if len(out) != 60 {
				t.Errorf("got %d-byte frame, want 60 (the Ethernet minimum)", len(out))
			}
			type view struct{ EthSrc, EthDst, SHA, THA, SPA, TPA string }
			got2 := view{eth.SrcMAC.String(), eth.DstMAC.String(), net.HardwareAddr(arp.SourceHwAddress).String(),
				net.HardwareAddr(arp.DstHwAddress).String(), addr4(arp.SourceProtAddress).String(), addr4(arp.DstProtAddress).String()}
			want := view{tt.wantMAC.String(), guestMAC.String(), tt.wantMAC.String(), guestMAC.String(), tt.tpa.String(), hoa4.String()}
			if diff := cmp.Diff(want, got2); diff != "" {
				t.Errorf("ARP reply (-want +got):\n%s", diff)
			}
			if arp.Operation != layers.ARPReply {
				t.Errorf("got operation = %d, want %d", arp.Operation, layers.ARPReply)
			}
		})
	}
}

// TestRespondAppends checks that the answer is appended to out, as the
// datapath's batched writes need.
func TestRespondAppends(t *testing.T) {
	prefix := []byte("held")
	out, d, err := testResponder(t, testLink()).Respond(prefix, arpFrame(t, broadMAC, guestMAC, hoa4, gateway), guest)
	if err != nil || d != Answered {
		t.Fatalf("got %v, %v; want %v", d, err, Answered)
	}
	if string(out[:4]) != "held" || len(out) != 4+60 {
		t.Errorf("got %q..., %d bytes; want the prefix kept and a 60-byte frame after it", out[:4], len(out))
	}
}

func TestRespondARPReplyIgnored(t *testing.T) {
	f := arpFrame(t, broadMAC, guestMAC, hoa4, hoa4)
	f[14+7] = layers.ARPReply // a gratuitous ARP sent as a reply
	out, d, err := testResponder(t, testLink()).Respond(nil, f, guest)
	if err != nil || d != IgnoredNotRequest || len(out) != 0 {
		t.Errorf("got %d bytes, %v, %v; want none, %v, nil", len(out), d, err, IgnoredNotRequest)
	}
}

func TestRespondMalformed(t *testing.T) {
	arp := arpFrame(t, broadMAC, guestMAC, hoa4, gateway)
	disc := dhcpFrame(t, dhcpMsg{typ: layers.DHCPMsgTypeDiscover})
	const ip, udp, bootp = 14, 14 + 20, 14 + 20 + 8
	mod := func(f []byte, i int, v byte) []byte {
		f = append([]byte(nil), f...)
		f[i] = v
		return f
	}
	// modDHCP changes the DHCP message and clears the UDP checksum
	// (RFC 768: zero, none computed), so the change itself is what is read.
	modDHCP := func(f []byte, i int, v byte) []byte {
		f = mod(f, i, v)
		f[udp+6], f[udp+7] = 0, 0
		return f
	}
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"short Ethernet", arp[:10], ErrNotRequest},
		{"IPv6", mod(arp, 12, 0x86), ErrNotRequest},
		{"truncated ARP", arp[:14+20], ErrMalformed},
		{"ARP hardware length 128", mod(arp, 14+4, 128), ErrMalformed},
		{"ARP for IPv6", mod(arp, 14+2, 0x86), ErrMalformed},
		{"IPv4 version 6", mod(disc, ip, 0x65), ErrMalformed},
		{"IPv4 header checksum", mod(disc, ip+10, disc[ip+10]^1), ErrMalformed},
		{"IPv4 total length beyond the frame", mod(disc, ip+2, 0xff), ErrMalformed},
		{"UDP checksum", mod(disc, udp+6, disc[udp+6]^1), ErrMalformed},
		{"UDP to another port", dhcpFrameTo(t, dhcpMsg{typ: layers.DHCPMsgTypeDiscover}, 53), ErrNotRequest},
		{"truncated DHCP", disc[:bootp+100], ErrMalformed},
		{"DHCP hardware length 200", modDHCP(disc, bootp+2, 200), ErrMalformed},
		{"DHCP magic cookie", modDHCP(disc, bootp+236, 0), ErrMalformed},
		{"DHCP message type of 2 bytes", modDHCP(disc, bootp+241, 2), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, d, err := testResponder(t, testLink()).Respond(nil, tt.frame, guest)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got decision %v, error %v; want error %v", d, err, tt.want)
			}
			if len(out) != 0 {
				t.Errorf("got %d reply bytes with error %v", len(out), err)
			}
		})
	}
}

func TestRespondRefusesGuestOffLink(t *testing.T) {
	r := testResponder(t, testLink())
	for _, g := range []Guest{
		{MAC: guestMAC, Addr: netip.MustParseAddr("198.51.100.10")},
		{MAC: guestMAC, Addr: gateway},
		{MAC: guestMAC[:3], Addr: hoa4},
	} {
		if _, _, err := r.Respond(nil, arpFrame(t, broadMAC, guestMAC, hoa4, gateway), g); err == nil {
			t.Errorf("Respond accepted guest %v", g)
		}
	}
}

func TestDecisionString(t *testing.T) {
	seen := map[string]bool{}
	for d := Answered; d <= Released; d++ {
		s := d.String()
		if seen[s] || s == "" {
			t.Errorf("decision %d: string %q empty or repeated", int(d), s)
		}
		seen[s] = true
	}
	if got := Decision(99).String(); got != "decision(99)" {
		t.Errorf("got %q, want decision(99)", got)
	}
}

func FuzzRespondARP(f *testing.F) {
	f.Add(arpFrame(f, broadMAC, guestMAC, hoa4, gateway))
	f.Add(arpFrame(f, broadMAC, guestMAC, netip.IPv4Unspecified(), hoa4))
	r := testResponder(f, testLink())
	f.Fuzz(func(t *testing.T, frame []byte) {
		out, d, err := r.Respond(nil, frame, guest)
		if err != nil && len(out) != 0 {
			t.Fatalf("reply together with error %v", err)
		}
		if err == nil && d == Answered {
			p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
			if p.Layer(layers.LayerTypeARP) == nil {
				t.Fatalf("answer is not ARP: %v", p)
			}
		}
	})
}

func TestDecisionReplied(t *testing.T) {
	replied := map[Decision]bool{Answered: true, Offered: true, Acked: true, Nacked: true, Informed: true}
	for d := Answered; d <= Released; d++ {
		if d.Replied() != replied[d] {
			t.Errorf("%v.Replied() = %v, want %v", d, d.Replied(), replied[d])
		}
	}
}
