package config

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// The lengths a home link's prefix may have. Shorter than /16 would put a
// sizeable part of the IPv6 Internet on one link, and ::/0 would make every
// address a home address; longer than /126 leaves no room for the
// Subnet-Router anycast address, a Home Agent and a VM.
const (
	MinHomePrefix = 16
	MaxHomePrefix = 126
)

// NewVM validates one VM binding. Home Agent, prefix and router may be left empty
// when a configured home_network contains the home address.
func (c *Config) NewVM(port string, hoa netip.Addr, mac, homeAgent, prefix, routerLL string) (VM, error) {
	vm := VM{Port: port, HomeAddress: hoa}
	if !hoa.Is6() || !hoa.IsGlobalUnicast() || hoa.Is4In6() {
		return vm, fmt.Errorf("home_address %v: must be a global unicast IPv6 address", hoa)
	}
	if port != "" {
		for _, own := range []struct{ name, what string }{
			{c.Bridge, "the bridge's own (LOCAL) port"}, {c.Uplink, "the uplink"}, {c.UplinkBridge, "the uplink bridge's own (LOCAL) port"}, {c.InternalPort, "kgswitch's internal port"}, {c.CareOfInterface, "the host's NIC outside OVS"},
		} {
			if port == own.name {
				return vm, fmt.Errorf("port %s: %s is never a VM", port, own.what)
			}
		}
	}
	if mac != "" {
		m, err := ParseMAC(mac)
		if err != nil {
			return vm, err
		}
		vm.MAC = m
	}
	if homeAgent == "" && prefix == "" && routerLL == "" {
		for _, h := range c.HomeNetworks {
			if h.Prefix.Contains(hoa) {
				vm.Home = h
				return vm, homeAddressFree(hoa, h)
			}
		}
		return vm, fmt.Errorf("home_address %v: no home_network contains it; give home_agent, home_prefix and router_link_local", hoa)
	}
	h, err := parseHome(prefix, homeAgent, routerLL, nil)
	if err != nil {
		return vm, err
	}
	if !h.Prefix.Contains(hoa) {
		return vm, fmt.Errorf("home_address %v is outside home_prefix %v", hoa, h.Prefix)
	}
	for _, o := range c.HomeNetworks {
		if o.Prefix == h.Prefix {
			h.RouterAddrs = o.RouterAddrs // the network's own router addresses are still not VMs
			h.IPv4 = o.IPv4
		}
	}
	vm.Home = h
	return vm, homeAddressFree(hoa, h)
}

// homeAddressFree refuses a home address that belongs to someone else on the
// home link: kgswitch would answer for it, and the network's other guests
// would lose their Home Agent or router.
func homeAddressFree(hoa netip.Addr, h HomeNetwork) error {
	switch {
	case hoa == h.HomeAgent:
		return fmt.Errorf("home_address %v is the Home Agent's address", hoa)
	case slices.Contains(h.RouterAddrs, hoa):
		return fmt.Errorf("home_address %v is an address of the home router", hoa)
	case hoa == h.Prefix.Addr():
		return fmt.Errorf("home_address %v is the Subnet-Router anycast address of %v (RFC 4291 §2.6.1)", hoa, h.Prefix)
	case h.Prefix.Bits() == 64 && reservedAnycast(hoa):
		return fmt.Errorf("home_address %v is a reserved subnet anycast address (RFC 2526)", hoa)
	}
	return nil
}

// reservedAnycast reports whether a's interface identifier (of a /64) is one
// of the 128 RFC 2526 reserves for subnet anycast: fdff:ffff:ffff:ff80 and up.
func reservedAnycast(a netip.Addr) bool {
	b := a.As16()
	return b[8] == 0xfd && b[9] == 0xff && b[10] == 0xff && b[11] == 0xff && b[12] == 0xff && b[13] == 0xff && b[14] == 0xff && b[15] >= 0x80
}

// RemoveVMs forgets the VMs with the home addresses in hoas, in one pass.
func (c *Config) RemoveVMs(hoas map[netip.Addr]bool) {
	c.VMs = slices.DeleteFunc(c.VMs, func(v VM) bool { return hoas[v.HomeAddress] })
}

// AddVM adds vm unless its port, home address, MAC or iface-id is already taken.
func (c *Config) AddVM(vm VM) error {
	for _, o := range c.VMs {
		if err := clash(o, vm); err != nil {
			return err
		}
	}
	c.VMs = append(c.VMs, vm)
	return nil
}

// clash says what vm would take from o, a VM already there.
func clash(o, vm VM) error {
	switch {
	case o.Port != "" && o.Port == vm.Port:
		return fmt.Errorf("port %s: already bound to %v", vm.Port, o.HomeAddress)
	case o.HomeAddress == vm.HomeAddress:
		return fmt.Errorf("home_address %v: already used by port %s", vm.HomeAddress, o.Port)
	case o.MAC != nil && vm.MAC != nil && bytes.Equal(o.MAC, vm.MAC):
		return fmt.Errorf("mac %v: already used by port %s", vm.MAC, o.Port)
	case o.IfaceID != "" && o.IfaceID == vm.IfaceID:
		return fmt.Errorf("iface_id %s: already used by the VM with home address %v", vm.IfaceID, o.HomeAddress)
	case o.IPv4Address.IsValid() && vm.IPv4Address.IsValid() && o.IPv4Address.Addr() == vm.IPv4Address.Addr():
		return fmt.Errorf("ipv4_address %v: already used by the VM with home address %v", vm.IPv4Address.Addr(), o.HomeAddress)
	}
	return nil
}

// vmIndex finds, among many VMs, those a new one could clash with, so that
// a file of thousands of VMs is checked in time proportional to their
// number rather than its square (AddVM compares with every VM).
type vmIndex struct {
	port, mac, iface map[string]int
	hoa              map[netip.Addr]int // IPv6 and IPv4 home addresses
}

func newVMIndex() *vmIndex {
	return &vmIndex{port: map[string]int{}, mac: map[string]int{}, iface: map[string]int{}, hoa: map[netip.Addr]int{}}
}

// add appends vm to vms unless it clashes with one of them, all of which
// the index holds.
func (x *vmIndex) add(vms []VM, vm VM) ([]VM, error) {
	keys := []struct {
		m   map[string]int
		key string
	}{{x.port, vm.Port}, {x.mac, string(vm.MAC)}, {x.iface, vm.IfaceID}}
	var at []int
	if i, ok := x.hoa[vm.HomeAddress]; ok {
		at = append(at, i)
	}
	if i, ok := x.hoa[vm.IPv4Address.Addr()]; ok && vm.IPv4Address.IsValid() {
		at = append(at, i)
	}
	for _, k := range keys {
		if i, ok := k.m[k.key]; ok && k.key != "" {
			at = append(at, i)
		}
	}
	// The first VM in the file that clashes, as AddVM would name it.
	slices.Sort(at)
	for _, i := range at {
		if err := clash(vms[i], vm); err != nil {
			return vms, err
		}
	}
	for _, k := range keys {
		if k.key != "" {
			k.m[k.key] = len(vms)
		}
	}
	x.hoa[vm.HomeAddress] = len(vms)
	if vm.IPv4Address.IsValid() {
		x.hoa[vm.IPv4Address.Addr()] = len(vms) // the two families never collide
	}
	return append(vms, vm), nil
}

// ParseMAC accepts a unicast 48-bit MAC address.
func ParseMAC(s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 {
		return nil, fmt.Errorf("mac %q: not a 48-bit MAC address", s)
	}
	if m[0]&1 != 0 {
		return nil, fmt.Errorf("mac %v: multicast, a VM's MAC must be unicast", m)
	}
	return m, nil
}

func parseHome(prefix, homeAgent, routerLL string, routerAddrs []string) (HomeNetwork, error) {
	var h HomeNetwork
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !p.Addr().Is6() {
		return h, fmt.Errorf("home prefix %q: not an IPv6 prefix", prefix)
	}
	h.Prefix = p.Masked()
	if b := h.Prefix.Bits(); b < MinHomePrefix || b > MaxHomePrefix {
		return h, fmt.Errorf("home prefix %v: want a length from /%d to /%d (see config.MinHomePrefix)", h.Prefix, MinHomePrefix, MaxHomePrefix)
	}
	if h.HomeAgent, err = parseAddr("home_agent", homeAgent); err != nil {
		return h, err
	}
	if !h.Prefix.Contains(h.HomeAgent) {
		return h, fmt.Errorf("home_agent %v is outside the home prefix %v", h.HomeAgent, h.Prefix)
	}
	if h.RouterLinkLocal, err = parseAddr("router_link_local", routerLL); err != nil {
		return h, err
	}
	if !h.RouterLinkLocal.IsLinkLocalUnicast() {
		return h, fmt.Errorf("router_link_local %v: not a link-local address", h.RouterLinkLocal)
	}
	for _, s := range routerAddrs {
		a, err := parseAddr("router_addresses", s)
		if err != nil {
			return h, err
		}
		h.RouterAddrs = append(h.RouterAddrs, a)
	}
	return h, nil
}
