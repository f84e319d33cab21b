package integration

import (
	"context"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// TestNoICMPErrorsToHomeAgent: the foreign host's kernel has neither
// ip6_tunnel nor MIP6, and would answer a tunnelled packet or a Binding
// Acknowledgement with an ICMPv6 error (Parameter Problem, Destination
// Unreachable) to the Home Agent. kgswitch's flows keep both away from it.
// The capture on hostB's uplink during a move and a ping stream must show
// the tunnel and the binding at work, and not one ICMPv6 error (types 1-4,
// RFC 4443 §2.1) from hostB to the Home Agent.
func TestNoICMPErrorsToHomeAgent(t *testing.T) {
	t.Parallel()
	noICMPErrorsToHomeAgent(t, lab.LayoutOneBridge)
}

// noICMPErrorsToHomeAgent is TestNoICMPErrorsToHomeAgent with the hosts'
// bridges arranged as layout says. The capture is where the host's own
// packets meet the LAN: the uplink itself, wherever the layout puts it, or
// the host's NIC outside OVS.
func noICMPErrorsToHomeAgent(t *testing.T, layout lab.HostLayout) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnvWith(t, ctx, lab.Options{Layout: layout})
	startDaemons(t, ctx, e, true)
	hoa := lab.HoA.String()
	if _, err := e.WaitReachable(ctx, "cn", hoa, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	capture, err := e.StartCaptureFilter(ctx, "hostB", layout.HostLink(), "hostB-icmp", "ip6")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Lab.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		t.Fatalf("move: %v", err)
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 40*time.Second); err != nil {
		t.Fatal(err)
	}
	// A few hundred tunnelled echo requests through the settled path.
	if err := pings.WaitReplies(ctx, time.Now(), 200, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	loss := pings.Stop()
	capture.Stop()

	ha, coa := lab.HAAddr.String(), lab.CareOfAddr.String()
	tunnelled := count(t, ctx, capture, "ipv6.src == "+ha+" && ipv6.dst == "+coa+" && ipv6.nxt == 41")
	acks := count(t, ctx, capture, "ipv6.src == "+ha+" && ipv6.dst == "+coa+" && mip6.mhtype == 6")
	if tunnelled < 100 || acks == 0 {
		t.Fatalf("capture saw %d tunnelled packets and %d Binding Acknowledgements from the Home Agent, want >= 100 and >= 1: it proves nothing", tunnelled, acks)
	}
	// Not tunnelled (an error the guest sends travels inside the tunnel).
	errFilter := "ipv6.dst == " + ha + " && !(ipv6.nxt == 41) && icmpv6.type >= 1 && icmpv6.type <= 4"
	if n := count(t, ctx, capture, errFilter); n != 0 {
		out, _ := capture.Tshark(ctx, "-Y", errFilter, "-V")
		t.Errorf("hostB sent %d ICMPv6 errors to the Home Agent, want none:\n%.4000s", n, out)
	}
	t.Logf("%d tunnelled packets and %d Binding Acknowledgements from the Home Agent on hostB's uplink, no ICMPv6 error back; pings: %d sent, %d lost",
		tunnelled, acks, loss.Sent, loss.Lost)
}
