package vswitch

import (
	"net"

	"github.com/kgswitch/kgswitch/v4responder"
)

// The home host's part for a dual-stack VM's IPv4 home address (RFC 5555):
// what the departure cover and the return do with Neighbor Advertisements
// for the IPv6 home address, they do with gratuitous ARP for the IPv4 one.
// IPv4 neighbours (the home gateway first) hold ARP entries for it as IPv6
// ones hold neighbour cache entries, with the same consequence: an entry
// naming the VM's old MAC sends its traffic nowhere until it is overridden.
// A Home Agent may announce the address it takes over (the lab's does,
// once), but RFC 5555 does not require it, so kgswitch does it on the Home
// Agent's takeover advertisement, as it does for IPv6.

// announce4 sends an ARP Announcement giving mac for p's IPv4 home address,
// from MAC from; nothing for a VM without one.
func (s *Switch) announce4(p *vmPort, mac, from net.HardwareAddr) {
	if !p.vm.IPv4Address.IsValid() || s.dp == nil {
		return
	}
	frame, err := v4responder.AppendUnsolicitedARP(nil, v4responder.UnsolicitedARP{Addr: p.vm.IPv4Address.Addr(), LLAddr: mac, From: from})
	if err == nil {
		err = s.dp.Send(frame)
	}
	if err != nil {
		s.log.Warn("send gratuitous ARP", "port", p.name(), "hoa4", p.vm.IPv4Address.Addr(), "err", err)
	}
}

// tellGateway gives a dual-stack guest back home its gateway's real MAC, in
// an ARP reply to the guest alone: abroad, kgswitch answered for the gateway,
// with its own MAC when it did not know the real one, and a guest that kept
// that entry would send its IPv4 to a MAC that does not exist at home.
func (s *Switch) tellGateway(p *vmPort) {
	h := p.vm.Home.IPv4
	if s.dp == nil || !p.vm.IPv4Address.IsValid() || h == nil || !h.Gateway.IsValid() {
		return
	}
	mac := h.GatewayMAC
	if mac == nil && s.deps.NeighborMAC != nil {
		mac = s.deps.NeighborMAC(h.Gateway)
	}
	if mac == nil {
		s.log.Debug("home gateway's MAC unknown; cannot correct a returning guest's ARP entry", "port", p.name(), "gateway", h.Gateway)
		return
	}
	frame, err := v4responder.AppendUnsolicitedARP(nil, v4responder.UnsolicitedARP{Addr: h.Gateway, LLAddr: mac, From: mac,
		To: p.mac, ToAddr: p.vm.IPv4Address.Addr()})
	if err == nil {
		err = s.dp.Send(frame)
	}
	if err != nil {
		s.log.Warn("send gateway's ARP reply to returning guest", "port", p.name(), "err", err)
	}
}
