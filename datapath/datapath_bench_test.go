package datapath

import (
	"net/netip"
	"testing"

	"github.com/kgswitch/kgswitch/netpkt"
)

// countConn is an internal port that counts what it is given and keeps
// nothing, so that a benchmark sees only the datapath's own cost.
type countConn struct{ frames, batches int }

func (c *countConn) ReadFrame([]byte) (int, error) { select {} }
func (c *countConn) WriteFrame([]byte) error       { c.frames++; return nil }
func (c *countConn) Close() error                  { return nil }
func (c *countConn) ReadFrames([][]byte, []int) (int, error) {
	select {}
}
func (c *countConn) WriteFrames(f [][]byte) (int, error) {
	c.frames += len(f)
	c.batches++
	return len(f), nil
}

type countUplink struct{ pkts, batches int }

func (u *countUplink) WriteIPv6([]byte, netip.Addr) error { u.pkts++; return nil }
func (u *countUplink) Close() error                       { return nil }
func (u *countUplink) WriteIPv6Batch(p [][]byte, _ []netip.Addr) (int, error) {
	u.pkts += len(p)
	u.batches++
	return len(p), nil
}

// benchDatapath is a datapath serving one bound dual-stack guest, as on a
// foreign host.
func benchDatapath(tb testing.TB) (*Datapath, *countConn, *countUplink, *Guest) {
	tb.Helper()
	conn, up := &countConn{}, &countUplink{}
	g := boundGuest4(tb)
	d, _ := newTestDatapath(conn, up, g)
	return d, conn, up, g
}

// guestFrame is a UDP frame from the guest to the correspondent whose IPv6
// packet is size bytes long.
func guestFrame(size int) []byte {
	return ethFrame(lanMAC, guestMAC, udpPacket(hoa, cn, size-netpkt.IPv6Len-8))
}

// tunnelFrame is an IP6IP6 frame from the Home Agent carrying a UDP packet of
// size bytes to the guest.
func tunnelFrame(size int) []byte {
	inner := udpPacket(cn, hoa, size-netpkt.IPv6Len-8)
	tun := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(inner))
	netpkt.PutIPv6(tun, len(inner), netpkt.ProtoIPv6, 64, ha, coa)
	return ethFrame(kgMAC, lanMAC, append(tun, inner...))
}

// guestFrame4 is a UDP frame from the guest to an IPv4 correspondent (routed:
// its TTL is decremented) whose IPv4 packet is size bytes long; df as given.
func guestFrame4(size int, df bool) []byte {
	return ethFrame4(lanMAC, guestMAC, udp4To(cn4, 64, df, size-netpkt.IPv4Len-8))
}

// tunnelFrame4 is an IPv4-in-IPv6 frame from the Home Agent carrying a UDP
// packet of size bytes to the guest's IPv4 home address.
func tunnelFrame4(size int) []byte {
	return tunnel4Frame(ha, udpPacket4(cn4, hoa4.Addr(), size-netpkt.IPv4Len-8), 0)
}

// forward runs frame through handle as Run does: copied into a receive
// buffer (as recvmmsg would), handled, and flushed every BatchSize frames.
func forward(b *testing.B, d *Datapath, frame []byte) {
	bufs := make([][]byte, BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+maxFrame)
	}
	out := make([]byte, 0, 2048)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf := bufs[i%BatchSize]
		n := copy(buf[headroom:], frame)
		out = d.handle(buf, n, out[:0])
		if i%BatchSize == BatchSize-1 {
			d.flush()
		}
	}
	d.flush()
}

// BenchmarkEncap is a guest's packet into the tunnel to its Home Agent:
// IPv6 in IPv6, IPv4 in IPv6 (routed, so its TTL and checksum change), and
// an IPv4 packet without DF that leaves as fragments (fragments: packets
// per frame).
func BenchmarkEncap(b *testing.B) {
	for _, tc := range []struct {
		name      string
		frame     []byte
		fragments int
	}{
		{"ipv6=64", guestFrame(64), 1},
		{"ipv6=1460", guestFrame(1460), 1},
		{"ipv4=64", guestFrame4(64, true), 1},
		{"ipv4=1460", guestFrame4(1460, true), 1},
		{"ipv4-fragmented=4000", guestFrame4(4000, false), 3},
	} {
		b.Run(tc.name, func(b *testing.B) {
			d, _, up, g := benchDatapath(b)
			forward(b, d, tc.frame)
			want := b.N * tc.fragments
			if up.pkts != want || g.Link.Counters.ToTunnelPackets.Load() != uint64(want) {
				b.Fatalf("got %d tunnel packets, counted %d, want %d", up.pkts, g.Link.Counters.ToTunnelPackets.Load(), want)
			}
		})
	}
}

// BenchmarkDecap is a tunnel packet from the Home Agent out to the guest:
// IPv6 in IPv6 and IPv4 in IPv6.
func BenchmarkDecap(b *testing.B) {
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"ipv6=64", tunnelFrame(64)},
		{"ipv6=1460", tunnelFrame(1460)},
		{"ipv4=64", tunnelFrame4(64)},
		{"ipv4=1460", tunnelFrame4(1460)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			d, conn, _, g := benchDatapath(b)
			forward(b, d, tc.frame)
			if conn.frames != b.N || g.Link.Counters.FromTunnelPackets.Load() != uint64(b.N) {
				b.Fatalf("got %d frames to the guest, counted %d, want %d", conn.frames, g.Link.Counters.FromTunnelPackets.Load(), b.N)
			}
		})
	}
}

// TestForwardingAllocatesNothing is the benchmarks' promise as a test:
// neither direction of the tunnel allocates per packet, flush included.
func TestForwardingAllocatesNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"encap", guestFrame(1460)},
		{"decap", tunnelFrame(1460)},
		{"encap IPv4", guestFrame4(1460, true)},
		{"decap IPv4", tunnelFrame4(1460)},
		{"fragment IPv4", guestFrame4(4000, false)},
		{"Fragmentation Needed", guestFrame4(4000, true)},
		{"Time Exceeded", ethFrame4(lanMAC, guestMAC, udp4To(cn4, 1, true, 100))},
		{"segment IPv4", func() []byte { f, _ := tcpSuperFrame4(20000, 0x10); return f }()},
	} {
		d, conn, up, _ := benchDatapath(t)
		buf := make([]byte, headroom+maxFrame)
		out := make([]byte, 0, 2048)
		allocs := testing.AllocsPerRun(1000, func() {
			n := copy(buf[headroom:], tc.frame)
			out = d.handle(buf, n, out[:0])
			d.flush()
		})
		if allocs != 0 {
			t.Errorf("%s: got %v allocations per packet, want 0", tc.name, allocs)
		}
		if conn.frames+up.pkts < 1000 {
			t.Errorf("%s: only %d of 1000+ packets left", tc.name, conn.frames+up.pkts)
		}
	}
}

// TestFlushBatches checks that the datapath hands a batch's
// packets to the conn and the uplink in one call each, in order.
func TestFlushBatches(t *testing.T) {
	d, conn, up, g := benchDatapath(t)
	bufs := make([][]byte, 10)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+maxFrame)
		frame := guestFrame(100)
		if i%2 == 1 {
			frame = tunnelFrame(100)
		}
		n := copy(bufs[i][headroom:], frame)
		d.handle(bufs[i], n, nil)
	}
	if conn.frames != 0 || up.pkts != 0 {
		t.Fatalf("got %d frames and %d packets sent before flush, want none", conn.frames, up.pkts)
	}
	d.flush()
	if conn.batches != 1 || conn.frames != 5 || up.batches != 1 || up.pkts != 5 {
		t.Errorf("got %d frames in %d batches and %d packets in %d batches, want 5 in 1 each", conn.frames, conn.batches, up.pkts, up.batches)
	}
	if got := g.Link.Counters.ToTunnelPackets.Load() + g.Link.Counters.FromTunnelPackets.Load(); got != 10 {
		t.Errorf("got %d packets counted, want 10", got)
	}
}
