package qemu

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// Mobility Header types (RFC 6275 §6.1.2) a hop's capture looks for.
const (
	MHBindingUpdate = 5
	MHBindingAck    = 6
)

// MobilityMessage is one Binding Update (RFC 6275 §6.1.7) or Binding
// Acknowledgement (§6.1.8) seen on a host's uplink.
type MobilityMessage struct {
	// At is when the capture saw it (the host clock, comparable with QMP
	// event times).
	At time.Time
	// Type is MHBindingUpdate or MHBindingAck.
	Type int
	// Src and Dst are the IPv6 header's addresses: for a Binding Update
	// from a foreign host the care-of address and the Home Agent.
	Src, Dst netip.Addr
	// Seq is the message's sequence number.
	Seq uint16
	// Status is a Binding Acknowledgement's status (0 and 1 accept).
	Status int
	// Lifetime is the lifetime field as tshark shows it (0 de-registers).
	Lifetime int
}

// Accepted reports whether m is a Binding Acknowledgement that accepts the
// binding (RFC 6275 §6.1.8: status below 128).
func (m MobilityMessage) Accepted() bool { return m.Type == MHBindingAck && m.Status < 128 }

// mobilityFields are the tshark fields ParseMobility reads, in order.
var mobilityFields = []string{"frame.time_epoch", "ipv6.src", "ipv6.dst", "mip6.mhtype",
	"mip6.bu.seqnr", "mip6.bu.lifetime", "mip6.ba.status", "mip6.ba.seqnr", "mip6.ba.lifetime"}

// mobilityFilter is tshark's display filter for the messages of a hop.
const mobilityFilter = "mip6.mhtype == 5 || mip6.mhtype == 6"

// ParseMobility reads tshark's `-T fields -E separator=/t` output for
// mobilityFields: one Binding Update or Acknowledgement a line. Lines of
// other Mobility Header types are skipped.
func ParseMobility(out string) ([]MobilityMessage, error) {
	var msgs []MobilityMessage
	for i, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != len(mobilityFields) {
			return nil, fmt.Errorf("tshark line %d: got %d fields, want %d: %q", i+1, len(f), len(mobilityFields), line)
		}
		bad := func(what string, err error) error {
			return fmt.Errorf("tshark line %d: %s: %v: %q", i+1, what, err, line)
		}
		var m MobilityMessage
		at, err := parseEpoch(f[0])
		if err != nil {
			return nil, bad("time", err)
		}
		m.At = at
		// A packet with a type 2 routing header or a tunnel carries more
		// than one address of a kind; the first is the outer header's.
		if m.Src, err = netip.ParseAddr(first(f[1])); err != nil {
			return nil, bad("source", err)
		}
		if m.Dst, err = netip.ParseAddr(first(f[2])); err != nil {
			return nil, bad("destination", err)
		}
		if m.Type, err = strconv.Atoi(first(f[3])); err != nil {
			return nil, bad("type", err)
		}
		seq, life := f[4], f[5]
		switch m.Type {
		case MHBindingUpdate:
		case MHBindingAck:
			seq, life = f[7], f[8]
			if m.Status, err = strconv.Atoi(first(f[6])); err != nil {
				return nil, bad("status", err)
			}
		default:
			continue
		}
		n, err := strconv.ParseUint(first(seq), 10, 16)
		if err != nil {
			return nil, bad("sequence", err)
		}
		m.Seq = uint16(n)
		if m.Lifetime, err = strconv.Atoi(first(life)); err != nil {
			return nil, bad("lifetime", err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func first(field string) string {
	s, _, _ := strings.Cut(field, ",")
	return strings.TrimSpace(s)
}

// parseEpoch parses tshark's frame.time_epoch ("1700000000.123456789").
func parseEpoch(s string) (time.Time, error) {
	sec, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	var ns int64
	if frac != "" {
		frac = (frac + "000000000")[:9]
		if ns, err = strconv.ParseInt(frac, 10, 64); err != nil {
			return time.Time{}, err
		}
	}
	return time.Unix(n, ns), nil
}

// Hop is one live migration of the guest between two lab hosts, seen from
// QEMU (its report), from the destination host's uplink (the mobility
// signalling kgswitch sent and received there) and from the correspondent
// (its probe stream).
type Hop struct {
	From, To string
	// Migration is QEMU's report: downtime, STOP and RESUME.
	Migration Report
	// Started is when the destination QEMU was started: its tap appeared
	// on the destination's bridge then.
	Started time.Time
	// Updates are the Binding Updates the destination host sent for the
	// guest (from its care-of address, or from the home address when the
	// destination is the home host) and Acks the Acknowledgements that
	// reached it, from Started on.
	Updates, Acks []MobilityMessage
	// Overrides are the unsolicited Neighbor Advertisements with the
	// Override flag for the home address and the guest's MAC that left the
	// destination's uplink from Started on: the home host announces a
	// guest back home with them (RFC 4861 §7.2.6).
	Overrides []time.Time
	// Probes is the correspondent's probe stream across the hop, and
	// LostProbes when cn sent the probes that got no answer (from a
	// capture on cn: where the loss falls against STOP and RESUME).
	Probes     scenario.PingResult
	LostProbes []time.Time
	// Reachable is when a probe of its own first got an answer after the
	// migration.
	Reachable time.Time
	// Probes4, LostProbes4 and Reachable4 are the same for the guest's
	// IPv4 home address (lab.HoA4), when HopOptions.IPv4 asked for them.
	Probes4     scenario.PingResult
	LostProbes4 []time.Time
	Reachable4  time.Time
}

// FirstUpdate returns the destination's first Binding Update since its
// QEMU started (it should come after the guest resumed there: see Early).
func (h Hop) FirstUpdate() (MobilityMessage, bool) {
	if len(h.Updates) == 0 {
		return MobilityMessage{}, false
	}
	return h.Updates[0], true
}

// AcceptedAck returns the first Acknowledgement after the first Binding
// Update that accepts the binding.
func (h Hop) AcceptedAck() (MobilityMessage, bool) {
	bu, ok := h.FirstUpdate()
	if !ok {
		return MobilityMessage{}, false
	}
	for _, m := range h.Acks {
		if !m.At.Before(bu.At) && m.Accepted() {
			return m, true
		}
	}
	return MobilityMessage{}, false
}

// Rejected returns the statuses of the Acknowledgements that refused a
// Binding Update of this hop (135: the Home Agent knew a newer sequence
// number, as after a move between foreign hosts; 133 to a de-registration:
// no binding left to remove).
func (h Hop) Rejected() []int {
	var s []int
	for _, m := range h.Acks {
		if !m.Accepted() {
			s = append(s, m.Status)
		}
	}
	return s
}

// Early returns the Binding Updates the destination sent before the guest
// stopped on its source host. A registration then would make a real Home
// Agent fail DAD (status 134), and a de-registration would cut the guest
// off while it still runs elsewhere: there must be none.
func (h Hop) Early() []MobilityMessage {
	var early []MobilityMessage
	for _, m := range h.Updates {
		if m.At.Before(h.Migration.Stop) {
			early = append(early, m)
		}
	}
	return early
}

// ResumeToUpdate is RESUME -> first Binding Update, negative when the
// update came first; ok is false without one.
func (h Hop) ResumeToUpdate() (d time.Duration, ok bool) {
	bu, ok := h.FirstUpdate()
	return bu.At.Sub(h.Migration.Resume), ok
}

// UpdateToAck is the first Binding Update -> the accepting
// Acknowledgement; ok is false without them.
func (h Hop) UpdateToAck() (d time.Duration, ok bool) {
	bu, ok1 := h.FirstUpdate()
	ba, ok2 := h.AcceptedAck()
	return ba.At.Sub(bu.At), ok1 && ok2
}

// ResumeToReply is RESUME -> the first probe answer after the longest gap;
// ok is false when no probe was answered.
func (h Hop) ResumeToReply() (d time.Duration, ok bool) {
	return h.Probes.FirstAfter.Sub(h.Migration.Resume), !h.Probes.FirstAfter.IsZero()
}

// HopTableHeader and Row format hops as a table, one line a hop.
const HopTableHeader = "hop             QEMU downtime  STOP->RESUME  RESUME->BU     BU->BA  RESUME->reply  probes lost  longest gap  rejected"

// Row is h's line under HopTableHeader.
func (h Hop) Row() string {
	rej := "-"
	if r := h.Rejected(); len(r) > 0 {
		rej = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(r)), ","), "[]")
	}
	return fmt.Sprintf("%-15s %13s %13s %11s %10s %14s %7d/%-5d %11s  %s",
		h.From+" -> "+h.To, FormatDuration(h.Migration.Downtime, true), FormatDuration(h.Migration.Pause(), true), FormatDuration(h.ResumeToUpdate()),
		FormatDuration(h.UpdateToAck()), FormatDuration(h.ResumeToReply()), h.Probes.Lost, h.Probes.Sent, FormatDuration(h.Probes.LongestGap, true), rej)
}

// FormatDuration renders d for the hop table: 0.1 ms resolution below
// 10 ms, 1 ms above, and "none" when !ok.
func FormatDuration(d time.Duration, ok bool) string {
	switch {
	case !ok:
		return "none"
	case d > -10*time.Millisecond && d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	default:
		return d.Round(time.Millisecond).String()
	}
}

// HopOptions configure RunHop.
type HopOptions struct {
	// Env is the lab with kgswitch, Image the guest's.
	Env   *scenario.Env
	Image Image
	// To is the destination host and Name the destination VM's name.
	To, Name string
	// Tap is the destination's tap (lab.GuestPort when empty).
	Tap string
	// IPv4 says the guest is dual-stack (booted with Config.DHCP4): the
	// destination QEMU is started alike, and cn probes the guest's IPv4
	// home address (lab.HoA4) too, with a second stream at the same
	// interval, and waits for it to be answered after the migration as
	// it does for the IPv6 one (Hop.Probes4).
	IPv4 bool
	// ProbeInterval paces the correspondent's probes (10 ms when zero).
	// They start being answered before the destination starts, and end
	// with an answer after kgswitch on the destination settled.
	ProbeInterval time.Duration
	// ReachTimeout bounds the wait for the guest to answer after the
	// migration (30 s when zero), and SettleTimeout the wait after that
	// for kgswitch on the destination to finish its signalling (5 s when
	// zero; see RunHop).
	ReachTimeout, SettleTimeout time.Duration
	// Migrate tunes the migration.
	Migrate MigrateOptions
	// Started, when not nil, receives the destination VM as soon as it
	// runs (so that the caller can arrange its cleanup, whatever follows).
	Started func(*VM)
	// Logf, when not nil, receives a line for each step.
	Logf func(format string, args ...any)
}

func (o *HopOptions) setDefaults() {
	if o.ProbeInterval == 0 {
		o.ProbeInterval = 10 * time.Millisecond
	}
	if o.ReachTimeout == 0 {
		o.ReachTimeout = 30 * time.Second
	}
	if o.SettleTimeout == 0 {
		o.SettleTimeout = 5 * time.Second
	}
	if o.Tap == "" {
		o.Tap = lab.GuestPort
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// RunHop live-migrates src's guest to a new QEMU on opt.To, as libvirt
// does: the destination QEMU (and its tap on the destination's bridge) is
// started first, then the guest's state moves and the source quits. Around
// it, a correspondent (cn) probes the guest's home address and a capture on
// the destination's uplink records the mobility signalling. RunHop returns
// once cn reaches the guest again and kgswitch on the destination has
// settled (its binding bound; at home, de-registered and the neighbours
// told with its Override advertisements; a binding that does not settle
// within SettleTimeout is left for the caller to judge from the
// signalling), or with an error; the destination VM is returned whenever
// it was started, also with an error.
func RunHop(ctx context.Context, src *VM, opt HopOptions) (*VM, Hop, error) {
	opt.setDefaults()
	e := opt.Env
	h := Hop{From: src.Host, To: opt.To}
	signalFrom := lab.HostAddr(opt.To)
	home := lab.HomePrefix.Contains(signalFrom)
	if home {
		// At home kgswitch de-registers on the guest's behalf, from the
		// home address (RFC 6275 §11.5.4).
		signalFrom = lab.HoA
	}
	// Mobility Headers (after any extension header) and Neighbor
	// Advertisements (ICMPv6 type 136 right after the fixed header).
	capture, err := e.StartCaptureFilter(ctx, opt.To, lab.Uplink, fmt.Sprintf("%s-%s-mh", opt.To, opt.Name),
		"ip6 protochain 135 or (icmp6 and ip6[40] == 136)")
	if err != nil {
		return nil, h, fmt.Errorf("capture on %s: %w", opt.To, err)
	}
	captured := false
	defer func() {
		if !captured {
			capture.Stop()
		}
	}()
	probes := []netip.Addr{lab.HoA}
	if opt.IPv4 {
		probes = append(probes, lab.HoA4)
	}
	var streams []*probeStream
	defer func() {
		for _, p := range streams {
			p.stop()
		}
	}()
	for _, to := range probes {
		p, err := startProbeStream(ctx, e, to, opt.Name, opt.ProbeInterval)
		if err != nil {
			return nil, h, err
		}
		streams = append(streams, p)
	}
	for _, p := range streams {
		if err := p.pings.WaitReplies(ctx, time.Time{}, 1, 10*time.Second); err != nil {
			return nil, h, fmt.Errorf("hop %s -> %s: before the migration: %s: %w", h.From, h.To, p.to, err)
		}
	}

	h.Started = time.Now()
	dst, err := Start(ctx, Config{Lab: e.Lab, Host: opt.To, Name: opt.Name, Image: opt.Image, Tap: opt.Tap, DHCP4: opt.IPv4, Incoming: true, Logf: opt.Logf})
	if err != nil {
		return nil, h, err
	}
	if opt.Started != nil {
		opt.Started(dst)
	}
	opt.Logf("hop %s -> %s: destination QEMU %s running (incoming) after %v", h.From, h.To, dst.Name, time.Since(h.Started).Round(time.Millisecond))
	if h.Migration, err = Migrate(ctx, src, dst, opt.Migrate); err != nil {
		return dst, h, err
	}
	if dst.Crash() != "" {
		return dst, h, nil
	}
	reachable := []*time.Time{&h.Reachable, &h.Reachable4}
	for i, p := range streams {
		if _, err := e.WaitReachable(ctx, "cn", p.to.String(), opt.ReachTimeout); err != nil {
			return dst, h, fmt.Errorf("hop %s -> %s: %w", h.From, h.To, err)
		}
		*reachable[i] = time.Now()
	}
	waitSettled(ctx, e, opt.To, opt.Tap, home, opt.SettleTimeout)
	for _, p := range streams {
		if err := p.pings.WaitReplies(ctx, time.Now(), 1, 5*time.Second); err != nil {
			return dst, h, fmt.Errorf("hop %s -> %s: after the migration: %s: %w", h.From, h.To, p.to, err)
		}
	}
	results := []*scenario.PingResult{&h.Probes, &h.Probes4}
	lost := []*[]time.Time{&h.LostProbes, &h.LostProbes4}
	for i, p := range streams {
		*results[i] = p.stop()
	}
	capture.Stop()
	captured = true
	for i, p := range streams {
		if *lost[i], err = p.lost(ctx); err != nil {
			return dst, h, err
		}
	}

	args := []string{"-Y", mobilityFilter, "-T", "fields", "-E", "separator=/t"}
	for _, f := range mobilityFields {
		args = append(args, "-e", f)
	}
	out, err := capture.Tshark(ctx, args...)
	if err != nil {
		return dst, h, err
	}
	msgs, err := ParseMobility(out)
	if err != nil {
		return dst, h, err
	}
	for _, m := range msgs {
		switch {
		case m.At.Before(h.Started):
		case m.Type == MHBindingUpdate && m.Src == signalFrom:
			h.Updates = append(h.Updates, m)
		case m.Type == MHBindingAck && m.Dst == signalFrom:
			h.Acks = append(h.Acks, m)
		}
	}
	if len(h.Updates) == 0 {
		return dst, h, errors.New("hop " + h.From + " -> " + h.To + ": no Binding Update from " + signalFrom.String() + " on " + h.To + "'s uplink:\n" + out)
	}
	if h.Overrides, err = overrides(ctx, capture, h.Started); err != nil {
		return dst, h, err
	}
	return dst, h, nil
}

// waitSettled waits until kgswitch on host is done with the guest's arrival
// on port, or timeout passes: no Binding Update outstanding, and on the home
// host the return over (the Home Agent's binding removed and the neighbours
// told, which takes kgswitch's three Override advertisements, one a second).
func waitSettled(ctx context.Context, e *scenario.Env, host, port string, home bool, timeout time.Duration) {
	_ = wait.Until(ctx, timeout, 50*time.Millisecond, func() error {
		st, err := e.Status(ctx, host, port)
		if err != nil {
			return err
		}
		if home && st.Location == "home" && st.BindingState == "" {
			return nil
		}
		if !home {
			switch st.BindingState {
			case "", "bound", "deregistered":
				return nil
			}
		}
		return fmt.Errorf("kgswitch on %s: %s is %s/%s", host, port, st.Location, st.BindingState)
	})
}

// probeStream is cn's probe stream to one of the guest's home addresses,
// and a capture on cn that times its probes.
type probeStream struct {
	to      netip.Addr
	pings   *scenario.PingStream
	capture *scenario.Capture
	result  scenario.PingResult
	stopped bool
}

// startProbeStream starts the capture, then the pings to to every
// interval; name names the capture after the hop's destination VM.
func startProbeStream(ctx context.Context, e *scenario.Env, to netip.Addr, name string, interval time.Duration) (*probeStream, error) {
	filter, what := fmt.Sprintf("icmp6 and host %s and (ip6[40] == 128 or ip6[40] == 129)", to), "probes"
	if to.Is4() {
		filter, what = fmt.Sprintf("icmp and host %s and (icmp[0] == 8 or icmp[0] == 0)", to), "probes4"
	}
	capture, err := e.StartCaptureFilter(ctx, "cn", "eth0", fmt.Sprintf("cn-%s-%s", name, what), filter)
	if err != nil {
		return nil, fmt.Errorf("capture on cn: %w", err)
	}
	pings, err := e.StartPingStream(ctx, "cn", to.String(), interval)
	if err != nil {
		capture.Stop()
		return nil, err
	}
	return &probeStream{to: to, pings: pings, capture: capture}, nil
}

// stop stops the pings, then the capture, once, and returns the pings'
// figures.
func (p *probeStream) stop() scenario.PingResult {
	if !p.stopped {
		p.stopped = true
		p.result = p.pings.Stop()
		p.capture.Stop()
	}
	return p.result
}

// lost returns when cn sent the echo requests of the stream that got no
// reply, not counting those after the last reply (still in flight when
// the stream stopped). The stream is the identifier with the most
// requests; WaitReachable's single pings have others. Call it after stop.
func (p *probeStream) lost(ctx context.Context) ([]time.Time, error) {
	fields, request, reply := []string{"icmpv6.type", "icmpv6.echo.identifier", "icmpv6.echo.sequence_number"}, "128", "129"
	if p.to.Is4() {
		fields, request, reply = []string{"icmp.type", "icmp.ident", "icmp.seq"}, "8", "0"
	}
	args := []string{"-T", "fields", "-e", "frame.time_epoch"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := p.capture.Tshark(ctx, args...)
	if err != nil {
		return nil, err
	}
	return lostEchoes(out, request, reply)
}

// lostEchoes reads tshark's fields time, type, identifier and sequence
// number of echo requests (type request) and replies (type reply), one
// packet a line, and returns probeStream.lost's answer.
func lostEchoes(out, request, reply string) ([]time.Time, error) {
	type key struct{ id, seq string }
	sent := map[key]time.Time{}
	answered := map[key]bool{}
	perID := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		at, err := parseEpoch(f[0])
		if err != nil {
			return nil, fmt.Errorf("tshark time %q: %w", f[0], err)
		}
		k := key{f[2], f[3]}
		switch f[1] {
		case request:
			sent[k] = at
			perID[k.id]++
		case reply:
			answered[k] = true
		}
	}
	stream, most := "", 0
	for id, n := range perID {
		if n > most {
			stream, most = id, n
		}
	}
	var lastAnswered time.Time
	for k := range answered {
		if k.id == stream && sent[k].After(lastAnswered) {
			lastAnswered = sent[k]
		}
	}
	var lost []time.Time
	for k, at := range sent {
		if k.id == stream && !answered[k] && at.Before(lastAnswered) {
			lost = append(lost, at)
		}
	}
	slices.SortFunc(lost, time.Time.Compare)
	return lost, nil
}

// LostRanges renders the lost probes' send times relative to t0 as
// ranges of probes no more than gap apart, e.g. "-3ms..+12ms (2)".
func LostRanges(lost []time.Time, t0 time.Time, gap time.Duration) string {
	var parts []string
	for i := 0; i < len(lost); {
		j := i
		for j+1 < len(lost) && lost[j+1].Sub(lost[j]) <= gap {
			j++
		}
		rel := func(t time.Time) string { return fmt.Sprintf("%+.0fms", float64(t.Sub(t0).Microseconds())/1000) }
		if i == j {
			parts = append(parts, rel(lost[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%s..%s (%d)", rel(lost[i]), rel(lost[j]), j-i+1))
		}
		i = j + 1
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// overrides returns when the capture saw unsolicited Override
// advertisements of the guest's MAC for its home address, from since on.
func overrides(ctx context.Context, c *scenario.Capture, since time.Time) ([]time.Time, error) {
	out, err := c.Tshark(ctx, "-Y", fmt.Sprintf("icmpv6.type == 136 && icmpv6.nd.na.flag.s == 0 && icmpv6.nd.na.flag.o == 1 && icmpv6.nd.na.target_address == %s && icmpv6.opt.linkaddr == %s",
		lab.HoA, lab.GuestMAC), "-T", "fields", "-e", "frame.time_epoch")
	if err != nil {
		return nil, err
	}
	var ts []time.Time
	for _, f := range strings.Fields(out) {
		at, err := parseEpoch(f)
		if err != nil {
			return nil, fmt.Errorf("tshark time %q: %w", f, err)
		}
		if !at.Before(since) {
			ts = append(ts, at)
		}
	}
	return ts, nil
}
