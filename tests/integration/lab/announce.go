package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// announceGaps are the waits before each of QEMU's self-announcements of a
// migrated NIC, with QEMU's defaults (announce-initial 50 ms, announce-step
// 100 ms, announce-max 550 ms, announce-rounds 5): the first goes out as soon
// as the guest resumes. A host that is still setting up when the first one
// passes sees a later one.
var announceGaps = []time.Duration{
	0,
	50 * time.Millisecond,
	150 * time.Millisecond,
	250 * time.Millisecond,
	350 * time.Millisecond,
}

// etherTypeRARP is the EtherType of Reverse ARP (RFC 903).
const etherTypeRARP = 0x8035

// rarpAnnounce returns the frame QEMU broadcasts for a NIC with MAC mac after
// a migration (qemu_announce_self): a RARP "request reverse" (RFC 903,
// opcode 3) with mac as sender and target hardware address and no protocol
// addresses, padded to the Ethernet minimum of 60 bytes.
func rarpAnnounce(mac net.HardwareAddr) []byte {
	f := make([]byte, 60)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:], etherTypeRARP)
	binary.BigEndian.PutUint16(f[14:], 1)      // hardware type: Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // protocol type: IPv4
	f[18], f[19] = 6, 4                        // address lengths
	binary.BigEndian.PutUint16(f[20:], 3)      // opcode: request reverse
	copy(f[22:28], mac)                        // sender hardware address
	copy(f[32:38], mac)                        // target hardware address
	return f
}

// openPacketSocket opens an AF_PACKET socket bound to dev inside node's
// namespace. A socket stays in the namespace it was created in, so only its
// creation needs the thread to enter that namespace.
func (l *Lab) openPacketSocket(node, dev string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// A thread whose namespace could not be restored must not run
		// anything else: returning while still locked makes the runtime
		// end it.
		runtime.LockOSThread()
		fd, err, restored := packetSocketIn(filepath.Join(netnsRunDir, l.NS(node)), dev)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return -1, fmt.Errorf("%s: AF_PACKET socket on %s: %w", node, dev, r.err)
	}
	return r.fd, nil
}

// packetSocketIn runs on a locked thread: it enters the namespace at nsPath,
// opens the socket on dev and goes back, reporting whether it could.
func packetSocketIn(nsPath, dev string) (fd int, err error, restored bool) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return -1, err, true
	}
	defer self.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return -1, err, true
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return -1, fmt.Errorf("setns: %w", err), true
	}
	defer func() {
		restored = unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil
	}()
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return -1, err, false
	}
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err, false
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, err, false
	}
	return fd, nil, false
}

// announceGuest sends QEMU's self-announcements from g's eth0, as a migrated
// VM's QEMU does when the guest resumes: the first before it returns, the
// others in the background on QEMU's schedule. Close waits for them.
func (l *Lab) announceGuest(g Guest) error {
	fd, err := l.openPacketSocket(g.Node, Uplink)
	if err != nil {
		return err
	}
	frame := rarpAnnounce(g.MAC)
	if _, err := unix.Write(fd, frame); err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s: announce on %s: %w", g.Node, Uplink, err)
	}
	l.announcers.Add(1)
	go func() {
		defer l.announcers.Done()
		defer unix.Close(fd)
		for _, gap := range announceGaps[1:] {
			select {
			case <-l.closing:
				return
			case <-time.After(gap):
			}
			// Later rounds are best effort, as in QEMU: the guest may
			// have moved on already.
			_, _ = unix.Write(fd, frame)
		}
	}()
	return nil
}
