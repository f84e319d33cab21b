package labha

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/netpkt"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// DefaultDADTimeout is how long the Home Agent waits for an answer to its
// DAD probe: RetransTimer, 1 s (RFC 4861 §10), as measured with mip6d
// (1.02-1.07 s from Binding Update to Binding Acknowledgement).
const DefaultDADTimeout = time.Second

// Config configures a HomeAgent.
type Config struct {
	// Iface is the home link interface, e.g. "eth0".
	Iface string
	// Addr is the Home Agent's address on the home link.
	Addr netip.Addr
	// Prefix is the home prefix; home addresses outside it get status 132.
	Prefix netip.Prefix
	// DADTimeout is the wait after the DAD probe; zero means
	// DefaultDADTimeout.
	DADTimeout time.Duration
	// MaxLifetime caps granted binding lifetimes like the home prefix's
	// valid lifetime does; zero means MaxBindingLifetime (262,140 s).
	MaxLifetime time.Duration
	// PrefixDiscovery makes successful registrations answer status 1.
	PrefixDiscovery bool
	// IPv4Prefix is the IPv4 home subnet in which IPv4 home addresses are
	// bound (RFC 5555); the zero Prefix makes a Home Agent without RFC
	// 5555, which skips the IPv4 Home Address option.
	IPv4Prefix netip.Prefix
	// TunName is the TUN device name pattern; empty means "labha%d".
	TunName string
	// AckDelay holds every Binding Acknowledgement back this long, as the
	// path from a Home Agent in another data centre would.
	AckDelay time.Duration
	// Keys are manually keyed ESP SAs (esp.ParseKeyFile), a pair per
	// home address whose signalling must be protected (NewKeyring). Home
	// addresses without SAs keep clear signalling.
	Keys []esp.SA
}

// HomeAgent is a running (or runnable) lab Home Agent.
type HomeAgent struct {
	cfg Config
	log *slog.Logger

	keys *Keyring

	mu    sync.Mutex
	cache *Cache
	dad   map[netip.Addr]chan struct{} // closed when a conflict is seen

	// Set up by Run.
	ifi    *net.Interface
	link   *linkSocket
	raw    *rawSender
	tunnel *tunnelSocket
	// tunnel4 receives IPv4 in IPv6 (RFC 5555); nil without IPv4Prefix.
	tunnel4 *tunnelSocket
	tun     *tunDevice
	// bound4 holds the IPv4 home addresses routed into the TUN device and
	// proxied on the home link; guarded by mu.
	bound4 map[netip.Addr]bool
	local  map[netip.Addr]bool
	wake   chan struct{}

	tunnelOut, tunnelIn, rh2Out atomic.Uint64
	tunnelOutDrop, tunnelInDrop atomic.Uint64
	dropLogs                    atomic.Int32
	running                     atomic.Bool
}

// New checks cfg and returns a Home Agent; Run starts it. A nil logger
// discards events.
func New(cfg Config, logger *slog.Logger) (*HomeAgent, error) {
	if cfg.Iface == "" {
		return nil, errors.New("labha: no interface")
	}
	if !cfg.Addr.Is6() || cfg.Addr.Is4In6() {
		return nil, fmt.Errorf("labha: address %v is not IPv6", cfg.Addr)
	}
	if !cfg.Prefix.IsValid() || !cfg.Prefix.Addr().Is6() {
		return nil, fmt.Errorf("labha: bad home prefix %v", cfg.Prefix)
	}
	cfg.Prefix = cfg.Prefix.Masked()
	if cfg.IPv4Prefix.IsValid() {
		if !cfg.IPv4Prefix.Addr().Is4() {
			return nil, fmt.Errorf("labha: IPv4 home prefix %v is not IPv4", cfg.IPv4Prefix)
		}
		cfg.IPv4Prefix = cfg.IPv4Prefix.Masked()
	}
	if !cfg.Prefix.Contains(cfg.Addr) {
		return nil, fmt.Errorf("labha: address %v outside home prefix %v", cfg.Addr, cfg.Prefix)
	}
	if cfg.DADTimeout <= 0 {
		cfg.DADTimeout = DefaultDADTimeout
	}
	if cfg.TunName == "" {
		cfg.TunName = "labha%d"
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Made here, not in Run, so that the Acknowledgement SAs' sequence
	// numbers start at 1 once per Home Agent, as the kernel's do when the
	// operator installs the SAs.
	keys, err := NewKeyring(cfg.Addr, cfg.Keys)
	if err != nil {
		return nil, err
	}
	return &HomeAgent{
		cfg:  cfg,
		log:  logger,
		keys: keys,
		cache: NewCache(CacheConfig{
			Prefix:          cfg.Prefix,
			MaxLifetime:     cfg.MaxLifetime,
			PrefixDiscovery: cfg.PrefixDiscovery,
			IPv4Prefix:      cfg.IPv4Prefix,
		}),
		dad:  make(map[netip.Addr]chan struct{}),
		wake: make(chan struct{}, 1),
	}, nil
}

// Bindings returns a snapshot of the binding cache.
func (h *HomeAgent) Bindings() []Binding {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cache.Bindings()
}

// Run serves the home link until ctx ends, then removes the routes, proxy
// neighbour entries and TUN device it created and logs EventStopped. It
// must be called once, inside the Home Agent's network namespace, as root.
// While it runs it sets, and afterwards restores, these sysctls of the
// namespace: IPv6 forwarding and proxy_ndp on, and a zero global ICMP
// budget for ICMPv6 Parameter Problems only (ratemask 4), because the lab
// kernel, lacking MIP6, would otherwise answer every Binding Update's Home
// Address option with a Parameter Problem that no real Home Agent sends.
// With an IPv4 home prefix it also sets IPv4 forwarding on and carries IPv4
// to and from bound IPv4 home addresses in IPv6 (RFC 5555).
func (h *HomeAgent) Run(ctx context.Context) (err error) {
	if !h.running.CompareAndSwap(false, true) {
		return errors.New("labha: Run called twice")
	}
	undo, err := h.setup()
	if err != nil {
		h.teardown(undo)
		return err
	}
	defer func() {
		h.teardown(undo)
		h.log.Info(EventStopped,
			"tunnel_out", h.tunnelOut.Load(), "tunnel_in", h.tunnelIn.Load(), "rh2_out", h.rh2Out.Load(),
			"tunnel_out_dropped", h.tunnelOutDrop.Load(), "tunnel_in_dropped", h.tunnelInDrop.Load())
	}()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return h.readLink(gctx) })
	g.Go(func() error { return h.readTunnel(gctx) })
	g.Go(func() error { return h.readTun(gctx) })
	if h.tunnel4 != nil {
		g.Go(func() error { return h.readTunnel4(gctx) })
	}
	g.Go(func() error { return h.expireLoop(gctx) })
	protected := []string{}
	for _, hoa := range h.keys.HomeAddresses() {
		protected = append(protected, hoa.String())
	}
	h.log.Info(EventReady, "iface", h.cfg.Iface, "addr", h.cfg.Addr.String(), "prefix", h.cfg.Prefix.String(),
		"tun", h.tun.name, "dad_ms", h.cfg.DADTimeout.Milliseconds(), "mac", h.ifi.HardwareAddr.String(),
		"ipsec", protected, "ipv4_prefix", ipv4PrefixString(h.cfg.IPv4Prefix))
	<-gctx.Done()
	// Unblock the TUN and tunnel readers, which wait in the poller without a
	// context; the other sockets follow their context.
	h.tun.f.Close()
	h.tunnel.c.Close()
	if h.tunnel4 != nil {
		h.tunnel4.c.Close()
	}
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// setup opens everything Run needs and returns the sysctl changes to undo.
func (h *HomeAgent) setup() ([]sysctlChange, error) {
	var err error
	if h.ifi, err = net.InterfaceByName(h.cfg.Iface); err != nil {
		return nil, fmt.Errorf("labha: %w", err)
	}
	// A Home Agent forwards and answers ND for its mobile nodes (RFC 6275
	// §10.4.1). The kernel here has no MIP6, so it would answer each
	// Binding Update (Home Address option) with a Parameter Problem that a
	// real Home Agent never sends: rate-limit only Parameter Problems
	// (ICMPv6 type 4) and give the global limiter no budget.
	sysctls := []string{
		"net/ipv6/conf/all/forwarding", "1",
		"net/ipv6/conf/" + h.cfg.Iface + "/proxy_ndp", "1",
		"net/ipv6/icmp/ratemask", "4",
		"net/ipv4/icmp_msgs_per_sec", "0",
		"net/ipv4/icmp_msgs_burst", "0",
	}
	if h.cfg.IPv4Prefix.IsValid() {
		// IPv4 forwarding, which also makes the kernel answer ARP for the
		// proxy entries of IPv4 home addresses routed into the TUN device.
		// The zero ICMP budget above holds for the ICMPv4 errors of what it
		// forwards too (those in net/ipv4/icmp_ratemask).
		sysctls = append(sysctls, "net/ipv4/conf/all/forwarding", "1")
	}
	undo, err := setSysctls(sysctls...)
	if err != nil {
		return nil, fmt.Errorf("labha: %w", err)
	}
	if h.local, err = localAddrs(); err != nil {
		return undo, fmt.Errorf("labha: %w", err)
	}
	if !h.local[h.cfg.Addr] {
		return undo, fmt.Errorf("labha: %v is not configured in this namespace", h.cfg.Addr)
	}
	if h.link, err = openLinkSocket(h.ifi); err != nil {
		return undo, fmt.Errorf("labha: %w", err)
	}
	if h.raw, err = openRawSender(); err != nil {
		return undo, fmt.Errorf("labha: %w", err)
	}
	if h.tunnel, err = openTunnelSocket(h.cfg.Addr, unix.IPPROTO_IPV6); err != nil {
		return undo, fmt.Errorf("labha: %w", err)
	}
	if h.cfg.IPv4Prefix.IsValid() {
		// RFC 5555 with an IPv6 care-of address: IPv4 in IPv6, next header 4.
		h.bound4 = make(map[netip.Addr]bool)
		if h.tunnel4, err = openTunnelSocket(h.cfg.Addr, unix.IPPROTO_IPIP); err != nil {
			return undo, fmt.Errorf("labha: %w", err)
		}
	}
	// The tunnel MTU leaves room for the outer header, as ip6tnl does
	// without encapsulation limit option: the kernel then sends Packet Too
	// Big for what would not fit.
	if h.tun, err = openTun(h.cfg.TunName, h.ifi.MTU-TunnelOverhead); err != nil {
		return undo, fmt.Errorf("labha: %w", err)
	}
	return undo, nil
}

// teardown removes what the bindings installed and closes everything.
func (h *HomeAgent) teardown(undo []sysctlChange) {
	h.mu.Lock()
	for _, b := range h.cache.Bindings() {
		h.unbind(b.HomeAddress)
	}
	for a := range h.bound4 {
		h.unbind4(a)
	}
	h.mu.Unlock()
	if h.tun != nil {
		h.tun.f.Close() // a non-persistent TUN device disappears with its routes
	}
	for _, c := range []interface{ Close() error }{h.link.conn(), h.raw.conn(), h.tunnel.conn(), h.tunnel4.conn()} {
		if c != nil {
			c.Close()
		}
	}
	restoreSysctls(undo)
}

func (s *linkSocket) conn() interface{ Close() error } {
	if s == nil {
		return nil
	}
	return s.c
}

func (s *rawSender) conn() interface{ Close() error } {
	if s == nil {
		return nil
	}
	return s.c
}

func (s *tunnelSocket) conn() interface{ Close() error } {
	if s == nil {
		return nil
	}
	return s.c
}

// readLink receives the home link's IPv6 traffic: Binding Updates, in
// clear or under ESP, and DAD answers.
func (h *HomeAgent) readLink(ctx context.Context) error {
	buf := make([]byte, 65536)
	for {
		pkt, err := h.link.read(ctx, buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("labha: read %s: %w", h.cfg.Iface, err)
		}
		if len(pkt) < ipv6HeaderLen {
			continue
		}
		h.checkDAD(pkt)
		if _, dst := addrs(pkt); dst != h.cfg.Addr {
			continue
		}
		switch pkt[ipv6NextHdr] {
		case 0, 43, 60, 135, esp.IPProtoESP: // a header chain that may lead to a Mobility Header
		default:
			continue
		}
		r, espSeq, err := h.keys.ParseRequest(pkt)
		switch {
		case errors.Is(err, ErrNotBU):
			continue
		case err != nil:
			src, _ := addrs(pkt)
			reason := DropReason(err)
			attrs := []any{"coa", src.String(), "reason", reason}
			if reason != err.Error() {
				attrs = append(attrs, "detail", err.Error())
			}
			h.log.Info(EventBUDropped, attrs...)
			continue
		}
		h.handleBU(ctx, r, espSeq)
	}
}

// checkDAD wakes the DAD runs that pkt shows a conflict for.
func (h *HomeAgent) checkDAD(pkt []byte) {
	if pkt[ipv6NextHdr] != mipv6.IPProtoICMPv6 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for target, ch := range h.dad {
		if DADConflict(pkt, target) {
			close(ch)
			delete(h.dad, target)
		}
	}
}

// requestAttrs are the event attributes of r, which came with ESP sequence
// number espSeq (0 in clear).
func requestAttrs(r Request, espSeq uint32) []any {
	hoa := ""
	if r.HomeAddress.IsValid() {
		hoa = r.HomeAddress.String()
	}
	attrs := []any{"hoa", hoa, "coa", r.CareOf.String(), "seq", r.Sequence, "flags", r.Flags,
		"lifetime", r.Lifetime, "lifetime_s", int(r.Lifetime) * 4}
	if a := r.IPv4HomeAddress.Address; a.IsValid() {
		attrs = append(attrs, "hoa4", a.String(), "hoa4_prefix_len", r.IPv4HomeAddress.PrefixLen)
	}
	if espSeq != 0 {
		attrs = append(attrs, "esp_seq", espSeq)
	}
	return attrs
}

// handleBU applies the binding cache's decision on r, which came with ESP
// sequence number espSeq (0 in clear).
func (h *HomeAgent) handleBU(ctx context.Context, r Request, espSeq uint32) {
	h.log.Info(EventBUReceived, requestAttrs(r, espSeq)...)
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.cache.HandleBU(r, time.Now())
	switch d.Verdict {
	case Drop:
		h.log.Info(EventBUDropped, append(requestAttrs(r, espSeq), "reason", d.Reason)...)
	case RunDAD:
		ch := make(chan struct{})
		h.dad[d.HomeAddress] = ch
		go h.runDAD(ctx, d.HomeAddress, ch)
	case Reply:
		h.apply(d)
		h.sendBA(ctx, d)
	}
}

// runDAD probes the home link for hoa (RFC 4862 §5.4, one probe) and
// completes the registration waiting for it.
func (h *HomeAgent) runDAD(ctx context.Context, hoa netip.Addr, conflict chan struct{}) {
	start := time.Now()
	h.log.Info(EventDADStart, "hoa", hoa.String())
	probe, mac, err := DADProbe(hoa)
	if err == nil {
		err = h.link.send(ctx, probe, mac)
	}
	if err != nil {
		h.log.Info(EventError, "hoa", hoa.String(), "reason", "send DAD probe: "+err.Error())
	}
	duplicate := false
	timer := time.NewTimer(h.cfg.DADTimeout)
	defer timer.Stop()
	select {
	case <-conflict:
		duplicate = true
	case <-timer.C:
	case <-ctx.Done():
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dad[hoa] == conflict {
		delete(h.dad, hoa)
	}
	// A conflict seen between the timer firing and taking the lock counts.
	select {
	case <-conflict:
		duplicate = true
	default:
	}
	h.log.Info(EventDADDone, "hoa", hoa.String(), "duplicate", duplicate, "elapsed_ms", time.Since(start).Milliseconds())
	if ctx.Err() != nil {
		return
	}
	d := h.cache.CompleteDAD(hoa, duplicate, time.Now())
	if d.Verdict != Reply {
		return
	}
	h.apply(d)
	h.sendBA(ctx, d)
}

// apply makes the data plane follow decision d; callers hold h.mu. It runs
// before the Binding Acknowledgement goes out, so a mobile node that got
// the BA finds the tunnel in place (as with mip6d).
func (h *HomeAgent) apply(d Decision) {
	if ev := bindingEvent(d.Action); ev != "" && (d.Action == Remove || mipv6.StatusSuccess(d.Ack.Status)) {
		attrs := []any{"hoa", d.HomeAddress.String(), "coa", d.CareOf.String(), "seq", d.Ack.Sequence}
		if d.OldCareOf.IsValid() {
			attrs = append(attrs, "old_coa", d.OldCareOf.String())
		}
		if d.Action != Remove {
			attrs = append(attrs, "lifetime_s", int(d.Binding.Lifetime/time.Second), "expires", d.Binding.Expires.Format(time.RFC3339Nano))
		}
		attrs = append(attrs, ipv4Attrs(d)...)
		h.log.Info(ev, attrs...)
	}
	switch d.Action {
	case Add:
		if !mipv6.StatusSuccess(d.Ack.Status) {
			return
		}
		if err := h.tun.addRoute(d.HomeAddress); err != nil {
			h.log.Info(EventError, "hoa", d.HomeAddress.String(), "reason", "route: "+err.Error())
		}
		if err := addProxy(h.ifi.Index, d.HomeAddress); err != nil {
			h.log.Info(EventError, "hoa", d.HomeAddress.String(), "reason", "proxy neighbour: "+err.Error())
		}
		h.advertise(d.HomeAddress)
	case Remove:
		h.unbind(d.HomeAddress)
	}
	if d.OldIPv4HomeAddress.IsValid() {
		h.unbind4(d.OldIPv4HomeAddress)
	}
	if a := d.Binding.IPv4HomeAddress; a.IsValid() && d.Action != Remove && mipv6.StatusSuccess(d.Ack.Status) {
		h.bind4(a)
	}
	h.poke()
}

// bind4 routes IPv4 home address a into the TUN device, proxies ARP for it
// on the home link and announces it there with a gratuitous ARP (RFC 5555,
// as RFC 5944 §4.6 has a Mobile IPv4 Home Agent do); callers hold h.mu. A
// refresh of an address already bound changes nothing.
func (h *HomeAgent) bind4(a netip.Addr) {
	if h.bound4 == nil || h.bound4[a] {
		return
	}
	h.bound4[a] = true
	if err := h.tun.addRoute(a); err != nil {
		h.log.Info(EventError, "hoa4", a.String(), "reason", "route: "+err.Error())
	}
	if err := addProxy4(h.ifi.Index, a); err != nil {
		h.log.Info(EventError, "hoa4", a.String(), "reason", "proxy neighbour: "+err.Error())
	}
	f, err := GratuitousARP(a, h.ifi.HardwareAddr)
	if err == nil {
		err = h.link.sendFrame(context.Background(), f)
	}
	if err != nil {
		h.log.Info(EventError, "hoa4", a.String(), "reason", "send gratuitous ARP: "+err.Error())
	}
}

// unbind4 removes the route and proxy ARP entry of IPv4 home address a;
// callers hold h.mu.
func (h *HomeAgent) unbind4(a netip.Addr) {
	if h.bound4 == nil {
		return
	}
	delete(h.bound4, a)
	if h.tun != nil {
		if err := h.tun.delRoute(a); err != nil {
			h.log.Info(EventError, "hoa4", a.String(), "reason", "delete route: "+err.Error())
		}
	}
	if h.ifi != nil {
		if err := delProxy4(h.ifi.Index, a); err != nil {
			h.log.Info(EventError, "hoa4", a.String(), "reason", "delete proxy neighbour: "+err.Error())
		}
	}
}

// advertise sends the unsolicited proxy Neighbor Advertisement for hoa.
func (h *HomeAgent) advertise(hoa netip.Addr) {
	na, mac, err := ProxyAdvertisement(h.cfg.Addr, hoa, h.ifi.HardwareAddr)
	if err == nil {
		err = h.link.send(context.Background(), na, mac)
	}
	if err != nil {
		h.log.Info(EventError, "hoa", hoa.String(), "reason", "send NA: "+err.Error())
		return
	}
	h.log.Info(EventNASent, "hoa", hoa.String(), "mac", h.ifi.HardwareAddr.String(), "router", true, "override", false)
}

// unbind removes the route and proxy entry of hoa.
func (h *HomeAgent) unbind(hoa netip.Addr) {
	if h.tun != nil {
		if err := h.tun.delRoute(hoa); err != nil {
			h.log.Info(EventError, "hoa", hoa.String(), "reason", "delete route: "+err.Error())
		}
	}
	if h.ifi != nil {
		if err := delProxy(h.ifi.Index, hoa); err != nil {
			h.log.Info(EventError, "hoa", hoa.String(), "reason", "delete proxy neighbour: "+err.Error())
		}
	}
}

// sendBA sends the Binding Acknowledgement of d to the care-of address,
// with a type 2 routing header for the home address (RFC 6275 §6.1.8,
// §10.3.1), under ESP when the home address has SAs. Sealed now, not when
// a delayed Ack leaves, so that its ESP sequence number counts the
// decisions in order, as the kernel numbers what mip6d sends.
func (h *HomeAgent) sendBA(ctx context.Context, d Decision) {
	pkt, espSeq, err := h.keys.AppendBA(nil, baPacket(h.cfg.Addr, d), rand.Reader)
	if err != nil {
		h.log.Info(EventError, "hoa", d.HomeAddress.String(), "coa", d.CareOf.String(), "reason", "protect BA: "+err.Error())
		return
	}
	if h.cfg.AckDelay > 0 {
		time.AfterFunc(h.cfg.AckDelay, func() { h.transmitBA(ctx, d, pkt, espSeq) })
		return
	}
	h.transmitBA(ctx, d, pkt, espSeq)
}

// transmitBA sends an Acknowledgement built by sendBA and logs it.
func (h *HomeAgent) transmitBA(ctx context.Context, d Decision, pkt []byte, espSeq uint32) {
	if err := h.raw.send(ctx, pkt, d.CareOf); err != nil {
		h.log.Info(EventError, "hoa", d.HomeAddress.String(), "coa", d.CareOf.String(), "reason", "send BA: "+err.Error())
		return
	}
	attrs := []any{"hoa", d.HomeAddress.String(), "coa", d.CareOf.String(), "status", d.Ack.Status,
		"seq", d.Ack.Sequence, "lifetime", d.Ack.Lifetime}
	if k := d.Ack.IPv4; k.Present {
		attrs = append(attrs, "hoa4", k.Address.String(), "ipv4_status", k.Status)
	}
	if d.Reason != "" {
		attrs = append(attrs, "reason", d.Reason)
	}
	if espSeq != 0 {
		attrs = append(attrs, "esp_seq", espSeq)
	}
	h.log.Info(EventBASent, attrs...)
}

// poke makes expireLoop recompute its deadline.
func (h *HomeAgent) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// expireLoop removes bindings when their lifetime ends.
func (h *HomeAgent) expireLoop(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		h.mu.Lock()
		now := time.Now()
		for _, b := range h.cache.Expire(now) {
			h.unbind(b.HomeAddress)
			if b.IPv4HomeAddress.IsValid() {
				h.unbind4(b.IPv4HomeAddress)
			}
			attrs := []any{"hoa", b.HomeAddress.String(), "coa", b.CareOf.String(), "seq", b.Sequence}
			if b.IPv4HomeAddress.IsValid() {
				attrs = append(attrs, "hoa4", b.IPv4HomeAddress.String())
			}
			h.log.Info(EventBindingExpired, attrs...)
		}
		wait := time.Hour
		if next, ok := h.cache.NextExpiry(); ok {
			wait = next.Sub(now)
		}
		h.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-h.wake:
		case <-timer.C:
		}
	}
}

// lookup returns the binding for hoa.
func (h *HomeAgent) lookup(hoa netip.Addr) (Binding, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cache.Lookup(hoa)
}

// lookup4 returns the binding that holds IPv4 home address a.
func (h *HomeAgent) lookup4(a netip.Addr) (Binding, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cache.LookupIPv4(a)
}

// dropped counts and logs (the first few) dropped data packets.
func (h *HomeAgent) dropped(ctr *atomic.Uint64, reason string) {
	ctr.Add(1)
	if h.dropLogs.Add(1) <= 20 {
		h.log.Info(EventTunnelDrop, "reason", reason)
	}
}

// readTun tunnels what the kernel routes to bound home addresses. It takes
// every packet queued on the TUN device at one wake-up and sends them with
// one sendmmsg: a packet at a time, the device's queue (500 packets)
// overflows under a TCP stream of a few hundred Mbit/s.
func (h *HomeAgent) readTun(ctx context.Context) error {
	bufs, outs := make([][]byte, batchSize), make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
		outs[i] = make([]byte, 0, 65536+TunnelOverhead+rh2Len)
	}
	lens := make([]int, batchSize)
	pkts, dsts := make([][]byte, 0, batchSize), make([]netip.Addr, 0, batchSize)
	rh2 := make([]bool, 0, batchSize)
	m := newMmsgs()
	for {
		n, err := h.tun.readBatch(bufs, lens)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("labha: read %s: %w", h.tun.name, err)
		}
		pkts, dsts, rh2 = pkts[:0], dsts[:0], rh2[:0]
		for i := range n {
			pkt := bufs[i][:lens[i]]
			if h.tunnel4 != nil && len(pkt) > 0 && pkt[0]>>4 == 4 {
				// IPv4 to an IPv4 home address: IPv4 in IPv6 (RFC 5555).
				p, err := netpkt.ParseIPv4(pkt)
				if err != nil {
					h.dropped(&h.tunnelOutDrop, "tun: "+err.Error())
					continue
				}
				b, ok := h.lookup4(p.Dst())
				if !ok {
					h.dropped(&h.tunnelOutDrop, "tun: no binding for "+p.Dst().String())
					continue
				}
				out := EncapsulateIPv4(outs[i][:0], h.cfg.Addr, b.CareOf, pkt)
				pkts, dsts, rh2 = append(pkts, out), append(dsts, b.CareOf), append(rh2, false)
				continue
			}
			if checkIPv6(pkt) != nil {
				h.dropped(&h.tunnelOutDrop, "tun: not an IPv6 packet")
				continue
			}
			src, dst := addrs(pkt)
			if dst.IsMulticast() {
				continue // the kernel's own MLD reports on the TUN device
			}
			b, ok := h.lookup(dst)
			if !ok {
				h.dropped(&h.tunnelOutDrop, "tun: no binding for "+dst.String())
				continue
			}
			out := outs[i][:0]
			own := h.local[src] || src.IsLinkLocalUnicast()
			if own {
				// The Home Agent's own packets to the mobile node are not
				// tunnelled (RFC 6275 §9.3.2, mip6d): type 2 routing header.
				if out, err = InsertRH2(out, pkt, b.CareOf); err != nil {
					h.dropped(&h.tunnelOutDrop, "rh2: "+err.Error())
					continue
				}
			} else {
				out = Encapsulate(out, h.cfg.Addr, b.CareOf, pkt)
			}
			pkts, dsts, rh2 = append(pkts, out), append(dsts, b.CareOf), append(rh2, own)
		}
		for i := 0; i < len(pkts); {
			k, err := h.raw.sendBatch(m, pkts[i:], dsts[i:])
			for _, own := range rh2[i : i+k] {
				if own {
					h.rh2Out.Add(1)
				} else {
					h.tunnelOut.Add(1)
				}
			}
			if i += k; err != nil {
				h.dropped(&h.tunnelOutDrop, "send: "+err.Error())
				i++
			} else if k == 0 {
				break
			}
		}
	}
}

// readTunnel decapsulates reverse-tunnelled packets into the TUN device so
// that the kernel forwards them (RFC 6275 §10.4.5), a batch per wake-up.
func (h *HomeAgent) readTunnel(ctx context.Context) error {
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	lens, srcs := make([]int, batchSize), make([]netip.Addr, batchSize)
	m := newMmsgs()
	limiter := newErrorLimiter(time.Second)
	for {
		n, err := h.tunnel.readBatch(m, bufs, lens, srcs)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF) {
				return nil
			}
			return fmt.Errorf("labha: read IP6IP6: %w", err)
		}
		for i := range n {
			inner := bufs[i][:lens[i]]
			if _, err := CheckReverse(srcs[i], h.cfg.Addr, h.cfg.Addr, inner, h.lookup); err != nil {
				h.dropped(&h.tunnelInDrop, err.Error())
				if errors.Is(err, ErrNoTunnel) {
					h.refuseTunnel(ctx, limiter, srcs[i], inner)
				}
				continue
			}
			if _, err := h.tun.f.Write(inner); err != nil {
				h.dropped(&h.tunnelInDrop, "write tun: "+err.Error())
				continue
			}
			h.tunnelIn.Add(1)
		}
	}
}

// readTunnel4 decapsulates reverse-tunnelled IPv4 packets (next header 4,
// RFC 5555) into the TUN device so that the kernel forwards them, a batch
// per wake-up, counted with the IPv6 ones. It sends no Destination
// Unreachable for a packet no binding takes.
func (h *HomeAgent) readTunnel4(ctx context.Context) error {
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	lens, srcs := make([]int, batchSize), make([]netip.Addr, batchSize)
	m := newMmsgs()
	for {
		n, err := h.tunnel4.readBatch(m, bufs, lens, srcs)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF) {
				return nil
			}
			return fmt.Errorf("labha: read IPv4 in IPv6: %w", err)
		}
		for i := range n {
			inner := bufs[i][:lens[i]]
			if _, err := CheckReverseIPv4(srcs[i], h.cfg.Addr, h.cfg.Addr, inner, h.lookup4); err != nil {
				h.dropped(&h.tunnelInDrop, err.Error())
				continue
			}
			if _, err := h.tun.f.Write(inner); err != nil {
				h.dropped(&h.tunnelInDrop, "write tun: "+err.Error())
				continue
			}
			h.tunnelIn.Add(1)
		}
	}
}
