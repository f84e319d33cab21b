package vswitch

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"time"
)

// PortStatus is one VM's state for `kgswitch status`.
type PortStatus struct {
	Port              string  `json:"port"`
	HomeAddress       string  `json:"home_address"`
	MAC               string  `json:"mac,omitempty"`
	Location          string  `json:"location"` // "home", "foreign" or "absent"
	BindingState      string  `json:"binding_state,omitempty"`
	Reason            string  `json:"reason,omitempty"`
	CareOf            string  `json:"care_of,omitempty"`
	HomeAgent         string  `json:"home_agent"`
	Sequence          uint16  `json:"sequence,omitempty"`
	LifetimeLeftSec   float64 `json:"lifetime_left_s,omitempty"`
	ToTunnelPackets   uint64  `json:"to_tunnel_packets"`
	ToTunnelBytes     uint64  `json:"to_tunnel_bytes"`
	FromTunnelPackets uint64  `json:"from_tunnel_packets"`
	FromTunnelBytes   uint64  `json:"from_tunnel_bytes"`
	NDAnswered        uint64  `json:"nd_answered"`
	RASent            uint64  `json:"ra_sent"`
	LocalPackets      uint64  `json:"local_packets"`
	Held              uint64  `json:"held"`     // by the departure cover (home host) or the arrival hold (foreign host)
	Released          uint64  `json:"released"` // of those, sent on to the Home Agent
	// TunnelRefused counts the Home Agent's Destination Unreachable errors
	// about tunnelled packets (each a hint that it lost the binding).
	TunnelRefused uint64 `json:"tunnel_refused,omitempty"`
	// IPv4 is the IPv4 home address's state in words, e.g. "192.0.2.10:
	// refused (administratively prohibited, status 129)"; IPv4Address,
	// IPv4State and IPv4Status are the same for scripts. Empty for a VM
	// without IPv4.
	IPv4        string `json:"ipv4,omitempty"`
	IPv4Address string `json:"ipv4_address,omitempty"`
	IPv4State   string `json:"ipv4_state,omitempty"`
	IPv4Status  uint8  `json:"ipv4_status,omitempty"`
	// IPv4Refused counts the Home Agent's refusals of the IPv4 home
	// address; V4Answered the ARP and DHCP messages answered for its home
	// link.
	IPv4Refused uint64            `json:"ipv4_refused,omitempty"`
	V4Answered  uint64            `json:"v4_answered,omitempty"`
	Drops       map[string]uint64 `json:"drops,omitempty"`
	Error       string            `json:"error,omitempty"`
}

// DatapathDrops reports the frames the datapath dropped that belong to no VM
// (malformed, from unknown sources, for unknown home addresses, signalling
// the control loop could not take) and those the kernel dropped before
// kgswitch could read them, by reason.
func (s *Switch) DatapathDrops(ctx context.Context) (map[string]uint64, error) {
	var collectErr error
	err := s.do(ctx, func() {
		if s.dp != nil {
			collectErr = s.dp.CollectKernelDrops()
		}
	})
	if err == nil && collectErr != nil {
		s.log.Warn("read the internal port's kernel drop counter", "err", collectErr)
	}
	return s.dpCounters.DropMap(), err
}

// Status reports every VM, sorted by port name.
func (s *Switch) Status(ctx context.Context) ([]PortStatus, error) {
	var out []PortStatus
	spoof := map[int]uint64{} // index in out -> cookie
	err := s.do(ctx, func() {
		now := s.clock.Now()
		for _, p := range s.vms {
			if s.isolated(p) {
				spoof[len(out)] = spoofCookie(p.key())
			}
			out = append(out, s.portStatus(p, now))
		}
	})
	// OpenFlow is asked outside the control loop: an ovs-vswitchd that does
	// not answer must not stop the loop's timers (binding refreshes).
	if len(spoof) > 0 {
		counts := s.flowCounts(ctx)
		for i, c := range spoof {
			if n := counts[c]; n > 0 {
				out[i].Drops["spoofed-mac"] = n
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out, err
}

// flowCountWait bounds how long status waits for OpenFlow's counters; an
// ovs-vswitchd that does not answer (it stops serving OpenFlow without its
// database) must not make status hang.
const flowCountWait = 500 * time.Millisecond

// flowCounts returns the packet counts of kgswitch's flows per cookie: fresh
// when ovs-vswitchd answers in time, else the last ones read. One query runs
// at a time.
func (s *Switch) flowCounts(ctx context.Context) map[uint64]uint64 {
	s.countsMu.Lock()
	if s.countsDone == nil {
		done := make(chan struct{})
		s.countsDone = done
		go func() {
			c, err := s.deps.Flows.PacketsByCookie()
			s.countsMu.Lock()
			if err == nil {
				s.counts = c
			}
			s.countsDone = nil
			s.countsMu.Unlock()
			close(done)
		}()
	}
	done := s.countsDone
	s.countsMu.Unlock()
	select {
	case <-done:
	case <-time.After(flowCountWait):
	case <-ctx.Done():
	}
	s.countsMu.Lock()
	defer s.countsMu.Unlock()
	return s.counts
}

// silentESPTries is how many unanswered Binding Updates under ESP make
// status explain the silence.
const silentESPTries = 3

// portStatus is one VM's status, from the control loop's own state.
func (s *Switch) portStatus(p *vmPort, now time.Time) PortStatus {
	c := &p.link.Counters
	st := PortStatus{Port: p.name(), HomeAddress: p.vm.HomeAddress.String(), HomeAgent: p.vm.Home.HomeAgent.String(),
		Location: location(p, s.foreignFor(p)), Error: p.err,
		ToTunnelPackets: c.ToTunnelPackets.Load(), ToTunnelBytes: c.ToTunnelBytes.Load(),
		FromTunnelPackets: c.FromTunnelPackets.Load(), FromTunnelBytes: c.FromTunnelBytes.Load(),
		NDAnswered: c.NDAnswered.Load(), RASent: c.RASent.Load(),
		LocalPackets: c.LocalPackets.Load(), Held: c.Held.Load(), Released: c.Released.Load(),
		TunnelRefused: c.TunnelRefused.Load(), Drops: c.DropMap(),
		IPv4Refused: p.ipv4Refused, V4Answered: c.V4Answered.Load()}
	if p.mac != nil {
		st.MAC = p.mac.String()
	}
	if a := p.vm.IPv4Address; a.IsValid() {
		// Without a binding here (at home, not yet arrived) the address is
		// shown as the VM's, with no state.
		st.IPv4Address, st.IPv4 = a.Addr().String(), a.Addr().String()
	}
	if p.binding != nil {
		snap := p.binding.Snapshot(now)
		st.BindingState, st.Reason, st.CareOf, st.Sequence = snap.State.String(), snap.Reason, snap.CareOf.String(), snap.Sequence
		if snap.Unanswered >= silentESPTries && s.underESP(p) {
			// A Home Agent drops what fails under ESP without a word: say
			// what to check.
			st.Reason = fmt.Sprintf("no Ack to %d Binding Updates under IPsec: check that both SAs' SPIs, algorithms and keys "+
				"match the Home Agent's, that its SAs are bound to the home address (not the care-of address), "+
				"and that nothing sent it higher ESP sequence numbers", snap.Unanswered)
		}
		st.LifetimeLeftSec = snap.LifetimeLeft.Seconds()
		if snap.IPv4HomeAddress.IsValid() {
			st.IPv4, st.IPv4State, st.IPv4Status = ipv4Words(snap), snap.IPv4State.String(), snap.IPv4Status
		}
	}
	if p.waitingForGuest() {
		st.BindingState = "waiting-for-guest"
	}
	return st
}

// location is where status says a VM is: its phase in an operator's words.
func location(p *vmPort, foreign bool) string {
	switch p.phase {
	case departed:
		return "departed"
	case returnWaiting, returning:
		return "returning"
	case prepared, abroad:
		return "foreign"
	case home:
		return "home"
	case broken:
		if foreign {
			return "foreign"
		}
		return "home"
	}
	return "absent"
}

// mirrorState writes kgswitch's view of each present VM into its interface's
// external_ids, when it changed.
func (s *Switch) mirrorState() {
	if s.dbDown {
		return
	}
	now := s.clock.Now()
	for _, p := range s.vms {
		if p.iface == "" || p.ofport == 0 {
			continue
		}
		st := s.portStatus(p, now)
		state := st.Location
		if st.BindingState != "" {
			state += "/" + st.BindingState
		}
		// KeyReason is the IPv6 binding's: a refused IPv4 home address
		// leaves it bound, and says why under KeyIPv4.
		want := map[string]string{KeyState: state, KeyCareOf: st.CareOf, KeyReason: st.Reason, KeyIPv4: st.IPv4}
		if st.Error != "" {
			want[KeyState], want[KeyReason] = "error", st.Error
		}
		if maps.Equal(want, p.mirrored) {
			continue
		}
		s.ovs.mirror(p.iface, want)
		p.mirrored = want
	}
}
