package labha

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"unsafe"

	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/mdlayher/socket"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
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
	// Attached before bind, so no frame is queued unfiltered.
	if err := c.SetBPF(signallingFilter); err != nil {
		c.Close()
		return nil, fmt.Errorf("attach BPF filter: %w", err)
	}
	if err := c.Bind(&unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifi.Index}); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind AF_PACKET socket to %s: %w", ifi.Name, err)
	}
	return &linkSocket{c: c, ifindex: ifi.Index}, nil
}

// signallingFilter keeps in the kernel every frame whose first next header
// cannot lead to a Binding Update, in clear or under ESP, or a DAD answer:
// the home link carries the guests' data (TCP, UDP, tunnels), and without
// it every frame was copied to this socket, read one system call at a time
// and thrown away. Under load the copies overflowed the socket and cost the
// Home Agent most of a core. ESP straight after the IPv6 header passes too:
// it may be a Binding Update without Home Address option, which the Home
// Agent drops, but should say why.
var signallingFilter = mustAssemble([]bpf.Instruction{
	// SOCK_DGRAM: offset 0 is the IPv6 header.
	bpf.LoadAbsolute{Off: 6, Size: 1},                                              // Next Header
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 6},                           // Hop-by-Hop
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 43, SkipTrue: 5},                          // Routing
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 60, SkipTrue: 4},                          // Destination Options (HAO), ESP after it too
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(mipv6.IPProtoICMPv6), SkipTrue: 3}, // DAD answers
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 135, SkipTrue: 2},                         // Mobility Header
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: esp.IPProtoESP, SkipTrue: 1},              // ESP without Home Address option
	bpf.RetConstant{Val: 0},
	bpf.RetConstant{Val: 0xffff},
})

func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err)
	}
	return raw
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

// sendFrame transmits Ethernet frame f (header included, as GratuitousARP
// builds it): the kernel rebuilds the header from the frame's destination
// and EtherType, the socket being SOCK_DGRAM.
func (s *linkSocket) sendFrame(ctx context.Context, f []byte) error {
	sa, payload, err := frameSockaddr(s.ifindex, f)
	if err != nil {
		return err
	}
	return s.c.Sendto(ctx, payload, 0, sa)
}

// frameSockaddr splits Ethernet frame f into the SOCK_DGRAM address that
// sends it on interface ifindex (destination MAC, EtherType) and its payload.
func frameSockaddr(ifindex int, f []byte) (*unix.SockaddrLinklayer, []byte, error) {
	if len(f) < ethHeaderLen {
		return nil, nil, fmt.Errorf("frame of %d octets", len(f))
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(uint16(f[12])<<8 | uint16(f[13])), Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], f[:6])
	return sa, f[ethHeaderLen:], nil
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

// tunnelSocket receives tunnelled packets sent to the Home Agent's address:
// IP6IP6 (next header 41) or, for RFC 5555, IPv4 in IPv6 (next header 4).
// Claiming the protocol with a raw socket also keeps the kernel, which has
// no ip6_tunnel here, from answering them with Parameter Problems.
type tunnelSocket struct{ c *socket.Conn }

// openTunnelSocket opens the raw socket for next header proto
// (unix.IPPROTO_IPV6 or unix.IPPROTO_IPIP).
func openTunnelSocket(ha netip.Addr, proto int) (*tunnelSocket, error) {
	c, err := socket.Socket(unix.AF_INET6, unix.SOCK_RAW, proto, fmt.Sprintf("labha-tunnel%d", proto), nil)
	if err != nil {
		return nil, fmt.Errorf("raw IPv6 socket for protocol %d: %w", proto, err)
	}
	// Bound to the Home Agent's address, the socket only gets packets whose
	// outer destination is that address (RFC 6275 §10.4.5).
	if err := c.Bind(&unix.SockaddrInet6{Addr: ha.As16()}); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind protocol %d socket to %v: %w", proto, ha, err)
	}
	return &tunnelSocket{c: c}, nil
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

// hostRoute returns the /128 (or, for an IPv4 address, /32) prefix of a.
func hostRoute(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
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

// proxyNeigh4 returns the kernel proxy ARP entry for IPv4 home address a:
// with IPv4 forwarding on, the kernel answers ARP requests for a on the home
// link with its own MAC, since a is routed elsewhere (into the TUN device).
func proxyNeigh4(ifindex int, a netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: ifindex,
		Family:    netlink.FAMILY_V4,
		Flags:     netlink.NTF_PROXY,
		IP:        a.AsSlice(),
	}
}

func addProxy(ifindex int, hoa netip.Addr) error { return netlink.NeighSet(proxyNeigh(ifindex, hoa)) }

func delProxy(ifindex int, hoa netip.Addr) error { return delNeigh(proxyNeigh(ifindex, hoa)) }

func addProxy4(ifindex int, a netip.Addr) error { return netlink.NeighSet(proxyNeigh4(ifindex, a)) }

func delProxy4(ifindex int, a netip.Addr) error { return delNeigh(proxyNeigh4(ifindex, a)) }

// delNeigh deletes n; an entry already gone is no error.
func delNeigh(n *netlink.Neigh) error {
	err := netlink.NeighDel(n)
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

// batchSize is how many packets the data plane moves per system call at most.
const batchSize = 64

// mmsgs is the message array of a recvmmsg(2) or sendmmsg(2), made once.
type mmsgs struct {
	msgs  []unix.Mmsghdr
	iov   []unix.Iovec
	names []unix.RawSockaddrInet6
}

func newMmsgs() *mmsgs {
	return &mmsgs{msgs: make([]unix.Mmsghdr, batchSize), iov: make([]unix.Iovec, batchSize),
		names: make([]unix.RawSockaddrInet6, batchSize)}
}

// set points message i at b, with room for (or the value of) a peer address.
func (m *mmsgs) set(i int, b []byte) {
	m.iov[i].Base = &b[0]
	m.iov[i].SetLen(len(b))
	m.msgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&m.names[i])),
		Namelen: unix.SizeofSockaddrInet6, Iov: &m.iov[i], Iovlen: 1}}
}

func mmsg(trap, fd uintptr, msgs []unix.Mmsghdr) (int, unix.Errno) {
	r, _, errno := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	return int(r), errno
}

// sendBatch sends pkts[i] to dsts[i] with sendmmsg(2) through the runtime's
// poller. Unlike send it takes no context: a per-call context costs the
// socket package a goroutine per packet, which the data plane cannot afford.
// It returns how many were sent before an error, which is the next packet's.
func (s *rawSender) sendBatch(m *mmsgs, pkts [][]byte, dsts []netip.Addr) (int, error) {
	rc, err := s.c.SyscallConn()
	if err != nil {
		return 0, err
	}
	sent := 0
	for sent < len(pkts) {
		n := min(len(pkts)-sent, batchSize)
		for i := range n {
			m.set(i, pkts[sent+i])
			m.names[i] = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dsts[sent+i].As16()}
		}
		var k int
		var errno unix.Errno
		if err := rc.Write(func(fd uintptr) bool {
			k, errno = mmsg(unix.SYS_SENDMMSG, fd, m.msgs[:n])
			return errno != unix.EAGAIN
		}); err != nil {
			return sent, err
		}
		if errno != 0 && errno != unix.EINTR {
			return sent, errno
		}
		sent += k
	}
	return sent, nil
}

// readBatch waits for inner packets and returns up to len(bufs) of them with
// one recvmmsg(2): lens[i] bytes of bufs[i], from outer source srcs[i].
func (s *tunnelSocket) readBatch(m *mmsgs, bufs [][]byte, lens []int, srcs []netip.Addr) (int, error) {
	rc, err := s.c.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := min(len(bufs), batchSize)
	for i := range n {
		m.set(i, bufs[i])
	}
	var k int
	var errno unix.Errno
	if err := rc.Read(func(fd uintptr) bool {
		k, errno = mmsg(unix.SYS_RECVMMSG, fd, m.msgs[:n])
		return errno != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		if errno == unix.EINTR {
			return 0, nil
		}
		return 0, errno
	}
	for i := range k {
		lens[i] = int(m.msgs[i].Len)
		srcs[i] = netip.AddrFrom16(m.names[i].Addr)
	}
	return k, nil
}

// readBatch waits for a packet on the TUN device and reads it and whatever
// else is queued, up to len(bufs) packets (a TUN device has no recvmmsg: one
// read(2) each, but a single wake-up).
func (t *tunDevice) readBatch(bufs [][]byte, lens []int) (int, error) {
	rc, err := t.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		for n < len(bufs) {
			k, err := unix.Read(int(fd), bufs[n])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				if err != unix.EAGAIN {
					rerr = err
				}
				break
			}
			lens[n] = k
			n++
		}
		return n > 0 || rerr != nil
	}); err != nil {
		return 0, err
	}
	return n, rerr
}
