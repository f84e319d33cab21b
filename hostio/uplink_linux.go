package hostio

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/kgswitch/kgswitch/datapath"
	"golang.org/x/sys/unix"
)

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
func OpenUplink() (datapath.Uplink, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &rawUplink{fd: fd, msgs: make([]unix.Mmsghdr, datapath.BatchSize), iov: make([]unix.Iovec, datapath.BatchSize),
		names: make([]unix.RawSockaddrInet6, datapath.BatchSize)}, nil
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
