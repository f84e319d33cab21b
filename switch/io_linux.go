package vswitch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// batchSize is how many frames one system call moves at most. 64 frames of
// 1500 bytes are about what one pass of OVS's userspace datapath delivers to
// a port, and keep the buffers' resident memory under a megabyte.
const batchSize = 64

// rcvBuf is the internal port's receive queue in the kernel. OVS's userspace
// datapath writes to the port in bursts while kgswitch may be off the CPU; with
// the default 208 KiB, about one frame in twenty of a bulk TCP transfer was
// dropped there (measured with ss(8)'s drop counter in the bench lab), and
// TCP took each loss for congestion. The memory is the kernel's and is only
// used while frames wait; SO_RCVBUFFORCE because root may exceed rmem_max.
const rcvBuf = 4 << 20

// packetConn is the internal port opened with AF_PACKET. Single frames go
// through the package's conn (any goroutine); batches through recvmmsg and
// sendmmsg on the same descriptor, from the datapath goroutine only. Both go
// through the runtime's poller, so Close wakes a blocked reader.
type packetConn struct {
	c    *packet.Conn
	rc   syscall.RawConn
	addr *packet.Addr

	// Batch state, owned by the datapath goroutine. readFn and writeFn are
	// bound once so that passing them to the RawConn allocates nothing.
	rmsgs, wmsgs []unix.Mmsghdr
	riov, wiov   []unix.Iovec
	rn, wn       int
	rerr, werr   error
	readFn       func(fd uintptr) bool
	writeFn      func(fd uintptr) bool
}

// OpenInternalPort waits for the internal port's network device (OVS's
// userspace datapath creates it as a tap), keeps the host's IPv6 stack off it,
// switches its offloads off, brings it up and opens it with AF_PACKET.
func OpenInternalPort(ctx context.Context, name string) (FrameConn, net.HardwareAddr, error) {
	var link netlink.Link
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if link, err = netlink.LinkByName(name); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("device %s did not appear: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The host stack must not answer the guests' solicitations or join their
	// multicast groups on this port: kgswitch alone speaks there.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0); err != nil {
		return nil, nil, fmt.Errorf("disable IPv6 on %s: %w", name, err)
	}
	if err := disableOffloads(name); err != nil {
		return nil, nil, fmt.Errorf("switch offloads off on %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, nil, fmt.Errorf("bring %s up: %w", name, err)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, nil, err
	}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("AF_PACKET on %s: %w", name, err)
	}
	p, err := newPacketConn(c, ifi.HardwareAddr)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("AF_PACKET on %s: %w", name, err)
	}
	return p, ifi.HardwareAddr, nil
}

// newPacketConn wraps an AF_PACKET conn bound to one device.
func newPacketConn(c *packet.Conn, mac net.HardwareAddr) (*packetConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	// Frames kgswitch writes would otherwise come back to its own reader.
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}); err != nil || serr != nil {
		return nil, fmt.Errorf("PACKET_IGNORE_OUTGOING: %v %v", err, serr)
	}
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf)
	}); err != nil || serr != nil {
		return nil, fmt.Errorf("SO_RCVBUFFORCE %d: %v %v", rcvBuf, err, serr)
	}
	p := &packetConn{c: c, rc: rc, addr: &packet.Addr{HardwareAddr: mac},
		rmsgs: make([]unix.Mmsghdr, batchSize), wmsgs: make([]unix.Mmsghdr, batchSize),
		riov: make([]unix.Iovec, batchSize), wiov: make([]unix.Iovec, batchSize)}
	p.readFn, p.writeFn = p.recvmmsg, p.sendmmsg
	return p, nil
}

func (p *packetConn) ReadFrame(b []byte) (int, error) {
	n, _, err := p.c.ReadFrom(b)
	return n, err
}

func (p *packetConn) WriteFrame(b []byte) error {
	_, err := p.c.WriteTo(b, p.addr)
	return err
}

func (p *packetConn) Close() error { return p.c.Close() }

// KernelDrops returns how many frames the kernel dropped because the socket's
// receive queue was full, since the last call: PACKET_STATISTICS resets its
// counters when read.
func (p *packetConn) KernelDrops() (uint64, error) {
	var st *unix.TpacketStats
	var serr error
	if err := p.rc.Control(func(fd uintptr) {
		st, serr = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("PACKET_STATISTICS: %w", serr)
	}
	return uint64(st.Drops), nil
}

// ReadFrames waits for at least one frame and reads as many as are queued, up
// to len(bufs), with one recvmmsg(2).
func (p *packetConn) ReadFrames(bufs [][]byte, lens []int) (int, error) {
	n := min(len(bufs), len(p.rmsgs))
	for i := range n {
		p.riov[i].Base = &bufs[i][0]
		p.riov[i].SetLen(len(bufs[i]))
		p.rmsgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Iov: &p.riov[i], Iovlen: 1}}
	}
	p.rn, p.rerr = n, nil
	if err := p.rc.Read(p.readFn); err != nil {
		return 0, err
	}
	if p.rerr != nil {
		return 0, p.rerr
	}
	for i := range p.rn {
		lens[i] = int(p.rmsgs[i].Len)
	}
	return p.rn, nil
}

// recvmmsg runs under the poller: false means "wait until readable".
func (p *packetConn) recvmmsg(fd uintptr) bool {
	return pollMmsg(unix.SYS_RECVMMSG, fd, p.rmsgs[:p.rn], &p.rn, &p.rerr)
}

// WriteFrames sends frames, in order, with as few sendmmsg(2) as the socket
// takes. It returns how many left before an error; the error is the next
// frame's.
func (p *packetConn) WriteFrames(frames [][]byte) (int, error) {
	sent := 0
	for sent < len(frames) {
		n := min(len(frames)-sent, len(p.wmsgs))
		for i := range n {
			p.wiov[i].Base = &frames[sent+i][0]
			p.wiov[i].SetLen(len(frames[sent+i]))
			// No address: the socket is bound to the internal port.
			p.wmsgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Iov: &p.wiov[i], Iovlen: 1}}
		}
		p.wn, p.werr = n, nil
		if err := p.rc.Write(p.writeFn); err != nil {
			return sent, err
		}
		if p.werr != nil {
			return sent, p.werr
		}
		sent += p.wn
	}
	return sent, nil
}

func (p *packetConn) sendmmsg(fd uintptr) bool {
	return pollMmsg(unix.SYS_SENDMMSG, fd, p.wmsgs[:p.wn], &p.wn, &p.werr)
}

// pollMmsg is one non-blocking recvmmsg(2) or sendmmsg(2) of msgs, as a
// RawConn callback: false means "wait until ready". Otherwise *n is how
// many messages moved, or 0 with the error in *err.
func pollMmsg(trap, fd uintptr, msgs []unix.Mmsghdr, n *int, err *error) bool {
	for {
		k, errno := mmsg(trap, fd, msgs, unix.MSG_DONTWAIT)
		switch errno {
		case unix.EAGAIN:
			return false
		case unix.EINTR:
			continue
		case 0:
			*n = k
		default:
			*n, *err = 0, errno
		}
		return true
	}
}

// mmsg is recvmmsg(2) or sendmmsg(2) on msgs (not empty).
func mmsg(trap, fd uintptr, msgs []unix.Mmsghdr, flags int) (int, unix.Errno) {
	r, _, errno := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), uintptr(flags), 0, 0)
	return int(r), errno
}

// ethtoolValue is struct ethtool_value (linux/ethtool.h).
type ethtoolValue struct{ cmd, data uint32 }

// ifreqData is struct ifreq with the ifr_data member.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

// Legacy ethtool commands that set one offload each (linux/ethtool.h); x/sys
// names only some of them.
const (
	ethtoolSTXCSUM = 0x17
	ethtoolSSG     = 0x19
	ethtoolSTSO    = 0x1f
	ethtoolSGSO    = 0x24
	ethtoolSGRO    = 0x2c
)

// disableOffloads switches segmentation and checksum offloads off on dev, so
// the kernel hands kgswitch's port whole frames with finished checksums and
// never glues received frames together (GRO): what kgswitch reads it can
// tunnel as it is. Whatever still arrives bigger than the link (a hypervisor
// with userspace TSO) is segmented by the datapath (segmentTCP). A device that
// lacks an offload answers EOPNOTSUPP, which is what we want anyway.
func disableOffloads(dev string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// GSO and TSO first: the kernel refuses to drop the checksum offload
	// that they depend on while they are on.
	for _, cmd := range []uint32{ethtoolSGRO, ethtoolSGSO, ethtoolSTSO, ethtoolSSG, ethtoolSTXCSUM} {
		v := ethtoolValue{cmd: cmd}
		var ifr ifreqData
		copy(ifr.name[:], dev)
		ifr.data = uintptr(unsafe.Pointer(&v))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		if errno != 0 && errno != unix.EOPNOTSUPP && errno != unix.EINVAL {
			return fmt.Errorf("ethtool command %#x: %w", cmd, errno)
		}
	}
	return nil
}

// rawUplink sends complete IPv6 packets through the host stack (IPPROTO_RAW
// implies IPV6_HDRINCL), so routing and neighbour resolution are the host's.
// WriteIPv6 may be called from any goroutine; WriteIPv6Batch only from the
// datapath's.
type rawUplink struct {
	fd    int
	msgs  []unix.Mmsghdr
	iov   []unix.Iovec
	names []unix.RawSockaddrInet6
}

// OpenUplink opens the raw socket tunnel packets and Binding Updates leave by.
func OpenUplink() (Uplink, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &rawUplink{fd: fd, msgs: make([]unix.Mmsghdr, batchSize), iov: make([]unix.Iovec, batchSize),
		names: make([]unix.RawSockaddrInet6, batchSize)}, nil
}

func (u *rawUplink) WriteIPv6(pkt []byte, dst netip.Addr) error {
	sa := unix.SockaddrInet6{Addr: dst.As16()}
	for {
		err := unix.Sendto(u.fd, pkt, 0, &sa)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// WriteIPv6Batch sends pkts[i] to dsts[i] with as few sendmmsg(2) as the
// socket takes. It returns how many left before an error; the error is the
// next packet's.
func (u *rawUplink) WriteIPv6Batch(pkts [][]byte, dsts []netip.Addr) (int, error) {
	sent := 0
	for sent < len(pkts) {
		n := min(len(pkts)-sent, len(u.msgs))
		for i := range n {
			u.names[i] = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dsts[sent+i].As16()}
			u.iov[i].Base = &pkts[sent+i][0]
			u.iov[i].SetLen(len(pkts[sent+i]))
			u.msgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&u.names[i])),
				Namelen: unix.SizeofSockaddrInet6, Iov: &u.iov[i], Iovlen: 1}}
		}
		k, errno := mmsg(unix.SYS_SENDMMSG, uintptr(u.fd), u.msgs[:n], 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			// sendmmsg reports an error only when the first packet fails.
			return sent, errno
		}
		sent += k
	}
	return sent, nil
}

func (u *rawUplink) Close() error { return unix.Close(u.fd) }
