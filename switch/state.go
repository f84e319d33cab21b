package vswitch

import (
	"fmt"
	"net"
	"time"

	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/ndresponder"
)

// phase is where a VM is in its life on this host. Everything else about a
// VM (its flows, its status, the datapath's snapshot, the external_ids
// mirror) is derived from its phase and the data that phase owns; setPhase
// is the only way to change it, and it drops the data the new phase does not
// own, so no combination the life of a VM does not have can be represented.
//
//	          port appears                 guest runs here       port leaves
//	absent ───────────────► prepared ───────────────────► abroad ────────► absent
//	  │ ▲   (foreign host)                                   (binding: registering → bound)
//	  │ │
//	  │ │   port appears             guest runs here                 Home Agent confirmed,
//	  │ └──(home host)──► returnWaiting ────────────► returning ──── neighbours told ──► home
//	  │                                                                                   │
//	  │            port appears at start                                                  │
//	  └─────────────────────────────────────────────────────────────────────────────► home
//	                                                                                      │
//	   absent or home ◄── Home Agent took over and the link is quiet ◄── departed ◄───────┘
//	                                                   port left, the Home Agent's DAD probe,
//	                                                   `kgswitch deactivate`
//
// broken is a port that is here but cannot be served (no MAC, no internal
// port); it stays broken until the port leaves.
type phase int

const (
	absent        phase = iota // the VM's port is not on this host's bridge
	broken                     // its port is here and cannot be served; err says why
	prepared                   // foreign host: flows in, the guest does not run here yet
	abroad                     // foreign host: the guest runs here; its binding registers, is bound or failed
	home                       // home host: the guest runs here; kgswitch stays out of its way
	returnWaiting              // home host: its port is back, the guest does not run here yet
	returning                  // home host: de-registering, then telling the neighbours
	departed                   // home host: it left; its frames are held until the Home Agent takes over
)

var phaseNames = [...]string{"absent", "broken", "prepared", "abroad", "home", "return-waiting", "returning", "departed"}

func (ph phase) String() string {
	if int(ph) < len(phaseNames) {
		return phaseNames[ph]
	}
	return fmt.Sprintf("phase(%d)", int(ph))
}

// transitions lists, for each phase, the phases a VM may go to from it.
var transitions = map[phase][]phase{
	absent:        {prepared, home, returnWaiting, broken},
	broken:        {absent},
	prepared:      {abroad, absent},
	abroad:        {absent},
	home:          {departed, absent},
	returnWaiting: {returning, home, departed, absent},
	returning:     {home, departed, absent},
	departed:      {absent, home, returnWaiting, broken},
}

// allowed reports whether a VM may go from one phase to another.
func allowed(from, to phase) bool {
	for _, p := range transitions[from] {
		if p == to {
			return true
		}
	}
	return false
}

// departure is what a departed VM owns: the datapath's hold queue and when
// the Home Agent took over, by which MAC.
type departure struct {
	hold        *datapath.Departed
	at          time.Time
	takeoverAt  time.Time
	takeoverMAC net.HardwareAddr // the Home Agent's, once it took over
	// byProbe: a DAD probe for the home address started it while the VM's
	// port was still here; the VM's own answer undoes it.
	byProbe bool
}

// setPhase moves p to phase to, dropping what only the old phase owned. A
// move the life of a VM does not have is refused with an error (a bug in the
// caller): p stays as it was.
func (p *vmPort) setPhase(to phase) error {
	if p.phase == to {
		return nil
	}
	if !allowed(p.phase, to) {
		return fmt.Errorf("VM %s: no move from %s to %s", p.key(), p.phase, to)
	}
	p.phase = to
	if to != broken {
		p.err = ""
	}
	if to != prepared && to != abroad && to != returnWaiting && to != returning {
		p.binding = nil
	}
	if to != prepared && to != abroad {
		p.nd, p.v4 = nil, nil
	}
	if to != abroad {
		p.nextRA = time.Time{}
		p.endArrivalHold()
	}
	if to != departed {
		p.dep = nil
	}
	if to != returning {
		p.naLeft, p.nextNA = 0, time.Time{}
	}
	return nil
}

// foreignHere: the VM runs, or is about to, on this host while it is foreign
// to it.
func (p *vmPort) foreignHere() bool { return p.phase == prepared || p.phase == abroad }

// waitingForGuest: its port is here and kgswitch waits for the guest's first
// frame before it tells the Home Agent anything.
func (p *vmPort) waitingForGuest() bool { return p.phase == prepared || p.phase == returnWaiting }

// atHomeHere: the VM's port is on this, its home, host and the VM has not
// left.
func (p *vmPort) atHomeHere() bool {
	return p.phase == home || p.phase == returnWaiting || p.phase == returning
}

// vmParts are the per-phase data of vmPort, kept together so that setPhase
// clears them in one place.
type vmParts struct {
	err     string                 // broken: why
	binding *mipv6.Binding         // prepared, abroad, returnWaiting, returning
	nd      *ndresponder.Responder // prepared, abroad
	v4      *v4Guest               // prepared, abroad, for a VM with IPv4
	nextRA  time.Time              // abroad: next unsolicited Router Advertisement; zero = none
	arrival *datapath.Arrival      // abroad, binding not yet standing: the guest's frames held
	dep     *departure             // departed
	naLeft  int                    // returning: Override advertisements still to send
	nextNA  time.Time              // returning: when the next one is due
}

// endArrivalHold ends the hold of a guest whose binding will not stand here
// (it left, or the Home Agent refused): what it held is counted as dropped.
func (p *vmPort) endArrivalHold() {
	if p.arrival != nil {
		p.arrival.Discard()
		p.arrival = nil
	}
}
