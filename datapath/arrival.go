package datapath

import (
	"net/netip"
	"sync"
	"time"

	"github.com/kgswitch/kgswitch/netpkt"
)

// On a foreign host a guest runs, and sends, as soon as it resumes, but its
// frames may enter the tunnel only once the Home Agent accepted the binding:
// about 1.1 s at a first registration (the Home Agent runs DAD for the home
// address). Dropping what the guest sends meanwhile turns a move into a loss;
// the arrival hold keeps it and sends it through the tunnel, in order, as
// soon as the binding stands, so a move costs a delay instead.

// Arrival holds a guest's frames while its binding is being set up. The
// datapath fills it (Guest.Hold, while Guest.Tunnel is false); the control
// loop empties it through the tunnel with ReleaseArrival once the Home Agent
// accepted, or ends it with Discard when the binding will not come. mu
// guards everything: contention exists only at the release.
type Arrival struct {
	mu    sync.Mutex
	queue holdQueue
	// released: the binding stands; frames go to the tunnel between coa
	// and homeAgent.
	released       bool
	coa, homeAgent netip.Addr
	// ipv4: the release's binding carries the guest's IPv4 home address;
	// without it, its held IPv4 goes nowhere (see ReleaseArrival).
	ipv4      bool
	discarded bool
}

// NewArrival returns an arrival hold of at most maxFrames frames and
// maxBytes bytes of IP packets, none older than maxHold, counted in c (the
// guest's counters).
func NewArrival(maxFrames, maxBytes int, maxHold time.Duration, c *Counters) *Arrival {
	// Each packet is kept with room for the tunnel's outer header in front,
	// so the release writes it in place.
	return &Arrival{queue: holdQueue{maxFrames: maxFrames, maxBytes: maxBytes, maxHold: maxHold, counters: c, front: netpkt.IPv6Len}}
}

// holdFromGuest holds ip, an IPv6 or IPv4 packet from g that would go
// through the tunnel had the binding been accepted. ip lies in buf at
// headroom+EthernetLen, as received, so that a frame handled after the
// release is encapsulated in place.
func (d *Datapath) holdFromGuest(a *Arrival, g *Guest, buf []byte, ip []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.released && !a.ipv4 && isIPv4(ip):
		g.Link.Counters.Drop(DropNotBound)
	case a.released:
		// This frame was handled with a snapshot published before the
		// release (Tunnel still false). It goes on after the held frames:
		// ReleaseArrival wrote them all before it let go of mu, and what
		// this goroutine queues for the uplink leaves in the order queued.
		pkt := encapsulate(buf, headroom+netpkt.EthernetLen, len(ip), a.coa, a.homeAgent)
		d.queueUplink(pkt, a.homeAgent, &g.Link.Counters, len(ip))
	case a.discarded:
		// The control loop ended the hold and is publishing a snapshot
		// without it: the binding did not come.
		g.Link.Counters.Drop(DropNotBound)
	default:
		a.queue.push(d.clock.Now(), ip)
	}
}

// ReleaseArrival sends every frame a still holds through the tunnel from coa
// to homeAgent, in order (those held longer than the hold allows are counted
// as expired instead), and every frame the datapath hands a after it. Its
// IPv4 packets go only if ipv4 says the Home Agent bound the guest's IPv4
// home address with the binding that ends the hold (RFC 5555 §3.2.1); else
// they are counted as not bound, since the Home Agent would drop them.
//
// Order: the control loop calls ReleaseArrival before it publishes the
// snapshot in which the guest tunnels. A frame handled with an older snapshot
// takes mu after the release and is sent straight on behind the held ones
// (holdFromGuest); a frame handled with the new snapshot is handled after
// every frame of the older ones (the datapath reads snapshots in order, on
// one goroutine), so after those too. Nothing overtakes a held frame.
//
// It writes with Uplink.WriteIPv6, which any goroutine may call: the batch
// write belongs to the datapath goroutine (its system call buffers are that
// goroutine's). A hold is at most a few hundred frames of a short outage,
// written once. Control loop.
func (d *Datapath) ReleaseArrival(a *Arrival, coa, homeAgent netip.Addr, ipv4 bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.released || a.discarded {
		return
	}
	a.released, a.coa, a.homeAgent, a.ipv4 = true, coa, homeAgent, ipv4
	c := a.queue.counters
	a.queue.drain(d.clock.Now(), func(held []byte) {
		if !ipv4 && isIPv4(held[netpkt.IPv6Len:]) {
			c.Drop(DropNotBound)
			return
		}
		inner := len(held) - netpkt.IPv6Len
		pkt := encapsulate(held, netpkt.IPv6Len, inner, coa, homeAgent)
		if err := d.uplink.WriteIPv6(pkt, homeAgent); err != nil {
			c.Drop(DropWriteError)
			return
		}
		c.ToTunnelPackets.Add(1)
		c.ToTunnelBytes.Add(uint64(inner))
		c.Released.Add(1)
	})
}

// Discard ends a hold whose binding will not come (the guest left this host,
// the Home Agent refused): what it still holds is counted as expired, and
// frames handed to it later as not bound. Any goroutine.
func (a *Arrival) Discard() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.released || a.discarded {
		return
	}
	a.discarded = true
	a.queue.discard()
}

// isIPv4 reports whether ip, a packet the guest sent, is IPv4 (the version
// field; the hold keeps IPv6 and IPv4 alike).
func isIPv4(ip []byte) bool { return len(ip) > 0 && ip[0]>>4 == 4 }
