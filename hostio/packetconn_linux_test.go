package hostio

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/kgswitch/kgswitch/datapath"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inPrivateNetns runs setup on an OS thread moved into a new network
// namespace. The thread is never handed back to the runtime, so it dies with
// the goroutine; sockets opened in setup keep the namespace alive until they
// are closed, and nothing outside the test ever sees it.
func inPrivateNetns(t *testing.T, setup func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
			t.Skip("KGSWITCH_SKIP_INTEGRATION=1: needs root for a network namespace")
		}
		t.Fatal("needs root (a private network namespace with a veth pair); set KGSWITCH_SKIP_INTEGRATION=1 to skip")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- setup()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// openPacketPair opens kgswitch's packetConn on veth end a and a plain
// AF_PACKET conn on end b, in the namespace vethPair set up.
func openPacketPair() (*packetConn, *packet.Conn, error) {
	ia, err := net.InterfaceByName("a")
	if err != nil {
		return nil, nil, err
	}
	ib, err := net.InterfaceByName("b")
	if err != nil {
		return nil, nil, err
	}
	c, err := packet.Listen(ia, packet.Raw, unix.ETH_P_ALL, nil)
	if err != nil {
		return nil, nil, err
	}
	p, err := newPacketConn(c, ia.HardwareAddr)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	peer, err := packet.Listen(ib, packet.Raw, unix.ETH_P_ALL, nil)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return p, peer, nil
}

// vethPair creates veth a-b, both up, with offloads as the kernel makes them
// and without IPv6, so that the kernel sends no frames of its own (MLD, Router
// Solicitations) among the tests'.
func vethPair() error {
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a"}, PeerName: "b"}); err != nil {
		return err
	}
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+n+"/disable_ipv6", []byte("1"), 0); err != nil {
			return err
		}
	}
	for _, n := range []string{"a", "b", "lo"} {
		l, err := netlink.LinkByName(n)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func ethtoolGet(dev string, cmd uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd}
	var ifr ifreqData
	copy(ifr.name[:], dev)
	ifr.data = uintptr(unsafe.Pointer(&v))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// TestPacketConnBatches moves frames both ways through the batched AF_PACKET
// conn on one end of a veth pair, and checks that one recvmmsg returns more
// than one frame when several wait.
func TestPacketConnBatches(t *testing.T) {
	var (
		p     *packetConn
		peer  *packet.Conn
		txOff [3]uint32
	)
	inPrivateNetns(t, func() error {
		if err := vethPair(); err != nil {
			return err
		}
		if err := disableOffloads("a"); err != nil {
			return err
		}
		for i, cmd := range []uint32{unix.ETHTOOL_GTXCSUM, unix.ETHTOOL_GTSO, unix.ETHTOOL_GGSO} {
			v, err := ethtoolGet("a", cmd)
			if err != nil {
				return err
			}
			txOff[i] = v
		}
		var err error
		p, peer, err = openPacketPair()
		return err
	})
	defer p.Close()
	defer peer.Close()
	if txOff != [3]uint32{} {
		t.Errorf("got tx-checksum, TSO, GSO = %v after disableOffloads, want all off", txOff)
	}

	const n = 40
	frame := func(i int) []byte {
		f := make([]byte, 100+i)
		copy(f, []byte{0x02, 0, 0, 0, 0, 0xaa, 0x02, 0, 0, 0, 0, 0xbb, 0x88, 0xb5}) // local experimental EtherType
		f[20] = byte(i)
		return f
	}
	for i := range n {
		if _, err := peer.WriteTo(frame(i), &packet.Addr{HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0xaa}}); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, datapath.BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	lens := make([]int, datapath.BatchSize)
	got, calls := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	for got < n && time.Now().Before(deadline) {
		k, err := p.ReadFrames(bufs, lens)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		for i := range k {
			// The kernel may add frames of its own (none expected here).
			if lens[i] == 100+got && bufs[i][20] == byte(got) {
				got++
			}
		}
	}
	if got != n || calls >= n {
		t.Errorf("got %d of %d frames in %d ReadFrames calls, want all in fewer calls than frames", got, n, calls)
	}

	out := make([][]byte, n)
	for i := range out {
		out[i] = frame(i)
	}
	// A frame can be lost on a just-created veth (the link settles for up to
	// a second on a loaded machine), so the batch is written again until the
	// peer has seen every frame; each write must take the whole batch.
	buf := make([]byte, 2048)
	seen := map[int]bool{}
	for attempt := 0; attempt < 5 && len(seen) < n; attempt++ {
		if k, err := p.WriteFrames(out); k != n || err != nil {
			t.Fatalf("WriteFrames: got %d, %v, want %d, nil", k, err, n)
		}
		peer.SetReadDeadline(time.Now().Add(time.Second))
		for len(seen) < n {
			m, _, err := peer.ReadFrom(buf)
			if err != nil {
				break // this attempt's frames are in or lost
			}
			if i := m - 100; i >= 0 && i < n && bytes.Equal(buf[:m], out[i]) {
				seen[i] = true
			}
		}
	}
	if len(seen) != n {
		t.Fatalf("peer saw %d of %d frames written in batches", len(seen), n)
	}

	// Close wakes a reader blocked in ReadFrames.
	done := make(chan error, 1)
	go func() {
		for {
			// The kernel's own frames (IPv6 on b) may still come first.
			if _, err := p.ReadFrames(bufs, lens); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	p.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("ReadFrames returned no error after Close")
		}
	case <-time.After(5 * time.Second):
		t.Error("ReadFrames still blocked 5s after Close")
	}
}

// TestPacketConnCountsKernelDrops fills the internal port's receive queue
// without reading it: the queue must be the size kgswitch asked for, and
// what did not fit must come back from KernelDrops, once.
func TestPacketConnCountsKernelDrops(t *testing.T) {
	var (
		p    *packetConn
		peer *packet.Conn
	)
	inPrivateNetns(t, func() error {
		if err := vethPair(); err != nil {
			return err
		}
		var err error
		p, peer, err = openPacketPair()
		return err
	})
	defer p.Close()
	defer peer.Close()

	var size int
	var serr error
	if err := p.rc.Control(func(fd uintptr) { size, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if size < rcvBuf { // the kernel reports twice what was set
		t.Errorf("SO_RCVBUF = %d, want at least %d", size, rcvBuf)
	}
	if n, err := p.KernelDrops(); err != nil {
		t.Fatal(err)
	} else if n != 0 {
		t.Fatalf("%d drops before any frame was sent", n)
	}

	// 1,500-byte frames take over 2 KiB of queue each: 8,000 overflow 8 MiB.
	const sent = 8000
	f := make([]byte, 1500)
	copy(f, []byte{0x02, 0, 0, 0, 0, 0xaa, 0x02, 0, 0, 0, 0, 0xbb, 0x88, 0xb5})
	to := &packet.Addr{HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0xaa}}
	for range sent {
		if _, err := peer.WriteTo(f, to); err != nil {
			t.Fatal(err)
		}
	}
	drops, err := p.KernelDrops()
	if err != nil {
		t.Fatal(err)
	}
	if drops == 0 || drops >= sent {
		t.Fatalf("KernelDrops = %d after %d frames into an unread socket, want some but not all", drops, sent)
	}
	if again, err := p.KernelDrops(); err != nil || again != 0 {
		t.Errorf("second KernelDrops = %d, %v; want 0 (counted once)", again, err)
	}
	// What was not dropped is there to read.
	bufs, lens := make([][]byte, datapath.BatchSize), make([]int, datapath.BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	queued := 0
	for {
		p.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		k, err := p.ReadFrames(bufs, lens)
		if err != nil {
			break
		}
		for i := range k {
			if lens[i] == len(f) {
				queued++
			}
		}
	}
	// Every frame sent was either read or counted as dropped, and none twice;
	// drops the kernel counted after the first call count too.
	late, err := p.KernelDrops()
	if err != nil {
		t.Fatal(err)
	}
	if queued == 0 || uint64(queued)+drops+late != sent {
		t.Errorf("read %d queued frames and %d+%d were dropped, of %d sent", queued, drops, late, sent)
	}
}

// TestUplinkBatch sends a batch of packets through the raw uplink socket to
// the loopback address, where a raw socket for their protocol receives them.
func TestUplinkBatch(t *testing.T) {
	var (
		u  *rawUplink
		rx int
	)
	const proto = 253 // RFC 3692 experimentation
	inPrivateNetns(t, func() error {
		if err := vethPair(); err != nil {
			return err
		}
		up, err := OpenUplink()
		if err != nil {
			return err
		}
		u = up.(*rawUplink)
		rx, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		return err
	})
	defer u.Close()
	defer unix.Close(rx)
	lo := netip.IPv6Loopback()
	const n = 20
	pkts := make([][]byte, n)
	dsts := make([]netip.Addr, n)
	for i := range pkts {
		pkts[i] = make([]byte, 40+10+i)
		pkts[i][0] = 0x60
		pkts[i][5] = byte(10 + i)
		pkts[i][6], pkts[i][7] = proto, 64
		copy(pkts[i][8:24], lo.AsSlice())
		copy(pkts[i][24:40], lo.AsSlice())
		pkts[i][40] = byte(i)
		dsts[i] = lo
	}
	if k, err := u.WriteIPv6Batch(pkts, dsts); k != n || err != nil {
		t.Fatalf("WriteIPv6Batch: got %d, %v, want %d, nil", k, err, n)
	}
	unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	buf := make([]byte, 2048)
	for i := range n {
		m, _, err := unix.Recvfrom(rx, buf, 0)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		// An IPv6 raw socket delivers the payload only.
		if m != 10+i || buf[0] != byte(i) {
			t.Errorf("packet %d: got %d bytes starting %d, want %d starting %d", i, m, buf[0], 10+i, i)
		}
	}
}
