package vswitch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// packetConn is the internal port opened with AF_PACKET.
type packetConn struct {
	c    *packet.Conn
	addr *packet.Addr
}

// OpenInternalPort waits for the internal port's network device (OVS's
// userspace datapath creates it as a tap), keeps the host's IPv6 stack off it,
// brings it up and opens it with AF_PACKET.
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
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	var serr error
	// Frames kgswitch writes would otherwise come back to its own reader.
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}); err != nil || serr != nil {
		c.Close()
		return nil, nil, fmt.Errorf("PACKET_IGNORE_OUTGOING on %s: %v %v", name, err, serr)
	}
	return &packetConn{c: c, addr: &packet.Addr{HardwareAddr: ifi.HardwareAddr}}, ifi.HardwareAddr, nil
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

// rawUplink sends complete IPv6 packets through the host stack (IPPROTO_RAW
// implies IPV6_HDRINCL), so routing and neighbour resolution are the host's.
type rawUplink struct{ fd int }

// OpenUplink opens the raw socket tunnel packets and Binding Updates leave by.
func OpenUplink() (Uplink, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &rawUplink{fd: fd}, nil
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

func (u *rawUplink) Close() error { return unix.Close(u.fd) }
