package interop

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/kgswitch/kgswitch/clock/clocktest"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/datapath/datapathtest"
)

// The Dual-Stack tunnel cross-checks: the packets the real datapath emits
// for a guest's IPv4 (RFC 5555 §4.2: IPv4 in IPv6, next header 4, as RFC
// 2473 tunnels it), the Ethernet frames it delivers from the tunnel, and the
// ICMP errors it sends as the guest's gateway, decoded by scapy and by
// Wireshark field by field, checksums verified by both, fragments
// reassembled by both. The guest's packets are built with gopacket, not
// with the datapath's own netpkt, so that no encoding is shared with what is
// checked.

var (
	t4CareOf    = datapathtest.CareOf
	t4HomeAgent = datapathtest.HomeAgent
	t4HoA4      = datapathtest.HomeAddr4
	t4Gateway   = datapathtest.Gateway4
	t4CN        = datapathtest.CN4
	t4GuestMAC  = datapathtest.GuestMAC
	t4KgMAC     = datapathtest.KgMAC
	t4LanMAC    = datapathtest.LanMAC
)

// Ports no Wireshark dissector claims, so that tshark shows the UDP payload
// as data.
const t4SrcPort, t4DstPort = 40000, 40001

// t4Datapath is the real datapath serving one dual-stack guest on a foreign
// host, its IPv4 home address bound at the Home Agent, running as kgswitch
// runs it: Run on its own goroutine, fed through an in-memory internal port.
type t4Datapath struct {
	conn *datapathtest.Conn
	up   *datapathtest.Uplink
}

func startTunnel4Datapath(t *testing.T) *t4Datapath {
	t.Helper()
	conn, up := datapathtest.NewConn(), datapathtest.NewUplink(64)
	d := datapath.New(conn, up, clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), &datapath.Counters{})
	fib := datapath.NewFIB(t4CareOf, datapath.TunnelMTU, t4KgMAC)
	fib.AddGuest(&datapath.Guest{Key: datapathtest.HomeAddr.String(), MAC: [6]byte(t4GuestMAC),
		HomeAddr: datapathtest.HomeAddr, Prefix: datapathtest.HomePrefix, HomeAgent: t4HomeAgent, Tunnel: true,
		HomeAddr4: t4HoA4, Gateway4: t4Gateway, Tunnel4: true, Link: &datapath.GuestLink{}})
	d.Publish(fib)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		d.Close()
		if err := <-done; err != nil {
			t.Errorf("datapath Run: %v", err)
		}
	})
	return &t4Datapath{conn, up}
}

// send injects frame and returns, once the datapath has handled it, the
// packets it sent up the tunnel and the frames it wrote to the internal port.
func (p *t4Datapath) send(t *testing.T, frame []byte) (uplink, port [][]byte) {
	t.Helper()
	p.conn.Inject(frame)
	if !p.conn.Idle() {
		t.Fatal("datapath stopped")
	}
	for {
		select {
		case s := <-p.up.Out:
			if s.Dst != t4HomeAgent {
				t.Errorf("got a packet sent up to %v, want %v", s.Dst, t4HomeAgent)
			}
			uplink = append(uplink, s.Pkt)
		case f := <-p.conn.Out:
			port = append(port, f)
		default:
			return uplink, port
		}
	}
}

// t4IPv4 is a guest's (or a correspondent's) IPv4 packet as gopacket builds
// it, lengths and checksums computed.
func t4IPv4(t *testing.T, src, dst netip.Addr, ttl uint8, df bool, id uint16, l4 ...gopacket.SerializableLayer) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Id: id, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	switch l := l4[0].(type) {
	case *layers.UDP:
		ip.Protocol = layers.IPProtocolUDP
		if err := l.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
	case *layers.ICMPv4:
		ip.Protocol = layers.IPProtocolICMPv4
	}
	return v4Serialize(t, append([]gopacket.SerializableLayer{ip}, l4...)...)
}

// t4Payload is n bytes counting up from seed, so that every packet's data
// differs.
func t4Payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

func t4UDP(t *testing.T, src, dst netip.Addr, ttl uint8, df bool, id uint16, data []byte) []byte {
	return t4IPv4(t, src, dst, ttl, df, id, &layers.UDP{SrcPort: t4SrcPort, DstPort: t4DstPort}, gopacket.Payload(data))
}

func t4Echo(t *testing.T, ttl uint8, id uint16, data []byte) []byte {
	return t4IPv4(t, t4HoA4.Addr(), t4CN, ttl, true, id,
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1}, gopacket.Payload(data))
}

// guestFrame is ip as the guest sends it: to kgswitch's internal port,
// whose MAC kgswitch's ARP answers gave it as the gateway's.
func guestFrame(ip []byte) []byte {
	return datapathtest.EthFrame4(t4KgMAC, t4GuestMAC, ip)
}

// t4Want is what both decoders must read in one packet, keyed as
// tunnel4ScapyScript prints and t4TsharkFields maps to Wireshark's fields.
// Values are compared as strings.
type t4Want map[string]any

// t4Outer is the outer IPv6 header RFC 5555 §4.2 and RFC 2473 §3 call for:
// from the care-of address to the Home Agent, next header 4, the datapath's
// hop limit, and a payload length of the inner packet's.
func t4Outer(innerLen int) t4Want {
	return t4Want{"ip6_src": t4CareOf, "ip6_dst": t4HomeAgent, "ip6_nh": 4, "ip6_hlim": 64, "ip6_plen": innerLen}
}

// t4Inner is an IPv4 header as it must read, its checksum verified;
// fragOff is in units of 8 octets, as the header carries it (RFC 791 §3.1)
// and both decoders show it.
func t4Inner(src, dst netip.Addr, ttl, proto int, id uint16, df, mf bool, fragOff, totalLen int) t4Want {
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	return t4Want{"ip_src": src, "ip_dst": dst, "ip_ttl": ttl, "ip_proto": proto, "ip_id": fmt.Sprintf("0x%04x", id),
		"ip_df": b(df), "ip_mf": b(mf), "ip_frag": fragOff, "ip_len": totalLen, "ip_hdr_len": 20, "ip_cksum_ok": 1}
}

func (w t4Want) with(more ...t4Want) t4Want {
	out := t4Want{}
	for _, m := range append([]t4Want{w}, more...) {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// t4Case is what a test injects into the datapath and what the datapath
// must send for it: IPv6 packets up the tunnel (uplink) or Ethernet frames
// to the guest (port), each with what the decoders must read in it, and,
// for fragments, what they must read in the reassembled packet.
type t4Case struct {
	name       string
	in         []byte
	uplink     bool
	want       []t4Want
	reassembly t4Want
}

func tunnel4Cases(t *testing.T) []t4Case {
	hoa4 := t4HoA4.Addr()
	udpData := t4Payload(100, 0)
	echoData := t4Payload(56, 0x40)
	bigData := t4Payload(3000, 0x80)
	dfBigData := t4Payload(1600, 0x20)

	// Fragments: RFC 791 §3.2, each fragment's data but the last's the
	// largest multiple of 8 that fits the tunnel MTU after a 20-byte header.
	bigUDP := t4UDP(t, hoa4, t4CN, 64, false, 0xbeef, bigData)
	chunk := (datapath.TunnelMTU - 20) &^ 7
	var frags []t4Want
	udpLen := 8 + len(bigData)
	for off := 0; off < udpLen; off += chunk {
		n := min(chunk, udpLen-off)
		frags = append(frags, t4Outer(20+n).with(t4Inner(hoa4, t4CN, 63, 17, 0xbeef, false, off+n < udpLen, off/8, 20+n)))
	}

	// The decapsulated packet: what the Home Agent forwards from a
	// correspondent, TTL already decremented on its way.
	fromCN := t4UDP(t, t4CN, hoa4, 57, true, 0x5678, udpData)
	tunnelled := make([]byte, 40, 40+len(fromCN))
	tunnelled[0], tunnelled[6], tunnelled[7] = 0x60, 4, 64
	tunnelled[4], tunnelled[5] = byte(len(fromCN)>>8), byte(len(fromCN))
	copy(tunnelled[8:24], t4HomeAgent.AsSlice())
	copy(tunnelled[24:40], t4CareOf.AsSlice())
	tunnelled = append(tunnelled, fromCN...)

	dfBig := t4UDP(t, hoa4, t4CN, 64, true, 0x2222, dfBigData)
	ttl1 := t4UDP(t, hoa4, t4CN, 1, true, 0x3333, udpData)
	gwFrame := t4Want{"eth_dst": t4GuestMAC, "eth_src": t4KgMAC, "eth_type": "0x0800"}
	// RFC 1812 §4.3.2.3: the error quotes as much of the packet as fits
	// in 576 bytes.
	fragNeededQuote := 576 - 20 - 8

	return []t4Case{
		{name: "UDP encapsulated", in: guestFrame(t4UDP(t, hoa4, t4CN, 64, true, 0x1234, udpData)), uplink: true,
			want: []t4Want{t4Outer(128).with(t4Inner(hoa4, t4CN, 63, 17, 0x1234, true, false, 0, 128), t4Want{
				"sport": t4SrcPort, "dport": t4DstPort, "udp_len": 108, "udp_cksum_ok": 1, "data": hex.EncodeToString(udpData),
			})}},
		{name: "ICMP echo encapsulated", in: guestFrame(t4Echo(t, 64, 0x4321, echoData)), uplink: true,
			want: []t4Want{t4Outer(84).with(t4Inner(hoa4, t4CN, 63, 1, 0x4321, true, false, 0, 84), t4Want{
				"icmp_type": 8, "icmp_code": 0, "icmp_cksum_ok": 1, "icmp_ident": 7, "icmp_seq": 1, "data": hex.EncodeToString(echoData),
			})}},
		{name: "UDP without DF fragmented", in: guestFrame(bigUDP), uplink: true, want: frags,
			reassembly: t4Want{"reasm_len": udpLen, "sport": t4SrcPort, "dport": t4DstPort, "udp_len": udpLen, "udp_cksum_ok": 1,
				"data": hex.EncodeToString(bigData)}},
		{name: "UDP decapsulated", in: datapathtest.EthFrame(t4KgMAC, t4LanMAC, tunnelled),
			want: []t4Want{gwFrame.with(t4Inner(t4CN, hoa4, 57, 17, 0x5678, true, false, 0, len(fromCN)), t4Want{
				"ip_cksum": fmt.Sprintf("0x%02x%02x", fromCN[10], fromCN[11]), "ip_dsfield": "0x00",
				"sport": t4SrcPort, "dport": t4DstPort, "udp_len": 108, "udp_cksum_ok": 1,
				"udp_cksum": fmt.Sprintf("0x%02x%02x", fromCN[26], fromCN[27]), "data": hex.EncodeToString(udpData),
				"ip_bytes": hex.EncodeToString(fromCN),
			})}},
		{name: "Fragmentation Needed", in: guestFrame(dfBig),
			want: []t4Want{gwFrame.with(t4Inner(t4Gateway, hoa4, 64, 1, 0, true, false, 0, 576), t4Want{
				"icmp_type": 3, "icmp_code": 4, "icmp_cksum_ok": 1, "icmp_mtu": datapath.TunnelMTU,
				"quote_src": hoa4, "quote_dst": t4CN, "quote_ttl": 64, "quote_id": "0x2222", "quote_len": len(dfBig),
				"quote_cksum_ok": 1, "quote_sport": t4SrcPort, "quote_dport": t4DstPort,
				"quote_bytes": hex.EncodeToString(dfBig[:fragNeededQuote]),
			})}},
		{name: "Time Exceeded", in: guestFrame(ttl1),
			want: []t4Want{gwFrame.with(t4Inner(t4Gateway, hoa4, 64, 1, 0, true, false, 0, 20+8+len(ttl1)), t4Want{
				"icmp_type": 11, "icmp_code": 0, "icmp_cksum_ok": 1, "icmp_mtu": "",
				"quote_src": hoa4, "quote_dst": t4CN, "quote_ttl": 1, "quote_id": "0x3333", "quote_len": len(ttl1),
				"quote_cksum_ok": 1, "quote_sport": t4SrcPort, "quote_dport": t4DstPort,
				"quote_bytes": hex.EncodeToString(ttl1),
			})}},
	}
}

// t4Run drives each case through a fresh datapath and checks that it sent
// as many packets as expected, where expected, and nothing elsewhere.
func t4Run(t *testing.T, c t4Case) [][]byte {
	t.Helper()
	up, port := startTunnel4Datapath(t).send(t, c.in)
	got, other, where := up, port, "up the tunnel"
	if !c.uplink {
		got, other, where = port, up, "to the internal port"
	}
	if len(got) != len(c.want) || len(other) != 0 {
		t.Fatalf("got %d packets %s and %d elsewhere, want %d and none", len(got), where, len(other), len(c.want))
	}
	return got
}

// tunnel4ScapyScript has scapy decode the packets given as arguments,
// "ip6:HEX" (an IPv6 packet), "eth:HEX" (an Ethernet frame) or
// "defrag:HEX,HEX,..." (IPv6 packets whose inner IPv4 fragments scapy
// reassembles), and prints a JSON list with, per argument, the fields it
// reads, keyed as t4Want, and whether each checksum scapy computes for the
// decoded packet is the one in it.
const tunnel4ScapyScript = `
import json, sys
from scapy.all import raw
from scapy.layers.l2 import Ether
from scapy.layers.inet import IP, UDP, ICMP, IPerror, UDPerror, defragment
from scapy.layers.inet6 import IPv6

def ok(p, layer):
    q = p.copy()
    q[layer].chksum = None
    return int(p.__class__(raw(q))[layer].chksum == p[layer].chksum)

def l4(p, ip, out):
    u = ip.payload
    if type(u) is UDP:
        out.update(sport=u.sport, dport=u.dport, udp_len=u.len, udp_cksum_ok=ok(p, UDP),
                   udp_cksum="0x%04x" % u.chksum, data=raw(u.payload).hex())
    elif type(u) is ICMP:
        out.update(icmp_type=u.type, icmp_code=u.code, icmp_cksum_ok=ok(p, ICMP))
        if u.type == 8:
            out.update(icmp_ident=u.id, icmp_seq=u.seq, data=raw(u.payload).hex())
        if u.type == 3:
            out["icmp_mtu"] = u.nexthopmtu
        if IPerror in u:
            e = u[IPerror]
            out.update(quote_src=e.src, quote_dst=e.dst, quote_ttl=e.ttl, quote_proto=e.proto, quote_id="0x%04x" % e.id,
                       quote_len=e.len, quote_cksum_ok=ok(p, IPerror), quote_bytes=raw(e).hex())
            if UDPerror in e:
                out.update(quote_sport=e[UDPerror].sport, quote_dport=e[UDPerror].dport)

def decode(p):
    out = {}
    if Ether in p:
        out.update(eth_dst=p[Ether].dst, eth_src=p[Ether].src, eth_type="0x%04x" % p[Ether].type)
    if IPv6 in p:
        o = p[IPv6]
        out.update(ip6_src=o.src, ip6_dst=o.dst, ip6_nh=o.nh, ip6_hlim=o.hlim, ip6_plen=o.plen)
    ip = p[IP]
    out.update(ip_src=ip.src, ip_dst=ip.dst, ip_ttl=ip.ttl, ip_proto=ip.proto, ip_id="0x%04x" % ip.id,
               ip_df=int(ip.flags.DF), ip_mf=int(ip.flags.MF), ip_frag=ip.frag, ip_len=ip.len, ip_hdr_len=ip.ihl * 4,
               ip_cksum_ok=ok(p, IP), ip_cksum="0x%04x" % ip.chksum, ip_dsfield="0x%02x" % ip.tos,
               ip_bytes=raw(ip).hex())
    if ip.frag == 0 and not ip.flags.MF:
        l4(p, ip, out)
    return out

def reassemble(hexes):
    frags = [IPv6(bytes.fromhex(h))[IP] for h in hexes]
    whole = [p for p in defragment(frags) if not p.flags.MF and p.frag == 0]
    if len(whole) != 1:
        sys.exit("scapy reassembled %d packets, want 1" % len(whole))
    p = IP(raw(whole[0]))
    out = {"reasm_len": p.len - p.ihl * 4}
    l4(p, p, out)
    return out

res = []
for a in sys.argv[1:]:
    kind, h = a.split(":", 1)
    if kind == "defrag":
        res.append(reassemble(h.split(",")))
    elif kind == "eth":
        res.append(decode(Ether(bytes.fromhex(h))))
    else:
        res.append(decode(IPv6(bytes.fromhex(h))))
print(json.dumps(res))
`

// runTunnel4Scapy returns scapy's decoding of each argument.
func runTunnel4Scapy(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	cmd := exec.Command(python3(), append([]string{"-c", tunnel4ScapyScript}, args...)...)
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
	if len(got) != len(args) {
		t.Fatalf("got %d scapy decodings, want %d", len(got), len(args))
	}
	return got
}

// t4Compare returns the difference between what a decoder read (got,
// values as strings, "" for a field it did not find) and w, on w's keys
// that decoder reads (all but those skip names).
func t4Compare(w t4Want, got func(key string) string, skip func(key string) bool) string {
	want, have := map[string]string{}, map[string]string{}
	for k, v := range w {
		if skip(k) {
			continue
		}
		want[k], have[k] = fmt.Sprint(v), got(k)
	}
	return cmp.Diff(want, have)
}

func scapyValue(m map[string]any) func(string) string {
	return func(k string) string {
		v, ok := m[k]
		if !ok {
			return ""
		}
		return fmt.Sprint(v)
	}
}

// TestTunnel4CrossCheckScapy has scapy decode what the datapath sends for
// a dual-stack guest's IPv4: each packet's every field, its IPv4, UDP and
// ICMP checksums computed anew, and the fragments of a packet reassembled
// to the guest's original payload.
func TestTunnel4CrossCheckScapy(t *testing.T) {
	requireScapy(t)
	for _, c := range tunnel4Cases(t) {
		t.Run(c.name, func(t *testing.T) {
			got := t4Run(t, c)
			kind := "eth:"
			if c.uplink {
				kind = "ip6:"
			}
			var args, hexes []string
			for _, p := range got {
				args = append(args, kind+hex.EncodeToString(p))
				hexes = append(hexes, hex.EncodeToString(p))
			}
			if c.reassembly != nil {
				args = append(args, "defrag:"+strings.Join(hexes, ","))
			}
			decoded := runTunnel4Scapy(t, args...)
			never := func(string) bool { return false }
			for i, w := range c.want {
				if diff := t4Compare(w, scapyValue(decoded[i]), never); diff != "" {
					t.Errorf("packet %d: scapy decoding (-want +got):\n%s", i, diff)
				}
			}
			if c.reassembly != nil {
				if diff := t4Compare(c.reassembly, scapyValue(decoded[len(got)]), never); diff != "" {
					t.Errorf("reassembled: scapy decoding (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// t4TsharkField is the Wireshark field behind a t4Want key, and which of
// its occurrences in the packet (the ICMP error's quoted header is the
// second IPv4 header).
type t4TsharkField struct {
	name string
	occ  int
}

var t4TsharkFields = map[string]t4TsharkField{
	"eth_dst": {"eth.dst", 0}, "eth_src": {"eth.src", 0}, "eth_type": {"eth.type", 0},
	"ip6_src": {"ipv6.src", 0}, "ip6_dst": {"ipv6.dst", 0}, "ip6_nh": {"ipv6.nxt", 0}, "ip6_hlim": {"ipv6.hlim", 0}, "ip6_plen": {"ipv6.plen", 0},
	"ip_src": {"ip.src", 0}, "ip_dst": {"ip.dst", 0}, "ip_ttl": {"ip.ttl", 0}, "ip_proto": {"ip.proto", 0}, "ip_id": {"ip.id", 0},
	"ip_df": {"ip.flags.df", 0}, "ip_mf": {"ip.flags.mf", 0}, "ip_frag": {"ip.frag_offset", 0}, "ip_len": {"ip.len", 0},
	"ip_hdr_len": {"ip.hdr_len", 0}, "ip_cksum_ok": {"ip.checksum.status", 0}, "ip_cksum": {"ip.checksum", 0}, "ip_dsfield": {"ip.dsfield", 0},
	"sport": {"udp.srcport", 0}, "dport": {"udp.dstport", 0}, "udp_len": {"udp.length", 0}, "udp_cksum_ok": {"udp.checksum.status", 0},
	"udp_cksum": {"udp.checksum", 0}, "data": {"data.data", 0},
	"icmp_type": {"icmp.type", 0}, "icmp_code": {"icmp.code", 0}, "icmp_cksum_ok": {"icmp.checksum.status", 0}, "icmp_mtu": {"icmp.mtu", 0},
	"icmp_ident": {"icmp.ident", 0}, "icmp_seq": {"icmp.seq", 0},
	"quote_src": {"ip.src", 1}, "quote_dst": {"ip.dst", 1}, "quote_ttl": {"ip.ttl", 1}, "quote_proto": {"ip.proto", 1}, "quote_id": {"ip.id", 1},
	"quote_len": {"ip.len", 1}, "quote_cksum_ok": {"ip.checksum.status", 1}, "quote_sport": {"udp.srcport", 0}, "quote_dport": {"udp.dstport", 0},
	"reasm_len": {"ip.reassembled.length", 0},
}

// runTunnel4Tshark has tshark decode file, checksum verification on, and
// returns per frame the value of each field of t4TsharkFields, and the
// problems `tshark -V` reports in each frame.
func runTunnel4Tshark(t *testing.T, tshark, file string, n int) (values []func(string) string, problems [][]string) {
	t.Helper()
	names := map[string]int{}
	prefs := []string{"-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"}
	args := append([]string{"-r", file}, prefs...)
	args = append(args, "-T", "fields", "-E", "separator=/t", "-E", "aggregator=;", "-E", "occurrence=a")
	var order []string
	for _, f := range t4TsharkFields {
		if _, ok := names[f.name]; !ok {
			names[f.name] = len(order)
			order = append(order, f.name)
			args = append(args, "-e", f.name)
		}
	}
	lines := strings.Split(strings.TrimRight(string(runTshark(t, tshark, args...)), "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("got %d lines from tshark, want %d", len(lines), n)
	}
	for _, l := range lines {
		cols := strings.Split(l, "\t")
		values = append(values, func(key string) string {
			f := t4TsharkFields[key]
			i := names[f.name]
			if i >= len(cols) {
				return ""
			}
			occ := strings.Split(cols[i], ";")
			if f.occ >= len(occ) {
				return ""
			}
			return occ[f.occ]
		})
	}
	for _, fr := range tsharkFrames(t, tshark, file, n, prefs...) {
		problems = append(problems, tsharkProblems(fr))
	}
	return values, problems
}

// TestTunnel4CrossCheckTshark has Wireshark's dissectors decode the same
// packets, each case a capture of its own: every field, the IPv4, UDP and
// ICMP checksums verified, the fragments reassembled (the reassembled
// packet's fields are read in its last fragment's frame), and no expert
// warning.
func TestTunnel4CrossCheckTshark(t *testing.T) {
	tshark := requireTshark(t)
	for _, c := range tunnel4Cases(t) {
		t.Run(c.name, func(t *testing.T) {
			got := t4Run(t, c)
			var file string
			if c.uplink {
				file = writePcap(t, got...)
			} else {
				file = writeFramesPcap(t, got...)
			}
			values, problems := runTunnel4Tshark(t, tshark, file, len(got))
			// tshark shows no packet's bytes as a field: the fields
			// compared cover them.
			notShown := func(k string) bool { return k == "quote_bytes" || k == "ip_bytes" }
			for i, w := range c.want {
				if diff := t4Compare(w, values[i], notShown); diff != "" {
					t.Errorf("packet %d: tshark fields (-want +got):\n%s", i, diff)
				}
				if len(problems[i]) != 0 {
					t.Errorf("packet %d: tshark reports problems: %q", i, problems[i])
				}
			}
			if c.reassembly != nil {
				if diff := t4Compare(c.reassembly, values[len(got)-1], notShown); diff != "" {
					t.Errorf("reassembled: tshark fields (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestTunnel4CrossCheckCanFail proves that the checks above can fail: a
// tunnelled packet whose inner IPv4 and UDP checksums are wrong is read as
// such by both decoders (and tshark reports it), so that it no longer
// matches what the datapath sent.
func TestTunnel4CrossCheckCanFail(t *testing.T) {
	tshark := requireTshark(t)
	requireScapy(t)
	c := tunnel4Cases(t)[0]
	bad := append([]byte(nil), t4Run(t, c)[0]...)
	bad[40+10] ^= 0xff   // the inner IPv4 header checksum
	bad[40+20+6] ^= 0xff // the UDP checksum
	values, problems := runTunnel4Tshark(t, tshark, writePcap(t, bad), 1)
	scapy := scapyValue(runTunnel4Scapy(t, "ip6:"+hex.EncodeToString(bad))[0])
	for _, d := range []struct {
		name string
		get  func(string) string
	}{{"tshark", values[0]}, {"scapy", scapy}} {
		for _, k := range []string{"ip_cksum_ok", "udp_cksum_ok"} {
			if got := d.get(k); got == "1" {
				t.Errorf("got %s %s = %q for a corrupted checksum, want it bad", d.name, k, got)
			}
		}
		if diff := t4Compare(c.want[0], d.get, func(string) bool { return false }); diff == "" {
			t.Errorf("got %s fields equal to the uncorrupted packet's, want a difference", d.name)
		}
	}
	if len(problems[0]) == 0 {
		t.Error("got no tshark problem for bad checksums, want one")
	}
}
