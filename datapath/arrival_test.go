package datapath

import (
	"bytes"
	"context"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/clock/clocktest"
	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
)

// arrivalEnv is a foreign host whose guest's binding is being set up, its
// frames held.
type arrivalEnv struct {
	t   *testing.T
	d   *Datapath
	clk *clocktest.Clock
	up  *datapathtest.Uplink
	g   *Guest
	a   *Arrival
}

// send hands the datapath a frame from the guest to the correspondent whose
// UDP payload is n bytes long (n tells the frames apart), as Run does.
func (e *arrivalEnv) send(n int) {
	buf := make([]byte, headroom+maxFrame)
	k := copy(buf[headroom:], ethFrame(lanMAC, guestMAC, udpPacket(hoa, cn, n)))
	e.d.handle(buf, k, nil)
	e.d.flush()
}

func (e *arrivalEnv) release() { e.d.ReleaseArrival(e.a, coa, ha, true) }

// tunnelled returns the UDP payload lengths of what reached the uplink, in
// order, after checking each is the guest's packet, unchanged, in a tunnel
// from the care-of address to the Home Agent.
func (e *arrivalEnv) tunnelled() []int {
	e.t.Helper()
	var got []int
	for {
		select {
		case s := <-e.up.Out:
			outer, err := netpkt.ParseIPv6(s.Pkt)
			if err != nil || s.Dst != ha || outer.Src() != coa || outer.Dst() != ha || outer.NextHeader() != netpkt.ProtoIPv6 || outer.HopLimit() != tunnelHopLimit {
				e.t.Fatalf("got %v -> %v (to %v) next header %d hop limit %d (%v); want a tunnel packet %v -> %v",
					outer.Src(), outer.Dst(), s.Dst, outer.NextHeader(), outer.HopLimit(), err, coa, ha)
			}
			n := len(outer.Payload()) - netpkt.IPv6Len - 8
			if !bytes.Equal(outer.Payload(), udpPacket(hoa, cn, n)) {
				e.t.Fatalf("inner packet of %d payload bytes changed in the tunnel", n)
			}
			got = append(got, n)
		default:
			return got
		}
	}
}

func TestArrivalHold(t *testing.T) {
	// The guest's packet with a UDP payload of n bytes is 48+n bytes long.
	const maxHold = 3 * time.Second
	tests := []struct {
		name      string
		maxFrames int
		maxBytes  int
		run       func(e *arrivalEnv)
		want      []int // payload lengths tunnelled, in order
		held      uint64
		released  uint64
		expired   uint64
		overflow  uint64
		notBound  uint64
	}{
		{name: "held while not bound", maxFrames: 8, run: func(e *arrivalEnv) {
			e.send(10)
			e.send(11)
		}, held: 2},
		{name: "released in order", maxFrames: 8, run: func(e *arrivalEnv) {
			for n := 10; n < 15; n++ {
				e.send(n)
			}
			e.release()
		}, want: []int{10, 11, 12, 13, 14}, held: 5, released: 5},
		{name: "after the release under the old snapshot: straight on, behind the held", maxFrames: 8, run: func(e *arrivalEnv) {
			e.send(10)
			e.send(11)
			e.release()
			e.send(12)
			e.send(13)
		}, want: []int{10, 11, 12, 13}, held: 2, released: 2},
		{name: "overflow by frames", maxFrames: 2, run: func(e *arrivalEnv) {
			e.send(10)
			e.send(11)
			e.send(12)
			e.release()
		}, want: []int{10, 11}, held: 2, released: 2, overflow: 1},
		{name: "overflow by bytes", maxFrames: 8, maxBytes: 2*58 + 57, run: func(e *arrivalEnv) {
			e.send(10)
			e.send(10)
			e.send(10) // one byte too many
			e.send(9)  // fits exactly
			e.release()
		}, want: []int{10, 10, 9}, held: 3, released: 3, overflow: 1},
		{name: "expired while held and at the release", maxFrames: 8, run: func(e *arrivalEnv) {
			e.send(10)
			e.clk.Advance(2 * time.Second)
			e.send(11)
			e.clk.Advance(1500 * time.Millisecond)
			e.send(12) // 10 is 3.5 s old: expired here
			e.clk.Advance(1600 * time.Millisecond)
			e.release() // 11 is 3.1 s old: expired here
		}, want: []int{12}, held: 3, released: 1, expired: 2},
		{name: "discarded: what is left counted, later frames not bound", maxFrames: 8, run: func(e *arrivalEnv) {
			e.send(10)
			e.send(11)
			e.a.Discard()
			e.send(12)
			e.release()
		}, held: 2, expired: 2, notBound: 1},
		{name: "bigger than the tunnel carries: not held", maxFrames: 8, run: func(e *arrivalEnv) {
			e.send(TunnelMTU - netpkt.IPv6Len - 8 + 1)
			e.send(TunnelMTU - netpkt.IPv6Len - 8)
			e.release()
		}, want: []int{TunnelMTU - netpkt.IPv6Len - 8}, held: 1, released: 1, notBound: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := datapathtest.NewUplink(16)
			g := boundGuest(t)
			g.Tunnel = false
			g.Hold = NewArrival(tt.maxFrames, tt.maxBytes, maxHold, &g.Link.Counters)
			d, clk := newTestDatapath(datapathtest.NewConn(), up, g)
			e := &arrivalEnv{t: t, d: d, clk: clk, up: up, g: g, a: g.Hold}
			tt.run(e)
			if got := e.tunnelled(); !slices.Equal(got, tt.want) {
				t.Errorf("got payloads %v tunnelled, want %v", got, tt.want)
			}
			c := &g.Link.Counters
			for _, n := range []struct {
				what      string
				got, want uint64
			}{
				{"held", c.Held.Load(), tt.held},
				{"released", c.Released.Load(), tt.released},
				{"to tunnel", c.ToTunnelPackets.Load(), uint64(len(tt.want))},
				{"hold-expired", c.Drops[DropHoldExpired].Load(), tt.expired},
				{"hold-overflow", c.Drops[DropHoldOverflow].Load(), tt.overflow},
				{"not-bound", c.Drops[DropNotBound].Load(), tt.notBound},
			} {
				if n.got != n.want {
					t.Errorf("got %s = %d, want %d", n.what, n.got, n.want)
				}
			}
		})
	}
}

// The release races the datapath goroutine: frames keep coming while the
// control loop releases the hold and then publishes the snapshot with the
// tunnel. Whichever snapshot a frame meets, none overtakes another and none
// is lost.
func TestArrivalReleaseKeepsOrder(t *testing.T) {
	const frames = 200
	conn, up := datapathtest.NewConn(), datapathtest.NewUplink(frames)
	g := boundGuest(t)
	g.Tunnel = false
	g.Hold = NewArrival(frames, 0, time.Minute, &g.Link.Counters)
	d, _ := newTestDatapath(conn, up, g)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		conn.Close()
		<-done
	}()
	injected := make(chan struct{})
	go func() {
		for n := range frames {
			conn.Inject(ethFrame(lanMAC, guestMAC, udpPacket(hoa, cn, 10+n)))
		}
		close(injected)
	}()
	for g.Link.Counters.Held.Load() < frames/4 {
		runtime.Gosched()
	}
	d.ReleaseArrival(g.Hold, coa, ha, true)
	bound := *g
	bound.Tunnel, bound.Hold = true, nil
	f := NewFIB(coa, TunnelMTU, kgMAC)
	f.AddGuest(&bound)
	d.Publish(f)
	<-injected
	if !conn.Idle() {
		t.Fatal("datapath stopped")
	}
	e := &arrivalEnv{t: t, up: up}
	got := e.tunnelled()
	if len(got) != frames {
		t.Fatalf("got %d frames through the tunnel, want %d", len(got), frames)
	}
	for i, n := range got {
		if n != 10+i {
			t.Fatalf("frame %d through the tunnel has payload %d, want %d: order lost (%v)", i, n, 10+i, got)
		}
	}
	if c := &g.Link.Counters; c.ToTunnelPackets.Load() != frames || c.Released.Load() != c.Held.Load() {
		t.Errorf("got %d tunnelled, %d held, %d released; want %d tunnelled and every held frame released",
			c.ToTunnelPackets.Load(), c.Held.Load(), c.Released.Load(), frames)
	}
}
