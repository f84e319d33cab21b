// Package datapathtest has in-memory stand-ins for the datapath's internal
// port and uplink, and builders for the frames tests feed it.
package datapathtest

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/kgswitch/kgswitch/netpkt"
)

// The addresses of the datapath's and the control loop's unit tests: the
// netns lab's (DESIGN.md, "Lab addressing"), seen from hostB, a foreign host.
var (
	HomeAddr   = netip.MustParseAddr("2001:db8:2000::10")
	HomeAgent  = netip.MustParseAddr("2001:db8:2000::1")
	HomePrefix = netip.MustParsePrefix("2001:db8:2000::/64")
	CareOf     = netip.MustParseAddr("2001:db8:3000::3")
	CN         = netip.MustParseAddr("2001:db8:1000::100")
	RouterLL   = netip.MustParseAddr("fe80::1")
	GuestMAC   = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x10}
	KgMAC      = net.HardwareAddr{0x02, 0x6b, 0x67, 0, 0, 1} // kgswitch's internal port
	LanMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}    // a node of the foreign LAN

	// The guest's IPv4 home address in its home subnet, its gateway there,
	// and an IPv4 correspondent elsewhere (documentation addresses).
	HomeAddr4 = netip.MustParsePrefix("192.0.2.10/24")
	Gateway4  = netip.MustParseAddr("192.0.2.1")
	CN4       = netip.MustParseAddr("198.51.100.100")
)

// Conn is the internal port: a test injects frames with Inject and reads
// what kgswitch writes from Out. It satisfies datapath.FrameConn and
// datapath.KernelDropper.
type Conn struct {
	in     chan []byte
	Out    chan []byte
	closed chan struct{}
	once   sync.Once
	// Dropped is what the kernel would have dropped since last asked.
	Dropped atomic.Uint64

	mu sync.Mutex
	// idle: the reader asked for a frame and none was queued, so it has
	// handled every frame before; idleCh is closed when idle is set.
	idle   bool
	idleCh chan struct{}
}

// NewConn returns a Conn with room for 16 frames each way.
func NewConn() *Conn {
	return &Conn{in: make(chan []byte, 16), Out: make(chan []byte, 16), closed: make(chan struct{}), idleCh: make(chan struct{})}
}

// Inject queues a frame for the reader.
func (c *Conn) Inject(frame []byte) {
	c.mu.Lock()
	c.idle = false
	c.mu.Unlock()
	c.in <- frame
}

// Idle returns once the reader has handled every injected frame (it is
// back asking for one), or false when the conn closed first.
func (c *Conn) Idle() bool {
	for {
		c.mu.Lock()
		if c.idle && len(c.in) == 0 {
			c.mu.Unlock()
			return true
		}
		ch := c.idleCh
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.closed:
			return false
		}
	}
}

// KernelDrops returns and clears Dropped.
func (c *Conn) KernelDrops() (uint64, error) { return c.Dropped.Swap(0), nil }

// ReadFrame returns the next injected frame, or an error once closed.
func (c *Conn) ReadFrame(b []byte) (int, error) {
	select {
	case f := <-c.in:
		return copy(b, f), nil
	default:
	}
	c.mu.Lock()
	if len(c.in) == 0 {
		c.idle = true
		close(c.idleCh)
		c.idleCh = make(chan struct{})
	}
	c.mu.Unlock()
	select {
	case f := <-c.in:
		return copy(b, f), nil
	case <-c.closed:
		return 0, errors.New("closed")
	}
}

// WriteFrame puts a copy of b on Out.
func (c *Conn) WriteFrame(b []byte) error {
	c.Out <- append([]byte(nil), b...)
	return nil
}

// Close makes ReadFrame fail.
func (c *Conn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

// Sent is one packet given to an Uplink.
type Sent struct {
	Pkt []byte
	Dst netip.Addr
}

// Uplink records what is sent to the host's IPv6 stack on Out.
type Uplink struct{ Out chan Sent }

// NewUplink returns an Uplink with room for n packets.
func NewUplink(n int) *Uplink { return &Uplink{Out: make(chan Sent, n)} }

// WriteIPv6 puts a copy of pkt on Out.
func (u *Uplink) WriteIPv6(pkt []byte, dst netip.Addr) error {
	u.Out <- Sent{append([]byte(nil), pkt...), dst}
	return nil
}

// Close does nothing.
func (u *Uplink) Close() error { return nil }

// EthFrame wraps an IPv6 packet in an Ethernet frame.
func EthFrame(dst, src net.HardwareAddr, ip []byte) []byte {
	f := make([]byte, netpkt.EthernetLen, netpkt.EthernetLen+len(ip))
	netpkt.PutEthernet(f, dst, src, netpkt.EtherTypeIPv6)
	return append(f, ip...)
}

// EthFrame4 wraps an IPv4 packet in an Ethernet frame.
func EthFrame4(dst, src net.HardwareAddr, ip []byte) []byte {
	f := make([]byte, netpkt.EthernetLen, netpkt.EthernetLen+len(ip))
	netpkt.PutEthernet(f, dst, src, netpkt.EtherTypeIPv4)
	return append(f, ip...)
}

// IPv4Packet is an IPv4 packet (no options, ID 0x1234) carrying payload,
// its header checksum valid.
func IPv4Packet(src, dst netip.Addr, ttl, proto uint8, df bool, payload []byte) []byte {
	p := make([]byte, netpkt.IPv4Len, netpkt.IPv4Len+len(payload))
	netpkt.PutIPv4(p, netpkt.IPv4Len+len(payload), df, ttl, proto, src, dst)
	p[4], p[5] = 0x12, 0x34
	netpkt.IPv4(p).SetChecksum()
	return append(p, payload...)
}

// UDPPacket4 is an IPv4 packet, TTL 64 and DF set, carrying a UDP header
// (ports 40000 to 5001, checksum zero: none) and payload bytes 0, 1, 2, ...
func UDPPacket4(src, dst netip.Addr, payload int) []byte {
	udp := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(udp[0:2], 40000)
	binary.BigEndian.PutUint16(udp[2:4], 5001)
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+payload))
	for i := range payload {
		udp[8+i] = byte(i)
	}
	return IPv4Packet(src, dst, 64, netpkt.ProtoUDP, true, udp)
}

// ARPRequest is a broadcast ARP request (RFC 826) from mac and sender for
// target.
func ARPRequest(mac net.HardwareAddr, sender, target netip.Addr) []byte {
	f := make([]byte, 42)
	netpkt.PutEthernet(f, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, netpkt.EtherTypeARP)
	copy(f[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(f[22:], mac)
	s, t := sender.As4(), target.As4()
	copy(f[28:], s[:])
	copy(f[38:], t[:])
	return f
}

// UDPPacket is an IPv6 packet carrying a UDP header and payload bytes
// 0, 1, 2, ... (the UDP header is left zero).
func UDPPacket(src, dst netip.Addr, payload int) []byte {
	p := make([]byte, netpkt.IPv6Len+8+payload)
	netpkt.PutIPv6(p, 8+payload, 17, 64, src, dst)
	for i := range payload {
		p[netpkt.IPv6Len+8+i] = byte(i)
	}
	return p
}

// RARP is the frame QEMU sends from a guest's NIC right after it resumes
// (qemu_announce_self): a RARP request, broadcast.
func RARP(mac net.HardwareAddr) []byte {
	f := make([]byte, 60)
	netpkt.PutEthernet(f, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, 0x8035)
	copy(f[14:], []byte{0, 1, 8, 0, 6, 4, 0, 3})
	copy(f[22:], mac)
	copy(f[32:], mac)
	return f
}

// ICMPv6Error is an ICMPv6 error message (RFC 4443 §2.1) of type typ and
// code from src to dst, quoting invoking, cut to at most quote bytes as a
// router may cut it (0: all of it).
func ICMPv6Error(typ, code uint8, src, dst netip.Addr, invoking []byte, quote int) []byte {
	if quote > 0 && quote < len(invoking) {
		invoking = invoking[:quote]
	}
	msg := append([]byte{typ, code, 0, 0, 0, 0, 0, 0}, invoking...)
	binary.BigEndian.PutUint16(msg[2:4], netpkt.Checksum(src, dst, netpkt.ProtoICMPv6, msg))
	pkt := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(msg))
	netpkt.PutIPv6(pkt, len(msg), netpkt.ProtoICMPv6, 64, src, dst)
	return append(pkt, msg...)
}
