package vswitch

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/mipv6"
)

func TestSignalling(t *testing.T) {
	h := newHarness(t, testConfig)
	h.arrive(t, "vnet3", 3, guestMAC)
	bu, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil {
		t.Fatal(err)
	}
	inject := func(pkt []byte) { h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, pkt)) }
	status := func() PortStatus {
		st, _ := h.sw.Status(context.Background())
		return st[0]
	}
	// A BA for another sequence number or from another node is dropped and counted.
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: bu.Sequence + 7, Lifetime: 150}))
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: netip.MustParseAddr("2001:db8:2000::66"), Dst: coa, HomeAddress: hoa, Sequence: bu.Sequence, Lifetime: 150}))
	h.noFrame(t)
	if st := status(); st.Drops["signal-rejected"] != 2 || st.BindingState != "registering" {
		t.Fatalf("got %+v, want 2 rejected BAs and still registering", st)
	}
	// 135: resend at once with the Home Agent's number plus one.
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Status: mipv6.StatusSequenceOutOfWindow, Sequence: 20000}))
	bu2, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil || bu2.Sequence != 20001 {
		t.Fatalf("got BU %+v (%v), want sequence 20001", bu2, err)
	}
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: 20001, Lifetime: 150}))
	h.settle(t)
	if st := status(); st.BindingState != "bound" {
		t.Fatalf("not bound: %+v", st)
	}
	// A Binding Refresh Request from the Home Agent: refresh at once.
	inject(mipv6.AppendBRRPacket(nil, mipv6.BRRPacket{Src: ha, Dst: coa}))
	if bu3, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil || bu3.Sequence != 20002 || bu3.Lifetime != 150 {
		t.Fatalf("got %+v (%v), want a refresh with sequence 20002", bu3, err)
	}
	// The Home Agent lost the binding: register again as soon as the rate
	// limit (3 Binding Updates a second) allows.
	inject(mipv6.AppendBindingErrorPacket(nil, mipv6.BEPacket{Src: ha, Dst: coa, Status: mipv6.BEStatusUnknownBinding, HomeAddress: hoa}))
	h.advance(t, time.Second)
	if bu4, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil || bu4.Sequence != 20003 {
		t.Fatalf("got %+v (%v), want a new registration with sequence 20003", bu4, err)
	}
	if st := status(); st.Reason != "home agent lost the binding" {
		t.Errorf("got reason %q", st.Reason)
	}
	// Garbage to the care-of address is counted, not fatal.
	inject([]byte{0x60, 0, 0, 0, 0, 8, 135, 64})
	h.noFrame(t)
}

// A flood of rejected Acks is counted exactly but logged once a second.
func TestRejectedSignallingLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	h := newHarness(t, testConfig)
	// The control loop alone writes the log and reads it back here.
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	h.sw.do(context.Background(), func() { h.sw.log = logger })
	h.bind(t)
	forged := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: 4242, Lifetime: 150})
	for range 10 {
		h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, forged))
	}
	h.settle(t)
	h.advance(t, time.Second)
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, forged))
	h.settle(t)
	if got := h.status(t, "vnet3").Drops["signal-rejected"]; got != 11 {
		t.Errorf("got %d counted, want 11", got)
	}
	var log string
	h.sw.do(context.Background(), func() { log = buf.String() })
	if n := strings.Count(log, "dropped Binding Acknowledgement"); n != 2 {
		t.Errorf("got %d log lines, want 2 (one a second):\n%s", n, log)
	}
	if !strings.Contains(log, "suppressed_since_last=9") {
		t.Errorf("second line does not say 9 were suppressed:\n%s", log)
	}
}

// A Home Agent that restarted refuses the tunnel with Destination
// Unreachable: kgswitch registers again at once instead of at the next
// refresh, keeps tunnelling meanwhile, and a stream of refusals sets no pace.
func TestTunnelRefusedReregisters(t *testing.T) {
	h := newHarness(t, testConfig)
	bu := h.bind(t)
	h.conn.Inject(datapathtest.EthFrame(kgMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, 10)))
	tunnelled := h.nextSent(t).Pkt
	refusal := datapathtest.EthFrame(kgMAC, lanMAC, datapathtest.ICMPv6Error(1, 4, ha, coa, tunnelled, 0))
	h.conn.Inject(refusal)
	again, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil || again.Sequence != bu.Sequence+1 || again.Lifetime != bu.Lifetime {
		t.Fatalf("got %+v (%v), want a registration at once with sequence %d", again, err, bu.Sequence+1)
	}
	st := h.status(t, "vnet3")
	if st.BindingState != "refreshing" || st.Reason != "home agent refused the tunnel" || st.TunnelRefused != 1 {
		t.Errorf("got %+v, want refreshing because the home agent refused the tunnel, 1 refusal counted", st)
	}
	// More refusals within the hint gap: counted, no Binding Update; the
	// guest's packets still go through the tunnel.
	for range 5 {
		h.conn.Inject(refusal)
	}
	h.conn.Inject(datapathtest.EthFrame(kgMAC, guestMAC, datapathtest.UDPPacket(hoa, cn, 10)))
	if s := h.nextSent(t); s.Dst != ha || len(s.Pkt) != len(tunnelled) {
		t.Fatalf("got %d bytes to %v, want the guest's packet tunnelled to the Home Agent", len(s.Pkt), s.Dst)
	}
	h.settle(t)
	if n := len(h.uplink.Out); n != 0 {
		t.Errorf("got %d more packets on the uplink, want none (refusals are rate-limited)", n)
	}
	if st := h.status(t, "vnet3"); st.TunnelRefused != 6 {
		t.Errorf("got %d refusals counted, want 6", st.TunnelRefused)
	}
	// The Home Agent's Ack, after its DAD, binds again.
	ba := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: again.Sequence, Lifetime: again.Lifetime})
	h.advance(t, time.Second)
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, ba))
	h.settle(t)
	if st := h.status(t, "vnet3"); st.BindingState != "bound" {
		t.Errorf("got %+v, want bound again", st)
	}
}

// Signalling that changes nothing (a replay of the Home Agent's Ack, Binding
// Errors and Binding Refresh Requests too soon after the last) is harmless,
// but a forger can send it at any rate: each kind is logged once a second, and
// kgswitch answers only the first hint.
func TestUnchangingSignallingLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	h := newHarness(t, testConfig)
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	h.sw.do(context.Background(), func() { h.sw.log = logger })
	bu := h.bind(t)
	inject := func(pkt []byte, n int) {
		for range n {
			h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, pkt))
		}
		h.settle(t)
	}
	replay := mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: bu.Sequence, Lifetime: bu.Lifetime})
	inject(replay, 10)
	be := mipv6.AppendBindingErrorPacket(nil, mipv6.BEPacket{Src: ha, Dst: coa, Status: mipv6.BEStatusUnrecognizedMHType, HomeAddress: hoa})
	inject(be, 10)
	refresh, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt)
	if err != nil {
		t.Fatal(err)
	}
	inject(mipv6.AppendBAPacket(nil, mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: refresh.Sequence, Lifetime: refresh.Lifetime}), 1)
	brr := mipv6.AppendBRRPacket(nil, mipv6.BRRPacket{Src: ha, Dst: coa})
	inject(brr, 10)
	if _, err := mipv6.ParseBUPacket(h.nextSent(t).Pkt); err != nil {
		t.Fatal(err)
	}
	h.noFrame(t)

	var log string
	h.sw.do(context.Background(), func() { log = buf.String() })
	for _, c := range []struct {
		line string
		want int
	}{
		{"Binding Acknowledgement changed nothing", 1},
		{`msg="Binding Error" `, 1}, // the hint taken
		{"Binding Error changed nothing", 1},
		{`msg="Binding Refresh Request"`, 1},
		{"Binding Refresh Request changed nothing", 1},
	} {
		if n := strings.Count(log, c.line); n != c.want {
			t.Errorf("got %d log lines %q, want %d:\n%s", n, c.line, c.want, log)
		}
	}
	// Each is counted: the Binding Refresh Requests kgswitch did not act on
	// among what belongs to no VM, the rest on the VM.
	if got := h.sw.dpCounters.DropMap()["signal-ignored"]; got != 9 {
		t.Errorf("got %d Binding Refresh Requests counted signal-ignored, want 9", got)
	}
	if got := h.status(t, "vnet3").Drops["signal-ignored"]; got != 10+9 {
		t.Errorf("got %d Acks and Binding Errors counted signal-ignored, want %d", got, 10+9)
	}
}
