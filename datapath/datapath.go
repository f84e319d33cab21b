package datapath

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kgswitch/kgswitch/clock"
	"github.com/kgswitch/kgswitch/ndresponder"
	"github.com/kgswitch/kgswitch/netpkt"
)

// FrameConn is kgswitch's OVS internal port: whole Ethernet frames in and out.
// ReadFrame blocks until a frame arrives or the conn is closed.
type FrameConn interface {
	ReadFrame(b []byte) (int, error)
	WriteFrame(b []byte) error
	Close() error
}

// Uplink hands complete IPv6 packets (header included) to the host's IPv6 stack,
// which routes them and resolves the next hop.
type Uplink interface {
	WriteIPv6(pkt []byte, dst netip.Addr) error
	Close() error
}

// BatchFrameConn is a FrameConn that moves many frames per system call; the
// datapath uses it when the conn offers it. Only the datapath goroutine calls
// ReadFrames and WriteFrames; WriteFrame stays safe for every goroutine.
type BatchFrameConn interface {
	FrameConn
	// ReadFrames blocks until at least one frame arrives, then fills bufs[i]
	// with up to len(bufs) frames and sets lens[i]; it returns how many.
	ReadFrames(bufs [][]byte, lens []int) (int, error)
	// WriteFrames writes frames in order and returns how many were written
	// before an error, which is the next frame's.
	WriteFrames(frames [][]byte) (int, error)
}

// KernelDropper is a FrameConn whose kernel side can drop frames it was too
// slow to read, and can say how many since it was last asked.
type KernelDropper interface {
	KernelDrops() (uint64, error)
}

// BatchUplink is an Uplink that sends many packets per system call.
type BatchUplink interface {
	Uplink
	// WriteIPv6Batch sends pkts[i] to dsts[i] and returns how many were
	// sent before an error, which is the next packet's.
	WriteIPv6Batch(pkts [][]byte, dsts []netip.Addr) (int, error)
}

// BatchSize is how many frames one system call moves at most. 64 frames of
// 1500 bytes are about what one pass of OVS's userspace datapath delivers to
// a port, and keep the buffers' resident memory under a megabyte.
const BatchSize = 64

// headroom is kept in front of every received frame so the outer IPv6 header
// of the tunnel fits before the guest's packet without moving it.
const headroom = netpkt.IPv6Len - netpkt.EthernetLen

// maxFrame bounds what the internal port delivers (a 64 KiB GSO frame at most).
const maxFrame = 65536 + netpkt.EthernetLen

// TunnelMTU is the largest inner packet the tunnel carries over a 1500-byte
// uplink: one IPv6 header of overhead.
const TunnelMTU = 1500 - netpkt.IPv6Len

// Guest is the datapath's view of one VM on a foreign host. A published Guest
// is never changed; a change publishes a new one, sharing Link.
type Guest struct {
	Key       string // the VM's identity (its home address), in events
	MAC       [6]byte
	HomeAddr  netip.Addr
	Prefix    netip.Prefix // the home link's prefix
	HomeAgent netip.Addr
	// Tunnel: the Home Agent accepted the binding.
	Tunnel bool
	// Hold, when not nil and Tunnel is false, keeps what the guest sends for
	// the tunnel until the binding stands (see Arrival).
	Hold *Arrival
	// Pending: prepared, but the guest has not run here yet (its port
	// appears when the migration starts, long before the guest resumes here).
	Pending bool
	// Registering: the guest runs here and its binding is being registered
	// or refreshed. The Home Agent may tunnel to this care-of address before
	// its Ack arrives (docs/home-agents.md); with neither this nor Tunnel,
	// nothing from the tunnel reaches the guest.
	Registering bool
	ND          *ndresponder.Responder
	PTBFrom     netip.Addr // source of Packet Too Big: the home router's link-local address
	// HomeAddr4 is the VM's IPv4 home address and its home subnet (RFC 5555
	// §3.1: IPv4 Home Address option); not valid for a VM without IPv4,
	// whose IPv4 and ARP are dropped as not-ipv6.
	HomeAddr4 netip.Prefix
	// Gateway4 is the IPv4 home subnet's gateway. kgswitch forwards the
	// guest's IPv4 in its place (ipv4.go), so the ICMP errors it sends as
	// that router come from this address; without it they are not sent.
	Gateway4 netip.Addr
	// V4 answers the guest's ARP and DHCP as its IPv4 home link would; nil:
	// they are dropped as arp-dhcp-ignored.
	V4 V4Responder
	// Tunnel4: the Home Agent accepted the IPv4 home address too (RFC 5555
	// §3.2.1). It is apart from Tunnel because the Home Agent may bind the
	// IPv6 home address and refuse the IPv4 one: then IPv6 goes on and the
	// guest's IPv4 goes nowhere, while its ARP and DHCP are still answered.
	Tunnel4 bool
	Link    *GuestLink
}

// GuestLink is what every snapshot of one guest shares: its counters and
// what the datapath learnt of it.
type GuestLink struct {
	Counters Counters
	// asked is set once the datapath has asked for activation, so a burst of
	// frames asks once; ResetActivation clears it for the next arrival.
	asked atomic.Bool
	// probedAt is when the Home Agent last probed the VM's home address on
	// its home link (unix nanoseconds): the VM's answer soon after means it
	// still runs here.
	probedAt atomic.Int64
	// ownLL holds link-local addresses the guest was seen using; the ND
	// responder must never answer for them. Only the datapath goroutine
	// touches it.
	ownLL []netip.Addr
}

// ResetActivation lets the guest's next frame ask for activation again.
func (l *GuestLink) ResetActivation() { l.asked.Store(false) }

func (g *Guest) owns(a netip.Addr) bool {
	return a == g.HomeAddr || slices.Contains(g.Link.ownLL, a)
}

// maxOwnLL bounds the link-local addresses learnt per guest.
const maxOwnLL = 8

// mayOwn reports whether guest g may be taken to use link-local address a
// because it sent from it: never an address of its home router or of another
// guest here. Otherwise one frame from the router's address would make the
// ND responder stop answering for the router.
func (f *FIB) mayOwn(g *Guest, a netip.Addr) bool {
	if g.ND.IsRouter(a) {
		return false
	}
	for _, o := range f.byMAC {
		if o != g && slices.Contains(o.Link.ownLL, a) {
			return false
		}
	}
	return true
}

// FIB is an immutable snapshot of the forwarding state, built by the control
// loop with NewFIB and the Add methods, then handed over with Publish.
type FIB struct {
	coa       netip.Addr
	mtu       int // largest inner packet the tunnel carries
	routerMAC net.HardwareAddr
	byMAC     map[[6]byte]*Guest
	byHoA     map[netip.Addr]*Guest
	byHoA4    map[netip.Addr]*Guest // by IPv4 home address
	// returning holds home addresses being de-registered from this (home)
	// host: Mobility Header packets to them are kgswitch's.
	returning map[netip.Addr]bool
	// departedByMAC and departedByHoA are VMs that left this home host and
	// whose frames are held (see hold.go); atHome maps the home address
	// of each VM running on this home host to its key.
	departedByMAC map[[6]byte]*Departed
	departedByHoA map[netip.Addr]*Departed
	// departedByHoA4 is those with an IPv4 home address, by it; nil when
	// none (homelink4.go).
	departedByHoA4 map[netip.Addr]*Departed
	atHome         map[netip.Addr]*atHome
	// homeAgentMAC is, by home address, the MAC of the VM's Home Agent
	// when known: only it may probe or take over the address (homelink.go).
	homeAgentMAC map[netip.Addr][6]byte
	// awaiting maps the MAC of each VM this host is foreign for, whose port
	// is not here (yet), to the VM's key: a frame from it means it runs here.
	awaiting map[[6]byte]string
}

// NewFIB returns an empty snapshot for a host whose care-of address is coa
// and whose internal port has routerMAC (the source of every frame kgswitch
// sends a guest as its home router).
func NewFIB(coa netip.Addr, mtu int, routerMAC net.HardwareAddr) *FIB {
	return &FIB{coa: coa, mtu: mtu, routerMAC: routerMAC,
		byMAC: map[[6]byte]*Guest{}, byHoA: map[netip.Addr]*Guest{}, byHoA4: map[netip.Addr]*Guest{}, returning: map[netip.Addr]bool{},
		departedByMAC: map[[6]byte]*Departed{}, departedByHoA: map[netip.Addr]*Departed{}, atHome: map[netip.Addr]*atHome{}, homeAgentMAC: map[netip.Addr][6]byte{},
		awaiting: map[[6]byte]string{}}
}

// AddGuest serves g: a VM on this foreign host.
func (f *FIB) AddGuest(g *Guest) {
	f.byMAC[g.MAC] = g
	f.byHoA[g.HomeAddr] = g
	if g.HomeAddr4.IsValid() {
		f.byHoA4[g.HomeAddr4.Addr()] = g
	}
}

// AddReturning marks hoa as being de-registered from this home host: the
// Home Agent's answer to it is kgswitch's.
func (f *FIB) AddReturning(hoa netip.Addr) { f.returning[hoa] = true }

// AddDeparted holds the frames of a VM that left this home host.
func (f *FIB) AddDeparted(d *Departed) {
	f.departedByMAC[d.mac] = d
	f.departedByHoA[d.hoa] = d
	if d.hoa4.IsValid() {
		if f.departedByHoA4 == nil {
			f.departedByHoA4 = map[netip.Addr]*Departed{}
		}
		f.departedByHoA4[d.hoa4] = d
	}
}

// AddAtHome watches for the Home Agent's DAD probe of the home address of a
// VM running on this home host (MAC mac): the sign it is leaving. link is
// the VM's, kept across snapshots.
func (f *FIB) AddAtHome(hoa netip.Addr, key string, mac net.HardwareAddr, link *GuestLink) {
	f.atHome[hoa] = &atHome{key: key, mac: [6]byte(mac), link: link}
}

// ExpectHomeAgent says that the Home Agent of home address hoa has MAC mac:
// a DAD probe or takeover advertisement for hoa from any other MAC is
// forged.
func (f *FIB) ExpectHomeAgent(hoa netip.Addr, mac net.HardwareAddr) {
	f.homeAgentMAC[hoa] = [6]byte(mac)
}

// AddAwaiting watches for a frame from mac, a VM expected on this host whose
// port is not here: the sign it runs here.
func (f *FIB) AddAwaiting(mac net.HardwareAddr, key string) { f.awaiting[[6]byte(mac)] = key }

// Takeover is what the datapath reports to the control loop: the Home Agent
// (by its MAC) defends a departed VM's home address now.
type Takeover struct {
	Key string
	MAC net.HardwareAddr
}

// Events are what the datapath tells the control loop. When a channel is
// full, the datapath drops the event (signalling is counted as
// signal-queue-full; the other events recur with the next frame).
type Events struct {
	// Signal carries copies of Mobility Header packets, in clear or under
	// ESP, addressed to the care-of address or a returning home address.
	Signal <-chan []byte
	// Activate carries the key of a VM whose guest just sent a frame on this
	// host while prepared or awaited: it runs here now.
	Activate <-chan string
	// HomeLink reports, in order, the Home Agent's DAD probe for the home
	// address of a VM at home here (it is leaving) and the VM's own answer
	// to such a probe (it is not).
	HomeLink <-chan HomeLinkEvent
	// TookOver reports the Home Agent's takeover of a departed VM's address.
	TookOver <-chan Takeover
	// TunnelRefused carries the key of a VM abroad whose Home Agent answered
	// a tunnelled packet with Destination Unreachable: it may have lost the
	// binding (see tunnelerror.go).
	TunnelRefused <-chan string
}

// Datapath moves frames between the internal port and the tunnels.
type Datapath struct {
	conn FrameConn
	// nic, when not nil, is the care-of NIC of host layout 3 (ReadAlso).
	// Its reader and the internal port's take turns with mu: whoever
	// holds it owns what the comments here call the datapath goroutine's
	// (the transmit queues, seg, a GuestLink's ownLL).
	nic    FrameConn
	mu     sync.Mutex
	uplink Uplink
	clock  clock.Clock
	fib    atomic.Pointer[FIB]

	signal   chan []byte
	activate chan string
	tookOver chan Takeover
	homeLink chan HomeLinkEvent
	refused  chan string
	// global counts what belongs to no VM; the control loop owns it so that
	// a reopened internal port keeps counting where the old one stopped.
	global *Counters

	// The datapath goroutine's transmit queues: forwarded frames and tunnel
	// packets wait here, still in the receive buffers they arrived in, until
	// flush sends each queue with one system call.
	toPort   txQueue
	toUplink txQueue
	// seg is scratch space for the segments of an oversized TCP frame.
	seg []byte
}

// New returns a datapath between conn and uplink that counts what belongs to
// no VM in global and reads the time (for the hold queue) from clk.
func New(conn FrameConn, uplink Uplink, clk clock.Clock, global *Counters) *Datapath {
	d := &Datapath{conn: conn, uplink: uplink, clock: clk, signal: make(chan []byte, 64), activate: make(chan string, 64),
		tookOver: make(chan Takeover, 16), homeLink: make(chan HomeLinkEvent, 16), refused: make(chan string, 16), global: global,
		toPort: newTxQueue(BatchSize), toUplink: newTxQueue(BatchSize)}
	d.fib.Store(NewFIB(netip.Addr{}, TunnelMTU, nil))
	return d
}

// Events returns the channels the datapath reports on.
func (d *Datapath) Events() Events {
	return Events{Signal: d.signal, Activate: d.activate, HomeLink: d.homeLink, TookOver: d.tookOver, TunnelRefused: d.refused}
}

// Publish makes f the forwarding state from the next frame on.
func (d *Datapath) Publish(f *FIB) { d.fib.Store(f) }

// Send writes one frame to the internal port, for the control loop's own
// frames (Router and Neighbor Advertisements). Any goroutine.
func (d *Datapath) Send(frame []byte) error { return d.conn.WriteFrame(frame) }

// ReadAlso makes the datapath read nic besides the internal port: the
// care-of NIC of host layout 3, where what arrives for the care-of address
// is kgswitch's. Nothing is written to it. Call it before Run.
func (d *Datapath) ReadAlso(nic FrameConn) { d.nic = nic }

// Close closes the internal port, and the care-of NIC when read; Run returns.
func (d *Datapath) Close() error {
	err := d.conn.Close()
	if d.nic != nil {
		err = errors.Join(err, d.nic.Close())
	}
	return err
}

// CollectKernelDrops charges the frames the kernel dropped on the internal
// port since the last call to the socket-overflow counter. Any goroutine.
func (d *Datapath) CollectKernelDrops() error {
	var errs []error
	for _, c := range []FrameConn{d.conn, d.nic} {
		kd, ok := c.(KernelDropper)
		if !ok {
			continue
		}
		n, err := kd.KernelDrops()
		d.global.Drops[DropSocketOverflow].Add(n)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Run processes frames until ctx ends or a conn fails. With a
// BatchFrameConn it reads up to BatchSize frames per system call and sends
// what they turn into with one system call per direction. With a care-of NIC
// (ReadAlso) it reads that too, on a goroutine of its own, and returns the
// first failure of either; the other reader ends with Close.
func (d *Datapath) Run(ctx context.Context) error {
	if d.nic == nil {
		return d.serve(ctx, d.conn, false)
	}
	errc := make(chan error, 2)
	go func() { errc <- d.serve(ctx, d.nic, true) }()
	go func() { errc <- d.serve(ctx, d.conn, false) }()
	return <-errc
}

// serve reads conn (the care-of NIC when nic) and handles what it reads
// until ctx ends or conn fails.
func (d *Datapath) serve(ctx context.Context, conn FrameConn, nic bool) error {
	n := 1
	bc, batched := conn.(BatchFrameConn)
	if batched {
		n = BatchSize
	}
	bufs := make([][]byte, n)
	views := make([][]byte, n)
	lens := make([]int, n)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+maxFrame)
		views[i] = bufs[i][headroom:]
	}
	out := make([]byte, 0, 2048)
	for {
		k, err := 1, error(nil)
		if batched {
			k, err = bc.ReadFrames(views, lens)
		} else {
			lens[0], err = conn.ReadFrame(views[0])
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		d.mu.Lock()
		for i := range k {
			out = d.handleFrom(bufs[i], lens[i], out[:0], nic)
		}
		d.flush()
		d.mu.Unlock()
	}
}

// handle processes the frame at buf[headroom:headroom+n], read from the
// internal port. out is scratch space for replies built from scratch; it is
// returned for reuse. What handle forwards may wait in the transmit queues,
// in buf, until the caller's flush: buf must not be reused before.
func (d *Datapath) handle(buf []byte, n int, out []byte) []byte {
	return d.handleFrom(buf, n, out, false)
}

// handleFrom is handle for a frame from the internal port, or with nic from
// the care-of NIC (host layout 3). The NIC's socket filter passes only IPv6
// for the care-of address: such a frame is never a guest's or the home
// link's, whatever its MACs say, so it skips straight to what arrives for
// the care-of address.
func (d *Datapath) handleFrom(buf []byte, n int, out []byte, nic bool) []byte {
	frame := buf[headroom : headroom+n]
	f := d.fib.Load()
	if len(frame) < netpkt.EthernetLen {
		d.global.Drop(DropMalformed)
		return out
	}
	eth := netpkt.Ethernet(frame)
	if !nic {
		if g := f.byMAC[[6]byte(eth.Src())]; g != nil {
			return d.fromGuest(f, g, buf, n, out)
		}
		if dep := f.departedByMAC[[6]byte(eth.Dst())]; dep != nil {
			d.fromHomeLink(f, dep, frame)
			return out
		}
		if key, ok := f.awaiting[[6]byte(eth.Src())]; ok {
			d.announced(key)
			return out
		}
		if len(f.departedByHoA4) > 0 && eth.EtherType() == netpkt.EtherTypeARP && d.homeLinkARP(f, eth) {
			return out
		}
	}
	if eth.EtherType() != netpkt.EtherTypeIPv6 {
		d.global.Drop(DropUnknownSource)
		return out
	}
	ip, err := netpkt.ParseIPv6(eth.Payload())
	if err != nil {
		d.global.Drop(DropMalformed)
		return out
	}
	if !nic && (len(f.departedByHoA) > 0 || len(f.atHome) > 0) && d.homeLinkND(f, eth, ip) {
		return out
	}
	if ip.Dst() != f.coa && !f.returning[ip.Dst()] {
		d.global.Drop(DropUnknownSource)
		return out
	}
	if ip.NextHeader() == netpkt.ProtoIPv6 {
		d.fromTunnel(f, buf, ip)
		return out
	}
	if ip.NextHeader() == netpkt.ProtoIPv4 {
		d.fromTunnel4(f, buf, ip)
		return out
	}
	hoa, upper, ok := routingHeader2(ip)
	// Signalling: a Mobility Header, or ESP carrying one (RFC 3776 §3.1;
	// OpenFlow diverts ESP only from served Home Agents).
	if upper == protoMH || ip.NextHeader() == protoMH || upper == protoESP || ip.NextHeader() == protoESP {
		select {
		case d.signal <- append([]byte(nil), ip...):
		default:
			d.global.Drop(DropSignalQueueFull)
		}
		return out
	}
	if !ok && ip.Dst() == f.coa {
		if g := tunnelRefused(f, ip); g != nil {
			d.hint(g)
			return out
		}
	}
	if !ok && nic {
		// The host kernel got this ICMPv6 error too (the NIC's socket
		// takes a copy of it, not the packet).
		return out
	}
	if !ok {
		// ICMPv6 from a Home Agent to the host itself: OpenFlow diverted it
		// because it cannot see routing headers; hand it back unchanged.
		d.queuePort(frame[:netpkt.EthernetLen+len(ip)], d.global, countNothing, 0)
		return out
	}
	d.fromHomeAgent(f, buf, ip, hoa, upper)
	return out
}

const (
	protoMH      = 135
	protoESP     = 50
	protoRouting = 43
	rh2Len       = 24 // RFC 6275 §6.4: 8 octets + one address
)

// routingHeader2 reports the home address carried by a type 2 routing header
// right after the IPv6 header (RFC 6275 §6.4: Hdr Ext Len 2, Segments Left 1),
// and the header that follows it.
func routingHeader2(ip netpkt.IPv6) (hoa netip.Addr, next uint8, ok bool) {
	rh := ip.Payload()
	if ip.NextHeader() != protoRouting || len(rh) < rh2Len || rh[1] != 2 || rh[2] != 2 || rh[3] != 1 {
		return netip.Addr{}, 0, false
	}
	return netip.AddrFrom16([16]byte(rh[8:24])), rh[0], true
}

// fromHomeAgent delivers a packet the Home Agent itself sent to a guest (RFC
// 6275 §9.3.2: to the care-of address, with a type 2 routing header carrying
// the home address) as the guest's kernel expects it without MIPv6: the
// routing header processed, the home address as destination. Upper-layer
// checksums already use the home address (the final destination), so they
// stay valid.
func (d *Datapath) fromHomeAgent(f *FIB, buf []byte, ip netpkt.IPv6, hoa netip.Addr, next uint8) {
	g := f.byHoA[hoa]
	if g == nil {
		d.global.Drop(DropUnknownHome)
		return
	}
	if ip.Src() != g.HomeAgent {
		g.Link.Counters.Drop(DropBadTunnelSource)
		return
	}
	if r := tunnelRefusal(g, ip); r >= 0 {
		g.Link.Counters.Drop(r)
		return
	}
	ipStart := headroom + netpkt.EthernetLen
	// Slide the IPv6 header forward over the routing header; the payload stays.
	copy(buf[ipStart+rh2Len:ipStart+rh2Len+netpkt.IPv6Len], buf[ipStart:ipStart+netpkt.IPv6Len])
	plen := len(ip) - netpkt.IPv6Len - rh2Len
	hdr := buf[ipStart+rh2Len:]
	netpkt.PutIPv6(hdr, plen, next, netpkt.IPv6(hdr).HopLimit(), netpkt.IPv6(hdr).Src(), hoa)
	frame := buf[ipStart+rh2Len-netpkt.EthernetLen : ipStart+rh2Len+netpkt.IPv6Len+plen]
	netpkt.PutEthernet(frame, g.MAC[:], f.routerMAC, netpkt.EtherTypeIPv6)
	d.queuePort(frame, &g.Link.Counters, countFromTunnel, netpkt.IPv6Len+plen)
}

func (d *Datapath) fromTunnel(f *FIB, buf []byte, outer netpkt.IPv6) {
	inner, err := decapsulate(outer)
	if err != nil {
		d.global.Drop(DropMalformed)
		return
	}
	g := f.byHoA[inner.Dst()]
	if g == nil {
		d.global.Drop(DropUnknownHome)
		return
	}
	if outer.Src() != g.HomeAgent {
		g.Link.Counters.Drop(DropBadTunnelSource)
		return
	}
	if r := tunnelRefusal(g, inner); r >= 0 {
		g.Link.Counters.Drop(r)
		return
	}
	// decapsulate allows no extension headers, so the inner packet starts right
	// after the outer header.
	d.deliverInner(f, g, buf, len(inner), netpkt.EtherTypeIPv6)
}

// deliverInner queues the inner packet of innerLen bytes that starts right
// after the outer IPv6 header in buf to guest g: its Ethernet header
// overwrites the outer header's last 14 bytes and nothing moves.
func (d *Datapath) deliverInner(f *FIB, g *Guest, buf []byte, innerLen int, etherType uint16) {
	start := headroom + netpkt.EthernetLen + netpkt.IPv6Len - netpkt.EthernetLen
	frame := buf[start : start+netpkt.EthernetLen+innerLen]
	netpkt.PutEthernet(frame, g.MAC[:], f.routerMAC, etherType)
	d.queuePort(frame, &g.Link.Counters, countFromTunnel, innerLen)
}
