package datapath

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/mdlayher/ndp"
)

// A real Home Agent is slow to take a home address over when a VM first leaves
// home (docs/home-agents.md): about 1 s of DAD before it accepts the binding,
// then an advertisement without the Override flag, so a home router that
// cached the VM's MAC keeps sending there for ~9 s more. The home host still
// sits on the home link and sees all of it, so kgswitch there covers the gap:
// the datapath holds the frames that arrive for the departed VM, and as soon
// as the Home Agent shows it has taken over, the control loop overrides the
// neighbours' caches with the Home Agent's MAC and has the held frames
// released to it.

// Departed is a VM that left this (home) host. The datapath queues frames for
// it; the control loop releases them once the Home Agent took over. mu guards
// the queue and the release state: contention exists only during a departure.
type Departed struct {
	key      string
	mac      [6]byte
	hoa      netip.Addr
	hoa4     netip.Addr // the IPv4 home address; not valid for a VM without IPv4
	counters *Counters

	mu       sync.Mutex
	queue    holdQueue
	released bool    // frames now go to haMAC
	haMAC    [6]byte // valid once released

	// lastSeen is when a frame for the old MAC last arrived (unix nanoseconds):
	// once quiet for a while, the neighbours' caches have moved.
	lastSeen atomic.Int64
	// reported makes the takeover reach the control loop once.
	reported atomic.Bool
}

// NewDeparted returns the hold queue of the VM key (MAC mac, home address
// hoa, IPv4 home address hoa4 unless not valid): at most maxFrames frames,
// none older than maxHold, counted in c.
func NewDeparted(key string, mac net.HardwareAddr, hoa, hoa4 netip.Addr, maxFrames int, maxHold time.Duration, c *Counters) *Departed {
	return &Departed{key: key, mac: [6]byte(mac), hoa: hoa, hoa4: hoa4, counters: c,
		queue: holdQueue{maxFrames: maxFrames, maxHold: maxHold, counters: c}}
}

// LastSeen is when the home link last sent a frame to the departed VM's MAC;
// zero when it never did.
func (dep *Departed) LastSeen() time.Time {
	n := dep.lastSeen.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// fromHomeLink handles a frame the home link sent to a departed VM's MAC.
func (d *Datapath) fromHomeLink(f *FIB, dep *Departed, frame []byte) {
	now := d.clock.Now()
	dep.lastSeen.Store(now.UnixNano())
	dep.mu.Lock()
	defer dep.mu.Unlock()
	if dep.released {
		d.forwardToHomeAgent(f, dep, frame)
		return
	}
	dep.queue.push(now, frame)
}

// forwardToHomeAgent sends a frame meant for the departed VM to the Home Agent's
// MAC instead, from kgs0's MAC: a source MAC that lives on this host, so the
// home link's switches learn nothing wrong. dep.mu is held.
func (d *Datapath) forwardToHomeAgent(f *FIB, dep *Departed, frame []byte) {
	copy(frame[0:6], dep.haMAC[:])
	copy(frame[6:12], f.routerMAC)
	if err := d.conn.WriteFrame(frame); err != nil {
		dep.counters.Drop(DropWriteError)
		return
	}
	dep.counters.Released.Add(1)
}

// Release sends the held frames, in order, to the Home Agent's MAC, and every
// later one too. The control loop calls it once the flow that lets these
// frames out is in place. Any goroutine.
func (d *Datapath) Release(dep *Departed, haMAC net.HardwareAddr) {
	f := d.fib.Load()
	dep.mu.Lock()
	defer dep.mu.Unlock()
	dep.haMAC = [6]byte(haMAC)
	dep.released = true
	dep.queue.drain(d.clock.Now(), func(fr []byte) { d.forwardToHomeAgent(f, dep, fr) })
}

// neighborAdvert returns the target and target link-layer address of an
// ICMPv6 Neighbor Advertisement in ip, if it is one.
func neighborAdvert(ip netpkt.IPv6) (netip.Addr, net.HardwareAddr, bool) {
	if ip.NextHeader() != netpkt.ProtoICMPv6 || len(ip.Payload()) < 24 || ip.Payload()[0] != 136 || ip.HopLimit() != 255 {
		return netip.Addr{}, nil, false
	}
	m, err := ndp.ParseMessage(ip.Payload())
	if err != nil {
		return netip.Addr{}, nil, false
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		return netip.Addr{}, nil, false
	}
	for _, o := range na.Options {
		if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Target && len(l.Addr) == 6 {
			return na.TargetAddress, l.Addr, true
		}
	}
	return netip.Addr{}, nil, false
}

// dadProbe reports the target of a Duplicate Address Detection probe (a
// Neighbor Solicitation from the unspecified address, RFC 4862 §5.4.2).
func dadProbe(ip netpkt.IPv6) (netip.Addr, bool) {
	if ip.NextHeader() != netpkt.ProtoICMPv6 || len(ip.Payload()) < 24 || ip.Payload()[0] != 135 || !ip.Src().IsUnspecified() || ip.HopLimit() != 255 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16([16]byte(ip.Payload()[8:24])), true
}

// announced reports a frame from a VM whose port is not on this host yet (a
// migrated guest announcing itself as it resumes, faster than OVSDB reports
// its port): the control loop activates it when the port appears.
func (d *Datapath) announced(key string) {
	select {
	case d.activate <- key:
	default:
	}
}
