package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// HomeNetwork4 is the IPv4 side of a home network (Dual-Stack MIPv6, RFC
// 5555): its subnet, its gateway, and what its DHCP server hands out. Away
// from home kgswitch answers the guest's ARP and DHCP with exactly these, so
// the guest keeps the configuration it had at home.
type HomeNetwork4 struct {
	// Subnet is the IPv4 home subnet (masked).
	Subnet netip.Prefix
	// Gateway is the subnet's default router, which the guest's DHCP lease
	// names and whose place kgswitch takes abroad.
	Gateway netip.Addr
	// GatewayMAC, when known, is the gateway's real MAC: kgswitch answers ARP
	// for the gateway with it, so the guest's ARP entry is still right when
	// it comes home. Unknown, kgswitch answers with its own.
	GatewayMAC net.HardwareAddr
	// DHCPServer is the home DHCP server's identifier (RFC 2132 §9.7), to
	// which the guest unicasts its renewals; zero means Gateway.
	DHCPServer netip.Addr
	// DNS are the DNS servers the home DHCP server hands out, in order.
	DNS []netip.Addr
	// LeaseTime is the home DHCP server's lease time.
	LeaseTime time.Duration
	// Domain is the domain name handed out; empty: none.
	Domain string
	// MTU, when not zero, is handed out as the interface MTU (RFC 2132 §5.1).
	// Zero leaves the guest's MTU alone (what a home DHCP server that sends
	// none does); kgswitch then fragments or answers "fragmentation needed"
	// for what the tunnel cannot carry.
	MTU int
}

// DefaultLeaseTime is the lease handed out when a home network names none.
const DefaultLeaseTime = time.Hour

type fileHomeNetwork4 struct {
	Subnet     string   `toml:"subnet"`
	Gateway    string   `toml:"gateway"`
	GatewayMAC string   `toml:"gateway_mac"`
	DHCPServer string   `toml:"dhcp_server"`
	DNS        []string `toml:"dns_servers"`
	LeaseTime  string   `toml:"lease_time"`
	Domain     string   `toml:"domain"`
	MTU        int      `toml:"mtu"`
}

// parse validates a [home_network.ipv4] table. Its errors start with the key
// they are about, as ipv4.<key>.
func (f *fileHomeNetwork4) parse() (*HomeNetwork4, error) {
	h := &HomeNetwork4{LeaseTime: DefaultLeaseTime, Domain: f.Domain, MTU: f.MTU}
	p, err := netip.ParsePrefix(f.Subnet)
	if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 {
		return nil, fmt.Errorf("ipv4.subnet %q: want an IPv4 prefix from /8 to /30", f.Subnet)
	}
	h.Subnet = p.Masked()
	if h.Gateway, err = parseAddr4("ipv4.gateway", f.Gateway); err != nil {
		return nil, err
	}
	if err := hostOf(h.Subnet, h.Gateway, "ipv4.gateway"); err != nil {
		return nil, err
	}
	if f.GatewayMAC != "" {
		if h.GatewayMAC, err = ParseMAC(f.GatewayMAC); err != nil {
			return nil, fmt.Errorf("ipv4.gateway_%w", err)
		}
	}
	if f.DHCPServer != "" {
		if h.DHCPServer, err = parseAddr4("ipv4.dhcp_server", f.DHCPServer); err != nil {
			return nil, err
		}
	}
	for _, s := range f.DNS {
		a, err := parseAddr4("ipv4.dns_servers", s)
		if err != nil {
			return nil, err
		}
		h.DNS = append(h.DNS, a)
	}
	if f.LeaseTime != "" {
		// DHCP counts the lease in whole seconds (RFC 2132 §9.2); below a
		// minute a guest renews so often that a move's few lost frames can
		// cost it its address.
		d, err := time.ParseDuration(f.LeaseTime)
		if err != nil || d < 10*time.Second || d > 0xfffffffe*time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("ipv4.lease_time %q: want whole seconds from 10s to 4294967294s", f.LeaseTime)
		}
		h.LeaseTime = d
	}
	if len(f.Domain) > 255 || strings.ContainsAny(f.Domain, " \t\x00") {
		return nil, fmt.Errorf("ipv4.domain %q: not a domain name", f.Domain)
	}
	if f.MTU != 0 && (f.MTU < 576 || f.MTU > 65535) {
		return nil, fmt.Errorf("ipv4.mtu %d: want 576..65535 (RFC 791's minimum reassembly size up), or leave it out", f.MTU)
	}
	return h, nil
}

// SetIPv4 gives vm an IPv4 home address: address is the address with its
// subnet's length ("192.0.2.10/24"); gateway may be empty when vm's home
// network has an [ipv4] table for that subnet. It checks that the address
// is a host of its subnet and not the gateway's.
func (c *Config) SetIPv4(vm *VM, address, gateway string) error {
	p, err := netip.ParsePrefix(address)
	if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 {
		return fmt.Errorf("ipv4_address %q: want an IPv4 address with its subnet's length, e.g. 192.0.2.10/24", address)
	}
	link := HomeNetwork4{Subnet: p.Masked(), LeaseTime: DefaultLeaseTime}
	if h := vm.Home.IPv4; h != nil {
		if h.Subnet != link.Subnet {
			return fmt.Errorf("ipv4_address %v: outside its home network's IPv4 subnet %v", p, h.Subnet)
		}
		link = *h
	}
	if gateway != "" {
		if link.Gateway, err = parseAddr4("ipv4_gateway", gateway); err != nil {
			return err
		}
		if err := hostOf(link.Subnet, link.Gateway, "ipv4_gateway"); err != nil {
			return err
		}
	}
	if !link.Gateway.IsValid() {
		return fmt.Errorf("ipv4_address %v: no gateway; give ipv4_gateway, or an [home_network.ipv4] table for %v", p, link.Subnet)
	}
	if err := hostOf(link.Subnet, p.Addr(), "ipv4_address"); err != nil {
		return err
	}
	if p.Addr() == link.Gateway {
		return fmt.Errorf("ipv4_address %v is its gateway's address", p.Addr())
	}
	vm.IPv4Address = p
	vm.Home.IPv4 = &link
	return nil
}

// hostOf refuses an address outside subnet or one of its two addresses that
// are no host's: the network and the directed broadcast address.
func hostOf(subnet netip.Prefix, a netip.Addr, key string) error {
	if !subnet.Contains(a) {
		return fmt.Errorf("%s %v is outside %v", key, a, subnet)
	}
	if a == subnet.Addr() || a == lastAddr4(subnet) {
		return fmt.Errorf("%s %v is the network or broadcast address of %v", key, a, subnet)
	}
	return nil
}

// lastAddr4 is the directed broadcast address of an IPv4 subnet.
func lastAddr4(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func parseAddr4(key, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, fmt.Errorf("%s: missing", key)
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%s %q: not an IPv4 address", key, s)
	}
	return a, nil
}
