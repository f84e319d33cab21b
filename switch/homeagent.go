package vswitch

import (
	"net"
	"net/netip"
	"time"

	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/netpkt"
)

// On a home host, the departure cover acts on what the home link shows: the
// Home Agent's DAD probe for a VM's home address and its takeover
// advertisement. Any node there can send both, so they count only from the
// Home Agent's MAC: configured (home_agent_mac) or learnt from the host's
// neighbour table, where the host's own traffic to the Home Agent puts it.

// haLookupGap is how often an unknown Home Agent MAC is looked up again, and
// haPokeGap how often kgswitch makes the host resolve it (an echo request to
// the Home Agent: the host's stack resolves the address before it sends).
const (
	haLookupGap = time.Second
	haPokeGap   = 10 * time.Second
)

// watchesHomeLink reports whether the departure cover watches the home link
// for p: its VM runs here at home, or left and is covered.
func (s *Switch) watchesHomeLink(p *vmPort) bool {
	return p.phase == departed || (p.ofport != 0 && p.atHomeHere() && s.holds(p))
}

// homeAgentMAC returns the MAC of home network h's Home Agent, or nil when it
// is not known (yet): then a lookup is scheduled.
func (s *Switch) homeAgentMAC(h config.HomeNetwork, now time.Time) net.HardwareAddr {
	if h.HomeAgentMAC != nil {
		return h.HomeAgentMAC
	}
	if mac := s.haMACs[h.HomeAgent]; mac != nil {
		return mac
	}
	if s.haLookupAt.IsZero() {
		s.haLookupAt = now
	}
	return nil
}

// learnHomeAgents looks up the Home Agents whose VMs the departure cover
// watches and whose MAC is not known, and asks the host to resolve those
// not in its neighbour table. Found ones are published at once.
func (s *Switch) learnHomeAgents(now time.Time) {
	s.haLookupAt = time.Time{}
	missing := false
	found := false
	for _, p := range s.vms {
		h := p.vm.Home
		if h.HomeAgentMAC != nil || s.haMACs[h.HomeAgent] != nil || !s.watchesHomeLink(p) {
			continue
		}
		var mac net.HardwareAddr
		if s.deps.NeighborMAC != nil {
			mac = s.deps.NeighborMAC(h.HomeAgent)
		}
		if mac != nil {
			if s.haMACs == nil {
				s.haMACs = map[netip.Addr]net.HardwareAddr{}
			}
			s.haMACs[h.HomeAgent] = mac
			found = true
			s.log.Info("Home Agent's MAC learnt from the host's neighbour table", "home_agent", h.HomeAgent, "mac", mac.String())
			continue
		}
		missing = true
		if s.haPokedAt == nil {
			s.haPokedAt = map[netip.Addr]time.Time{}
		}
		if last, ok := s.haPokedAt[h.HomeAgent]; !ok || now.Sub(last) >= haPokeGap {
			s.haPokedAt[h.HomeAgent] = now
			s.pokeHomeAgent(h.HomeAgent)
		}
	}
	if missing {
		s.haLookupAt = now.Add(haLookupGap)
	}
	if found {
		s.publish()
	}
}

// pokeHomeAgent sends the Home Agent an echo request from the host's
// address: the host's stack resolves the Home Agent's MAC to send it.
func (s *Switch) pokeHomeAgent(ha netip.Addr) {
	if s.deps.Uplink == nil {
		return
	}
	msg := []byte{128, 0, 0, 0, 0x6b, 0x67, 0, 1}
	sum := netpkt.Checksum(s.cfg.CareOfAddress, ha, netpkt.ProtoICMPv6, msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	pkt := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(msg))
	netpkt.PutIPv6(pkt, len(msg), netpkt.ProtoICMPv6, 64, s.cfg.CareOfAddress, ha)
	if err := s.deps.Uplink.WriteIPv6(append(pkt, msg...), ha); err != nil {
		s.log.Debug("echo request to the Home Agent", "home_agent", ha, "err", err)
	}
}

// homeLinkEvent acts on the home link's news of a VM at home here: the Home
// Agent probes its address (it left), or the VM answered such a probe
// itself (it did not: whoever sent the probe, the departure is undone).
func (s *Switch) homeLinkEvent(ev datapath.HomeLinkEvent) {
	p := s.byKey[ev.Key]
	if p == nil {
		return
	}
	if !ev.Defended {
		if p.ofport != 0 && p.atHomeHere() {
			s.depart(p, "Home Agent probes the home address (DAD)")
			if p.phase == departed {
				p.dep.byProbe = true
			}
		}
		return
	}
	if p.phase != departed || !p.dep.byProbe || p.ofport == 0 || !p.dep.takeoverAt.IsZero() || s.dp == nil {
		return
	}
	s.warnLimited("defended "+p.key(), "the VM answered a DAD probe for its home address itself: it still runs here, departure undone",
		"port", p.name(), "hoa", p.vm.HomeAddress)
	// The held frames go to the VM; the flow that lets them out is the
	// departure's (departureFlows), in place since the departure began.
	s.dp.Release(p.dep.hold, p.mac)
	s.move(p, home)
	// The home flows replace the departure's, which send the VM's frames to
	// kgswitch; until OVS has them, the snapshot with the released departure
	// passes those frames on to the VM.
	s.syncFlows(p)
	s.afterOVS(s.publish)
}
