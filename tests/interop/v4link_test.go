package interop

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/kgswitch/kgswitch/v4responder"
)

// The IPv4 home link cross-checks: package v4responder's ARP replies and
// DHCP OFFER, ACK and NAK decoded by scapy and by Wireshark, field by field,
// checksums verified by both.

var (
	v4GuestMAC   = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x10}
	v4AnswerMAC  = net.HardwareAddr{0x02, 0x6b, 0x67, 0, 0, 1}
	v4GatewayMAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x01}
	v4Guest      = v4responder.Guest{MAC: v4GuestMAC, Addr: netip.MustParseAddr("192.0.2.10")}
)

func v4Link() v4responder.HomeLink4 {
	return v4responder.HomeLink4{
		Subnet:     netip.MustParsePrefix("192.0.2.0/24"),
		Gateway:    netip.MustParseAddr("192.0.2.1"),
		GatewayMAC: v4GatewayMAC,
		DNS:        []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("198.51.100.53")},
		LeaseTime:  time.Hour,
		DomainName: "home.example",
		MTU:        1460,
	}
}

// v4Case is a guest's frame, the reply v4responder built for it, and what
// both decoders must find in the reply. want is keyed as v4ScapyScript
// prints; the tshark fields are derived from it.
type v4Case struct {
	name  string
	reply []byte
	want  map[string]any
}

func v4Serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func v4ARPRequest(t *testing.T, target string) []byte {
	return v4Serialize(t,
		&layers.Ethernet{SrcMAC: v4GuestMAC, DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, Operation: layers.ARPRequest,
			SourceHwAddress: v4GuestMAC, SourceProtAddress: v4Guest.Addr.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: netip.MustParseAddr(target).AsSlice()})
}

// v4DHCPRequest builds a client message of type typ; ciaddr, requested and
// serverID are left out when empty.
func v4DHCPRequest(t *testing.T, typ layers.DHCPMsgType, ciaddr, requested, serverID string, broadcast bool) []byte {
	src, dst := net.IPv4zero, net.IPv4bcast
	ci := net.IPv4zero
	if ciaddr != "" {
		ci = net.ParseIP(ciaddr).To4()
		src, dst = ci, net.ParseIP("192.0.2.1").To4()
	}
	d := &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet, Xid: 0x5eed1234,
		ClientIP: ci, YourClientIP: net.IPv4zero, NextServerIP: net.IPv4zero, RelayAgentIP: net.IPv4zero, ClientHWAddr: v4GuestMAC,
		Options: []layers.DHCPOption{layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(typ)})}}
	if broadcast {
		d.Flags = 0x8000
	}
	if requested != "" {
		d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptRequestIP, net.ParseIP(requested).To4()))
	}
	if serverID != "" {
		d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptServerID, net.ParseIP(serverID).To4()))
	}
	// What Debian's dhclient asks for, in its order.
	d.Options = append(d.Options, layers.NewDHCPOption(layers.DHCPOptParamsRequest, []byte{1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42}))
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}
	udp := &layers.UDP{SrcPort: 68, DstPort: 67}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return v4Serialize(t, &layers.Ethernet{SrcMAC: v4GuestMAC, DstMAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthernetType: layers.EthernetTypeIPv4}, ip, udp, d)
}

func v4Cases(t *testing.T) []v4Case {
	r, err := v4responder.New(v4Link(), v4AnswerMAC)
	if err != nil {
		t.Fatal(err)
	}
	respond := func(frame []byte, want v4responder.Decision) []byte {
		t.Helper()
		out, d, err := r.Respond(nil, frame, v4Guest)
		if err != nil || d != want {
			t.Fatalf("Respond: got %v, %v; want %v", d, err, want)
		}
		return out
	}
	arp := func(name, target, mac string) v4Case {
		return v4Case{name, respond(v4ARPRequest(t, target), v4responder.Answered), map[string]any{
			"eth_src": mac, "eth_dst": v4GuestMAC.String(), "op": 2,
			"hwsrc": mac, "psrc": target, "hwdst": v4GuestMAC.String(), "pdst": "192.0.2.10",
		}}
	}
	// lease are the options of an OFFER or ACK, in the order the guest's
	// parameter request list puts them, after those RFC 2131 requires.
	lease := []any{
		[]any{"server_id", "192.0.2.1"}, []any{"lease_time", 3600}, []any{"renewal_time", 1800}, []any{"rebinding_time", 3150},
		[]any{"subnet_mask", "255.255.255.0"}, []any{"router", "192.0.2.1"}, []any{"domain", "home.example"},
		[]any{"name_server", "192.0.2.53", "198.51.100.53"}, []any{"interface-mtu", 1460},
	}
	dhcp := func(name string, frame []byte, d v4responder.Decision, typ int, ipDst, ciaddr, yiaddr string, flags int, opts []any) v4Case {
		return v4Case{name, respond(frame, d), map[string]any{
			"eth_src": v4GatewayMAC.String(), "eth_dst": v4GuestMAC.String(),
			"ip_src": "192.0.2.1", "ip_dst": ipDst, "sport": 67, "dport": 68,
			"op": 2, "xid": 0x5eed1234, "flags": flags, "ciaddr": ciaddr, "yiaddr": yiaddr, "siaddr": "0.0.0.0", "giaddr": "0.0.0.0",
			"chaddr": v4GuestMAC.String(), "message_type": typ, "options": append([]any{[]any{"message-type", typ}}, opts...),
		}}
	}
	inform := append(append([]any{}, lease[0]), lease[4:]...)
	nak := lease[:1]
	return []v4Case{
		arp("ARP reply for the gateway", "192.0.2.1", v4GatewayMAC.String()),
		arp("ARP reply for another home host", "192.0.2.77", v4AnswerMAC.String()),
		dhcp("OFFER", v4DHCPRequest(t, layers.DHCPMsgTypeDiscover, "", "", "", false),
			v4responder.Offered, 2, "192.0.2.10", "0.0.0.0", "192.0.2.10", 0, lease),
		dhcp("OFFER broadcast", v4DHCPRequest(t, layers.DHCPMsgTypeDiscover, "", "", "", true),
			v4responder.Offered, 2, "255.255.255.255", "0.0.0.0", "192.0.2.10", 0x8000, lease),
		dhcp("ACK selecting", v4DHCPRequest(t, layers.DHCPMsgTypeRequest, "", "192.0.2.10", "192.0.2.1", false),
			v4responder.Acked, 5, "192.0.2.10", "0.0.0.0", "192.0.2.10", 0, lease),
		dhcp("ACK renewing", v4DHCPRequest(t, layers.DHCPMsgTypeRequest, "192.0.2.10", "", "", false),
			v4responder.Acked, 5, "192.0.2.10", "192.0.2.10", "192.0.2.10", 0, lease),
		dhcp("ACK to INFORM", v4DHCPRequest(t, layers.DHCPMsgTypeInform, "192.0.2.10", "", "", false),
			v4responder.Informed, 5, "192.0.2.10", "192.0.2.10", "0.0.0.0", 0, inform),
		dhcp("NAK", v4DHCPRequest(t, layers.DHCPMsgTypeRequest, "", "192.0.2.99", "", false),
			v4responder.Nacked, 6, "255.255.255.255", "0.0.0.0", "0.0.0.0", 0, nak),
	}
}

// v4ScapyScript has scapy decode the Ethernet frames given as hex and prints,
// per frame, the fields it finds and whether the IPv4 and UDP checksums
// scapy computes for the decoded packet are the ones in the frame.
const v4ScapyScript = `
import json, sys
from scapy.all import raw
from scapy.layers.l2 import Ether, ARP
from scapy.layers.inet import IP, UDP
from scapy.layers.dhcp import BOOTP, DHCP

def mac(b):
    return ":".join("%02x" % x for x in b)

def decode(b):
    p = Ether(b)
    out = {"eth_src": p.src, "eth_dst": p.dst}
    if ARP in p:
        a = p[ARP]
        out.update(op=a.op, hwsrc=a.hwsrc, psrc=a.psrc, hwdst=a.hwdst, pdst=a.pdst)
        return out
    if DHCP not in p:
        sys.exit("scapy found neither ARP nor DHCP in " + p.summary())
    q = p.copy()
    q[IP].chksum = None
    q[UDP].chksum = None
    q = Ether(raw(q))
    out["ip_cksum_ok"] = q[IP].chksum == p[IP].chksum
    out["udp_cksum_ok"] = q[UDP].chksum == p[UDP].chksum
    bp = p[BOOTP]
    out.update(ip_src=p[IP].src, ip_dst=p[IP].dst, sport=p[UDP].sport, dport=p[UDP].dport,
               op=bp.op, xid=bp.xid, flags=int(bp.flags), ciaddr=bp.ciaddr, yiaddr=bp.yiaddr,
               siaddr=bp.siaddr, giaddr=bp.giaddr, chaddr=mac(bp.chaddr[:6]))
    opts = []
    for o in p[DHCP].options:
        if o in ("end", "pad"):
            continue
        vals = [v.decode() if isinstance(v, bytes) else v for v in o[1:]]
        opts.append([o[0]] + vals)
        if o[0] == "message-type":
            out["message_type"] = o[1]
    out["options"] = opts
    return out

print(json.dumps([decode(bytes.fromhex(h)) for h in sys.argv[1:]]))
`

// TestV4LinkCrossCheckScapy has scapy decode v4responder's ARP replies and
// DHCP replies: every field must be what the home link's description and the
// guest's request call for, and scapy must compute the same checksums.
func TestV4LinkCrossCheckScapy(t *testing.T) {
	requireScapy(t)
	cases := v4Cases(t)
	args := []string{"-c", v4ScapyScript}
	for _, c := range cases {
		args = append(args, hex.EncodeToString(c.reply))
	}
	cmd := exec.Command(python3(), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scapy: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var got []map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("scapy output %q: %v", out, err)
	}
	if len(got) != len(cases) {
		t.Fatalf("got %d scapy decodings, want %d", len(got), len(cases))
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if _, dhcp := want["message_type"]; dhcp {
				want = clone(want)
				want["ip_cksum_ok"], want["udp_cksum_ok"] = true, true
			}
			// JSON numbers come back as float64: compare as JSON.
			if diff := cmp.Diff(jsonRound(t, want), got[i]); diff != "" {
				t.Errorf("scapy decoding (-want +got):\n%s", diff)
			}
		})
	}
}

func clone(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func jsonRound(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// writeFramesPcap writes whole Ethernet frames to a pcap file.
func writeFramesPcap(t *testing.T, frames ...[]byte) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "v4link.pcap")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 0)
	for i, fr := range frames {
		ci := gopacket.CaptureInfo{Timestamp: ts.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

// v4TsharkFields are the fields tshark prints for each reply, in order; the
// checksum statuses are 1 ("Good") when tshark verifies them.
var v4TsharkFields = []string{
	"eth.src", "eth.dst", "arp.opcode", "arp.src.hw_mac", "arp.src.proto_ipv4", "arp.dst.hw_mac", "arp.dst.proto_ipv4",
	"ip.src", "ip.dst", "ip.checksum.status", "udp.srcport", "udp.dstport", "udp.checksum.status",
	"dhcp.type", "dhcp.id", "dhcp.flags.bc", "dhcp.ip.client", "dhcp.ip.your", "dhcp.hw.mac_addr", "dhcp.option.dhcp",
	"dhcp.option.dhcp_server_id", "dhcp.option.ip_address_lease_time", "dhcp.option.renewal_time_value",
	"dhcp.option.rebinding_time_value", "dhcp.option.subnet_mask", "dhcp.option.router",
	"dhcp.option.domain_name_server", "dhcp.option.domain_name", "dhcp.option.interface_mtu",
}

// wantV4Tshark is what tshark must print for a case, from the same
// expectations scapy is held to.
func wantV4Tshark(w map[string]any) []string {
	s := func(k string) string {
		if v, ok := w[k]; ok {
			return fmt.Sprint(v)
		}
		return ""
	}
	if _, dhcp := w["message_type"]; !dhcp {
		return []string{s("eth_src"), s("eth_dst"), s("op"), s("hwsrc"), s("psrc"), s("hwdst"), s("pdst"),
			"", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", ""}
	}
	opt := map[string]string{}
	for _, o := range w["options"].([]any) {
		o := o.([]any)
		var vs []string
		for _, v := range o[1:] {
			vs = append(vs, fmt.Sprint(v))
		}
		opt[o[0].(string)] = strings.Join(vs, ",")
	}
	bc := "0"
	if w["flags"].(int)&0x8000 != 0 {
		bc = "1"
	}
	return []string{s("eth_src"), s("eth_dst"), "", "", "", "", "",
		s("ip_src"), s("ip_dst"), "1", s("sport"), s("dport"), "1",
		"2", fmt.Sprintf("0x%08x", w["xid"]), bc, s("ciaddr"), s("yiaddr"), s("chaddr"), s("message_type"),
		opt["server_id"], opt["lease_time"], opt["renewal_time"], opt["rebinding_time"], opt["subnet_mask"], opt["router"],
		opt["name_server"], opt["domain"], opt["interface-mtu"]}
}

// TestV4LinkCrossCheckTshark has Wireshark's ARP and DHCP dissectors decode
// the same replies, with checksum verification on: the fields must match and
// no expert warning may appear.
func TestV4LinkCrossCheckTshark(t *testing.T) {
	tshark := requireTshark(t)
	cases := v4Cases(t)
	var frames [][]byte
	for _, c := range cases {
		frames = append(frames, c.reply)
	}
	file := writeFramesPcap(t, frames...)
	args := []string{"-r", file, "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
		"-T", "fields", "-E", "separator=/t", "-E", "aggregator=,", "-E", "occurrence=a"}
	for _, f := range v4TsharkFields {
		args = append(args, "-e", f)
	}
	lines := strings.Split(strings.TrimRight(string(runTshark(t, tshark, args...)), "\n"), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("got %d lines from tshark, want %d", len(lines), len(cases))
	}
	frameLines := tsharkFrames(t, tshark, file, len(cases))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := strings.Split(lines[i], "\t")
			want := wantV4Tshark(c.want)
			if diff := cmp.Diff(fieldPairs(want), fieldPairs(got)); diff != "" {
				t.Errorf("tshark fields (-want +got):\n%s", diff)
			}
			if p := tsharkProblems(frameLines[i]); len(p) != 0 {
				t.Errorf("tshark reports problems: %q", p)
			}
		})
	}
}

// fieldPairs names each value by its tshark field, so a difference says
// which field differs.
func fieldPairs(vals []string) []string {
	out := make([]string, len(v4TsharkFields))
	for i, f := range v4TsharkFields {
		v := ""
		if i < len(vals) {
			v = vals[i]
		}
		out[i] = f + "=" + v
	}
	return out
}
