package vswitch

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/v4responder"
)

// A VM with an IPv4 home address (Dual-Stack MIPv6, RFC 5555) keeps it on a
// foreign host: its Binding Updates carry the address, the Home Agent binds
// it beside the IPv6 home address or refuses it, and kgswitch answers the
// guest's ARP and DHCP as its IPv4 home link did. A refusal of IPv4 leaves
// IPv6 bound: the VM stays reachable at its IPv6 home address, and status
// says why its IPv4 is not.

// v4Guest is the datapath's IPv4 responder for one guest: the responder of
// its home link and what it must know of the guest.
type v4Guest struct {
	r     *v4responder.Responder
	guest v4responder.Guest
}

// Respond answers as the datapath asks (datapath.V4Responder).
func (v *v4Guest) Respond(out, frame []byte) ([]byte, bool, error) {
	reply, d, err := v.r.Respond(out, frame, v.guest)
	if err != nil {
		return out, false, err
	}
	return reply, d.Replied(), nil
}

// newV4Guest returns the IPv4 responder of a guest of vm with MAC mac,
// answering with kgswitch's MAC routerMAC where the home link's is unknown;
// nil for a VM without IPv4.
func newV4Guest(vm config.VM, mac, routerMAC net.HardwareAddr) (*v4Guest, error) {
	h := vm.Home.IPv4
	if !vm.IPv4Address.IsValid() || h == nil {
		return nil, nil
	}
	r, err := v4responder.New(v4responder.HomeLink4{Subnet: h.Subnet, Gateway: h.Gateway, GatewayMAC: h.GatewayMAC,
		ServerID: h.DHCPServer, DNS: h.DNS, LeaseTime: h.LeaseTime, DomainName: h.Domain, MTU: h.MTU}, routerMAC)
	if err != nil {
		return nil, fmt.Errorf("IPv4 home link of %v: %w", vm.IPv4Address, err)
	}
	return &v4Guest{r: r, guest: v4responder.Guest{MAC: mac, Addr: vm.IPv4Address.Addr()}}, nil
}

// v4Responder is p's responder as the datapath takes it: a nil interface,
// not an interface holding a nil pointer, for a VM without one.
func (p *vmPort) v4Responder() datapath.V4Responder {
	if p.v4 == nil {
		return nil
	}
	return p.v4
}

// gateway4 is the VM's IPv4 gateway, zero without IPv4.
func (p *vmPort) gateway4() (gw netip.Addr) {
	if h := p.vm.Home.IPv4; h != nil && p.vm.IPv4Address.IsValid() {
		return h.Gateway
	}
	return gw
}

// newBinding is the Binding Update List entry of a VM registering from
// this foreign host: from the first Binding Update on, it asks for the
// IPv4 home address too.
func (s *Switch) newBinding(p *vmPort) *mipv6.Binding {
	b := mipv6.NewBinding(p.vm.HomeAddress, p.vm.Home.HomeAgent, s.cfg.CareOfAddress, s.cfg.BindingLifetime)
	if p.vm.IPv4Address.IsValid() {
		b.SetIPv4HomeAddress(p.vm.IPv4Address.Addr())
	}
	return b
}

// noteIPv4 follows an answer of the Home Agent that changed the binding
// from prev to snap: a refusal of the IPv4 home address, new or for a new
// reason, is counted and logged. The same refusal repeated with each
// refresh is not counted again: the counter says how often IPv4 was lost,
// not how often the Home Agent said so.
func (s *Switch) noteIPv4(p *vmPort, prev, snap mipv6.Snapshot) {
	switch {
	case snap.IPv4State == mipv6.IPv4Accepted && prev.IPv4State != mipv6.IPv4Accepted:
		s.log.Info("Home Agent bound the IPv4 home address", "port", p.name(), "hoa", p.vm.HomeAddress, "hoa4", snap.IPv4HomeAddress)
	case snap.IPv4State == mipv6.IPv4Refused && (prev.IPv4State != mipv6.IPv4Refused || prev.IPv4Status != snap.IPv4Status):
		p.ipv4Refused++
		s.log.Warn("Home Agent refused the IPv4 home address; IPv6 goes on without it", "port", p.name(), "hoa", p.vm.HomeAddress,
			"hoa4", snap.IPv4HomeAddress, "status", snap.IPv4Status, "reason", snap.IPv4Reason, "ipv6_state", snap.State.String())
	}
}

// ipv4Words is the IPv4 home address's state in an operator's words, e.g.
// "192.0.2.10: refused (administratively prohibited, status 129)"; empty
// without one.
func ipv4Words(snap mipv6.Snapshot) string {
	if !snap.IPv4HomeAddress.IsValid() {
		return ""
	}
	w := fmt.Sprintf("%v: %v", snap.IPv4HomeAddress, snap.IPv4State)
	if snap.IPv4State == mipv6.IPv4Refused {
		w += fmt.Sprintf(" (%s, status %d)", snap.IPv4Reason, snap.IPv4Status)
	} else if snap.IPv4Reason != "" && snap.IPv4State != mipv6.IPv4Accepted {
		w += " (" + snap.IPv4Reason + ")"
	}
	return w
}

// ipv4Tunnelling reports whether p's guest's IPv4 goes through the tunnel.
func (p *vmPort) ipv4Tunnelling(now time.Time) bool {
	return p.phase == abroad && p.binding != nil && p.binding.IPv4Tunnelling(now)
}

// setIPv4 gives vm, declared at run time (add-port, external_ids), the IPv4
// home address address and gateway gateway, both possibly empty.
func (s *Switch) setIPv4(vm *config.VM, address, gateway string) error {
	switch {
	case address != "":
		return s.cfg.SetIPv4(vm, address, gateway)
	case gateway != "":
		return fmt.Errorf("ipv4_gateway %s without an IPv4 home address", gateway)
	}
	return nil
}

// ipv4KeyNames renames, in setIPv4's errors about a declaration in
// external_ids, the configuration's keys to the external_ids keys the
// operator wrote.
var ipv4KeyNames = strings.NewReplacer("ipv4_address", KeyIPv4Address, "ipv4_gateway", KeyIPv4Gateway)
