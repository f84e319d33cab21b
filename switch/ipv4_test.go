package vswitch

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/ovsctl"
)

var (
	hoa4 = datapathtest.HomeAddr4
	gw4  = datapathtest.Gateway4
	cn4  = datapathtest.CN4
)

const (
	// homeNetwork4 is the lab's home network with an IPv4 side.
	homeNetwork4 = homeNetwork + `
[home_network.ipv4]
subnet = "192.0.2.0/24"
gateway = "192.0.2.1"
`
	// dualConfig is a foreign host expecting the dual-stack guest on vnet3.
	dualConfig = `
uplink = "eth0"
care_of_address = "2001:db8:3000::3"
` + homeNetwork4 + vnet3VM + `ipv4_address = "192.0.2.10/24"
`
	// noVMConfig4 is a foreign host with no VM and the IPv4 home network.
	noVMConfig4 = `
uplink = "eth0"
care_of_address = "2001:db8:3000::3"
` + homeNetwork4
)

// bind4 brings the dual-stack guest up on vnet3, checks that its Binding
// Update asks for its IPv4 home address, and answers it with an Ack that
// accepts IPv6 and says ack of IPv4.
func (h *harness) bind4(t *testing.T, ack mipv6.IPv4AddressAck) {
	t.Helper()
	h.arrive(t, "vnet3", 3, guestMAC)
	bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil {
		t.Fatalf("BU does not parse: %v", err)
	}
	if bu.IPv4HomeAddress.Address != hoa4.Addr() {
		t.Fatalf("got BU with IPv4 home address %v, want %v", bu.IPv4HomeAddress.Address, hoa4.Addr())
	}
	ba := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: bu.Sequence, Lifetime: bu.Lifetime, IPv4Ack: ack})
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, ba))
	h.settle(t)
	if st := h.status(t, "vnet3"); st.BindingState != "bound" {
		t.Fatalf("IPv6 binding not bound: %+v", st)
	}
}

// tunnel4 is IPv4 in IPv6 from the Home Agent to the care-of address.
func tunnel4(inner []byte) []byte {
	tun := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(inner))
	netpkt.PutIPv6(tun, len(inner), netpkt.ProtoIPv4, 64, ha, coa)
	return datapathtest.EthFrame(kgMAC, lanMAC, append(tun, inner...))
}

// The guest's IPv4 crosses the tunnel only once the Home Agent's Ack
// accepts its IPv4 home address; a refusal leaves IPv6 bound, is counted,
// and status says why.
func TestIPv4HomeAddressRegistered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ack     mipv6.IPv4AddressAck
		tunnels bool
		words   string // in status
		refused uint64
	}{
		{name: "accepted", ack: mipv6.IPv4AddressAck{Present: true, PrefixLen: 32, Address: hoa4.Addr()}, tunnels: true,
			words: "192.0.2.10: accepted"},
		{name: "refused", ack: mipv6.IPv4AddressAck{Present: true, Status: mipv6.IPv4StatusProhibited, Address: hoa4.Addr()},
			words: "192.0.2.10: refused (administratively prohibited, status 129)", refused: 1},
		{name: "not acknowledged", words: "192.0.2.10: refused (home agent did not acknowledge the IPv4 home address, status 128)", refused: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, dualConfig)
			h.bind4(t, tc.ack)
			st := h.status(t, "vnet3")
			if st.IPv4 != tc.words || st.IPv4Address != "192.0.2.10" || st.IPv4Refused != tc.refused {
				t.Errorf("got ipv4 %q (address %q), refused %d; want %q, %d", st.IPv4, st.IPv4Address, st.IPv4Refused, tc.words, tc.refused)
			}

			// IPv6 goes through the tunnel whatever became of IPv4.
			h.conn.Inject(datapathtest.EthFrame(lanMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, 10)))
			if nh := netpkt.IPv6(h.nextSent(t).Pkt).NextHeader(); nh != netpkt.ProtoIPv6 {
				t.Fatalf("got next header %d, want the guest's IPv6 tunnelled", nh)
			}
			// Its IPv4 only when bound, both ways.
			h.conn.Inject(datapathtest.EthFrame4(lanMAC, guestMAC, datapathtest.UDPPacket4(hoa4.Addr(), cn4, 10)))
			h.conn.Inject(tunnel4(datapathtest.UDPPacket4(cn4, hoa4.Addr(), 10)))
			if tc.tunnels {
				if nh := netpkt.IPv6(h.nextSent(t).Pkt).NextHeader(); nh != netpkt.ProtoIPv4 {
					t.Fatalf("got next header %d, want the guest's IPv4 tunnelled", nh)
				}
				if eth := netpkt.Ethernet(h.nextFrame(t)); eth.EtherType() != netpkt.EtherTypeIPv4 {
					t.Fatalf("got EtherType %#x to the guest, want IPv4", eth.EtherType())
				}
			}
			h.noFrame(t)
			want := uint64(0)
			if !tc.tunnels {
				want = 2
			}
			if got := h.status(t, "vnet3").Drops["not-bound"]; got != want {
				t.Errorf("got %d dropped as not-bound, want %d", got, want)
			}
			if got := h.db.ids("vnet3")[KeyIPv4]; got != tc.words {
				t.Errorf("got external_ids:%s %q, want %q", KeyIPv4, got, tc.words)
			}
			if refusedLogged := strings.Contains(strings.Join(h.warnings(), "\n"), "refused the IPv4 home address"); refusedLogged != (tc.refused > 0) {
				t.Errorf("got a refusal warning %v, want %v: %q", refusedLogged, tc.refused > 0, h.warnings())
			}
		})
	}
}

// Before the Ack, the guest's IPv4 is held with its IPv6 and leaves only
// if the Ack binds IPv4.
func TestIPv4HeldUntilAccepted(t *testing.T) {
	h := newHarness(t, dualConfig)
	h.arrive(t, "vnet3", 3, guestMAC)
	bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil {
		t.Fatal(err)
	}
	h.conn.Inject(datapathtest.EthFrame4(lanMAC, guestMAC, datapathtest.UDPPacket4(hoa4.Addr(), cn4, 10)))
	h.noFrame(t)
	ba := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: bu.Sequence, Lifetime: bu.Lifetime,
		IPv4Ack: mipv6.IPv4AddressAck{Present: true, PrefixLen: 32, Address: hoa4.Addr()}})
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, ba))
	if nh := netpkt.IPv6(h.nextSent(t).Pkt).NextHeader(); nh != netpkt.ProtoIPv4 {
		t.Fatalf("got next header %d, want the held IPv4 released", nh)
	}
}

// The guest's ARP for its gateway is answered as on its home link, before
// any binding: the responder is the home network's.
func TestIPv4ARPAnswered(t *testing.T) {
	h := newHarness(t, dualConfig)
	h.arrive(t, "vnet3", 3, guestMAC)
	h.nextSent(t) // the registration
	h.conn.Inject(datapathtest.ARPRequest(guestMAC, hoa4.Addr(), gw4))
	f := h.nextFrame(t)
	eth := netpkt.Ethernet(f)
	if eth.EtherType() != netpkt.EtherTypeARP || eth.Dst().String() != guestMAC.String() || len(f) < 42 || f[21] != 2 ||
		netip.AddrFrom4([4]byte(f[28:32])) != gw4 {
		t.Fatalf("got frame % x, want an ARP reply for %v to the guest", f, gw4)
	}
	if st := h.status(t, "vnet3"); st.V4Answered != 1 {
		t.Errorf("got V4Answered %d, want 1", st.V4Answered)
	}
}

// A restart within the grant resumes the IPv4 binding as it does IPv6's.
func TestIPv4RestoredAfterRestart(t *testing.T) {
	store := &memStore{}
	h := newHarnessWith(t, dualConfig, store)
	h.bind4(t, mipv6.IPv4AddressAck{Present: true, PrefixLen: 32, Address: hoa4.Addr()})
	h.settle(t)
	if b, ok := store.get(hoa.String()); !ok || b.IPv4 != hoa4.Addr() {
		t.Fatalf("IPv4 grant not saved: %+v", store.m)
	}
	h.cancel()
	<-h.done
	h.done <- nil // the cleanup waits for it

	h2 := newHarnessWith(t, dualConfig, store, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	st := waitStatus(t, h2, "restored", func(st []PortStatus) bool { return len(st) == 1 && st[0].BindingState == "bound" })
	if st[0].IPv4 != "192.0.2.10: accepted" {
		t.Errorf("got ipv4 %q, want it accepted", st[0].IPv4)
	}
	h2.conn.Inject(datapathtest.EthFrame4(lanMAC, guestMAC, datapathtest.UDPPacket4(hoa4.Addr(), cn4, 10)))
	s := h2.nextSent(t)
	if _, err := mipv6.ParseBUPacket(s.Pkt); err == nil {
		t.Fatal("restart re-registered from scratch")
	}
	if nh := netpkt.IPv6(s.Pkt).NextHeader(); nh != netpkt.ProtoIPv4 {
		t.Fatalf("got next header %d, want the guest's IPv4 tunnelled at once", nh)
	}
}

// IPv4 in IPv6 for the care-of address goes to kgswitch, as IPv6 in IPv6
// does; the guest's port sends every EtherType to kgswitch, ARP and DHCP
// broadcasts included, never to the foreign LAN.
func TestIPv4Flows(t *testing.T) {
	h := newHarness(t, dualConfig)
	h.bind4(t, mipv6.IPv4AddressAck{Present: true, PrefixLen: 32, Address: hoa4.Addr()})
	flows := strings.Join(h.flows.text(), "\n")
	for _, want := range []string{
		"priority=200,ipv6,in_port=1,ipv6_dst=2001:db8:3000::3,nw_proto=4,table=0,idle_timeout=0,actions=output:9",
		"priority=200,in_port=3,dl_src=52:54:00:00:00:10,table=0,idle_timeout=0,actions=output:9",
		"priority=190,in_port=3,table=0,idle_timeout=0,actions=drop",
	} {
		if !strings.Contains(flows, want+"\n") && !strings.HasSuffix(flows, want) {
			t.Errorf("flow %q not installed; have\n%s", want, flows)
		}
	}
	for _, f := range h.flows.text() {
		if strings.Contains(f, "in_port=3") && strings.Contains(f, "NORMAL") {
			t.Errorf("the guest's port reaches the bridge's own forwarding: %s", f)
		}
	}
}

// A guest that speaks IPv4 first (ARP for its gateway, a DHCP request) is
// as surely running here as one that announces itself with RARP.
func TestIPv4FirstFrameActivates(t *testing.T) {
	discover := datapathtest.IPv4Packet(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 64, netpkt.ProtoUDP, false,
		[]byte{0, 68, 0, 67, 0, 8, 0, 0})
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{name: "ARP", frame: datapathtest.ARPRequest(guestMAC, hoa4.Addr(), gw4)},
		{name: "DHCP", frame: datapathtest.EthFrame4(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, guestMAC, discover)},
		{name: "IPv4 unicast", frame: datapathtest.EthFrame4(lanMAC, guestMAC, datapathtest.UDPPacket4(hoa4.Addr(), cn4, 10))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, dualConfig)
			h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
			waitStatus(t, h, "prepared", func(st []PortStatus) bool { return st[0].BindingState == "waiting-for-guest" })
			h.conn.Inject(tc.frame)
			bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
			if err != nil || bu.HomeAddress != hoa || bu.IPv4HomeAddress.Address != hoa4.Addr() {
				t.Fatalf("got %+v (%v), want a registration asking for %v", bu, err, hoa4.Addr())
			}
		})
	}
}

// add-port and external_ids declare IPv4 as the configuration file does,
// and refuse a bad IPv4 home address in words that name it.
func TestIPv4Declared(t *testing.T) {
	for _, tc := range []struct {
		name, address, gateway string
		config                 string
		err                    string // empty: accepted
	}{
		{name: "from the home network's table", address: "192.0.2.10/24", config: noVMConfig4},
		{name: "with its gateway", address: "198.51.100.7/24", gateway: "198.51.100.1", config: noVMConfig},
		{name: "outside the home subnet", address: "198.51.100.7/24", config: noVMConfig4, err: "outside its home network's IPv4 subnet 192.0.2.0/24"},
		{name: "no gateway known", address: "192.0.2.10/24", config: noVMConfig, err: "no gateway"},
		{name: "no length", address: "192.0.2.10", config: noVMConfig4, err: "want an IPv4 address with its subnet's length"},
		{name: "an IPv6 address", address: "2001:db8::1/64", config: noVMConfig4, err: "want an IPv4 address"},
		{name: "the gateway's own", address: "192.0.2.1/24", config: noVMConfig4, err: "is its gateway's address"},
		{name: "gateway without address", gateway: "192.0.2.1", config: noVMConfig4, err: "without an IPv4 home address"},
	} {
		t.Run("add-port "+tc.name, func(t *testing.T) {
			store := &memStore{}
			h := newHarnessWith(t, tc.config, store)
			h.db.add(ovsctl.Interface{Name: "vnet4", OFPort: 4, ExternalIDs: map[string]string{"attached-mac": "52:54:00:00:00:11"}})
			err := h.sw.AddPort(context.Background(), AddPortRequest{Port: "vnet4", HomeAddress: "2001:db8:2000::11",
				IPv4Address: tc.address, IPv4Gateway: tc.gateway})
			if tc.err != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want ErrInvalid saying %q", err, tc.err)
				}
				if bound(h, "vnet4") {
					t.Error("a refused add-port left the port bound")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Split(tc.address, "/")[0]
			if st := h.status(t, "vnet4"); st.IPv4Address != want {
				t.Errorf("got IPv4 address %q, want %q", st.IPv4Address, want)
			}
			if len(store.ports) != 1 || store.ports[0].IPv4Address != tc.address || store.ports[0].IPv4Gateway != tc.gateway {
				t.Errorf("got %+v saved, want the IPv4 home address with the binding", store.ports)
			}
		})
		t.Run("external_ids "+tc.name, func(t *testing.T) {
			h := newHarness(t, tc.config)
			ids := map[string]string{KeyHomeAddress: "2001:db8:2000::11", "attached-mac": "52:54:00:00:00:11"}
			if tc.address != "" {
				ids[KeyIPv4Address] = tc.address
			}
			if tc.gateway != "" {
				ids[KeyIPv4Gateway] = tc.gateway
			}
			h.db.add(ovsctl.Interface{Name: "tap7", OFPort: 7, ExternalIDs: ids})
			if tc.err != "" {
				if !waitFor(t, h.settle, func() bool { return h.db.ids("tap7")[KeyState] == "error" }) {
					t.Fatalf("got external_ids %v, want %s=error", h.db.ids("tap7"), KeyState)
				}
				if r := h.db.ids("tap7")[KeyReason]; !strings.Contains(r, tc.err) || !strings.Contains(r, "kagemusha-ipv4-") {
					t.Errorf("got reason %q, want it to name the kagemusha-ipv4- key and say %q", r, tc.err)
				}
				return
			}
			want := strings.Split(tc.address, "/")[0]
			waitStatus(t, h, "declared with IPv4", func(st []PortStatus) bool {
				return len(st) == 1 && st[0].IPv4Address == want && st[0].BindingState == "waiting-for-guest"
			})
		})
	}
}

// A declaration that changes only its IPv4 home address is a new
// declaration: the VM is served with the new address.
func TestIPv4DeclarationChanged(t *testing.T) {
	h := newHarness(t, noVMConfig4)
	ids := map[string]string{KeyHomeAddress: "2001:db8:2000::11", "attached-mac": "52:54:00:00:00:11", KeyIPv4Address: "192.0.2.11/24"}
	h.db.add(ovsctl.Interface{Name: "tap7", OFPort: 7, ExternalIDs: ids})
	waitStatus(t, h, "declared", func(st []PortStatus) bool { return len(st) == 1 && st[0].IPv4Address == "192.0.2.11" })
	ids = map[string]string{KeyHomeAddress: "2001:db8:2000::11", "attached-mac": "52:54:00:00:00:11", KeyIPv4Address: "192.0.2.12/24"}
	h.db.events <- ovsctl.Event{Kind: ovsctl.Updated, Iface: ovsctl.Interface{Name: "tap7", OFPort: 7, ExternalIDs: ids}}
	waitStatus(t, h, "redeclared", func(st []PortStatus) bool { return len(st) == 1 && st[0].IPv4Address == "192.0.2.12" })
}

// On the home host, a returning guest's ARP or IPv4 is as good a sign that
// it runs there as its RARP: the de-registration goes out.
func TestIPv4FirstFrameHome(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{name: "ARP", frame: datapathtest.ARPRequest(guestMAC, hoa4.Addr(), gw4)},
		{name: "IPv4 unicast", frame: datapathtest.EthFrame4(lanMAC, guestMAC, datapathtest.UDPPacket4(hoa4.Addr(), cn4, 10))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, `
uplink = "eth0"
care_of_address = "2001:db8:2000::2"
`+homeNetwork4+vnet3VM+`ipv4_address = "192.0.2.10/24"
`)
			h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
			waitStatus(t, h, "waiting", func(st []PortStatus) bool { return st[0].BindingState == "waiting-for-guest" })
			h.conn.Inject(tc.frame)
			bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
			if err != nil || bu.Lifetime != 0 || bu.HomeAddress != hoa {
				t.Fatalf("got %+v (%v), want a de-registration", bu, err)
			}
		})
	}
}

// dhcpFrame is a DHCP client message of the guest: from 0.0.0.0 broadcast,
// or, with ciaddr set (renewing, RFC 2131 §4.3.2), unicast to the server.
func dhcpFrame(t *testing.T, typ layers.DHCPMsgType, ciaddr netip.Addr) []byte {
	t.Helper()
	src, dst, dstMAC := netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if ciaddr.IsValid() {
		src, dst, dstMAC = ciaddr, gw4, lanMAC
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 68, DstPort: 67}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	d := &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6, Xid: 0x6b67,
		ClientHWAddr: guestMAC, ClientIP: net.IPv4zero, YourClientIP: net.IPv4zero, NextServerIP: net.IPv4zero, RelayAgentIP: net.IPv4zero,
		Options: layers.DHCPOptions{layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(typ)})}}
	if ciaddr.IsValid() {
		d.ClientIP = ciaddr.AsSlice()
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: guestMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}, ip, udp, d); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The guest's DHCP, a DISCOVER as after a reboot and a renewal unicast to
// its home server, is answered as its home server would: an OFFER and an
// ACK of its own address, to the guest alone.
func TestIPv4DHCPAnswered(t *testing.T) {
	h := newHarness(t, dualConfig)
	h.arrive(t, "vnet3", 3, guestMAC)
	h.nextSent(t) // the registration
	for i, tc := range []struct {
		typ, want layers.DHCPMsgType
		ciaddr    netip.Addr
	}{
		{layers.DHCPMsgTypeDiscover, layers.DHCPMsgTypeOffer, netip.Addr{}},
		{layers.DHCPMsgTypeRequest, layers.DHCPMsgTypeAck, hoa4.Addr()},
	} {
		h.conn.Inject(dhcpFrame(t, tc.typ, tc.ciaddr))
		p := gopacket.NewPacket(h.nextFrame(t), layers.LayerTypeEthernet, gopacket.Default)
		eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		d, _ := p.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
		if eth == nil || d == nil || eth.DstMAC.String() != guestMAC.String() {
			t.Fatalf("%v: got %v, want a DHCP reply to the guest", tc.typ, p)
		}
		var typ layers.DHCPMsgType
		for _, o := range d.Options {
			if o.Type == layers.DHCPOptMessageType && len(o.Data) == 1 {
				typ = layers.DHCPMsgType(o.Data[0])
			}
		}
		if typ != tc.want || netip.AddrFrom4([4]byte(d.YourClientIP.To4())) != hoa4.Addr() {
			t.Errorf("%v: got %v for %v, want %v for %v", tc.typ, typ, d.YourClientIP, tc.want, hoa4.Addr())
		}
		if st := h.status(t, "vnet3"); st.V4Answered != uint64(i+1) || st.Drops["arp-dhcp-ignored"] != 0 {
			t.Errorf("%v: got V4Answered %d, drops %v; want %d answered, none ignored", tc.typ, st.V4Answered, st.Drops, i+1)
		}
	}
}
