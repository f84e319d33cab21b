package vswitch

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// HostNeighbor returns the MAC the host's own neighbour table holds for addr,
// or nil. On a home host, the home router is the host's router too, so the
// host knows its real MAC.
func HostNeighbor(addr netip.Addr) net.HardwareAddr {
	neighs, err := netlink.NeighList(0, netlink.FAMILY_V6)
	if err != nil {
		return nil
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a != addr.WithZone("") || len(n.HardwareAddr) != 6 {
			continue
		}
		if n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			return n.HardwareAddr
		}
	}
	return nil
}
