package hostio

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/kgswitch/kgswitch/datapath"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
func OpenInternalPort(ctx context.Context, name string) (datapath.FrameConn, net.HardwareAddr, error) {
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
		rmsgs: make([]unix.Mmsghdr, datapath.BatchSize), wmsgs: make([]unix.Mmsghdr, datapath.BatchSize),
		riov: make([]unix.Iovec, datapath.BatchSize), wiov: make([]unix.Iovec, datapath.BatchSize)}
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
