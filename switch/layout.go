package vswitch

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/config"
)

// Host layouts: where the uplink is, as seen from the VM bridge.
//
//  1. The uplink is a port of the VM bridge (config UplinkBridge empty), the
//     care-of address on that bridge's LOCAL port.
//  2. The uplink is a port of a bridge of its own (UplinkBridge, OpenStack's
//     br-ex), joined to the VM bridge (br-int) by one pair of patch ports,
//     the care-of address on the uplink bridge's LOCAL port. The VM bridge
//     keeps every flow of layout 1 with its end of the patch pair in the
//     uplink's place; the uplink bridge gets the few flows that send what
//     the care-of address receives for kgswitch across the patch instead
//     of to the host kernel (uplinkBridgeFlows).
//  3. The care-of address is on a NIC outside OVS (CareOfInterface), the
//     uplink the VM bridge's own port to the LAN: the flows of layout 1
//     for the guests, none for the care-of address (nic.go).
//
// Frames kgswitch sends through the host's stack (tunnel packets, Binding
// Updates) need nothing: the host routes them out of the bridge its address
// is on, whose NORMAL takes them to the uplink.

// patchPair names the two ends of the patch pair joining the VM bridge
// (vmSide is its port) and the uplink bridge (upSide); zero in layout 1.
type patchPair struct{ vmSide, upSide string }

// errLayout marks a host layout kgswitch cannot serve: Run fails with it.
var errLayout = errors.New("host layout")

// checkLayout compares what OVSDB says of the uplink's bridge with the
// configuration, and in layout 2 finds the patch pair. An uplink not in the
// database yet is not an error here (it may be added later; ensureDatapath
// says so); a layout kgswitch cannot serve is, with what was found and what
// is needed.
func checkLayout(cfg *config.Config, db OVSDB) (patchPair, error) {
	if nic := cfg.CareOfInterface; nic != "" {
		if br, ok := db.BridgeOf(nic); ok {
			return patchPair{}, fmt.Errorf("%w: care_of_interface %s is a port of bridge %s; kgswitch needs it outside OVS, holding the care-of address, with uplink %s the VM bridge's own port to the LAN: take %s out of %s, or leave care_of_interface out and put the care-of address on the own port of the uplink's bridge",
				errLayout, nic, br, cfg.Uplink, nic, br)
		}
	}
	br, ok := db.BridgeOf(cfg.Uplink)
	if cfg.UplinkBridge == "" {
		if !ok || br == cfg.Bridge {
			return patchPair{}, nil
		}
		msg := fmt.Sprintf("uplink %s is on bridge %s, not %s", cfg.Uplink, br, cfg.Bridge)
		if pairs := patchPairs(db, cfg.Bridge, br); len(pairs) == 1 {
			return patchPair{}, fmt.Errorf("%w: %s, which is joined to %s by patch ports %s and %s: set uplink_bridge = %q",
				errLayout, msg, cfg.Bridge, pairs[0].vmSide, pairs[0].upSide, br)
		}
		return patchPair{}, fmt.Errorf("%w: %s; kgswitch needs the uplink on %s, or on a bridge joined to %s by one pair of patch ports, named in uplink_bridge",
			errLayout, msg, cfg.Bridge, cfg.Bridge)
	}
	if ok && br != cfg.UplinkBridge {
		return patchPair{}, fmt.Errorf("%w: uplink %s is on bridge %s, not on uplink_bridge %s", errLayout, cfg.Uplink, br, cfg.UplinkBridge)
	}
	pairs := patchPairs(db, cfg.Bridge, cfg.UplinkBridge)
	switch {
	case len(pairs) == 1:
		return pairs[0], nil
	case len(pairs) > 1:
		var names []string
		for _, p := range pairs {
			names = append(names, p.vmSide+"/"+p.upSide)
		}
		return patchPair{}, fmt.Errorf("%w: %d patch port pairs join %s and %s (%s); kgswitch needs exactly one",
			errLayout, len(pairs), cfg.Bridge, cfg.UplinkBridge, strings.Join(names, ", "))
	case !ok:
		// Nothing to judge yet: neither the uplink nor the patch pair.
		return patchPair{}, nil
	}
	return patchPair{}, fmt.Errorf("%w: no patch port joins %s and %s (%s); kgswitch needs one pair, e.g. ovs-vsctl add-port %s patch-ex -- set interface patch-ex type=patch options:peer=patch-int",
		errLayout, cfg.Bridge, cfg.UplinkBridge, patchPortsOn(db, cfg.Bridge, cfg.UplinkBridge), cfg.Bridge)
}

// DetectUplinkBridge names the uplink's bridge on a host in layout 2 whose
// configuration leaves uplink_bridge out, where that is unambiguous: the
// uplink on another bridge, joined to the VM bridge by exactly one pair of
// patch ports. It returns "" when there is nothing to detect (layout 1 or
// 3, uplink_bridge given, the uplink not in OVSDB yet) or nothing certain;
// checkLayout then says what it found.
func DetectUplinkBridge(cfg *config.Config, db OVSDB) string {
	if cfg.UplinkBridge != "" || cfg.CareOfInterface != "" {
		return ""
	}
	br, ok := db.BridgeOf(cfg.Uplink)
	if !ok || br == cfg.Bridge || len(patchPairs(db, cfg.Bridge, br)) != 1 {
		return ""
	}
	return br
}

// DetectCareOfInterface names the NIC holding the care-of address on a host
// in layout 3 whose configuration leaves care_of_interface out, where that
// is unambiguous: the uplink a port of the VM bridge, the care-of address on
// an interface OVS does not know. It returns "" otherwise; checkCareOf then
// says what it found.
func DetectCareOfInterface(cfg *config.Config, db OVSDB, linkOf func(netip.Addr) (string, bool)) string {
	if cfg.UplinkBridge != "" || cfg.CareOfInterface != "" || linkOf == nil {
		return ""
	}
	if br, ok := db.BridgeOf(cfg.Uplink); !ok || br != cfg.Bridge {
		return ""
	}
	link, ok := linkOf(cfg.CareOfAddress)
	if !ok || link == cfg.Bridge {
		return ""
	}
	if _, inOVS := db.Interface(link); inOVS {
		return ""
	}
	return link
}

// patchPairs lists, sorted, the patch port pairs joining bridges a and b:
// a patch port of a whose peer is a patch port of b naming it back.
func patchPairs(db OVSDB, a, b string) []patchPair {
	var pairs []patchPair
	for _, i := range db.Interfaces() {
		if i.Type != "patch" || i.Peer == "" {
			continue
		}
		if br, ok := db.BridgeOf(i.Name); !ok || br != a {
			continue
		}
		peer, ok := db.Interface(i.Peer)
		if !ok || peer.Type != "patch" || peer.Peer != i.Name {
			continue
		}
		if br, ok := db.BridgeOf(peer.Name); ok && br == b {
			pairs = append(pairs, patchPair{vmSide: i.Name, upSide: peer.Name})
		}
	}
	slices.SortFunc(pairs, func(x, y patchPair) int { return strings.Compare(x.vmSide, y.vmSide) })
	return pairs
}

// patchPortsOn describes the patch ports of bridges a and b, for an error
// that says what was found.
func patchPortsOn(db OVSDB, a, b string) string {
	var found []string
	for _, i := range db.Interfaces() {
		if i.Type != "patch" {
			continue
		}
		if br, ok := db.BridgeOf(i.Name); ok && (br == a || br == b) {
			found = append(found, fmt.Sprintf("%s on %s with peer %q", i.Name, br, i.Peer))
		}
	}
	if len(found) == 0 {
		return "found no patch port on either"
	}
	return "found " + strings.Join(found, ", ")
}

// checkCareOf makes sure the care-of address is on the LOCAL port of the
// bridge of the uplink: the host kernel sends tunnel packets and Binding
// Updates from it, and what kgswitch hands back to the host goes there. An
// address on no interface is only warned of: the host's network may come
// up after kgswitch.
func (s *Switch) checkCareOf() error {
	if s.deps.LinkOf == nil {
		return nil
	}
	want := s.cfg.Bridge
	if s.cfg.UplinkBridge != "" {
		want = s.cfg.UplinkBridge
	}
	link, ok := s.deps.LinkOf(s.cfg.CareOfAddress)
	if nic := s.cfg.CareOfInterface; nic != "" {
		switch {
		case !ok:
			s.log.Warn("care-of address is on no interface of this host yet; kgswitch needs it on care_of_interface",
				"care_of", s.cfg.CareOfAddress, "care_of_interface", nic)
		case link != nic:
			return fmt.Errorf("%w: care-of address %v is on %s, not on care_of_interface %s; kgswitch reads what arrives for it there",
				errLayout, s.cfg.CareOfAddress, link, nic)
		}
		return nil
	}
	switch {
	case !ok:
		s.log.Warn("care-of address is on no interface of this host yet; kgswitch needs it on the uplink bridge's own port",
			"care_of", s.cfg.CareOfAddress, "bridge", want)
	case link != want:
		return fmt.Errorf("%w: care-of address %v is on %s, not on %s (the own port of the uplink's bridge); kgswitch needs it there, or, on a NIC outside OVS, that NIC named in care_of_interface",
			errLayout, s.cfg.CareOfAddress, link, want)
	}
	return nil
}

// hostPortTo is where the VM bridge sends what is the host kernel's (see
// globalFlows): its LOCAL port in layout 1, across the patch in layout 2,
// where uplinkBridgeFlows hand it to the uplink bridge's LOCAL port.
func (s *Switch) hostPortTo() int {
	if s.cfg.UplinkBridge != "" {
		return s.uplinkPort
	}
	return ovsLocalPort
}

// uplinkBridgeFlows are layout 2's flows on the uplink bridge, derived from
// the VM bridge's host-wide flows so that the two lists cannot part: each
// diversion there of what enters from the uplink becomes, on the uplink
// bridge, the same match from the uplink sent across the patch, where the
// VM bridge's flow takes it to kgs0. Without them NORMAL would deliver
// these packets, addressed to the host's MAC, to the host kernel, which
// answers tunnel packets and Binding Acks with ICMPv6 errors to the Home
// Agent. What kgswitch hands back to the host crosses the patch the other
// way and goes to the LOCAL port; an explicit flow keeps NORMAL from
// learning the LAN's MACs on the patch port.
func (s *Switch) uplinkBridgeFlows(global []*ovs.Flow) []*ovs.Flow {
	var flows []*ovs.Flow
	for _, f := range global {
		if f.InPort != s.uplinkPort {
			continue
		}
		g := *f
		g.InPort, g.Actions = s.upUplinkPort, []ovs.Action{ovs.Output(s.upPatchPort)}
		flows = append(flows, &g)
	}
	return append(flows, &ovs.Flow{Priority: 150, Protocol: ovs.ProtocolIPv6, InPort: s.upPatchPort,
		Matches: []ovs.Match{ovs.IPv6Destination(s.cfg.CareOfAddress.String())}, Actions: []ovs.Action{ovs.Output(ovsLocalPort)}})
}

// uplinkPorts returns the OpenFlow ports of the uplink as the VM bridge sees
// it, and in layout 2 the uplink's and the patch's on the uplink bridge.
func (s *Switch) uplinkPorts() (r portOpened, pair patchPair, err error) {
	pair, err = checkLayout(s.cfg, s.deps.DB)
	if err != nil {
		return r, pair, err
	}
	br := s.cfg.Bridge
	if s.cfg.UplinkBridge != "" {
		br = s.cfg.UplinkBridge
	}
	uplink, ok := s.deps.DB.Interface(s.cfg.Uplink)
	if !ok || uplink.OFPort <= 0 {
		return r, pair, fmt.Errorf("uplink %s is not a port of bridge %s", s.cfg.Uplink, br)
	}
	if s.cfg.UplinkBridge == "" {
		r.uplinkPort = uplink.OFPort
		return r, pair, nil
	}
	if pair == (patchPair{}) {
		return r, pair, fmt.Errorf("no patch port joins %s and %s yet", s.cfg.Bridge, s.cfg.UplinkBridge)
	}
	vm, okVM := s.deps.DB.Interface(pair.vmSide)
	up, okUp := s.deps.DB.Interface(pair.upSide)
	if !okVM || !okUp || vm.OFPort <= 0 || up.OFPort <= 0 {
		return r, pair, fmt.Errorf("patch ports %s and %s have no OpenFlow port numbers yet", pair.vmSide, pair.upSide)
	}
	r.uplinkPort, r.upUplinkPort, r.upPatchPort = vm.OFPort, uplink.OFPort, up.OFPort
	return r, pair, nil
}

// uplinkPortRef returns the Switch's record of the OpenFlow port of the
// interface called name, when it is one of the uplink's ports (the uplink,
// and in layout 2 the patch pair's ends), else nil.
func (s *Switch) uplinkPortRef(name string) *int {
	switch {
	case s.cfg.UplinkBridge == "" && name == s.cfg.Uplink:
		return &s.uplinkPort
	case s.cfg.UplinkBridge == "":
		return nil
	case name == s.cfg.Uplink:
		return &s.upUplinkPort
	case s.patch != (patchPair{}) && name == s.patch.vmSide:
		return &s.uplinkPort
	case s.patch != (patchPair{}) && name == s.patch.upSide:
		return &s.upPatchPort
	}
	return nil
}
