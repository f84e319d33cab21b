package v4responder

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// dhcpMsg is a DHCP client message as a guest sends it.
type dhcpMsg struct {
	typ       layers.DHCPMsgType
	op        layers.DHCPOp // BOOTREQUEST when zero
	chaddr    net.HardwareAddr
	ciaddr    netip.Addr
	requested netip.Addr
	serverID  netip.Addr
	broadcast bool
	params    []byte
}

const testXid = 0x1234abcd

func dhcpFrame(t testing.TB, m dhcpMsg) []byte { return dhcpFrameTo(t, m, serverPort) }

func dhcpFrameTo(t testing.TB, m dhcpMsg, port layers.UDPPort) []byte {
	if m.op == 0 {
		m.op = layers.DHCPOpRequest
	}
	if m.chaddr == nil {
		m.chaddr = guestMAC
	}
	src, dst := netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})
	ciaddr := net.IP(net.IPv4zero)
	if m.ciaddr.IsValid() {
		ciaddr = m.ciaddr.AsSlice()
		src, dst = m.ciaddr, gateway
	}
	d := &layers.DHCPv4{Operation: m.op, HardwareType: layers.LinkTypeEthernet, Xid: testXid,
		ClientIP: ciaddr, YourClientIP: net.IPv4zero, NextServerIP: net.IPv4zero, RelayAgentIP: net.IPv4zero,
		ClientHWAddr: m.chaddr}
	if m.broadcast {
		d.Flags = broadcastFlag
	}
	if m.typ != 0 {
		d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(m.typ)}))
	}
	if m.requested.IsValid() {
		d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptRequestIP, m.requested.AsSlice()))
	}
	if m.serverID.IsValid() {
		d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptServerID, m.serverID.AsSlice()))
	}
	if m.params != nil {
		d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptParamsRequest, m.params))
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: clientPort, DstPort: port}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return encode(t, &layers.Ethernet{SrcMAC: guestMAC, DstMAC: broadMAC, EthernetType: layers.EthernetTypeIPv4}, ip, udp, d)
}

// dhcpView is what a test compares of a reply.
type dhcpView struct {
	EthSrc, EthDst string
	IPSrc, IPDst   string
	Ports          [2]int
	Xid            uint32
	Flags          uint16
	Ciaddr, Yiaddr string
	Chaddr         string
	Type           layers.DHCPMsgType
	Options        map[layers.DHCPOpt]string
}

// decodeReply parses a reply with gopacket, checking every checksum.
func decodeReply(t *testing.T, out []byte) (dhcpView, []layers.DHCPOpt) {
	t.Helper()
	p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("reply does not decode: %v", el.Error())
	}
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	d, ok := p.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
	if !ok {
		t.Fatalf("reply has no DHCP: %v", p)
	}
	if sum(0, ip.Contents) != 0xffff {
		t.Errorf("IPv4 header checksum does not verify")
	}
	if udpSum(addr4(ip.SrcIP), addr4(ip.DstIP), append(udp.Contents, udp.Payload...)) != 0xffff {
		t.Errorf("UDP checksum does not verify")
	}
	if n := len(udp.Payload); n < bootpMinLen {
		t.Errorf("got %d-byte DHCP message, want at least %d", n, bootpMinLen)
	}
	v := dhcpView{
		EthSrc: eth.SrcMAC.String(), EthDst: eth.DstMAC.String(),
		IPSrc: ip.SrcIP.String(), IPDst: ip.DstIP.String(),
		Ports: [2]int{int(udp.SrcPort), int(udp.DstPort)},
		Xid:   d.Xid, Flags: d.Flags,
		Ciaddr: d.ClientIP.String(), Yiaddr: d.YourClientIP.String(), Chaddr: d.ClientHWAddr.String(),
		Options: map[layers.DHCPOpt]string{},
	}
	if d.Operation != layers.DHCPOpReply {
		t.Errorf("got op = %v, want reply", d.Operation)
	}
	var order []layers.DHCPOpt
	for _, o := range d.Options {
		if o.Type == layers.DHCPOptMessageType {
			v.Type = layers.DHCPMsgType(o.Data[0])
			continue
		}
		v.Options[o.Type] = optString(o)
		order = append(order, o.Type)
	}
	return v, order
}

func optString(o layers.DHCPOption) string {
	switch o.Type {
	case layers.DHCPOptLeaseTime, layers.DHCPOptT1, layers.DHCPOptT2:
		return strconv.Itoa(int(binary.BigEndian.Uint32(o.Data)))
	case layers.DHCPOptInterfaceMTU:
		return strconv.Itoa(int(binary.BigEndian.Uint16(o.Data)))
	case layers.DHCPOptDomainName:
		return string(o.Data)
	}
	var s string
	for i := 0; i+4 <= len(o.Data); i += 4 {
		if s != "" {
			s += ","
		}
		s += addr4(o.Data[i : i+4]).String()
	}
	return s
}

// leaseOptions are the options of an OFFER or ACK for testLink.
func leaseOptions() map[layers.DHCPOpt]string {
	return map[layers.DHCPOpt]string{
		layers.DHCPOptServerID:     "192.0.2.1",
		layers.DHCPOptLeaseTime:    "3600",
		layers.DHCPOptT1:           "1800",
		layers.DHCPOptT2:           "3150",
		layers.DHCPOptSubnetMask:   "255.255.255.0",
		layers.DHCPOptRouter:       "192.0.2.1",
		layers.DHCPOptDNS:          "192.0.2.53,198.51.100.53",
		layers.DHCPOptDomainName:   "home.example",
		layers.DHCPOptInterfaceMTU: "1460",
	}
}

func TestRespondDHCP(t *testing.T) {
	lease := leaseOptions()
	inform := leaseOptions()
	delete(inform, layers.DHCPOptLeaseTime)
	delete(inform, layers.DHCPOptT1)
	delete(inform, layers.DHCPOptT2)
	nak := map[layers.DHCPOpt]string{layers.DHCPOptServerID: "192.0.2.1"}
	const bcast, zero = "255.255.255.255", "0.0.0.0"
	reply := func(ipDst, ciaddr, yiaddr string, flags uint16, typ layers.DHCPMsgType, opts map[layers.DHCPOpt]string) *dhcpView {
		return &dhcpView{EthSrc: gatewayMAC.String(), EthDst: guestMAC.String(), IPSrc: "192.0.2.1", IPDst: ipDst,
			Ports: [2]int{67, 68}, Xid: testXid, Flags: flags, Ciaddr: ciaddr, Yiaddr: yiaddr, Chaddr: guestMAC.String(),
			Type: typ, Options: opts}
	}
	tests := []struct {
		name string
		msg  dhcpMsg
		want Decision
		// wantReply is nil when no reply is due.
		wantReply *dhcpView
	}{
		{"discover", dhcpMsg{typ: layers.DHCPMsgTypeDiscover},
			Offered, reply("192.0.2.10", zero, "192.0.2.10", 0, layers.DHCPMsgTypeOffer, lease)},
		{"discover asking for broadcast", dhcpMsg{typ: layers.DHCPMsgTypeDiscover, broadcast: true},
			Offered, reply(bcast, zero, "192.0.2.10", broadcastFlag, layers.DHCPMsgTypeOffer, lease)},
		{"discover asking for another address", dhcpMsg{typ: layers.DHCPMsgTypeDiscover, requested: other},
			Offered, reply("192.0.2.10", zero, "192.0.2.10", 0, layers.DHCPMsgTypeOffer, lease)},
		{"request selecting", dhcpMsg{typ: layers.DHCPMsgTypeRequest, requested: hoa4, serverID: gateway},
			Acked, reply("192.0.2.10", zero, "192.0.2.10", 0, layers.DHCPMsgTypeAck, lease)},
		{"request selecting another address", dhcpMsg{typ: layers.DHCPMsgTypeRequest, requested: other, serverID: gateway},
			Nacked, reply(bcast, zero, zero, 0, layers.DHCPMsgTypeNak, nak)},
		{"request selecting another server", dhcpMsg{typ: layers.DHCPMsgTypeRequest, requested: hoa4, serverID: peer},
			IgnoredOtherServer, nil},
		{"request init-reboot", dhcpMsg{typ: layers.DHCPMsgTypeRequest, requested: hoa4, broadcast: true},
			Acked, reply(bcast, zero, "192.0.2.10", broadcastFlag, layers.DHCPMsgTypeAck, lease)},
		{"request init-reboot for the address of another network", dhcpMsg{typ: layers.DHCPMsgTypeRequest, requested: netip.MustParseAddr("10.1.2.3")},
			Nacked, reply(bcast, zero, zero, 0, layers.DHCPMsgTypeNak, nak)},
		{"request renewing", dhcpMsg{typ: layers.DHCPMsgTypeRequest, ciaddr: hoa4},
			Acked, reply("192.0.2.10", "192.0.2.10", "192.0.2.10", 0, layers.DHCPMsgTypeAck, lease)},
		{"request renewing another address", dhcpMsg{typ: layers.DHCPMsgTypeRequest, ciaddr: other},
			Nacked, reply(bcast, zero, zero, 0, layers.DHCPMsgTypeNak, nak)},
		{"request with no address", dhcpMsg{typ: layers.DHCPMsgTypeRequest},
			Nacked, reply(bcast, zero, zero, 0, layers.DHCPMsgTypeNak, nak)},
		{"inform", dhcpMsg{typ: layers.DHCPMsgTypeInform, ciaddr: hoa4},
			Informed, reply("192.0.2.10", "192.0.2.10", zero, 0, layers.DHCPMsgTypeAck, inform)},
		{"inform from another address", dhcpMsg{typ: layers.DHCPMsgTypeInform, ciaddr: other}, IgnoredOtherSender, nil},
		{"decline", dhcpMsg{typ: layers.DHCPMsgTypeDecline, requested: hoa4, serverID: gateway}, Declined, nil},
		{"release", dhcpMsg{typ: layers.DHCPMsgTypeRelease, ciaddr: hoa4, serverID: gateway}, Released, nil},
		{"another client's MAC", dhcpMsg{typ: layers.DHCPMsgTypeDiscover, chaddr: peerMAC}, IgnoredOtherSender, nil},
		{"BOOTP", dhcpMsg{}, IgnoredBOOTP, nil},
		{"a BOOTREPLY", dhcpMsg{typ: layers.DHCPMsgTypeOffer, op: layers.DHCPOpReply}, IgnoredNotRequest, nil},
		{"an offer in a BOOTREQUEST", dhcpMsg{typ: layers.DHCPMsgTypeOffer}, IgnoredNotRequest, nil},
	}
	r := testResponder(t, testLink())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, got, err := r.Respond(nil, dhcpFrame(t, tt.msg), guest)
			if err != nil {
				t.Fatalf("Respond: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got decision = %v, want %v", got, tt.want)
			}
			if tt.wantReply == nil {
				if len(out) != 0 {
					t.Fatalf("got %d reply bytes for %v, want none", len(out), got)
				}
				return
			}
			v, _ := decodeReply(t, out)
			if diff := cmp.Diff(*tt.wantReply, v); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRespondDHCPOptionOrder checks that the options the guest asked for come
// first, in its order (RFC 2132 §9.8), and those it did not ask for after.
func TestRespondDHCPOptionOrder(t *testing.T) {
	prl := []byte{byte(layers.DHCPOptInterfaceMTU), byte(layers.DHCPOptDNS), 121, byte(layers.DHCPOptRouter)}
	out, _, err := testResponder(t, testLink()).Respond(nil, dhcpFrame(t, dhcpMsg{typ: layers.DHCPMsgTypeDiscover, params: prl}), guest)
	if err != nil {
		t.Fatal(err)
	}
	_, order := decodeReply(t, out)
	want := []layers.DHCPOpt{layers.DHCPOptServerID, layers.DHCPOptLeaseTime, layers.DHCPOptT1, layers.DHCPOptT2,
		layers.DHCPOptInterfaceMTU, layers.DHCPOptDNS, layers.DHCPOptRouter, layers.DHCPOptSubnetMask, layers.DHCPOptDomainName}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("option order (-want +got):\n%s", diff)
	}
}

// TestRespondDHCPMinimalLink checks a home link with no optional parameter and
// no known gateway MAC: only what RFC 2131 Table 3 requires, from kgswitch's MAC,
// and a server identifier set apart from the gateway.
func TestRespondDHCPMinimalLink(t *testing.T) {
	link := HomeLink4{Subnet: netip.MustParsePrefix("192.0.2.0/25"), Gateway: gateway,
		ServerID: netip.MustParseAddr("192.0.2.100"), LeaseTime: 7 * time.Minute}
	out, d, err := testResponder(t, link).Respond(nil, dhcpFrame(t, dhcpMsg{typ: layers.DHCPMsgTypeRequest, ciaddr: hoa4}), guest)
	if err != nil || d != Acked {
		t.Fatalf("got %v, %v; want %v", d, err, Acked)
	}
	v, _ := decodeReply(t, out)
	want := map[layers.DHCPOpt]string{
		layers.DHCPOptServerID:   "192.0.2.100",
		layers.DHCPOptLeaseTime:  "420",
		layers.DHCPOptT1:         "210",
		layers.DHCPOptT2:         "367",
		layers.DHCPOptSubnetMask: "255.255.255.128",
		layers.DHCPOptRouter:     "192.0.2.1",
	}
	if diff := cmp.Diff(want, v.Options); diff != "" {
		t.Errorf("options (-want +got):\n%s", diff)
	}
	if v.EthSrc != answerMAC.String() || v.IPSrc != "192.0.2.100" {
		t.Errorf("got from %v %v, want from %v 192.0.2.100", v.EthSrc, v.IPSrc, answerMAC)
	}
}

func FuzzRespondDHCP(f *testing.F) {
	f.Add(dhcpFrame(f, dhcpMsg{typ: layers.DHCPMsgTypeDiscover, params: []byte{1, 3, 6}}))
	f.Add(dhcpFrame(f, dhcpMsg{typ: layers.DHCPMsgTypeRequest, requested: hoa4, serverID: gateway}))
	f.Add(dhcpFrame(f, dhcpMsg{typ: layers.DHCPMsgTypeRequest, ciaddr: hoa4}))
	f.Add(dhcpFrame(f, dhcpMsg{typ: layers.DHCPMsgTypeInform, ciaddr: hoa4}))
	r := testResponder(f, testLink())
	f.Fuzz(func(t *testing.T, frame []byte) {
		// Without a UDP checksum, mutations of the DHCP message are read
		// rather than refused at the checksum.
		if len(frame) >= 14+20+8 {
			frame[14+20+6], frame[14+20+7] = 0, 0
		}
		out, d, err := r.Respond(nil, frame, guest)
		if err != nil && len(out) != 0 {
			t.Fatalf("reply together with error %v", err)
		}
		if err == nil && len(out) != 0 {
			p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
			if _, ok := p.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4); !ok {
				t.Fatalf("%v answer is not DHCP: %v", d, p)
			}
		}
	})
}

// TestLeaseOptionsLen keeps New's size check honest: the estimate must be
// the options an OFFER really carries.
func TestLeaseOptionsLen(t *testing.T) {
	link := testLink()
	out, _, err := testResponder(t, link).Respond(nil, dhcpFrame(t, dhcpMsg{typ: layers.DHCPMsgTypeDiscover}), guest)
	if err != nil {
		t.Fatal(err)
	}
	d := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
	n := 4 + 1 // cookie, end
	for _, o := range d.Options {
		n += 2 + len(o.Data)
	}
	if got := link.leaseOptionsLen(); got != n {
		t.Errorf("got leaseOptionsLen = %d, want %d", got, n)
	}
}
