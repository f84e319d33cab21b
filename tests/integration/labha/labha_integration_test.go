package labha_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/labha"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
	"golang.org/x/sys/unix"
)

// The integration test runs helper modes of this test binary inside lab
// namespaces (the usual helper-process pattern): the mode is chosen by
// helperEnv and parameterised by environment variables.
const helperEnv = "LABHA_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// baResult is what the "bu" helper prints: the first Binding
// Acknowledgement seen after sending a Binding Update.
type baResult struct {
	Got        bool   `json:"got"`
	Status     uint8  `json:"status"`
	Seq        uint16 `json:"seq"`
	Lifetime   uint16 `json:"lifetime"`
	HasRH2     bool   `json:"has_rh2"`
	ElapsedMS  int64  `json:"elapsed_ms"`
	ParamProbs int    `json:"param_problems"` // ICMPv6 Parameter Problems from the HA
	// For the "espbu" helper: the Acknowledgement's ESP sequence number (0
	// for one in clear), and every ICMPv6 error from the HA.
	ESPSeq     uint32 `json:"esp_seq"`
	ICMPErrors int    `json:"icmp_errors"`
	// IPv4Ack is the Acknowledgement's IPv4 Address Acknowledgement, for a
	// "bu" helper asked for an IPv4 home address (HOA4).
	IPv4Ack mipv6.IPv4AddressAck `json:"ipv4_ack"`
}

// tunResult is what the "capture41" helper prints: the first IP6IP6 packet
// from the Home Agent to the care-of address.
type tunResult struct {
	Got       bool   `json:"got"`
	OuterSrc  string `json:"outer_src"`
	OuterDst  string `json:"outer_dst"`
	OuterHop  uint8  `json:"outer_hop"`
	InnerSrc  string `json:"inner_src"`
	InnerDst  string `json:"inner_dst"`
	InnerHop  uint8  `json:"inner_hop"`
	InnerNH   uint8  `json:"inner_nh"`
	ICMPType  uint8  `json:"icmp_type"`
	ElapsedMS int64  `json:"elapsed_ms"`
}

func runHelper(mode string) error {
	env := func(k string) string { return os.Getenv("LABHA_" + k) }
	num := func(k string) uint16 { n, _ := strconv.ParseUint(env(k), 0, 16); return uint16(n) }
	addr := func(k string) netip.Addr { a, _ := netip.ParseAddr(env(k)); return a }
	wait, _ := time.ParseDuration(env("WAIT"))
	cap, err := openCapture(env("IFACE"))
	if err != nil {
		return err
	}
	defer unix.Close(cap)
	ha, coa := addr("HA"), addr("COA")
	switch mode {
	case "bu":
		pkt := mipv6.AppendBUPacket(nil, mipv6.BUPacket{
			Src: coa, Dst: ha, HomeAddress: addr("HOA"),
			Sequence: num("SEQ"), Flags: num("FLAGS"), Lifetime: num("LIFETIME"),
			IPv4HomeAddress: mipv6.IPv4HomeAddress{Address: addr("HOA4"), PrefixLen: 32},
		})
		start := time.Now()
		if err := sendRaw(pkt, ha); err != nil {
			return err
		}
		var res baResult
		err := capture(cap, start.Add(wait), func(p []byte) bool {
			src, dst := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
			if src != ha || dst != coa {
				return false
			}
			if p[6] == mipv6.IPProtoICMPv6 && len(p) > 40 && p[40] == 4 {
				res.ParamProbs++
				return false
			}
			if p[6] != mipv6.IPProtoRouting && p[6] != mipv6.IPProtoMH {
				return false
			}
			ba, err := mipv6.ParseBAPacket(p)
			if err != nil {
				return false
			}
			res = baResult{Got: true, Status: ba.Status, Seq: ba.Sequence, Lifetime: ba.Lifetime,
				HasRH2: p[6] == mipv6.IPProtoRouting, ElapsedMS: time.Since(start).Milliseconds(), ParamProbs: res.ParamProbs,
				IPv4Ack: ba.IPv4Ack}
			return true
		})
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	case "espbu":
		// A Binding Update protected with the key file's Binding Update SA
		// (PROTECT=esp), with that SA's SPI but other keys (wrongkeys), or
		// in clear (clear); the answer, in clear or opened with the key
		// file's Acknowledgement SA.
		sas, err := esp.ParseKeyFile(env("KEYS"))
		if err != nil {
			return err
		}
		var buSA, baSA esp.SA
		for _, sa := range sas {
			switch {
			case sa.Dst == ha:
				buSA = sa
			case sa.Src == ha:
				baSA = sa
			}
		}
		espSeq, _ := strconv.ParseUint(env("ESPSEQ"), 0, 32)
		bu := mipv6.BUPacket{Src: coa, Dst: ha, HomeAddress: addr("HOA"),
			Sequence: num("SEQ"), Flags: num("FLAGS"), Lifetime: num("LIFETIME")}
		var pkt []byte
		switch env("PROTECT") {
		case "clear":
			pkt = mipv6.AppendBUPacket(nil, bu)
		case "wrongkeys":
			alg := buSA.Algorithm
			other, err := esp.NewSA(buSA.SPI, buSA.Src, buSA.Dst, alg, make([]byte, alg.EncKeyLen()), make([]byte, alg.AuthKeyLen()))
			if err != nil {
				return err
			}
			pkt, err = esp.AppendBUPacket(nil, &other, uint32(espSeq), bu, rand.Reader)
			if err != nil {
				return err
			}
		default:
			if pkt, err = esp.AppendBUPacket(nil, &buSA, uint32(espSeq), bu, rand.Reader); err != nil {
				return err
			}
		}
		start := time.Now()
		if err := sendRaw(pkt, ha); err != nil {
			return err
		}
		var res baResult
		err = capture(cap, start.Add(wait), func(p []byte) bool {
			src, dst := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
			if src != ha || dst != coa {
				return false
			}
			if p[6] == mipv6.IPProtoICMPv6 && len(p) > 40 && p[40] < 128 {
				res.ICMPErrors++
				return false
			}
			var ba mipv6.BAPacket
			var baSeq uint32
			if _, err := esp.PacketSPI(p); err == nil {
				if baSeq, ba, err = esp.ParseBAPacket(p, &baSA); err != nil {
					return false
				}
			} else if ba, err = mipv6.ParseBAPacket(p); err != nil {
				return false
			}
			res = baResult{Got: true, Status: ba.Status, Seq: ba.Sequence, Lifetime: ba.Lifetime,
				HasRH2: p[6] == mipv6.IPProtoRouting, ElapsedMS: time.Since(start).Milliseconds(),
				ESPSeq: baSeq, ICMPErrors: res.ICMPErrors}
			return true
		})
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	case "capture41":
		// Tell the parent the socket is open, then wait.
		fmt.Println("ready")
		start := time.Now()
		var res tunResult
		err := capture(cap, start.Add(wait), func(p []byte) bool {
			src, dst := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
			if src != ha || dst != coa || p[6] != mipv6.IPProtoIPv6 || len(p) < 80 {
				return false
			}
			in := p[40:]
			res = tunResult{Got: true, OuterSrc: src.String(), OuterDst: dst.String(), OuterHop: p[7],
				InnerSrc: netip.AddrFrom16([16]byte(in[8:24])).String(), InnerDst: netip.AddrFrom16([16]byte(in[24:40])).String(),
				InnerHop: in[7], InnerNH: in[6], ElapsedMS: time.Since(start).Milliseconds()}
			if in[6] == mipv6.IPProtoICMPv6 && len(in) > 40 {
				res.ICMPType = in[40]
			}
			return true
		})
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	case "capturerh2":
		// A packet the Home Agent itself sent to the home address: not
		// tunnelled, but addressed to the care-of address with a type 2
		// routing header carrying the home address.
		fmt.Println("ready")
		start := time.Now()
		var res tunResult
		err := capture(cap, start.Add(wait), func(p []byte) bool {
			src, dst := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
			if src != ha || dst != coa || p[6] != mipv6.IPProtoRouting || len(p) < 72 || p[42] != 2 || p[43] != 1 {
				return false
			}
			res = tunResult{Got: true, OuterSrc: src.String(), OuterDst: dst.String(), OuterHop: p[7],
				InnerDst: netip.AddrFrom16([16]byte(p[48:64])).String(), InnerNH: p[40], ICMPType: p[64], ElapsedMS: time.Since(start).Milliseconds()}
			return true
		})
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	case "reverse":
		// An Echo Request from the home address to the correspondent,
		// reverse-tunnelled from the care-of address to the Home Agent.
		hoa, cn := addr("HOA"), addr("CN")
		inner := echo(hoa, cn, 64)
		return sendRaw(labha.Encapsulate(nil, coa, ha, inner), ha)
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// echo builds an ICMPv6 Echo Request with a correct checksum.
func echo(src, dst netip.Addr, hop uint8) []byte {
	body := []byte{128, 0, 0, 0, 0x12, 0x34, 0, 1, 'l', 'a', 'b', 'h', 'a'}
	s, d := src.As16(), dst.As16()
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(s[:])
	add(d[:])
	add([]byte{0, 0, 0, byte(len(body)), 0, 0, 0, 58})
	add(body)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(body[2:], ^uint16(sum))
	pkt := []byte{0x60, 0, 0, 0, 0, byte(len(body)), 58, hop}
	pkt = append(pkt, s[:]...)
	pkt = append(pkt, d[:]...)
	return append(pkt, body...)
}

func sendRaw(pkt []byte, dst netip.Addr) error {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()})
}

// openCapture opens an AF_PACKET socket for IPv6 on iface, which sees
// packets the kernel would drop (type 2 routing header, IP6IP6).
func openCapture(iface string) (int, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return -1, err
	}
	p := uint16(unix.ETH_P_IPV6)
	proto := p<<8 | p>>8
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(proto))
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// capture feeds received IPv6 packets to match until it returns true or
// the deadline passes.
func capture(fd int, deadline time.Time, match func([]byte) bool) error {
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		tv := unix.NsecToTimeval(min(left, 100*time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		n, sa, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if ll, ok := sa.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n >= 40 && buf[0]>>4 == 6 && match(buf[:n]) {
			return nil
		}
	}
}

// labEnv is a running lab with labha in the ha namespace.
type labEnv struct {
	t      *testing.T
	l      *lab.Lab
	ha     *exec.Cmd
	logPth string
}

func (e *labEnv) helper(ctx context.Context, node, mode string, vars ...string) *exec.Cmd {
	cmd := e.l.Command(ctx, node, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode,
		"LABHA_IFACE="+lab.Bridge, "LABHA_HA="+lab.HAAddr.String(), "LABHA_COA="+lab.CareOfAddr.String(),
		"LABHA_HOA="+lab.HoA.String(), "LABHA_CN="+lab.CNAddr.String())
	for _, v := range vars {
		cmd.Env = append(cmd.Env, "LABHA_"+v)
	}
	cmd.Stderr = os.Stderr
	return cmd
}

// sendBU sends a Binding Update from hostB and returns the Binding
// Acknowledgement that came back within wait; vars are more of the
// helper's settings ("HOA4=192.0.2.10" asks for an IPv4 home address).
func (e *labEnv) sendBU(ctx context.Context, seq, flags, lifetime uint16, wait time.Duration, vars ...string) baResult {
	e.t.Helper()
	out, err := e.helper(ctx, "hostB", "bu", append([]string{fmt.Sprintf("SEQ=%d", seq), fmt.Sprintf("FLAGS=%d", flags),
		fmt.Sprintf("LIFETIME=%d", lifetime), "WAIT=" + wait.String()}, vars...)...).Output()
	if err != nil {
		e.t.Fatalf("bu helper: %v", err)
	}
	var res baResult
	if err := json.Unmarshal(out, &res); err != nil {
		e.t.Fatalf("bu helper output %q: %v", out, err)
	}
	e.t.Logf("BU seq %d flags %#x lifetime %d -> %+v", seq, flags, lifetime, res)
	if res.ParamProbs != 0 {
		// The lab kernel has no MIP6; a real Home Agent's does not answer
		// the Home Address option with an error.
		e.t.Errorf("got %d Parameter Problems from the Home Agent, want 0 (a real HA sends none)", res.ParamProbs)
	}
	return res
}

// sendESPBU sends a Binding Update for lab.HoA from hostB, protected as
// protect says ("esp", "wrongkeys", "clear"; see the espbu helper) with the
// SAs of key file keys and ESP sequence number espSeq, and returns the
// Binding Acknowledgement that came back within wait.
func (e *labEnv) sendESPBU(ctx context.Context, keys, protect string, espSeq uint32, seq, lifetime uint16, wait time.Duration) baResult {
	e.t.Helper()
	out, err := e.helper(ctx, "hostB", "espbu", "KEYS="+keys, "PROTECT="+protect, fmt.Sprintf("ESPSEQ=%d", espSeq),
		fmt.Sprintf("SEQ=%d", seq), fmt.Sprintf("FLAGS=%d", mipv6.FlagA|mipv6.FlagH),
		fmt.Sprintf("LIFETIME=%d", lifetime), "WAIT="+wait.String()).Output()
	if err != nil {
		e.t.Fatalf("espbu helper: %v", err)
	}
	var res baResult
	if err := json.Unmarshal(out, &res); err != nil {
		e.t.Fatalf("espbu helper output %q: %v", out, err)
	}
	e.t.Logf("BU %s ESP seq %d seq %d lifetime %d -> %+v", protect, espSeq, seq, lifetime, res)
	if res.ICMPErrors != 0 {
		e.t.Errorf("got %d ICMPv6 errors from the Home Agent, want none: every failure under IPsec is silent", res.ICMPErrors)
	}
	return res
}

// startCapture starts a capture helper on hostB and waits until it
// listens; the returned function waits for its result.
func (e *labEnv) startCapture(ctx context.Context, mode string, vars ...string) func() tunResult {
	e.t.Helper()
	capt := e.helper(ctx, "hostB", mode, vars...)
	stdout, err := capt.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := capt.Start(); err != nil {
		e.t.Fatalf("%s helper: %v", mode, err)
	}
	rd := bufio.NewReader(stdout)
	if line, err := rd.ReadString('\n'); err != nil || line != "ready\n" {
		e.t.Fatalf("%s helper: got %q, %v, want ready", mode, line, err)
	}
	return func() tunResult {
		e.t.Helper()
		var tr tunResult
		if err := json.NewDecoder(rd).Decode(&tr); err != nil {
			e.t.Fatalf("%s helper output: %v", mode, err)
		}
		if err := capt.Wait(); err != nil {
			e.t.Fatalf("%s helper: %v", mode, err)
		}
		return tr
	}
}

// events returns labha's log records so far.
func (e *labEnv) events() []map[string]any {
	b, _ := os.ReadFile(e.logPth)
	var evs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			evs = append(evs, m)
		}
	}
	return evs
}

// lastEvent returns labha's last record of msg so far, nil if none.
func (e *labEnv) lastEvent(msg string) map[string]any {
	var last map[string]any
	for _, ev := range e.events() {
		if ev["msg"] == msg {
			last = ev
		}
	}
	return last
}

// waitEvent waits until labha has logged msg, and returns that record.
func (e *labEnv) waitEvent(ctx context.Context, msg string, d time.Duration) map[string]any {
	e.t.Helper()
	var found map[string]any
	if err := wait.Until(ctx, d, 50*time.Millisecond, func() error {
		for _, ev := range e.events() {
			if ev["msg"] == msg {
				found = ev
				return nil
			}
		}
		b, _ := os.ReadFile(e.logPth)
		return fmt.Errorf("labha logged no %q; log:\n%s", msg, b)
	}); err != nil {
		e.t.Fatal(err)
	}
	return found
}

func TestHomeAgentInLab(t *testing.T) {
	if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
		t.Skip("KGSWITCH_SKIP_INTEGRATION=1: skipping the netns lab test (needs root, OVS, network namespaces)")
	}
	if err := lab.Preflight(); err != nil {
		t.Fatalf("this test needs the netns lab (set KGSWITCH_SKIP_INTEGRATION=1 to skip): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	bin := filepath.Join(t.TempDir(), "labha")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/kgswitch/kgswitch/tests/integration/cmd/labha").CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/labha: %v\n%s", err, out)
	}
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	e := &labEnv{t: t, l: l, logPth: filepath.Join(t.TempDir(), "labha.log")}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(e.logPth)
			t.Logf("labha log:\n%s", b)
		}
	})
	fwd4, err := l.Run(ctx, "ha", "sysctl", "-n", "net.ipv4.conf.all.forwarding")
	if err != nil {
		t.Fatalf("read IPv4 forwarding: %v", err)
	}
	e.ha, err = l.Start(ctx, "ha", e.logPth, bin, "-iface", lab.Uplink, "-addr", lab.HAAddr.String(),
		"-prefix", lab.HomePrefix.String(), "-dad", "1s", "-ipv4-prefix", "192.0.2.0/24")
	if err != nil {
		t.Fatalf("start labha: %v", err)
	}
	e.waitEvent(ctx, labha.EventReady, 10*time.Second)
	home := mipv6.FlagA | mipv6.FlagH

	// The correspondent reaches the guest at home, so the home router caches
	// the guest's MAC for the home address.
	if out, err := l.Run(ctx, "cn", "ping", "-6", "-n", "-c", "1", "-W", "2", lab.HoA.String()); err != nil {
		t.Fatalf("ping the guest at home: %v\n%s", err, out)
	}

	// The guest still runs on hostA, on the home link: it answers the DAD
	// probe, so the registration fails with 134 after the DAD wait.
	res := e.sendBU(ctx, 1, home, 15, 4*time.Second)
	if !res.Got || res.Status != mipv6.StatusDADFailed || res.Seq != 1 {
		t.Fatalf("BU while the guest is at home: got %+v, want status 134 seq 1", res)
	}
	// mip6d stops waiting at the first Neighbor Advertisement for the home
	// address, so the answer comes well within the DAD second.
	if res.ElapsedMS > 1000 {
		t.Errorf("BU while the guest is at home: got BA after %d ms, want it before the DAD wait ends", res.ElapsedMS)
	}

	if err := l.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatalf("MoveGuest: %v", err)
	}

	// First registration: DAD (≈1 s), then status 0 with RH2.
	res = e.sendBU(ctx, 10, home, 15, 4*time.Second)
	if !res.Got || res.Status != mipv6.StatusAccepted || res.Seq != 10 || res.Lifetime != 15 || !res.HasRH2 {
		t.Fatalf("first registration: got %+v, want status 0 seq 10 lifetime 15 with RH2", res)
	}
	if res.ElapsedMS < 900 || res.ElapsedMS > 2500 {
		t.Errorf("first registration: got BA after %d ms, want about 1 s (DAD)", res.ElapsedMS)
	}
	if out, err := l.Run(ctx, "ha", "ip", "-6", "neigh", "show", "proxy"); err != nil || !strings.Contains(out, lab.HoA.String()) || !strings.Contains(out, "router") {
		t.Errorf("proxy ND entry after registration: got %q (%v), want %v ... router", out, err, lab.HoA)
	}

	// An old sequence number: 135 carrying the last accepted one, no DAD.
	res = e.sendBU(ctx, 5, home, 15, 2*time.Second)
	if !res.Got || res.Status != mipv6.StatusSequenceOutOfWindow || res.Seq != 10 {
		t.Errorf("old sequence number: got %+v, want status 135 seq 10", res)
	}
	if res.ElapsedMS >= 900 {
		t.Errorf("old sequence number: got BA after %d ms, want it without the DAD wait", res.ElapsedMS)
	}

	// Without H: silently dropped.
	res = e.sendBU(ctx, 11, mipv6.FlagA, 15, 2*time.Second)
	if res.Got {
		t.Errorf("BU without H flag: got %+v, want no BA", res)
	}

	// Refresh: no DAD. It asks for an IPv4 home address inside the IPv4
	// home subnet too, which the Ack grants (RFC 5555 §3.2.1).
	hoa4 := netip.MustParseAddr("192.0.2.10")
	res = e.sendBU(ctx, 11, home, 15, 2*time.Second, "HOA4="+hoa4.String())
	if !res.Got || res.Status != 0 || res.Seq != 11 || res.ElapsedMS >= 900 {
		t.Errorf("refresh: got %+v, want status 0 seq 11 without the DAD wait", res)
	}
	if want := (mipv6.IPv4AddressAck{Present: true, Status: 0, PrefixLen: 32, Address: hoa4}); res.IPv4Ack != want {
		t.Errorf("refresh asking for %v: got IPv4 acknowledgement %+v, want %+v", hoa4, res.IPv4Ack, want)
	}
	// ba-sent is logged just after the Ack leaves, so it may trail it.
	if err := wait.Until(ctx, 2*time.Second, 50*time.Millisecond, func() error {
		if ev := e.lastEvent(labha.EventBASent); ev["seq"] != 11.0 || ev["hoa4"] != hoa4.String() || ev["ipv4_status"] != 0.0 {
			return fmt.Errorf("refresh asking for %v: got last %s event %v, want seq 11, hoa4 %v and ipv4_status 0", hoa4, labha.EventBASent, ev, hoa4)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if ev := e.lastEvent(labha.EventBindingRefreshed); ev["hoa4"] != hoa4.String() {
		t.Errorf("refresh asking for %v: got %s event %v, want hoa4 %v", hoa4, labha.EventBindingRefreshed, ev, hoa4)
	}
	// The IPv4 home address is routed into the TUN device and proxied (ARP)
	// on the home link once the Ack is out.
	if out, err := l.Run(ctx, "ha", "ip", "-4", "route", "show", hoa4.String()+"/32"); err != nil || !strings.Contains(out, hoa4.String()+" dev labha") {
		t.Errorf("IPv4 route after binding %v: got %q (%v), want %v dev labha...", hoa4, out, err, hoa4)
	}
	if out, err := l.Run(ctx, "ha", "ip", "-4", "neigh", "show", "proxy"); err != nil || !strings.Contains(out, hoa4.String()) {
		t.Errorf("proxy ARP entry after binding %v: got %q (%v), want one for %v", hoa4, out, err, hoa4)
	}
	if out, err := l.Run(ctx, "ha", "sysctl", "-n", "net.ipv4.conf.all.forwarding"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("IPv4 forwarding with -ipv4-prefix: got %q (%v), want 1", out, err)
	}

	// The Home Agent's own answer to the home address (an Echo Reply to a
	// reverse-tunnelled Echo Request for the HA itself) is sent with a type
	// 2 routing header, not through the tunnel.
	wait := e.startCapture(ctx, "capturerh2", "WAIT=5s")
	if err := e.helper(ctx, "hostB", "reverse", "WAIT=0s", "CN="+lab.HAAddr.String()).Run(); err != nil {
		t.Fatalf("reverse helper: %v", err)
	}
	tr := wait()
	t.Logf("HA's own echo reply: %+v", tr)
	if want := (tunResult{Got: true, OuterSrc: lab.HAAddr.String(), OuterDst: lab.CareOfAddr.String(), OuterHop: 63,
		InnerDst: lab.HoA.String(), InnerNH: 58, ICMPType: 129, ElapsedMS: tr.ElapsedMS}); tr != want {
		t.Errorf("HA's own echo reply: got %+v, want %+v", tr, want)
	}

	// A ping from the correspondent reaches hostB in the tunnel, but only
	// after the home router gave up on the guest's MAC: the Home Agent's
	// Neighbor Advertisement had no Override flag, so the router kept the
	// cached MAC (STALE), waited in DELAY, probed it unicast, failed, and
	// only then resolved the home address again, 8.4-9.1 s later with a real
	// Home Agent (see docs/home-agents.md).
	wait = e.startCapture(ctx, "capture41", "WAIT=20s")
	pingCtx, stopPing := context.WithCancel(ctx)
	ping := l.Command(pingCtx, "cn", "ping", "-6", "-n", "-i", "0.2", "-c", "100", lab.HoA.String())
	if err := ping.Start(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	tr = wait()
	stopPing()
	ping.Wait()
	t.Logf("tunnelled ping: %+v", tr)
	if !tr.Got {
		t.Fatalf("got no IP6IP6 packet from the Home Agent at hostB within 20 s")
	}
	if tr.ElapsedMS < 5000 || tr.ElapsedMS > 15000 {
		t.Errorf("tunnelled ping: first packet after %d ms, want about 9 s (router keeps the guest's MAC until NUD fails)", tr.ElapsedMS)
	}
	want := tunResult{Got: true, OuterSrc: lab.HAAddr.String(), OuterDst: lab.CareOfAddr.String(), OuterHop: 63,
		InnerSrc: lab.CNAddr.String(), InnerDst: lab.HoA.String(), InnerHop: 62, InnerNH: 58, ICMPType: 128, ElapsedMS: tr.ElapsedMS}
	if tr != want {
		t.Errorf("tunnelled ping: got %+v, want %+v (outer hop limit 64 - rtr, inner 64 - rtr - HA)", tr, want)
	}

	// Reverse tunnel: an Echo Request from the home address, tunnelled from
	// the care-of address, reaches the correspondent, whose Echo Reply
	// comes back through the tunnel.
	wait = e.startCapture(ctx, "capture41", "WAIT=5s")
	if err := e.helper(ctx, "hostB", "reverse", "WAIT=0s").Run(); err != nil {
		t.Fatalf("reverse helper: %v", err)
	}
	tr = wait()
	t.Logf("reply to reverse-tunnelled echo: %+v", tr)
	if !tr.Got || tr.InnerSrc != lab.CNAddr.String() || tr.InnerDst != lab.HoA.String() || tr.ICMPType != 129 {
		t.Errorf("reply to reverse-tunnelled echo: got %+v, want an Echo Reply from %v to %v in the tunnel", tr, lab.CNAddr, lab.HoA)
	}

	// De-registration: accepted, proxy entry gone; then 133 for a second one.
	res = e.sendBU(ctx, 12, home, 0, 2*time.Second)
	if !res.Got || res.Status != 0 || res.Seq != 12 || res.Lifetime != 0 {
		t.Errorf("de-registration: got %+v, want status 0 seq 12 lifetime 0", res)
	}
	if out, err := l.Run(ctx, "ha", "ip", "-6", "neigh", "show", "proxy"); err != nil || strings.Contains(out, lab.HoA.String()) {
		t.Errorf("proxy ND entry after de-registration: got %q (%v), want none for %v", out, err, lab.HoA)
	}
	if ev := e.lastEvent(labha.EventBindingRemoved); ev["hoa4"] != hoa4.String() {
		t.Errorf("de-registration: got %s event %v, want hoa4 %v released with the binding", labha.EventBindingRemoved, ev, hoa4)
	}
	if out, err := l.Run(ctx, "ha", "ip", "-4", "route", "show", hoa4.String()+"/32"); err != nil || strings.Contains(out, hoa4.String()) {
		t.Errorf("IPv4 route after de-registration: got %q (%v), want none for %v", out, err, hoa4)
	}
	if out, err := l.Run(ctx, "ha", "ip", "-4", "neigh", "show", "proxy"); err != nil || strings.Contains(out, hoa4.String()) {
		t.Errorf("proxy ARP entry after de-registration: got %q (%v), want none for %v", out, err, hoa4)
	}
	res = e.sendBU(ctx, 13, home, 0, 2*time.Second)
	if !res.Got || res.Status != mipv6.StatusNotHomeAgent {
		t.Errorf("second de-registration: got %+v, want status 133", res)
	}

	// A binding ends exactly when its granted lifetime does (4 s here,
	// counted from the acceptance after DAD), and its proxy entry with it.
	res = e.sendBU(ctx, 20, home, 1, 4*time.Second)
	if !res.Got || res.Status != 0 || res.Lifetime != 1 {
		t.Fatalf("short registration: got %+v, want status 0 lifetime 1", res)
	}
	expired := e.waitEvent(ctx, labha.EventBindingExpired, 8*time.Second)
	var accepted map[string]any
	for _, ev := range e.events() {
		if ev["msg"] == labha.EventBindingAdded && ev["seq"] == float64(20) {
			accepted = ev
		}
	}
	if accepted == nil {
		t.Fatalf("no binding-added event for seq 20")
	}
	t1, err1 := time.Parse(time.RFC3339Nano, accepted["time"].(string))
	t2, err2 := time.Parse(time.RFC3339Nano, expired["time"].(string))
	if err1 != nil || err2 != nil {
		t.Fatalf("event times: %v, %v", err1, err2)
	}
	if d := t2.Sub(t1); d < 4*time.Second || d > 4*time.Second+100*time.Millisecond {
		t.Errorf("binding expired %v after it was added, want 4 s", d)
	}
	if out, err := l.Run(ctx, "ha", "ip", "-6", "neigh", "show", "proxy"); err != nil || strings.Contains(out, lab.HoA.String()) {
		t.Errorf("proxy ND entry after expiry: got %q (%v), want none for %v", out, err, lab.HoA)
	}
	if out, err := l.Run(ctx, "ha", "ip", "-6", "route", "show", lab.HoA.String()+"/128"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("route after expiry: got %q (%v), want none", out, err)
	}

	// Stop: counters logged, TUN device gone.
	if err := e.ha.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM labha: %v", err)
	}
	if err := e.ha.Wait(); err != nil {
		t.Errorf("labha exit: %v", err)
	}
	stopped := e.waitEvent(ctx, labha.EventStopped, time.Second)
	if n, _ := stopped["tunnel_out"].(float64); n < 2 {
		t.Errorf("got tunnel_out = %v, want at least 2 (ping, echo reply from cn)", stopped["tunnel_out"])
	}
	if n, _ := stopped["tunnel_in"].(float64); n != 2 {
		t.Errorf("got tunnel_in = %v, want 2 (two reverse-tunnelled echo requests)", stopped["tunnel_in"])
	}
	if n, _ := stopped["rh2_out"].(float64); n != 1 {
		t.Errorf("got rh2_out = %v, want 1 (the HA's own echo reply)", stopped["rh2_out"])
	}
	if out, err := l.Run(ctx, "ha", "ip", "-o", "link", "show"); err != nil || strings.Contains(out, "labha") {
		t.Errorf("links after labha stopped: got %q (%v), want no labha TUN device", out, err)
	}
	if out, err := l.Run(ctx, "ha", "sysctl", "-n", "net.ipv4.conf.all.forwarding"); err != nil || out != fwd4 {
		t.Errorf("IPv4 forwarding after labha stopped: got %q (%v), want %q as before", out, err, fwd4)
	}
	var seen []string
	for _, ev := range e.events() {
		s, _ := ev["msg"].(string)
		switch s {
		case labha.EventBUReceived:
		case labha.EventTunnelDrop, labha.EventError, labha.EventBUDropped:
			t.Logf("labha %s: %v", s, ev["reason"])
			seen = append(seen, s)
		default:
			seen = append(seen, s)
		}
	}
	t.Logf("labha events: %v", seen)
	for _, want := range []string{labha.EventDADStart, labha.EventDADDone, labha.EventBindingAdded, labha.EventNASent,
		labha.EventBindingRefreshed, labha.EventBindingRemoved, labha.EventBUDropped} {
		if !contains(seen, want) {
			t.Errorf("labha log has no %q event", want)
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// labKeys are lab.HoA's SAs with the Home Agent as an operator writes them
// for a Linux Home Agent: AES-GCM, replay window 32.
const labKeys = `# lab.HoA's signalling with the lab Home Agent
ip xfrm state add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 0x1001 replay-window 32 mode transport \
	aead 'rfc4106(gcm(aes))' 0x00112233445566778899aabbccddeeff01020304 128
ip xfrm state add src 2001:db8:2000::1 dst 2001:db8:2000::10 proto esp spi 0x1002 replay-window 32 mode transport \
	aead 'rfc4106(gcm(aes))' 0xffeeddccbbaa99887766554433221100a0b0c0d0 128
`

// TestHomeAgentInLabIPsec runs the lab Home Agent with SAs for lab.HoA and
// checks what a Linux Home Agent with manually keyed SAs does: Binding
// Updates accepted only under ESP with the home address's SA, every other
// one dropped without answer of any kind, Acks under ESP numbered from 1
// on each start (docs/home-agents.md section 7).
func TestHomeAgentInLabIPsec(t *testing.T) {
	if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
		t.Skip("KGSWITCH_SKIP_INTEGRATION=1: skipping the netns lab test (needs root, OVS, network namespaces)")
	}
	if err := lab.Preflight(); err != nil {
		t.Fatalf("this test needs the netns lab (set KGSWITCH_SKIP_INTEGRATION=1 to skip): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dir := t.TempDir()
	bin := filepath.Join(dir, "labha")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/kgswitch/kgswitch/tests/integration/cmd/labha").CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/labha: %v\n%s", err, out)
	}
	keys := filepath.Join(dir, "ha.keys")
	if err := os.WriteFile(keys, []byte(labKeys), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	e := &labEnv{t: t, l: l}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(e.logPth)
			t.Logf("labha log:\n%s", b)
		}
	})
	start := func(log string) {
		t.Helper()
		e.logPth = filepath.Join(dir, log)
		e.ha, err = l.Start(ctx, "ha", e.logPth, bin, "-iface", lab.Uplink, "-addr", lab.HAAddr.String(),
			"-prefix", lab.HomePrefix.String(), "-dad", "1s", "-ipsec-keys", keys)
		if err != nil {
			t.Fatalf("start labha: %v", err)
		}
		ready := e.waitEvent(ctx, labha.EventReady, 10*time.Second)
		if got := fmt.Sprint(ready["ipsec"]); got != "["+lab.HoA.String()+"]" {
			t.Fatalf("got ready ipsec = %s, want [%v]", got, lab.HoA)
		}
	}
	// stop stops the Home Agent, and checks that it sent no Ack in clear.
	stop := func() {
		t.Helper()
		for _, ev := range e.events() {
			if ev["msg"] == labha.EventBASent && ev["esp_seq"] == nil {
				t.Errorf("got an Acknowledgement in clear: %v", ev)
			}
		}
		if err := e.ha.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM labha: %v", err)
		}
		if err := e.ha.Wait(); err != nil {
			t.Errorf("labha exit: %v", err)
		}
	}
	// dropped waits for the Binding Update dropped with reason.
	dropped := func(reason string) {
		t.Helper()
		if err := wait.Until(ctx, 2*time.Second, 50*time.Millisecond, func() error {
			for _, ev := range e.events() {
				if ev["msg"] == labha.EventBUDropped && ev["reason"] == reason {
					return nil
				}
			}
			return fmt.Errorf("labha logged no %s with reason %q", labha.EventBUDropped, reason)
		}); err != nil {
			t.Error(err)
		}
	}
	fwd4, err := l.Run(ctx, "ha", "sysctl", "-n", "net.ipv4.conf.all.forwarding")
	if err != nil {
		t.Fatalf("read IPv4 forwarding: %v", err)
	}
	start("labha.log")
	// Without -ipv4-prefix the Home Agent leaves IPv4 alone.
	if out, err := l.Run(ctx, "ha", "sysctl", "-n", "net.ipv4.conf.all.forwarding"); err != nil || out != fwd4 {
		t.Errorf("IPv4 forwarding without -ipv4-prefix: got %q (%v), want %q as before", out, err, fwd4)
	}
	if err := l.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatalf("MoveGuest: %v", err)
	}

	// In clear, the registration that works without IPsec: dropped.
	if res := e.sendESPBU(ctx, keys, "clear", 0, 10, 15, 2500*time.Millisecond); res.Got {
		t.Errorf("clear BU: got %+v, want no answer", res)
	}
	dropped(labha.ReasonUnprotected)

	// Under ESP: DAD, then an accepted Ack under ESP with the routing
	// header in clear, the Home Agent's first ESP sequence number.
	res := e.sendESPBU(ctx, keys, "esp", 1, 10, 15, 4*time.Second)
	if !res.Got || res.Status != mipv6.StatusAccepted || res.Seq != 10 || res.Lifetime != 15 || !res.HasRH2 || res.ESPSeq != 1 {
		t.Fatalf("protected first registration: got %+v, want status 0 seq 10 lifetime 15 with RH2, ESP sequence 1", res)
	}

	// The same ESP sequence number again, with a new Binding Update
	// sequence number: a replay for the SA, dropped.
	if res := e.sendESPBU(ctx, keys, "esp", 1, 11, 15, 1500*time.Millisecond); res.Got {
		t.Errorf("replayed ESP sequence number: got %+v, want no answer", res)
	}
	dropped(labha.ReasonReplay)

	// The SA's SPI with other keys: dropped.
	if res := e.sendESPBU(ctx, keys, "wrongkeys", 2, 11, 15, 1500*time.Millisecond); res.Got {
		t.Errorf("other keys: got %+v, want no answer", res)
	}
	dropped(labha.ReasonIntegrity)

	// A gap in the ESP numbers is fine; the refresh is answered at once
	// with the Home Agent's next number.
	res = e.sendESPBU(ctx, keys, "esp", 5, 11, 15, 2*time.Second)
	if !res.Got || res.Status != mipv6.StatusAccepted || res.Seq != 11 || res.ESPSeq != 2 || res.ElapsedMS >= 900 {
		t.Errorf("protected refresh: got %+v, want status 0 seq 11, ESP sequence 2, without the DAD wait", res)
	}

	// A restarted Home Agent numbers its Acks from 1 again; the mobile
	// node's numbers go on rising.
	stop()
	start("labha-restarted.log")
	res = e.sendESPBU(ctx, keys, "esp", 6, 12, 15, 4*time.Second)
	if !res.Got || res.Status != mipv6.StatusAccepted || res.Seq != 12 || res.ESPSeq != 1 {
		t.Errorf("registration after the restart: got %+v, want status 0 seq 12, ESP sequence 1", res)
	}
	stop()
}
