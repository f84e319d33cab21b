package lab

import (
	"net"
	"net/netip"
)

// The lab's addresses, as in the "Lab addressing" table of DESIGN.md. They are
// variables only because netip values cannot be constants; nothing may change
// them.
var (
	// CNPrefix is the prefix of the link between the correspondent node and
	// the router.
	CNPrefix = netip.MustParsePrefix("2001:db8:1000::/64")
	// CNAddr is the correspondent node's address on the cn link.
	CNAddr = netip.MustParseAddr("2001:db8:1000::100")
	// RouterCNAddr is the router's address on the cn link and cn's default
	// gateway.
	RouterCNAddr = netip.MustParseAddr("2001:db8:1000::1")

	// RouterLinkLocal is the router's link-local address on both the home
	// and the foreign link; every node on those links routes through it.
	RouterLinkLocal = netip.MustParseAddr("fe80::1")

	// HomePrefix is the home link's prefix (RFC 6275, section 2: the home
	// subnet prefix).
	HomePrefix = netip.MustParsePrefix("2001:db8:2000::/64")
	// RouterHomeAddr is the router's global address on the home link.
	RouterHomeAddr = netip.MustParseAddr("2001:db8:2000::fffe")
	// HAAddr is the lab Home Agent's address on the home link.
	HAAddr = netip.MustParseAddr("2001:db8:2000::1")
	// HostAAddr is hostA's own address (on its OVS bridge br0).
	HostAAddr = netip.MustParseAddr("2001:db8:2000::2")
	// HoA is the guest's home address (RFC 6275, section 2).
	HoA = netip.MustParseAddr("2001:db8:2000::10")

	// HomePrefix2 is the prefix of the second home link (HomeNet2), which
	// only a lab built with Options.ExtraGuests has.
	HomePrefix2 = netip.MustParsePrefix("2001:db8:5000::/64")
	// RouterHomeAddr2 is the router's global address on the second home
	// link.
	RouterHomeAddr2 = netip.MustParseAddr("2001:db8:5000::fffe")
	// HAAddr2 is the second home link's Home Agent address (node ha2).
	HAAddr2 = netip.MustParseAddr("2001:db8:5000::1")

	// ForeignPrefix is the foreign link's prefix.
	ForeignPrefix = netip.MustParsePrefix("2001:db8:3000::/64")
	// RouterForeignAddr is the router's global address on the foreign link.
	RouterForeignAddr = netip.MustParseAddr("2001:db8:3000::1")
	// CareOfAddr is hostB's own address (on its OVS bridge br0), the care-of
	// address of a guest that runs on hostB (RFC 6275, section 2).
	CareOfAddr = netip.MustParseAddr("2001:db8:3000::3")

	// ForeignPrefixC is the prefix of the second foreign link, hostC's.
	ForeignPrefixC = netip.MustParsePrefix("2001:db8:4000::/64")
	// RouterForeignAddrC is the router's global address on the second
	// foreign link.
	RouterForeignAddrC = netip.MustParseAddr("2001:db8:4000::1")
	// CareOfAddrC is hostC's own address (on its OVS bridge br0), the
	// care-of address of a guest that runs on hostC.
	CareOfAddrC = netip.MustParseAddr("2001:db8:4000::3")

	// The IPv4 side of the lab, for Dual-Stack MIPv6 (RFC 5555): the cn
	// link, the home link and both foreign links carry IPv4 too, with the
	// router as every link's gateway; the guest's IPv4 home address comes
	// from the home link's DHCPv4 server (see dhcp4.go). All of it is
	// documentation address space (RFC 5737) but the second foreign link's,
	// which RFC 5737 has no fourth /24 for (RFC 2544's benchmarking range).

	// CNPrefix4 is the IPv4 prefix of the cn link.
	CNPrefix4 = netip.MustParsePrefix("198.51.100.0/24")
	// CNAddr4 is the correspondent node's IPv4 address.
	CNAddr4 = netip.MustParseAddr("198.51.100.100")
	// RouterCNAddr4 is the router's IPv4 address on the cn link and cn's
	// IPv4 default gateway.
	RouterCNAddr4 = netip.MustParseAddr("198.51.100.1")

	// HomePrefix4 is the home link's IPv4 subnet: the IPv4 home subnet the
	// lab Home Agent binds IPv4 home addresses in (its -ipv4-prefix).
	HomePrefix4 = netip.MustParsePrefix("192.0.2.0/24")
	// RouterHomeAddr4 is the router's IPv4 address on the home link: the
	// guests' IPv4 default gateway and the DHCPv4 server (its server
	// identifier, DHCP4ServerID).
	RouterHomeAddr4 = netip.MustParseAddr("192.0.2.1")
	// HAAddr4 is the lab Home Agent's IPv4 address on the home link. The
	// Home Agent needs one: the kernel forwards what it decapsulates, which
	// takes an IPv4 route (and ARP) towards the router, and it answers ARP
	// for a bound IPv4 home address (proxy ARP) only for a sender it has a
	// route back to.
	HAAddr4 = netip.MustParseAddr("192.0.2.2")
	// HoA4 is the guest's IPv4 home address (RFC 5555, section 3.1), the
	// DHCPv4 server's static lease for GuestMAC.
	HoA4 = netip.MustParseAddr("192.0.2.10")

	// ForeignPrefix4 is the foreign link's IPv4 prefix. Nothing on the
	// foreign link but the router has an IPv4 address: it is there so that
	// IPv4 leaking onto a foreign link shows (see nodeSysctls for why the
	// router does not answer for home addresses there).
	ForeignPrefix4 = netip.MustParsePrefix("203.0.113.0/24")
	// RouterForeignAddr4 is the router's IPv4 address on the foreign link.
	RouterForeignAddr4 = netip.MustParseAddr("203.0.113.1")
	// ForeignPrefix4C is the second foreign link's IPv4 prefix.
	ForeignPrefix4C = netip.MustParsePrefix("198.18.4.0/24")
	// RouterForeignAddr4C is the router's IPv4 address on the second
	// foreign link.
	RouterForeignAddr4C = netip.MustParseAddr("198.18.4.1")

	// GuestMAC is the MAC address of the guest's interface eth0.
	GuestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x10}
	// GuestLinkLocal is the guest's link-local address, formed from GuestMAC
	// as a modified EUI-64 interface identifier (RFC 4291, appendix A).
	GuestLinkLocal = netip.MustParseAddr("fe80::5054:ff:fe00:10")
)

// Interface and bridge names that users of the lab need to know. Names are
// per network namespace, so they need not be unique across labs.
const (
	// Bridge is the OVS bridge on every host (see Hosts); its LOCAL port is a tap
	// device of the same name that carries the host's address.
	Bridge = "br0"
	// GuestPort is the host side of the guest's veth: an OVS port of the
	// bridge on whichever host the guest runs (see Lab.GuestHost).
	GuestPort = "vnet3"
	// Uplink is the name of the host uplink (an OVS port of br0) in every
	// host, and of the only interface in cn, ha and vm.
	Uplink = "eth0"
)

// Nodes lists the node names that NS, Command, Run and Start accept in every
// lab; a lab built with Options.ExtraGuests also has ExtraNodes.
var Nodes = []string{"sw", "cn", "rtr", "ha", "hostA", "hostB", "hostC", "vm"}

// Hosts lists the hypervisor hosts, each with its own Open vSwitch: hostA on
// the home link, hostB on the foreign link and hostC on the second foreign
// link. The guest's port moves between them with MoveGuest.
var Hosts = []string{"hostA", "hostB", "hostC"}

// HostAddr returns host's own address (on its OVS bridge br0): on hostB and
// hostC the care-of address kgswitch there registers for a guest away from
// home (on hostA, the home link, it is never used as one). It returns the
// zero Addr for a node that is not one of Hosts.
func HostAddr(host string) netip.Addr {
	switch host {
	case "hostA":
		return HostAAddr
	case "hostB":
		return CareOfAddr
	case "hostC":
		return CareOfAddrC
	}
	return netip.Addr{}
}
