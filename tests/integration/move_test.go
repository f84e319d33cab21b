package integration

import (
	"context"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

var (
	buildOnce sync.Once
	bins      scenario.Binaries
	buildErr  error
)

// requireBinaries builds kgswitch, the lab Home Agent and tcpcheck once per
// test binary, or fails the test.
func requireBinaries(t testing.TB, ctx context.Context) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kgswitch-bin-")
		if err != nil {
			buildErr = err
			return
		}
		bins, buildErr = scenario.Build(ctx, dir)
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
}

// newEnv builds a lab with kgswitch's binaries, and dumps the daemons' logs when
// the test fails, so a failure in CI can be understood from its output.
func newEnv(t testing.TB, ctx context.Context) *scenario.Env {
	t.Helper()
	return newEnvWith(t, ctx, lab.Options{})
}

// newEnvWith is newEnv for a lab built with options.
func newEnvWith(t testing.TB, ctx context.Context, opt lab.Options) *scenario.Env {
	t.Helper()
	requireLab(t)
	requireBinaries(t, ctx)
	l := newLabWith(t, ctx, opt)
	e := &scenario.Env{Lab: l, Bin: bins}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs := []string{e.HALogOf(lab.HomeNet), e.HALogOf(lab.HomeNet2)}
		for _, h := range lab.Hosts {
			logs = append(logs, e.KgswitchLog(h))
		}
		for _, f := range logs {
			if b, err := os.ReadFile(f); err == nil {
				t.Logf("---- %s ----\n%s", f, b)
			}
		}
	})
	return e
}

// startDaemons starts the lab Home Agent and kgswitch on both hosts; hostB has
// the guest declared in its configuration only when declareOnB is set.
func startDaemons(t *testing.T, ctx context.Context, e *scenario.Env, declareOnB bool) {
	t.Helper()
	if err := e.StartHomeAgent(ctx); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	for _, host := range []string{"hostA", "hostB"} {
		cfg, err := e.WriteConfig(host, host == "hostA" || declareOnB)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// startKgswitch starts the lab Home Agent and kgswitch on hosts, each with
// the guest declared on its tap there (taps[host], lab.GuestPort when not
// given: libvirt names taps per host). With cover false, the home host's
// departure cover is switched off.
func startKgswitch(t *testing.T, ctx context.Context, e *scenario.Env, hosts []string, taps map[string]string, cover bool) {
	t.Helper()
	startKgswitchWith(t, ctx, e, hosts, taps, cover, false)
}

// startKgswitchWith is startKgswitch; with ipv4, every configuration
// declares the IPv4 side as well (scenario.Config.IPv4, with the home
// router's MAC as the gateway's), so that the guest's IPv4 home address
// moves with it.
func startKgswitchWith(t *testing.T, ctx context.Context, e *scenario.Env, hosts []string, taps map[string]string, cover, ipv4 bool) {
	t.Helper()
	if err := e.StartHomeAgent(ctx); err != nil {
		t.Fatalf("start Home Agent: %v", err)
	}
	var gw net.HardwareAddr
	if ipv4 {
		var err error
		if gw, err = e.Lab.LinkMAC(ctx, "rtr", "home0"); err != nil {
			t.Fatal(err)
		}
	}
	for _, host := range hosts {
		g := lab.VM
		if tap := taps[host]; tap != "" {
			g.Port = tap
		}
		cfg, err := e.WriteConfigWith(host, scenario.Config{Guests: []lab.Guest{g}, IPv4: ipv4, GatewayMAC: gw})
		if err != nil {
			t.Fatal(err)
		}
		if host == "hostA" && !cover {
			if err := scenario.AppendConfig(cfg, noDepartureCover); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// noDepartureCover is the configuration that switches the home host's
// departure cover off.
const noDepartureCover = "\n[departure]\nenabled = false\n"

// TestMoveKeepsHomeAddress: a guest whose port moves from its home host to a
// foreign host stays reachable at its home address through kgswitch's tunnel
// to the Home Agent, and a TCP connection opened before the move survives it
// intact.
func TestMoveKeepsHomeAddress(t *testing.T) {
	t.Parallel()
	moveKeepsHomeAddress(t, lab.LayoutOneBridge)
}

// moveKeepsHomeAddress is TestMoveKeepsHomeAddress with the hosts' bridges
// arranged as layout says.
func moveKeepsHomeAddress(t *testing.T, layout lab.HostLayout) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newEnvWith(t, ctx, lab.Options{Layout: layout})
	startDaemons(t, ctx, e, true)
	hoa := lab.HoA.String()

	// Before the move: home-link path, and the home host leaves the VM alone.
	if n, err := e.Ping(ctx, "cn", hoa, 3); err != nil || n != 3 {
		t.Fatalf("before the move: %d/3 pings answered (%v)", n, err)
	}
	if st, err := e.Status(ctx, "hostA", lab.GuestPort); err != nil || st.Location != "home" || st.BindingState != "" {
		t.Fatalf("hostA status before the move: %+v (%v), want at home with no binding", st, err)
	}

	capture, err := e.StartCapture(ctx, "hostB", layout.HostLink(), "hostB-uplink")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	// 6 MiB at 192 KiB/s: about 32 s, so the stream spans the move and the
	// Home Agent's takeover delay.
	const streamBytes = 6 << 20
	stream, err := e.StartTCPStream(ctx, "cn", streamBytes, 192<<10)
	if err != nil {
		t.Fatal(err)
	}
	pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.WaitEstablished(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := pings.WaitReplies(ctx, time.Time{}, 1, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatalf("move: %v", err)
	}
	appeared := time.Now()
	st, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	bound := time.Now()
	if st.Location != "foreign" || st.CareOf != lab.CareOfAddr.String() || st.HomeAgent != lab.HAAddr.String() || st.LifetimeLeftSec <= 0 {
		t.Errorf("hostB status: %+v, want foreign, care-of %v, Home Agent %v, lifetime left", st, lab.CareOfAddr, lab.HAAddr)
	}

	// The correspondent reaches the guest again (after the Home Agent's takeover).
	if _, err := e.WaitReachable(ctx, "cn", hoa, 40*time.Second); err != nil {
		t.Fatalf("after the binding: %v", err)
	}
	client, server, err := stream.Wait()
	if err != nil {
		t.Fatalf("TCP stream: %v", err)
	}
	if err := pings.WaitReplies(ctx, time.Now(), 1, 5*time.Second); err != nil {
		t.Error(err)
	}
	loss := pings.Stop()
	if n, err := e.Ping(ctx, "cn", hoa, 5); err != nil || n != 5 {
		t.Errorf("after the move: %d/5 pings answered (%v)", n, err)
	}
	capture.Stop()

	// TCP: no reset, no byte lost or corrupted, in either direction.
	checkStream(t, streamBytes, client, server)

	// The reply path is the tunnel: guest -> kgswitch -> CoA -> HA, IP6IP6.
	out, err := capture.Tshark(ctx, "-Y", "ipv6.src == "+lab.CareOfAddr.String()+" && ipv6.dst == "+lab.HAAddr.String()+
		" && ipv6.nxt == 41 && icmpv6.type == 129", "-T", "fields", "-e", "frame.time_epoch")
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	replies := strings.Fields(out)
	if len(replies) == 0 {
		t.Fatal("no tunnelled echo reply (CoA -> HA, next header 41) on hostB's uplink")
	}
	first := parseEpoch(t, replies[0])
	out, err = capture.Tshark(ctx, "-Y", "ipv6.src == "+lab.HAAddr.String()+" && ipv6.dst == "+lab.CareOfAddr.String()+" && ipv6.nxt == 41", "-T", "fields", "-e", "frame.number")
	if err != nil || len(strings.Fields(out)) == 0 {
		t.Errorf("no tunnelled packet from the Home Agent to the care-of address on hostB's uplink (%v)", err)
	}

	// The Binding Update as tshark, an independent implementation, reads it.
	bus, err := capture.Tshark(ctx, "-Y", "mip6.mhtype == 5", "-V")
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, bus)
	}
	// The first Binding Update's dissection: up to the next frame's.
	bu := bus
	if i := strings.Index(bu[1:], "\nFrame "); i >= 0 {
		bu = bu[:i+1]
	}
	for _, want := range []string{
		"Mobility Header", "Binding Update", "Home Address: " + hoa,
		"1... .... .... .... = Acknowledge (A) flag: Binding Acknowledgement requested",
		".1.. .... .... .... = Home Registration (H) flag: Home Registration",
	} {
		if !strings.Contains(bu, want) {
			t.Errorf("tshark -V of the Binding Update lacks %q:\n%s", want, bu)
		}
	}
	for _, bad := range []string{"Malformed", "incorrect", "Bad checksum", "Expert Info (Warning"} {
		if strings.Contains(bu, bad) {
			t.Errorf("tshark flags the Binding Update (%q):\n%s", bad, bu)
		}
	}

	t.Logf("pings every 10 ms during the move: %d sent, %d lost, longest gap %v", loss.Sent, loss.Lost, loss.LongestGap.Round(time.Millisecond))
	t.Logf("port appeared on hostB -> binding bound: %v; -> first tunnelled reply: %v",
		bound.Sub(appeared).Round(time.Millisecond), first.Sub(appeared).Round(time.Millisecond))
	t.Logf("TCP stream: %d bytes each way in %.1f s, intact", client.Sent, client.Seconds)
	if loss.Sent < 500 {
		t.Errorf("ping stream sent only %d probes; the loss figure means nothing", loss.Sent)
	}
}

// checkStream fails the test unless the TCP echo stream of total bytes
// went through intact (scenario.StreamIntact).
func checkStream(t *testing.T, total int64, client, server scenario.TCPReport) {
	t.Helper()
	if err := scenario.StreamIntact(total, client, server); err != nil {
		t.Errorf("TCP echo stream from cn: %v", err)
	}
}

var epochRe = regexp.MustCompile(`^(\d+)\.(\d+)$`)

func parseEpoch(t *testing.T, s string) time.Time {
	t.Helper()
	m := epochRe.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("bad tshark time %q", s)
	}
	var sec, nsec int64
	for _, c := range m[1] {
		sec = sec*10 + int64(c-'0')
	}
	frac := (m[2] + "000000000")[:9]
	for _, c := range frac {
		nsec = nsec*10 + int64(c-'0')
	}
	return time.Unix(sec, nsec)
}
