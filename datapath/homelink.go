package datapath

import (
	"net"
	"net/netip"
	"time"

	"github.com/kgswitch/kgswitch/netpkt"
)

// On a home host the datapath watches the home link for two signs (OpenFlow
// copies it the Neighbor Discovery involved): the Home Agent's DAD probe
// for the home address of a VM running here (it is leaving: the Home Agent
// probes only once a foreign host registered the VM, which it does only
// once the VM runs there), and the Home Agent's advertisement taking a
// departed VM's address over. Any node on the home link can send either, so
// both are believed only from the Home Agent's MAC, once the control loop
// knows it (FIB.ExpectHomeAgent), and a VM that answers the probe itself is
// still running here, whoever sent it.

// atHome is a VM running on this, its home, host.
type atHome struct {
	key  string
	mac  [6]byte
	link *GuestLink
}

// HomeLinkEvent is what the home link showed about a VM at home here.
type HomeLinkEvent struct {
	Key string
	// Defended: the VM answered a DAD probe for its home address with its
	// own MAC: it runs here. Otherwise the Home Agent probed the address.
	Defended bool
}

// defendWindow is how long after a probe the VM's own advertisement counts
// as its answer: DAD waits one RetransTimer (1 s) for it.
const defendWindow = time.Second

// homeLinkND handles the Neighbor Discovery OpenFlow copies to kgswitch on a
// home host; it reports whether the packet was such.
func (d *Datapath) homeLinkND(f *FIB, eth netpkt.Ethernet, ip netpkt.IPv6) bool {
	if target, mac, ok := neighborAdvert(ip); ok {
		if dep := f.departedByHoA[target]; dep != nil {
			switch {
			case [6]byte(mac) == dep.mac:
				// The VM itself: it still runs here (the control loop
				// judges whether its departure was a probe's doing).
				d.reportHomeLink(HomeLinkEvent{Key: dep.key, Defended: true})
			case !f.homeAgentSent(target, eth.Src(), mac):
				dep.counters.Drop(DropNotHomeAgent)
			case !dep.reported.Swap(true):
				select {
				case d.tookOver <- Takeover{Key: dep.key, MAC: append(net.HardwareAddr(nil), mac...)}:
				default:
					dep.reported.Store(false)
				}
			}
			return true
		}
		if vm := f.atHome[target]; vm != nil && [6]byte(mac) == vm.mac {
			if at := vm.link.probedAt.Load(); at != 0 && d.clock.Now().Sub(time.Unix(0, at)) <= defendWindow {
				d.reportHomeLink(HomeLinkEvent{Key: vm.key, Defended: true})
			}
		}
		return true
	}
	if target, ok := dadProbe(ip); ok {
		if vm := f.atHome[target]; vm != nil {
			if !f.homeAgentSent(target, eth.Src(), nil) {
				vm.link.Counters.Drop(DropNotHomeAgent)
				return true
			}
			vm.link.probedAt.Store(d.clock.Now().UnixNano())
			d.reportHomeLink(HomeLinkEvent{Key: vm.key})
		}
		return true
	}
	return false
}

// homeAgentSent reports whether a frame from src (announcing lladdr, for an
// advertisement) about home address hoa is the Home Agent's: both must be
// its MAC. While the control loop does not know that MAC (it learns it
// within moments of serving a VM at home), nothing is believed: a forger
// must not get in before the lesson.
func (f *FIB) homeAgentSent(hoa netip.Addr, src net.HardwareAddr, lladdr net.HardwareAddr) bool {
	ha, known := f.homeAgentMAC[hoa]
	if !known {
		return false
	}
	return [6]byte(src) == ha && (lladdr == nil || [6]byte(lladdr) == ha)
}

// reportHomeLink tells the control loop; a full channel drops the event (the
// Home Agent probes again, the VM answers again).
func (d *Datapath) reportHomeLink(ev HomeLinkEvent) {
	select {
	case d.homeLink <- ev:
	default:
	}
}
