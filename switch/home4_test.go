package vswitch

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/ovsctl"
)

var (
	hoa4Addr    = datapathtest.HomeAddr4.Addr()
	gateway4    = datapathtest.Gateway4
	gateway4MAC = net.HardwareAddr{0x42, 0x0d, 0x24, 0x0b, 0xaf, 0x01}
	broadcast   = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

// dualStackVM is vnet3's VM with an IPv4 home address; its gateway's MAC is
// not configured.
const dualStackVM = vnet3VM + `ipv4_address = "192.0.2.10/24"
ipv4_gateway = "192.0.2.1"
`

var (
	// homeHostConfig4 is the home host of a dual-stack VM.
	homeHostConfig4 = strings.Replace(homeHostConfig, vnet3VM, dualStackVM, 1)
	// homeHostConfig4GatewayMAC is one whose home network names its IPv4
	// gateway's MAC.
	homeHostConfig4GatewayMAC = strings.Replace(homeHostConfig, vnet3VM, `
[home_network.ipv4]
subnet = "192.0.2.0/24"
gateway = "192.0.2.1"
gateway_mac = "`+gateway4MAC.String()+`"
`+vnet3VM+`ipv4_address = "192.0.2.10/24"
`, 1)
)

// arpWant is an ARP frame as a test expects it.
type arpWant struct {
	dst, src net.HardwareAddr // Ethernet
	op       uint16
	sha      net.HardwareAddr
	spa      netip.Addr
	tha      net.HardwareAddr
	tpa      netip.Addr
}

func (w arpWant) String() string {
	return fmt.Sprintf("%v -> %v op %d %v/%v -> %v/%v", w.src, w.dst, w.op, w.sha, w.spa, w.tha, w.tpa)
}

func checkARP(t *testing.T, f []byte, want arpWant) {
	t.Helper()
	eth := netpkt.Ethernet(f)
	if eth.EtherType() != netpkt.EtherTypeARP {
		t.Fatalf("got a frame of EtherType %#04x, want = ARP %v", eth.EtherType(), want)
	}
	a, err := netpkt.ParseARP(eth.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(eth.Dst(), want.dst) || !bytes.Equal(eth.Src(), want.src) || a.Op() != want.op || !bytes.Equal(a.SenderMAC(), want.sha) ||
		a.SenderAddr() != want.spa || !bytes.Equal(a.TargetMAC(), want.tha) || a.TargetAddr() != want.tpa {
		t.Fatalf("got ARP %v -> %v op %d %v/%v -> %v/%v, want = %v", eth.Src(), eth.Dst(), a.Op(), a.SenderMAC(), a.SenderAddr(),
			a.TargetMAC(), a.TargetAddr(), want)
	}
}

// announcement4 is the ARP Announcement giving mac for the IPv4 home address.
func announcement4(mac, from net.HardwareAddr) arpWant {
	return arpWant{dst: broadcast, src: from, op: netpkt.ARPRequest, sha: mac, spa: hoa4Addr, tha: make(net.HardwareAddr, 6), tpa: hoa4Addr}
}

// gatewayReply is the ARP reply telling the guest alone its gateway's MAC.
func gatewayReply(mac net.HardwareAddr) arpWant {
	return arpWant{dst: guestMAC, src: mac, op: netpkt.ARPReply, sha: mac, spa: gateway4, tha: guestMAC, tpa: hoa4Addr}
}

// A departed dual-stack VM's IPv4 frames and the broadcast ARP requests for
// its IPv4 home address are held; when the Home Agent takes over, an ARP
// Announcement gives its MAC and the held frames go to it. A VM without IPv4
// has no ARP flows and gets no announcement.
func TestDepartureIPv4(t *testing.T) {
	const (
		arpCopy = "arp,in_port=1,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_tpa=192.0.2.10,table=0,idle_timeout=0,actions=output:9,normal"
		arpOut  = "arp,in_port=9,dl_src=02:6b:67:00:00:01,arp_sha=02:48:41:00:00:01,arp_spa=192.0.2.10,arp_tpa=192.0.2.10,table=0,idle_timeout=0,actions=output:1"
	)
	toVM4 := datapathtest.EthFrame4(guestMAC, gateway4MAC, datapathtest.UDPPacket4(datapathtest.CN4, hoa4Addr, 8))
	toVM6 := datapathtest.EthFrame(guestMAC, lanMAC, datapathtest.UDPPacket(cn, hoa, 8))
	request := datapathtest.ARPRequest(gateway4MAC, gateway4, hoa4Addr)
	for _, tt := range []struct {
		name      string
		cfg       string
		dualStack bool
		// wantReleased are the frames released to the Home Agent, in order.
		wantReleased [][]byte
	}{
		{"dual-stack", homeHostConfig4, true, [][]byte{toVM4, request, toVM6}},
		// Everything sent to its MAC is held, IPv4 too, as before.
		{"no IPv4", homeHostConfig, false, [][]byte{toVM4, toVM6}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg, ovsctl.Interface{Name: "vnet3", OFPort: 3})
			for _, f := range h.flows.text() {
				if strings.Contains(f, "arp") {
					t.Errorf("ARP flow while the VM is at home: %s", f)
				}
			}
			h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
			if !waitFor(t, h.settle, func() bool { return h.status(t, "vnet3").Location == "departed" }) {
				t.Fatalf("got %+v, want departed", h.status(t, "vnet3"))
			}
			flows := strings.Join(h.flows.text(), "\n")
			if got := strings.Contains(flows, arpCopy); got != tt.dualStack {
				t.Errorf("got a flow copying ARP requests for the IPv4 home address = %v, want = %v:\n%s", got, tt.dualStack, flows)
			}
			for _, f := range [][]byte{toVM4, request, toVM6} {
				h.conn.Inject(f)
			}
			h.noFrame(t)
			if st := h.status(t, "vnet3"); st.Held != uint64(len(tt.wantReleased)) {
				t.Fatalf("got held = %d, want = %d", st.Held, len(tt.wantReleased))
			}
			h.conn.Inject(naFrame(ha, homeAgentMAC, hoa))
			if tt.dualStack {
				checkARP(t, h.nextFrame(t), announcement4(homeAgentMAC, kgMAC))
			}
			for i, want := range tt.wantReleased {
				eth := netpkt.Ethernet(h.nextFrame(t))
				if !bytes.Equal(eth.Dst(), homeAgentMAC) || !bytes.Equal(eth.Src(), kgMAC) || !bytes.Equal(eth.Payload(), want[netpkt.EthernetLen:]) {
					t.Fatalf("released frame %d: got %v -> %v, payload % x; want kgs0 -> the Home Agent, payload % x",
						i, eth.Src(), eth.Dst(), eth.Payload(), want[netpkt.EthernetLen:])
				}
			}
			checkOverrideNA(t, h.nextFrame(t), homeAgentMAC)
			h.noFrame(t)
			flows = strings.Join(h.flows.text(), "\n")
			if got := strings.Contains(flows, arpOut); got != tt.dualStack {
				t.Errorf("got a flow letting the announcement out = %v, want = %v:\n%s", got, tt.dualStack, flows)
			}
			// After the takeover IPv4 goes straight on; a broadcast
			// request reached the Home Agent itself and is not sent again.
			h.conn.Inject(request)
			h.conn.Inject(toVM4)
			if eth := netpkt.Ethernet(h.nextFrame(t)); !bytes.Equal(eth.Dst(), homeAgentMAC) || eth.EtherType() != netpkt.EtherTypeIPv4 {
				t.Fatalf("got %v to %v after the takeover, want the IPv4 frame to the Home Agent", eth.EtherType(), eth.Dst())
			}
			h.noFrame(t)
			if w := h.warnings(); len(w) != 0 {
				t.Errorf("got warnings or errors logged, want none:\n%s", strings.Join(w, "\n"))
			}
		})
	}
}

// checkOverrideNA checks an Override advertisement giving mac for the home
// address.
func checkOverrideNA(t *testing.T, f []byte, mac net.HardwareAddr) {
	t.Helper()
	ip, err := netpkt.ParseIPv6(netpkt.Ethernet(f).Payload())
	if err != nil || ip.NextHeader() != netpkt.ProtoICMPv6 || ip.Payload()[0] != 136 || ip.Payload()[4]&0x20 == 0 ||
		netip.AddrFrom16([16]byte(ip.Payload()[8:24])) != hoa || !bytes.Equal(ip.Payload()[26:32], mac) {
		t.Fatalf("got % x, want an Override NA giving %v for %v", f, mac, hoa)
	}
}

// A dual-stack VM back home: with each Override advertisement, an ARP
// Announcement of its own MAC for its IPv4 home address; and, with each of
// the router's advertisements to the guest, its gateway's real MAC, when
// known. A VM without IPv4 gets neither.
func TestReturnHomeIPv4(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  string
		// neighbour: the host's ARP table has the gateway.
		neighbour bool
		dualStack bool
		// wantGateway is the MAC the guest is told for its gateway; nil: none.
		wantGateway net.HardwareAddr
	}{
		{"gateway MAC configured", homeHostConfig4GatewayMAC, false, true, gateway4MAC},
		{"gateway MAC from the host's ARP table", homeHostConfig4, true, true, gateway4MAC},
		{"gateway MAC unknown", homeHostConfig4, false, true, nil},
		{"no IPv4", homeHostConfig, true, false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			if tt.neighbour {
				h.sw.do(context.Background(), func() {
					neighbor := h.sw.deps.NeighborMAC
					h.sw.deps.NeighborMAC = func(a netip.Addr) net.HardwareAddr {
						if a == gateway4 {
							return gateway4MAC
						}
						return neighbor(a)
					}
				})
			}
			h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
			if !waitFor(t, h.settle, func() bool { return h.status(t, "vnet3").BindingState == "waiting-for-guest" }) {
				t.Fatalf("got %+v, want waiting for the guest", h.status(t, "vnet3"))
			}
			h.conn.Inject(datapathtest.RARP(guestMAC))
			bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
			if err != nil || bu.Lifetime != 0 {
				t.Fatalf("got %+v (%v), want a de-registration", bu, err)
			}
			told := func() {
				t.Helper()
				checkRouterNA(t, h.nextFrame(t))
				if tt.wantGateway != nil {
					checkARP(t, h.nextFrame(t), gatewayReply(tt.wantGateway))
				}
			}
			told()
			h.noFrame(t)
			ba := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: hoa, HomeAddress: hoa, Status: mipv6.StatusAccepted, Sequence: bu.Sequence})
			h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, ba))
			for i := range homeAdvertisements {
				if i > 0 {
					h.advance(t, time.Second)
				}
				checkHomeNA(t, h.nextFrame(t))
				checkRouterNA(t, h.nextFrame(t))
				if tt.dualStack {
					checkARP(t, h.nextFrame(t), announcement4(guestMAC, guestMAC))
				}
				if tt.wantGateway != nil {
					checkARP(t, h.nextFrame(t), gatewayReply(tt.wantGateway))
				}
			}
			h.noFrame(t)
			if st := h.status(t, "vnet3"); st.Location != "home" {
				t.Errorf("got %+v, want home", st)
			}
			for _, f := range h.flows.text() {
				if strings.Contains(f, "arp") {
					t.Errorf("ARP flow left once the VM is home: %s", f)
				}
			}
			if w := h.warnings(); len(w) != 0 {
				t.Errorf("got warnings or errors logged, want none:\n%s", strings.Join(w, "\n"))
			}
		})
	}
}
