package datapath

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
)

// Frames held for a departed VM are released to the Home Agent's MAC in
// order, except those older than the hold limit, which are counted.
func TestHoldQueueExpiry(t *testing.T) {
	conn := datapathtest.NewConn()
	d, clk := newTestDatapath(conn, datapathtest.NewUplink(1), nil)
	c := &Counters{}
	dep := NewDeparted(hoa.String(), guestMAC, hoa, netip.Addr{}, 10, time.Second, c)
	f := NewFIB(coa, TunnelMTU, kgMAC)
	f.AddDeparted(dep)
	d.Publish(f)
	toVM := func(i int) {
		buf := make([]byte, headroom+maxFrame)
		n := copy(buf[headroom:], ethFrame(guestMAC, lanMAC, udpPacket(cn, hoa, i)))
		d.handle(buf, n, nil)
		d.flush()
	}
	toVM(1) // at 0 s: too old by the release
	clk.Advance(800 * time.Millisecond)
	toVM(2) // at 0.8 s: still fresh at 1.5 s
	clk.Advance(700 * time.Millisecond)
	if got := dep.LastSeen(); !got.Equal(clk.Now().Add(-700 * time.Millisecond)) {
		t.Errorf("got last seen %v, want the second frame's time", got)
	}
	haMAC := net.HardwareAddr{0x02, 0x48, 0x41, 0, 0, 1}
	d.Release(dep, haMAC)
	if got := c.Held.Load(); got != 2 {
		t.Errorf("got %d held, want 2", got)
	}
	if got := c.Drops[DropHoldExpired].Load(); got != 1 {
		t.Errorf("got %d expired, want 1", got)
	}
	select {
	case fr := <-conn.Out:
		if dst := net.HardwareAddr(fr[0:6]); dst.String() != haMAC.String() || len(fr) != 14+40+8+2 {
			t.Errorf("released frame to %v, %d bytes; want the second frame to %v", dst, len(fr), haMAC)
		}
	default:
		t.Fatal("nothing released")
	}
	if len(conn.Out) != 0 || c.Released.Load() != 1 {
		t.Errorf("got %d more frames out, %d counted released; want none more and 1", len(conn.Out), c.Released.Load())
	}
}
