package hostio

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// HostNeighbor returns the MAC the host's own neighbour table holds for addr
// on the link where the host has the address via, or nil. On a home host the
// home router is the host's router too, so the host can know its real MAC.
// When the table has no entry yet, HostNeighbor makes the host resolve addr
// (a datagram to the discard port) and returns nil: a later call finds it.
// addr may be IPv4 (a dual-stack home link's gateway): the host's ARP table
// on the same link is looked up, which has it when the host has IPv4 there.
func HostNeighbor(addr, via netip.Addr) net.HardwareAddr {
	link := linkWith(via)
	if link == nil {
		return nil
	}
	family, network, zone := netlink.FAMILY_V6, "udp6", link.Attrs().Name
	if addr.Is4() {
		family, network, zone = netlink.FAMILY_V4, "udp4", ""
	}
	neighs, err := netlink.NeighList(link.Attrs().Index, family)
	if err != nil {
		return nil
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != addr.WithZone("") || len(n.HardwareAddr) != 6 {
			continue
		}
		if n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			return n.HardwareAddr
		}
	}
	if c, err := net.DialUDP(network, nil, &net.UDPAddr{IP: addr.AsSlice(), Zone: zone, Port: 9}); err == nil {
		c.Write([]byte{0})
		c.Close()
	}
	return nil
}

// LinkOf returns the name of the interface that has address a, if any.
func LinkOf(a netip.Addr) (string, bool) {
	if l := linkWith(a); l != nil {
		return l.Attrs().Name, true
	}
	return "", false
}

// linkWith returns the interface that has address a.
func linkWith(a netip.Addr) netlink.Link {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		return nil
	}
	for _, x := range addrs {
		if y, ok := netip.AddrFromSlice(x.IP); ok && y == a {
			l, err := netlink.LinkByIndex(x.LinkIndex)
			if err == nil {
				return l
			}
		}
	}
	return nil
}
