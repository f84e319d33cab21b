package vswitch

import (
	"fmt"
	"net/netip"

	"github.com/kgswitch/kgswitch/coafilter"
	"github.com/kgswitch/kgswitch/datapath"
)

// Host layout 3: the care-of address on a NIC outside OVS (config
// CareOfInterface). No bridge sees what arrives for it, so no flow can
// divert it: the datapath reads the NIC with AF_PACKET besides the internal
// port (Deps.OpenCareOf, behind coafilter's program), and an nftables table
// of kgswitch's own (Deps.HostFilter, coafilter's ruleset) keeps the host
// kernel, which has neither ip6_tunnel nor MIP6, from answering the same
// packets with ICMPv6 errors to the Home Agent. The VM bridge keeps the
// guests' flows of layout 1, with the uplink its own port to the LAN; it
// has none for the care-of address, which is not on it.

// CareOfOpener opens the care-of NIC of host layout 3 for reading what
// arrives there for care-of address coa (hostio.OpenCareOfNIC).
type CareOfOpener func(nic string, coa netip.Addr) (datapath.FrameConn, error)

// HostFilter applies nftables scripts (hostio.NFTables): coafilter's
// ruleset, and its removal when kgswitch stops.
type HostFilter interface {
	Apply(script string) error
}

// nicLayout reports whether this host is in layout 3.
func (s *Switch) nicLayout() bool { return s.cfg.CareOfInterface != "" }

// hostFilterScript is the ruleset the host needs now. Like the bridge's
// host-wide flows (globalFlows), it keeps ESP from the host only where a
// served Home Agent protects signalling with it.
func (s *Switch) hostFilterScript() string {
	var espFrom []netip.Addr
	for _, ha := range s.homeAgents() {
		if s.sendsESP(ha) {
			espFrom = append(espFrom, ha)
		}
	}
	return coafilter.Ruleset(s.cfg.CareOfInterface, s.cfg.CareOfAddress, espFrom)
}

// applyHostFilter (re)applies the ruleset when it changed: at start, and
// when the served Home Agents change (installGlobalFlows). nft takes a few
// milliseconds on the control loop, only then. A ruleset that failed is
// tried again next time.
func (s *Switch) applyHostFilter() error {
	if !s.nicLayout() {
		return nil
	}
	script := s.hostFilterScript()
	if script == s.filterApplied {
		return nil
	}
	if err := s.deps.HostFilter.Apply(script); err != nil {
		return fmt.Errorf("keep the host kernel from answering on care_of_interface %s: %w", s.cfg.CareOfInterface, err)
	}
	s.filterApplied = script
	s.log.Info("host kernel kept from what arrives for kgswitch on the care-of NIC", "nftables_table", coafilter.Table,
		"care_of_interface", s.cfg.CareOfInterface)
	return nil
}

// removeHostFilter deletes kgswitch's table when it stops. Unlike flows,
// which a restarted kgswitch takes over and which only steer the bridge's
// frames, the table drops the host's own packets: left behind by a
// kgswitch that is gone, it would silently swallow every tunnel packet to
// the host for good.
func (s *Switch) removeHostFilter() {
	if err := s.deps.HostFilter.Apply(coafilter.Removal()); err != nil {
		s.log.Error("cannot remove kgswitch's nftables table; remove it with: nft delete table "+coafilter.Table, "err", err)
		return
	}
	s.filterApplied = ""
	s.log.Info("nftables table removed", "nftables_table", coafilter.Table)
}
