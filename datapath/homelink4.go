package datapath

import "github.com/kgswitch/kgswitch/netpkt"

// The departure cover for a dual-stack VM's IPv4 home address (RFC 5555).
// What the home link sends to the departed VM's MAC, IPv4 and unicast ARP
// included, is held by MAC like everything else (hold.go). What needs more
// is the broadcast ARP request for its IPv4 home address: a neighbour whose
// entry expired asks the whole link, nobody answers until the Home Agent
// proxies for the address, and the neighbour's queued packets are lost on
// the way. OpenFlow copies those requests to kgswitch (the home link gets
// them as ever), which holds them with the VM's other frames, so that
// released to the Home Agent they draw its proxy answer at once.

// homeLinkARP handles an ARP frame OpenFlow copied to kgswitch on a home
// host; it reports whether it was about a departed VM's IPv4 home address.
// Only a request from an address holder is held: a probe (RFC 5227 §2.1.1,
// sender 0.0.0.0) resolves nothing, and an announcement (sender = target:
// the Home Agent's own, when it takes the address over) asks nothing.
func (d *Datapath) homeLinkARP(f *FIB, eth netpkt.Ethernet) bool {
	a, err := netpkt.ParseARP(eth.Payload())
	if err != nil {
		return false
	}
	dep := f.departedByHoA4[a.TargetAddr()]
	if dep == nil {
		return false
	}
	if a.Op() != netpkt.ARPRequest || a.SenderAddr().IsUnspecified() || a.SenderAddr() == a.TargetAddr() {
		return true
	}
	dep.mu.Lock()
	defer dep.mu.Unlock()
	// Once released, the Home Agent proxies for the address and heard the
	// broadcast itself: a copy sent on would draw a second answer.
	if !dep.released {
		dep.queue.push(d.clock.Now(), eth)
	}
	return true
}
