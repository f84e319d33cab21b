package labha

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/mdlayher/socket"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// htons converts a 16-bit protocol number to network byte order, as
// AF_PACKET wants it.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// linkSocket is an AF_PACKET socket on the home link for IPv6 frames. It
// sees Binding Updates before the kernel drops them for their Home Address
// option, and the Neighbor Advertisements that answer DAD.
type linkSocket struct {
	c       *socket.Conn
	ifindex int
}

func openLinkSocket(ifi *net.Interface) (*linkSocket, error) {
	// SOCK_DGRAM: frames arrive without Ethernet header and are sent with
	// one the kernel builds from the interface's MAC.
	c, err := socket.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IPV6)), "labha-packet", nil)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	if err := c.Bind(&unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifi.Index}); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind AF_PACKET socket to %s: %w", ifi.Name, err)
	}
	return &linkSocket{c: c, ifindex: ifi.Index}, nil
}

// read returns the next IPv6 packet received (not sent) on the link.
func (s *linkSocket) read(ctx context.Context, buf []byte) ([]byte, error) {
	for {
		n, sa, err := s.c.Recvfrom(ctx, buf, 0)
		if err != nil {
			return nil, err
		}
		if ll, ok := sa.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return buf[:n], nil
	}
}

// send transmits IPv6 packet pkt in an Ethernet frame to mac.
func (s *linkSocket) send(ctx context.Context, pkt []byte, mac net.HardwareAddr) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: s.ifindex, Halen: uint8(len(mac))}
	copy(sa.Addr[:], mac)
	return s.c.Sendto(ctx, pkt, 0, sa)
}

// rawSender sends whole IPv6 packets (header included) through the
// kernel's routing and neighbour tables: IPPROTO_RAW implies IPV6_HDRINCL.
type rawSender struct{ c *socket.Conn }

func openRawSender() (*rawSender, error) {
	c, err := socket.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW, "labha-raw", nil)
	if err != nil {
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &rawSender{c: c}, nil
}

// send transmits pkt, whose IPv6 destination must be dst.
func (s *rawSender) send(ctx context.Context, pkt []byte, dst netip.Addr) error {
	return s.c.Sendto(ctx, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()})
}

// tunnelSocket receives IP6IP6 packets sent to the Home Agent's address.
// Claiming protocol 41 with a raw socket also keeps the kernel, which has no
// ip6_tunnel here, from answering them with Parameter Problems.
type tunnelSocket struct{ c *socket.Conn }

func openTunnelSocket(ha netip.Addr) (*tunnelSocket, error) {
	c, err := socket.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_IPV6, "labha-ip6ip6", nil)
	if err != nil {
		return nil, fmt.Errorf("raw IPv6 socket for protocol 41: %w", err)
	}
	// Bound to the Home Agent's address, the socket only gets packets whose
	// outer destination is that address (RFC 6275 §10.4.5).
	if err := c.Bind(&unix.SockaddrInet6{Addr: ha.As16()}); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind protocol 41 socket to %v: %w", ha, err)
	}
	return &tunnelSocket{c: c}, nil
}

// read returns the next inner packet (IPv6 raw sockets deliver the payload
// only) and the outer source address.
func (s *tunnelSocket) read(ctx context.Context, buf []byte) ([]byte, netip.Addr, error) {
	n, sa, err := s.c.Recvfrom(ctx, buf, 0)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	var src netip.Addr
	if sa6, ok := sa.(*unix.SockaddrInet6); ok {
		src = netip.AddrFrom16(sa6.Addr)
	}
	return buf[:n], src, nil
}

// tunDevice is the layer-3 TUN device that the routes to bound home
// addresses point at: the kernel forwards packets for a home address into
// it (decrementing the hop limit), and decapsulated packets written to it
// are forwarded by the kernel as if received.
type tunDevice struct {
	f     *os.File
	name  string
	index int
}

func openTun(pattern string, mtu int) (*tunDevice, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(pattern)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", pattern, err)
	}
	t := &tunDevice{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: ifr.Name()}
	// No link-local address, so the kernel sends no Router Solicitations
	// or MLD reports into the tunnel.
	_ = writeSysctl("net/ipv6/conf/"+t.name+"/addr_gen_mode", "1")
	link, err := netlink.LinkByName(t.name)
	if err == nil {
		err = netlink.LinkSetMTU(link, mtu)
	}
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		t.f.Close()
		return nil, fmt.Errorf("configure %s: %w", t.name, err)
	}
	t.index = link.Attrs().Index
	return t, nil
}

func hostRoute(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)}
}

// addRoute routes hoa into the TUN device, as mip6d routes it into its
// ip6tnl device.
func (t *tunDevice) addRoute(hoa netip.Addr) error {
	return netlink.RouteReplace(&netlink.Route{LinkIndex: t.index, Dst: hostRoute(hoa)})
}

func (t *tunDevice) delRoute(hoa netip.Addr) error {
	err := netlink.RouteDel(&netlink.Route{LinkIndex: t.index, Dst: hostRoute(hoa)})
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// proxyNeigh returns the kernel proxy neighbour entry for hoa. With the
// Router flag, the kernel answers Neighbor Solicitations for hoa with Router
// set and Override clear (it never sets Override for proxied addresses),
// which is what mip6d's proxy_nd_start configures.
func proxyNeigh(ifindex int, hoa netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: ifindex,
		Family:    netlink.FAMILY_V6,
		Flags:     netlink.NTF_PROXY | netlink.NTF_ROUTER,
		IP:        hoa.AsSlice(),
	}
}

func addProxy(ifindex int, hoa netip.Addr) error { return netlink.NeighSet(proxyNeigh(ifindex, hoa)) }

func delProxy(ifindex int, hoa netip.Addr) error {
	err := netlink.NeighDel(proxyNeigh(ifindex, hoa))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(name, value string) error {
	return os.WriteFile("/proc/sys/"+name, []byte(value), 0o644)
}

// sysctlChange is a sysctl value to restore.
type sysctlChange struct{ name, old string }

// setSysctls sets each name to its value and returns how to undo it.
func setSysctls(kv ...string) ([]sysctlChange, error) {
	var undo []sysctlChange
	for i := 0; i+1 < len(kv); i += 2 {
		old, err := readSysctl(kv[i])
		if err != nil {
			restoreSysctls(undo)
			return nil, err
		}
		if old == kv[i+1] {
			continue
		}
		if err := writeSysctl(kv[i], kv[i+1]); err != nil {
			restoreSysctls(undo)
			return nil, fmt.Errorf("sysctl %s=%s: %w", kv[i], kv[i+1], err)
		}
		undo = append(undo, sysctlChange{kv[i], old})
	}
	return undo, nil
}

func restoreSysctls(undo []sysctlChange) {
	for i := len(undo) - 1; i >= 0; i-- {
		_ = writeSysctl(undo[i].name, undo[i].old)
	}
}

// localAddrs returns every address configured in the namespace.
func localAddrs() (map[netip.Addr]bool, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	m := make(map[netip.Addr]bool)
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				m[ip.Unmap()] = true
			}
		}
	}
	return m, nil
}
