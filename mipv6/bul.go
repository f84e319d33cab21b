package mipv6

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Retransmission constants, RFC 6275 §12.
const (
	// InitialBindackTimeoutFirstReg is the first wait for a BA of a first home
	// registration: the Home Agent runs DAD (about 1 s) before it answers.
	InitialBindackTimeoutFirstReg = 1500 * time.Millisecond
	// InitialBindackTimeout is the first wait for later Binding Updates.
	InitialBindackTimeout = 1 * time.Second
	// MaxBindackTimeout caps the doubling of the retransmission timer.
	MaxBindackTimeout = 32 * time.Second
	// MaxUpdateRate is the most Binding Updates sent to one Home Agent per second.
	MaxUpdateRate = 3
	// failedRetry is how long a binding rejected for a reason the operator must fix
	// (wrong Home Agent, wrong prefix, prohibited) waits before trying again, so a
	// fix on the Home Agent side is picked up without a restart.
	failedRetry = 60 * time.Second
)

// SequenceTick is how long one clock sequence number lasts (ClockSequence).
//
// Ten a second is faster than one binding may send (MaxUpdateRate), so a
// binding's own numbers run at most MaxUpdateRate-1 ticks ahead of the clock
// and fall back on it within a second: a host that takes a binding over more
// than about 300 ms after the last Binding Update from anywhere is ahead of
// it. The price is the window: half the 16-bit space is 32768 ticks, 54.6
// minutes. A Home Agent that accepted nothing for longer than that (a
// lifetime above about 72 minutes, refreshed at three quarters) holds a
// number the clock has lapped, and another host's clock number is behind it
// again: a foreign host then pays a status 135 round trip, a returning VM's
// de-registration falls back on half-space tries (Tick). A slower tick widens
// the window and the time a takeover must keep from the last Binding Update.
const SequenceTick = 100 * time.Millisecond

// ClockSequence is the Binding Update sequence number of the hosts' clock at
// t: it advances one every SequenceTick and wraps at 2^16.
//
// The Home Agent accepts only numbers ahead of the last it accepted for the
// home address (RFC 6275 §9.5.1), and the last may have come from another
// host, the one the VM left, which shares no state with this one. Hosts
// whose clocks agree (NTP) all take their numbers from the clock, so each
// Binding Update is ahead of the last one sent from anywhere, and a move or
// a return needs no status 135 to learn the Home Agent's number.
func ClockSequence(t time.Time) uint16 {
	return uint16(t.UnixMilli() / SequenceTick.Milliseconds())
}

// State is where a binding is in its life (RFC 6275 §11.7.1).
type State int

// Binding states.
const (
	StateIdle          State = iota // nothing sent yet
	StateRegistering                // BU sent, waiting for a successful BA
	StateBound                      // Home Agent accepted; tunnel in use
	StateRefreshing                 // bound, refresh BU outstanding
	StateDeregistering              // lifetime-0 BU outstanding
	StateDeregistered               // Home Agent confirmed de-registration
	StateFailed                     // Home Agent refused; Reason says why
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateRegistering:
		return "registering"
	case StateBound:
		return "bound"
	case StateRefreshing:
		return "refreshing"
	case StateDeregistering:
		return "deregistering"
	case StateDeregistered:
		return "deregistered"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// IPv4State is where a binding's IPv4 home address is with the Home Agent
// (Dual-Stack Mobile IPv6, RFC 5555 §3.1.1, §3.2.1). The IPv6 binding
// carries it: IPv4 is tunnelled only while both are bound
// (Binding.IPv4Tunnelling), and a refusal of IPv4 leaves IPv6 as it is.
type IPv4State int

// IPv4 home address states.
const (
	IPv4Unregistered IPv4State = iota // no IPv4 home address, or its binding removed
	IPv4Registering                   // to be asked, or asked and not yet answered
	IPv4Accepted                      // the Home Agent acknowledged it with a success status
	IPv4Refused                       // refused (status 128 or above) or not acknowledged
)

func (s IPv4State) String() string {
	switch s {
	case IPv4Unregistered:
		return "unregistered"
	case IPv4Registering:
		return "registering"
	case IPv4Accepted:
		return "accepted"
	case IPv4Refused:
		return "refused"
	}
	return fmt.Sprintf("ipv4state(%d)", int(s))
}

// Reasons a Binding Acknowledgement is dropped by Binding.HandleBA.
var (
	ErrBAWrongSender   = errors.New("mipv6: binding ack not from the registered home agent")
	ErrBAWrongHome     = errors.New("mipv6: binding ack for another home address")
	ErrBANotExpected   = errors.New("mipv6: binding ack with no binding update outstanding")
	ErrBAWrongSequence = errors.New("mipv6: binding ack does not match the outstanding sequence number")
)

// Binding is the mobile node's Binding Update List entry for one home
// registration (RFC 6275 §11.1), kept on the VM's behalf. It does no I/O and
// reads no clock: callers pass the time in and send the Binding Updates it
// returns, which makes every transition testable with a fake clock.
type Binding struct {
	HomeAddress netip.Addr
	HomeAgent   netip.Addr
	CareOf      netip.Addr
	// Lifetime is the lifetime requested; the Home Agent may grant less.
	Lifetime time.Duration

	state    State
	seq      uint16 // sequence number of the last BU sent
	numbered bool   // seq holds a number sent (or restored): later ones follow it
	firstReg bool   // no binding accepted yet by this Home Agent via this Binding
	sentAt   time.Time
	timeout  time.Duration // current retransmission timeout
	due      time.Time     // when Tick must run next; zero = never
	expires  time.Time     // end of the granted lifetime
	granted  time.Duration
	status   uint8
	reason   string
	recent   [MaxUpdateRate]time.Time // send times, for the rate limit
	sends    uint64
	dereg    bool
	// series holds the Binding Updates of the current retransmission series
	// (a registration, refresh or de-registration and its retransmissions):
	// an Ack to any of them is an answer to what kgswitch asked, and only
	// those are. A Home Agent busy with DAD answers the first one late.
	series []sentBU
	// hintAt is when a hint (Binding Error, Binding Refresh Request) last
	// started a series: hints are rate-limited, a forger must not make
	// kgswitch re-register at its pace.
	hintAt time.Time
	// refreshAskedAt is the same for Binding Refresh Requests, kept apart so
	// that a Binding Error right after a refresh request is still heard.
	refreshAskedAt time.Time

	ipv4       netip.Addr // IPv4 home address to register; zero: IPv6 only
	ipv4State  IPv4State
	ipv4Status uint8
	ipv4Reason string
}

// sentBU is one Binding Update of a series.
type sentBU struct {
	seq  uint16
	at   time.Time
	ipv4 netip.Addr // the IPv4 home address it carried, if any
}

// maxSeries bounds a series' memory: at most this many recent Binding
// Updates are still answerable (a series of retransmissions backs off to
// MaxBindackTimeout, so older ones are long stale).
const maxSeries = 8

// newSeries starts a retransmission series: Acks to earlier Binding Updates
// answer nothing kgswitch still asks.
func (b *Binding) newSeries() { b.series = b.series[:0] }

// sentInSeries returns the Binding Update numbered seq of the current
// series.
func (b *Binding) sentInSeries(seq uint16) (sentBU, bool) {
	for _, x := range b.series {
		if x.seq == seq {
			return x, true
		}
	}
	return sentBU{}, false
}

// NewBinding returns an idle binding. Its first Binding Update takes its
// number from the clock (ClockSequence), so it is ahead of what the Home Agent
// last accepted from another host; status 135 recovers where it is not.
func NewBinding(hoa, ha, coa netip.Addr, lifetime time.Duration) *Binding {
	return &Binding{HomeAddress: hoa, HomeAgent: ha, CareOf: coa, Lifetime: lifetime, firstReg: true}
}

// Restore resumes a binding a previous run of kgswitch registered, with the
// Home Agent's grant still running until expires: no Binding Update is sent,
// packets may be tunnelled at once, and the refresh stays where it was due.
// Sequence numbers continue after seq. It reports whether the binding was
// still alive; if not, the caller registers afresh (continuing after seq too).
func (b *Binding) Restore(now time.Time, seq uint16, granted time.Duration, expires time.Time) bool {
	b.seq, b.numbered = seq, true
	if granted <= 0 || !now.Before(expires) {
		return false
	}
	b.state = StateBound
	b.firstReg = false
	b.granted = granted
	b.expires = expires
	b.sentAt = expires.Add(-granted)
	b.reason = "restored"
	b.due = b.sentAt.Add(refreshAfter(granted))
	if b.due.Before(now) {
		b.due = now
	}
	return true
}

// Record is what must survive a restart of kgswitch for this binding.
type Record struct {
	Sequence uint16
	Granted  time.Duration
	Expires  time.Time // zero unless bound
	// IPv4 is the IPv4 home address the Home Agent accepted with this
	// grant (RestoreIPv4); zero unless bound with it.
	IPv4 netip.Addr
}

// Record returns the binding's persistent state.
func (b *Binding) Record() Record {
	r := Record{Sequence: b.seq}
	if b.state == StateBound || b.state == StateRefreshing {
		r.Granted, r.Expires = b.granted, b.expires
		if b.ipv4State == IPv4Accepted {
			r.IPv4 = b.ipv4
		}
	}
	return r
}

// SetIPv4HomeAddress makes every later registration and refresh carry a in
// an IPv4 Home Address option (RFC 5555 §3.1.1), for the Home Agent to bind
// beside the IPv6 home address; the zero Addr (or any address that is not
// IPv4) stops it. It sends nothing itself: the next Binding Update (the
// registration, a retransmission or the refresh) asks, and IPv4 is not
// tunnelled until the Home Agent's Ack to it accepts the address. The
// option asks for a single address (Prefix-len 32, §3.1.1), whatever the
// length of the IPv4 home subnet: the Home Agent knows its own link.
func (b *Binding) SetIPv4HomeAddress(a netip.Addr) {
	if a = a.Unmap(); !a.Is4() {
		a = netip.Addr{}
	}
	if a == b.ipv4 {
		return
	}
	b.ipv4, b.ipv4Status, b.ipv4Reason = a, 0, ""
	b.ipv4State = IPv4Unregistered
	if a.IsValid() {
		b.ipv4State = IPv4Registering
	}
}

// RestoreIPv4 follows a successful Restore: a is Record.IPv4 of the previous
// run, the IPv4 home address the Home Agent accepted with the grant that
// still runs. If it is the address set (SetIPv4HomeAddress), IPv4 is
// tunnelled at once, as IPv6 is.
func (b *Binding) RestoreIPv4(a netip.Addr) {
	if a.IsValid() && a == b.ipv4 && (b.state == StateBound || b.state == StateRefreshing) {
		b.ipv4State, b.ipv4Status, b.ipv4Reason = IPv4Accepted, IPv4StatusSuccess, "restored"
	}
}

// Register starts (or restarts) home registration from CareOf and returns the
// first Binding Update.
func (b *Binding) Register(now time.Time) (BUPacket, bool) {
	b.newSeries()
	b.state = StateRegistering
	b.dereg = false
	b.timeout = InitialBindackTimeout
	if b.firstReg {
		b.timeout = InitialBindackTimeoutFirstReg
	}
	return b.send(now)
}

// Deregister sends a lifetime-0 Binding Update from coa: the VM's home address when
// it is back on its home link (RFC 6275 §11.5.4). One goes out, numbered from
// the clock, which is ahead of what the foreign host last sent; Tick
// retransmits it as any Binding Update.
func (b *Binding) Deregister(now time.Time, coa netip.Addr) (BUPacket, bool) {
	b.CareOf = coa
	b.newSeries()
	b.state = StateDeregistering
	b.dereg = true
	b.timeout = InitialBindackTimeout
	return b.send(now)
}

// deregClockTries is how many tries of a de-registration are numbered from
// the clock before Tick falls back on half-space jumps. Two: the first Ack
// may be lost, and a first try that met a number sent in the same tick is
// behind, while the second, a second later, is ahead.
const deregClockTries = 2

func (b *Binding) lifetimeUnits() uint16 {
	if b.dereg {
		return 0
	}
	u := b.Lifetime / (4 * time.Second)
	if u > 0xffff {
		u = 0xffff
	}
	if u < 1 {
		u = 1
	}
	return uint16(u)
}

// nextSeq is the number of the next Binding Update: the clock's, unless this
// binding already sent one ahead of it, then the one after that.
func (b *Binding) nextSeq(now time.Time) uint16 {
	if c := ClockSequence(now); !b.numbered || seqAhead(c, b.seq+1) {
		return c
	}
	return b.seq + 1
}

// send emits the next BU unless the rate limit forbids it now, in which case the
// BU is deferred to when it allows.
func (b *Binding) send(now time.Time) (BUPacket, bool) {
	return b.sendNumbered(now, b.nextSeq(now))
}

// sendNumbered is send with the sequence number chosen by the caller.
func (b *Binding) sendNumbered(now time.Time, seq uint16) (BUPacket, bool) {
	if oldest := b.recent[b.sends%MaxUpdateRate]; b.sends >= MaxUpdateRate && now.Sub(oldest) < time.Second {
		b.due = oldest.Add(time.Second)
		return BUPacket{}, false
	}
	b.recent[b.sends%MaxUpdateRate] = now
	b.sends++
	b.seq, b.numbered = seq, true
	b.sentAt = now
	if len(b.series) == maxSeries {
		b.series = append(b.series[:0], b.series[1:]...)
	}
	bu := BUPacket{
		Src:         b.CareOf,
		Dst:         b.HomeAgent,
		HomeAddress: b.HomeAddress,
		Sequence:    b.seq,
		Flags:       FlagA | FlagH,
		Lifetime:    b.lifetimeUnits(),
	}
	var ipv4 netip.Addr
	// A de-registration carries no IPv4 Home Address option: the Home
	// Agent's binding cache entry for the IPv6 home address holds the IPv4
	// one, and removing the entry removes both (docs/home-agents.md).
	if b.ipv4.IsValid() && !b.dereg {
		ipv4 = b.ipv4
		bu.IPv4HomeAddress = IPv4HomeAddress{Address: ipv4, PrefixLen: 32}
		if b.ipv4State == IPv4Unregistered {
			b.ipv4State = IPv4Registering
		}
	}
	b.series = append(b.series, sentBU{b.seq, now, ipv4})
	b.due = now.Add(b.timeout)
	return bu, true
}

// HandleBA applies a Binding Acknowledgement. A BA that does not belong to this
// binding returns one of the ErrBA* errors and changes nothing. It returns a
// Binding Update to send at once when the Home Agent asked for one (status 135).
func (b *Binding) HandleBA(now time.Time, ba BAPacket) (BUPacket, bool, error) {
	switch {
	case ba.Src != b.HomeAgent:
		return BUPacket{}, false, ErrBAWrongSender
	case ba.HomeAddress != b.HomeAddress:
		return BUPacket{}, false, ErrBAWrongHome
	case b.state != StateRegistering && b.state != StateRefreshing && b.state != StateDeregistering:
		if _, ok := b.sentInSeries(ba.Sequence); ok {
			// A late answer to another Binding Update of the series just
			// settled (a retransmission, answered after another): the
			// Home Agent's expected reply, not a fault. Nothing changes.
			return BUPacket{}, false, nil
		}
		return BUPacket{}, false, ErrBANotExpected
	}
	if ba.Status == StatusSequenceOutOfWindow {
		// The BA carries the Home Agent's last accepted number, not ours
		// (§11.7.3): continue after it and resend at once. Only forward from
		// what kgswitch sent: a number behind ours is behind the Home
		// Agent's too once ours is accepted, and moving back would let a
		// forger choose the numbers kgswitch uses.
		b.status, b.reason = ba.Status, StatusString(ba.Status)
		if seqAhead(ba.Sequence, b.seq) {
			b.seq, b.numbered = ba.Sequence, true
		}
		bu, ok := b.send(now)
		return bu, ok, nil
	}
	sent, ok := b.sentInSeries(ba.Sequence)
	if !ok {
		return BUPacket{}, false, ErrBAWrongSequence
	}
	sentAt := sent.at
	b.status, b.reason = ba.Status, StatusString(ba.Status)
	if b.dereg && ba.Status == StatusNotHomeAgent {
		// De-registering a home address the Home Agent holds no binding for
		// gives 133 (docs/home-agents.md): the goal, no binding, is reached.
		b.state = StateDeregistered
		b.reason = "no binding to remove"
		b.firstReg = true
		b.due = time.Time{}
		b.ipv4Deregistered()
		return BUPacket{}, false, nil
	}
	if !StatusSuccess(ba.Status) {
		if b.Tunnelling(now) && !b.dereg {
			// A refused refresh leaves the Home Agent's binding as it was,
			// tunnelling until its grant ends, and nothing authenticates the
			// refusal: a forger who chose the number kgswitch resent after
			// its own status 135 could otherwise stop the tunnel for a
			// minute. The refresh goes on retransmitting; only a refusal once
			// the grant has ended fails the binding.
			return BUPacket{}, false, nil
		}
		b.state = StateFailed
		b.due = now.Add(retryAfter(ba.Status))
		if sent.ipv4.IsValid() && sent.ipv4 == b.ipv4 {
			// Nothing is bound; the retry asks for IPv4 again, unless
			// the Home Agent refused it too.
			b.ipv4State, b.ipv4Status, b.ipv4Reason = IPv4Registering, 0, "waiting for the IPv6 binding"
			if ba.IPv4Ack.Present && !StatusSuccess(ba.IPv4Ack.Status) {
				b.ipv4State, b.ipv4Status, b.ipv4Reason = IPv4Refused, ba.IPv4Ack.Status, IPv4StatusString(ba.IPv4Ack.Status)
			}
		}
		return BUPacket{}, false, nil
	}
	if b.dereg {
		b.state = StateDeregistered
		b.firstReg = true
		b.due = time.Time{}
		b.ipv4Deregistered()
		return BUPacket{}, false, nil
	}
	b.state = StateBound
	b.firstReg = false
	b.applyIPv4Ack(sent.ipv4, ba.IPv4Ack)
	// A Home Agent grants at most what was asked (§10.3.1); more is a lie
	// kgswitch does not believe.
	b.granted = time.Duration(min(ba.Lifetime, b.lifetimeUnits())) * 4 * time.Second
	// The Home Agent's lifetime started when it accepted, after we sent the
	// Binding Update it answers: count from that send so the refresh is never
	// late.
	b.sentAt = sentAt
	b.expires = sentAt.Add(b.granted)
	refresh := refreshAfter(b.granted)
	// A Binding Refresh Advice asks for refreshes sooner than the lifetime
	// alone would (§6.2.4, §11.7.3); it never delays one.
	if adv := time.Duration(ba.RefreshInterval) * 4 * time.Second; adv > 0 && adv < refresh {
		refresh = adv
	}
	b.due = b.sentAt.Add(refresh)
	return BUPacket{}, false, nil
}

// applyIPv4Ack records the Home Agent's answer about the IPv4 home address
// asked in the Binding Update its accepting Ack answers (RFC 5555 §3.2.1).
// The IPv6 binding is accepted whatever the answer.
func (b *Binding) applyIPv4Ack(asked netip.Addr, k IPv4AddressAck) {
	if !asked.IsValid() || asked != b.ipv4 {
		// The Binding Update carried no option or another address than
		// the one now set: this Ack says nothing about the current one.
		return
	}
	switch {
	case !k.Present:
		// A Home Agent without RFC 5555 skips the option as an unknown
		// one (RFC 6275 §6.2.1) and binds IPv6 alone, while one with it
		// answers every IPv4 Home Address option (RFC 5555 §3.2.1): no
		// answer means no IPv4 binding, for an unspecified reason.
		b.ipv4State, b.ipv4Status = IPv4Refused, IPv4StatusUnspecified
		b.ipv4Reason = "home agent did not acknowledge the IPv4 home address"
	case !StatusSuccess(k.Status):
		b.ipv4State, b.ipv4Status, b.ipv4Reason = IPv4Refused, k.Status, IPv4StatusString(k.Status)
	case k.Address != asked:
		// A static address comes back as asked (§3.2.1); another one is
		// an address the VM does not have, useless to tunnel.
		b.ipv4State, b.ipv4Status = IPv4Refused, k.Status
		b.ipv4Reason = "home agent bound " + k.Address.String() + ", not " + asked.String()
	default:
		b.ipv4State, b.ipv4Status, b.ipv4Reason = IPv4Accepted, k.Status, IPv4StatusString(k.Status)
	}
}

// ipv4Deregistered records that the IPv6 binding, and with it the IPv4 one,
// is gone from the Home Agent.
func (b *Binding) ipv4Deregistered() {
	b.ipv4State, b.ipv4Status, b.ipv4Reason = IPv4Unregistered, 0, ""
	if b.ipv4.IsValid() {
		// The next registration asks again.
		b.ipv4Reason = "deregistered"
	}
}

// Reasons a Binding Error is dropped by Binding.HandleBE.
var (
	ErrBEWrongSender = errors.New("mipv6: binding error not from the registered home agent")
	ErrBEWrongHome   = errors.New("mipv6: binding error for another home address")
	ErrBEStatus      = errors.New("mipv6: binding error with an unknown status")
)

// HandleBE applies a Binding Error from the Home Agent (RFC 6275 §6.1.9,
// §11.3.6). Nothing authenticates it (anyone can spoof the Home Agent's
// address), so it is a hint, never a verdict: status 1 (no binding for this
// home address: the Home Agent restarted or the binding expired) and status 2
// (Mobility Header type not recognized) make kgswitch ask again at once, and
// only the Home Agent's Ack to that Binding Update decides. A working tunnel
// stays up meanwhile; hints are rate-limited (hintGap), so forged ones cannot
// make kgswitch re-register at their pace.
func (b *Binding) HandleBE(now time.Time, be BEPacket) (BUPacket, bool, error) {
	switch {
	case be.Src != b.HomeAgent:
		return BUPacket{}, false, ErrBEWrongSender
	case be.HomeAddress != b.HomeAddress:
		return BUPacket{}, false, ErrBEWrongHome
	case be.Status != BEStatusUnknownBinding && be.Status != BEStatusUnrecognizedMHType:
		return BUPacket{}, false, fmt.Errorf("%w: %d", ErrBEStatus, be.Status)
	}
	if b.state == StateDeregistering || b.state == StateDeregistered || b.state == StateIdle {
		return BUPacket{}, false, nil // nothing to lose
	}
	bu, ok, taken := b.hint(now)
	if taken && be.Status == BEStatusUnknownBinding {
		b.reason = "home agent lost the binding"
	}
	return bu, ok, nil
}

// HandleTunnelRefused applies the Home Agent's ICMPv6 Destination
// Unreachable about a packet tunnelled to it: a Home Agent that restarted has
// forgotten the binding and refuses the tunnel (docs/home-agents.md). The
// datapath checked that the error comes from the Home Agent's address and
// quotes a packet kgswitch tunnelled; like a Binding Error it is a
// rate-limited hint, and a working tunnel stays up until the Home Agent
// answers the Binding Update sent here.
func (b *Binding) HandleTunnelRefused(now time.Time) (BUPacket, bool) {
	if b.state != StateBound && b.state != StateRefreshing && b.state != StateRegistering {
		return BUPacket{}, false
	}
	bu, ok, taken := b.hint(now)
	if taken {
		b.reason = "home agent refused the tunnel"
	}
	return bu, ok
}

// hintGap is the least time between two re-registrations started by hints:
// the first-registration Ack timeout, so a Home Agent running DAD has
// answered the last one before the next.
const hintGap = InitialBindackTimeoutFirstReg

// hint starts a new registration series because something suggests the Home
// Agent lost the binding: a Binding Update at once, with the
// first-registration Ack timeout (the Home Agent runs DAD again). A bound
// binding keeps tunnelling until its grant ends or the Home Agent answers.
// taken is false when the hint came too soon after the last; ok is false
// when the rate limit defers the Binding Update (Tick sends it).
func (b *Binding) hint(now time.Time) (bu BUPacket, ok, taken bool) {
	if !b.hintAt.IsZero() && now.Sub(b.hintAt) < hintGap {
		return BUPacket{}, false, false
	}
	b.hintAt = now
	if b.state != StateRegistering && b.state != StateRefreshing {
		b.newSeries()
	}
	// An outstanding series stays answerable: a Home Agent busy with DAD
	// for its first Binding Update ignores this one and answers that.
	b.dereg = false
	b.firstReg = true
	b.timeout = InitialBindackTimeoutFirstReg
	if b.state == StateBound || b.state == StateRefreshing {
		b.state = StateRefreshing
	} else {
		b.state = StateRegistering
	}
	bu, ok = b.send(now)
	return bu, ok, true
}

// refreshAfter is when a binding granted lifetime g is refreshed: with a quarter of
// it left, but at least one retransmission cycle of slack for short lifetimes.
func refreshAfter(g time.Duration) time.Duration {
	slack := g / 4
	if slack < 2*InitialBindackTimeout && g > 4*InitialBindackTimeout {
		slack = 2 * InitialBindackTimeout
	}
	return g - slack
}

// retryAfter is the retry policy for a refused registration, by status:
//   - 134 (DAD failed): the VM may still be answering on its home link while it
//     leaves; try again soon.
//   - 128, 130 (unspecified, insufficient resources): transient on the Home Agent.
//   - everything else (129 prohibited, 131/133 not a Home Agent for us, 132 not home
//     subnet, 139/140 registration type, nonce errors): configuration the operator
//     must fix; retry rarely so a fix is picked up without a restart.
func retryAfter(status uint8) time.Duration {
	switch status {
	case StatusDADFailed:
		return InitialBindackTimeoutFirstReg
	case StatusUnspecified, StatusInsufficientResources:
		return 4 * time.Second
	}
	return failedRetry
}

// Tick runs the binding's timers: retransmission, refresh, retry after failure.
// It returns a Binding Update to send, if one is due.
func (b *Binding) Tick(now time.Time) (BUPacket, bool) {
	if b.due.IsZero() || now.Before(b.due) {
		return BUPacket{}, false
	}
	switch b.state {
	case StateRegistering, StateRefreshing, StateDeregistering:
		if now.Sub(b.sentAt) >= b.timeout {
			b.timeout *= 2
			if b.timeout > MaxBindackTimeout {
				b.timeout = MaxBindackTimeout
			}
		}
		if b.state == StateRefreshing && !b.expires.IsZero() && !now.Before(b.expires) {
			b.state = StateRegistering // lapsed: the Home Agent no longer tunnels
			if b.ipv4State == IPv4Accepted {
				b.ipv4State = IPv4Registering
			}
		}
		if b.state == StateDeregistering && len(b.series) >= deregClockTries {
			// The clock's numbers went unanswered: perhaps the Home Agent
			// holds one the clock does not lead (a lapped window, skewed
			// clocks, numbers run ahead after a 135). From the home link its
			// 135 goes to the old care-of address, so kgswitch never learns
			// that number. Jumping half the sequence space each try makes
			// one of any three consecutive tries ahead of it.
			return b.sendNumbered(now, b.seq+1<<15-1)
		}
		return b.send(now)
	case StateBound:
		b.newSeries()
		b.state = StateRefreshing
		b.timeout = InitialBindackTimeout
		return b.send(now)
	case StateFailed:
		return b.Register(now)
	}
	b.due = time.Time{}
	return BUPacket{}, false
}

// RefreshNow sends a refresh at once, as on a Binding Refresh Request (§11.7.4).
// A request from anyone but the Home Agent is refused: an off-path sender must
// not be able to make kgswitch spend its BU rate limit.
//
// Like a Binding Error it is only a hint (nothing authenticates it): requests
// closer together than hintGap start nothing, and the Ack that counts is the
// one to the Binding Update sent here.
func (b *Binding) RefreshNow(now time.Time, from netip.Addr) (BUPacket, bool) {
	if from != b.HomeAgent || (b.state != StateBound && b.state != StateRefreshing) {
		return BUPacket{}, false
	}
	if !b.refreshAskedAt.IsZero() && now.Sub(b.refreshAskedAt) < hintGap {
		return BUPacket{}, false
	}
	b.refreshAskedAt = now
	b.newSeries()
	b.state = StateRefreshing
	b.timeout = InitialBindackTimeout
	return b.send(now)
}

// Due returns when Tick must next be called; zero means no timer is running.
func (b *Binding) Due() time.Time { return b.due }

// Tunnelling reports whether the Home Agent holds a live binding for the care-of
// address, so packets may go through the tunnel.
func (b *Binding) Tunnelling(now time.Time) bool {
	return (b.state == StateBound || b.state == StateRefreshing) && now.Before(b.expires)
}

// IPv4Tunnelling reports whether the guest's IPv4 packets may go through the
// tunnel too: the binding is live and the Home Agent accepted its IPv4 home
// address (RFC 5555 §3.2.1).
func (b *Binding) IPv4Tunnelling(now time.Time) bool {
	return b.ipv4State == IPv4Accepted && b.Tunnelling(now)
}

// Snapshot is a binding's state for status output.
type Snapshot struct {
	State        State
	Reason       string // name of the last BA status, e.g. "not home subnet"
	Status       uint8
	Sequence     uint16
	HomeAddress  netip.Addr
	HomeAgent    netip.Addr
	CareOf       netip.Addr
	Granted      time.Duration
	LifetimeLeft time.Duration
	Sent         uint64
	// Unanswered is how many Binding Updates of the outstanding series
	// have had no answer yet (0 when none is outstanding).
	Unanswered int
	// IPv4HomeAddress is the IPv4 home address asked for (RFC 5555), zero
	// for IPv6 only; IPv4State says what the Home Agent made of it,
	// IPv4Status is the last IPv4 Address Acknowledgement status and
	// IPv4Reason puts it in words, e.g. "administratively prohibited".
	IPv4HomeAddress netip.Addr
	IPv4State       IPv4State
	IPv4Status      uint8
	IPv4Reason      string
}

// Snapshot reports the binding's state at now.
func (b *Binding) Snapshot(now time.Time) Snapshot {
	s := Snapshot{State: b.state, Reason: b.reason, Status: b.status, Sequence: b.seq,
		HomeAddress: b.HomeAddress, HomeAgent: b.HomeAgent, CareOf: b.CareOf, Granted: b.granted, Sent: b.sends,
		IPv4HomeAddress: b.ipv4, IPv4State: b.ipv4State, IPv4Status: b.ipv4Status, IPv4Reason: b.ipv4Reason}
	if b.state == StateRegistering || b.state == StateRefreshing || b.state == StateDeregistering {
		s.Unanswered = len(b.series)
	}
	if b.Tunnelling(now) {
		s.LifetimeLeft = b.expires.Sub(now)
	}
	return s
}

// seqAhead reports whether sequence number a is ahead of b in 16-bit serial
// arithmetic (RFC 6275 §9.5.1).
func seqAhead(a, b uint16) bool {
	d := a - b
	return d != 0 && d < 1<<15
}
