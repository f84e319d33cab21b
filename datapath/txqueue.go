package datapath

import "net/netip"

// What a queued packet counts as once it has left.
const (
	countNothing = iota
	countToTunnel
	countFromTunnel
	countLocal
)

// txQueue is a batch of packets on their way out, with what to count for
// each. Its slices never grow past the capacity made at the start, so
// queueing allocates nothing.
type txQueue struct {
	pkts     [][]byte
	dsts     []netip.Addr // uplink only
	counters []*Counters
	kinds    []uint8
	bytes    []int
}

func newTxQueue(n int) txQueue {
	return txQueue{pkts: make([][]byte, 0, n), dsts: make([]netip.Addr, 0, n), counters: make([]*Counters, 0, n),
		kinds: make([]uint8, 0, n), bytes: make([]int, 0, n)}
}

func (q *txQueue) full() bool { return len(q.pkts) == cap(q.pkts) }

func (q *txQueue) add(pkt []byte, dst netip.Addr, c *Counters, kind uint8, bytes int) {
	q.pkts = append(q.pkts, pkt)
	q.dsts = append(q.dsts, dst)
	q.counters = append(q.counters, c)
	q.kinds = append(q.kinds, kind)
	q.bytes = append(q.bytes, bytes)
	q.count(len(q.pkts)-1, 1)
}

// count adds (sign 1) or takes back (sign -1) packet i in its counters. A
// packet is counted when it is queued, so the counters never lag behind what
// has left; one that fails is taken back and counted as a drop.
func (q *txQueue) count(i int, sign uint64) {
	c, n := q.counters[i], uint64(q.bytes[i])*sign
	switch q.kinds[i] {
	case countToTunnel:
		c.ToTunnelPackets.Add(sign)
		c.ToTunnelBytes.Add(n)
	case countFromTunnel:
		c.FromTunnelPackets.Add(sign)
		c.FromTunnelBytes.Add(n)
	case countLocal:
		c.LocalPackets.Add(sign)
	}
}

// failed takes packet i back from its counters and counts it as dropped.
func (q *txQueue) failed(i int) {
	if i >= len(q.pkts) {
		return
	}
	q.count(i, ^uint64(0))
	q.counters[i].Drop(DropWriteError)
}

func (q *txQueue) reset() {
	q.pkts, q.dsts, q.counters, q.kinds, q.bytes = q.pkts[:0], q.dsts[:0], q.counters[:0], q.kinds[:0], q.bytes[:0]
}

// queuePort queues frame for the internal port.
func (d *Datapath) queuePort(frame []byte, c *Counters, kind uint8, bytes int) {
	if d.toPort.full() {
		d.flushPort()
	}
	d.toPort.add(frame, netip.Addr{}, c, kind, bytes)
}

// queueUplink queues a tunnel packet to the Home Agent dst; bytes is the inner
// packet's length.
func (d *Datapath) queueUplink(pkt []byte, dst netip.Addr, c *Counters, bytes int) {
	if d.toUplink.full() {
		d.flushUplink()
	}
	d.toUplink.add(pkt, dst, c, countToTunnel, bytes)
}

// flush sends both transmit queues.
func (d *Datapath) flush() {
	d.flushUplink()
	d.flushPort()
}

func (d *Datapath) flushPort() {
	q := &d.toPort
	if bc, ok := d.conn.(BatchFrameConn); ok {
		for i := 0; i < len(q.pkts); {
			n, err := bc.WriteFrames(q.pkts[i:])
			if i += n; err != nil {
				q.failed(i)
				i++ // a frame the port refused is dropped; the rest still go
			} else if n == 0 {
				break
			}
		}
	} else {
		for i, p := range q.pkts {
			if err := d.conn.WriteFrame(p); err != nil {
				q.failed(i)
			}
		}
	}
	q.reset()
}

func (d *Datapath) flushUplink() {
	q := &d.toUplink
	if bu, ok := d.uplink.(BatchUplink); ok {
		for i := 0; i < len(q.pkts); {
			n, err := bu.WriteIPv6Batch(q.pkts[i:], q.dsts[i:])
			if i += n; err != nil {
				q.failed(i)
				i++
			} else if n == 0 {
				break
			}
		}
	} else {
		for i, p := range q.pkts {
			if err := d.uplink.WriteIPv6(p, q.dsts[i]); err != nil {
				q.failed(i)
			}
		}
	}
	q.reset()
}
