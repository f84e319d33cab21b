package labha

import (
	"net/netip"
	"sort"
	"time"

	"github.com/kgswitch/kgswitch/mipv6"
)

// MaxBindingLifetime is the longest lifetime a Binding Update can ask for:
// the 16-bit Lifetime field counts 4-second units (RFC 6275 §6.1.7), so
// 65535 units = 262,140 s.
const MaxBindingLifetime = 65535 * lifetimeUnit

// lifetimeUnit is the unit of the Lifetime fields of Binding Updates and
// Acknowledgements, RFC 6275 §6.1.7 and §6.1.8.
const lifetimeUnit = 4 * time.Second

// Request is a Binding Update as received by the Home Agent (RFC 6275
// §9.5.1), reduced to what the decision needs.
type Request struct {
	// CareOf is the outer source address of the packet.
	CareOf netip.Addr
	// HomeAddress is the value of the Home Address destination option; it
	// is the zero Addr when the packet carried none.
	HomeAddress netip.Addr
	Sequence    uint16
	Flags       uint16
	// Lifetime is the requested lifetime in 4-second units.
	Lifetime uint16
	// NonceIndices and AuthData tell whether the Nonce Indices or Binding
	// Authorization Data mobility options were present (RFC 6275 §6.2.6,
	// §6.2.7); a home registration must not carry them.
	NonceIndices bool
	AuthData     bool
	// IPv4HomeAddress is the first IPv4 Home Address option (RFC 5555
	// §3.1.1); absent unless its Address is valid (0.0.0.0 is a request
	// for dynamic assignment).
	IPv4HomeAddress mipv6.IPv4HomeAddress
}

// Binding is one binding cache entry (RFC 6275 §9.1).
type Binding struct {
	HomeAddress netip.Addr
	CareOf      netip.Addr
	// Sequence is the sequence number of the last accepted Binding Update.
	Sequence uint16
	Flags    uint16
	// Lifetime is the lifetime granted by the last accepted Binding Update.
	Lifetime time.Duration
	// Registered is when the binding was first accepted (after DAD).
	Registered time.Time
	// Expires is when the binding ends unless refreshed: exactly Lifetime
	// after the last accepted Binding Update was processed.
	Expires time.Time
	// IPv4HomeAddress is the IPv4 home address bound with the home address
	// (RFC 5555); the zero Addr when none is.
	IPv4HomeAddress netip.Addr
}

// Verdict says what the caller must do with a Binding Update.
type Verdict int

const (
	// Drop means: silently discard the Binding Update, send nothing.
	Drop Verdict = iota
	// Reply means: apply Action, then send the Binding Acknowledgement.
	Reply
	// RunDAD means: run Duplicate Address Detection for the home address
	// on the home link, then call Cache.CompleteDAD with the outcome.
	RunDAD
)

// Action is the change to the data plane (tunnel route, proxy ND) that
// must happen before the Binding Acknowledgement is sent.
type Action int

const (
	// NoAction leaves the data plane alone.
	NoAction Action = iota
	// Add starts tunnelling and proxy ND for a new binding.
	Add
	// Refresh extends an existing binding; the tunnel does not change.
	Refresh
	// Move points the tunnel of an existing binding at a new care-of
	// address.
	Move
	// Remove stops tunnelling and proxy ND for the home address.
	Remove
)

// String returns the event-style name of a.
func (a Action) String() string {
	switch a {
	case Add:
		return "added"
	case Refresh:
		return "refreshed"
	case Move:
		return "moved"
	case Remove:
		return "removed"
	}
	return "none"
}

// Ack is the content of a Binding Acknowledgement (RFC 6275 §6.1.8).
type Ack struct {
	Status   uint8
	Sequence uint16
	// Lifetime is the granted lifetime in 4-second units.
	Lifetime uint16
	// IPv4 is the IPv4 Address Acknowledgement (RFC 5555 §3.2.1): present
	// exactly when the Binding Update carried an IPv4 Home Address option
	// and the Home Agent has an IPv4 home prefix.
	IPv4 mipv6.IPv4AddressAck
}

// Decision is the Home Agent's answer to a Binding Update.
type Decision struct {
	Verdict Verdict
	// Reason explains a Drop or an error status, for the event log.
	Reason string
	Action Action
	// HomeAddress is the home address the decision is about: the Home
	// Address option's value, or the care-of address when the option was
	// missing (which is what mip6d does).
	HomeAddress netip.Addr
	// CareOf is where the Binding Acknowledgement goes and, for Add and
	// Move, the new tunnel endpoint.
	CareOf netip.Addr
	// OldCareOf is the previous care-of address for Move.
	OldCareOf netip.Addr
	// Ack is the Binding Acknowledgement to send when Verdict is Reply.
	Ack Ack
	// Binding is the entry after the decision, for Add, Refresh and Move.
	Binding Binding
	// OldIPv4HomeAddress is the IPv4 home address the binding held before
	// the decision and holds no more (removed, replaced or refused), for
	// the data plane to withdraw.
	OldIPv4HomeAddress netip.Addr
}

// CacheConfig holds the Home Agent's policy.
type CacheConfig struct {
	// Prefix is the home prefix (RFC 6275 §10.3.1: the home address must be
	// on the home link).
	Prefix netip.Prefix
	// MaxLifetime caps granted lifetimes, standing for the home prefix's
	// valid lifetime (RFC 6275 §10.3.1); zero or anything above
	// MaxBindingLifetime means MaxBindingLifetime.
	MaxLifetime time.Duration
	// PrefixDiscovery makes successful registrations answer status 1
	// ("accepted, prefix discovery necessary") instead of 0, as an HA does
	// when the home prefix is about to change (RFC 6275 §10.6.2).
	PrefixDiscovery bool
	// IPv4Prefix is the IPv4 home subnet (RFC 5555): IPv4 home
	// addresses are bound inside it. The zero Prefix makes the Home Agent
	// one without RFC 5555, which skips the IPv4 Home Address option as an
	// unknown option (RFC 6275 §6.2.1) and acknowledges nothing about it.
	IPv4Prefix netip.Prefix
}

// pending is a first registration waiting for DAD.
type pending struct {
	req Request
	ack Ack
}

// Cache is the binding cache of a Home Agent and the rules that change it
// (RFC 6275 §10.3.1, §10.3.2), following UMIP's mip6d. It does no I/O and
// reads no clock: every method takes the current time. It is not safe for
// concurrent use.
type Cache struct {
	cfg      CacheConfig
	bindings map[netip.Addr]*Binding
	dad      map[netip.Addr]*pending
	// ipv4 maps each bound IPv4 home address to the home address holding
	// it, so that one IPv4 address is never bound twice.
	ipv4 map[netip.Addr]netip.Addr
}

// NewCache returns an empty binding cache.
func NewCache(cfg CacheConfig) *Cache {
	if cfg.MaxLifetime <= 0 || cfg.MaxLifetime > MaxBindingLifetime {
		cfg.MaxLifetime = MaxBindingLifetime
	}
	// Masked, so that a subnet given by one of its hosts' addresses still
	// names its own and broadcast addresses right.
	cfg.IPv4Prefix = cfg.IPv4Prefix.Masked()
	return &Cache{
		cfg:      cfg,
		bindings: make(map[netip.Addr]*Binding),
		dad:      make(map[netip.Addr]*pending),
		ipv4:     make(map[netip.Addr]netip.Addr),
	}
}

// seqAhead reports whether a is ahead of b in 16-bit serial arithmetic
// (RFC 6275 §9.5.1: a BU whose sequence number is not greater than the last
// accepted one, modulo 2^16, is rejected).
func seqAhead(a, b uint16) bool { return int16(a-b) > 0 }

// HandleBU decides on Binding Update r received at now. For RunDAD the
// caller must later call CompleteDAD for Decision.HomeAddress; in the
// meantime further Binding Updates for that home address are dropped, as
// mip6d ignores retransmissions while DAD runs.
func (c *Cache) HandleBU(r Request, now time.Time) Decision {
	d := Decision{HomeAddress: r.HomeAddress, CareOf: r.CareOf}
	// A BU without a Home Address option names no home address: mip6d then
	// takes the source as home address, which makes the BU a
	// de-registration (care-of address = home address, RFC 6275 §6.1.7).
	if !d.HomeAddress.IsValid() {
		d.HomeAddress = r.CareOf
	}
	lifetime := r.Lifetime
	if d.HomeAddress == r.CareOf {
		lifetime = 0
	}
	nack := func(status uint8, seq uint16, reason string) Decision {
		d.Verdict = Reply
		d.Reason = reason
		d.Ack = Ack{Status: status, Sequence: seq, IPv4: c.refuseIPv4(r.IPv4HomeAddress)}
		return d
	}

	// RFC 6275 §10.3.1 and mip6d's ha_home_bu_check: not a home
	// registration, or options that belong to route optimisation.
	switch {
	case r.Flags&mipv6.FlagH == 0:
		d.Reason = "H flag not set"
		return d
	case r.NonceIndices:
		d.Reason = "nonce indices option in home registration"
		return d
	case r.AuthData:
		d.Reason = "binding authorization data option in home registration"
		return d
	}
	if r.Flags&mipv6.FlagR != 0 {
		return nack(mipv6.StatusRegistrationTypeChange, r.Sequence, "mobile router operation not permitted")
	}
	if _, ok := c.dad[d.HomeAddress]; ok {
		d.Reason = "DAD in progress for this home address"
		return d
	}

	b := c.bindings[d.HomeAddress]
	if b != nil && !seqAhead(r.Sequence, b.Sequence) {
		return nack(mipv6.StatusSequenceOutOfWindow, b.Sequence, "sequence number out of window")
	}
	if b == nil && lifetime == 0 {
		return nack(mipv6.StatusNotHomeAgent, r.Sequence, "no binding to de-register")
	}
	if !c.cfg.Prefix.Contains(d.HomeAddress) || d.HomeAddress.Zone() != "" {
		return nack(mipv6.StatusNotHomeSubnet, r.Sequence, "home address outside the home prefix")
	}

	status := uint8(mipv6.StatusAccepted)
	if c.cfg.PrefixDiscovery && lifetime != 0 {
		status = mipv6.StatusAcceptedPrefixDiscovery
	}
	granted := c.grant(lifetime)
	d.Ack = Ack{Status: status, Sequence: r.Sequence, Lifetime: granted}
	d.Verdict = Reply

	switch {
	case lifetime == 0:
		// De-registration forgets the binding, sequence number included
		// (RFC 6275 §10.3.2), and the IPv4 home address bound with it: it
		// was bound to the IPv6 binding, not on its own.
		d.Action = Remove
		d.OldCareOf = b.CareOf
		d.OldIPv4HomeAddress = c.setIPv4(b, netip.Addr{})
		delete(c.bindings, d.HomeAddress)
		if opt := r.IPv4HomeAddress; c.cfg.IPv4Prefix.IsValid() && opt.Address.IsValid() {
			// What was asked is released, as the IPv6 home address is.
			d.Ack.IPv4 = mipv6.IPv4AddressAck{Present: true, Status: mipv6.IPv4StatusSuccess, PrefixLen: opt.PrefixLen, Address: opt.Address}
		}
	case b == nil:
		// First registration: DAD before anything else (RFC 6275 §10.3.1).
		d.Verdict = RunDAD
		d.Action = Add
		c.dad[d.HomeAddress] = &pending{req: r, ack: d.Ack}
	default:
		d.Action = Refresh
		if b.CareOf != r.CareOf {
			d.Action = Move
			d.OldCareOf = b.CareOf
		}
		b.CareOf = r.CareOf
		b.Sequence = r.Sequence
		b.Flags = r.Flags
		b.Lifetime = time.Duration(granted) * lifetimeUnit
		b.Expires = now.Add(b.Lifetime)
		d.Ack.IPv4, d.OldIPv4HomeAddress = c.decideIPv4(b, r.IPv4HomeAddress)
		d.Binding = *b
	}
	return d
}

// decideIPv4 answers the IPv4 Home Address option opt of a Binding Update
// that binds b (RFC 5555, Home Agent operation) and makes b hold the
// address on success. An option refused or carrying another address replaces what b held, since
// it says what the mobile node wants now; a Binding Update without the
// option leaves b's IPv4 home address as it was, as a refresh leaves its
// other state. It returns the acknowledgement (absent when the option is,
// or when the Home Agent has no IPv4 home prefix) and the IPv4 home address
// b no longer holds.
func (c *Cache) decideIPv4(b *Binding, opt mipv6.IPv4HomeAddress) (mipv6.IPv4AddressAck, netip.Addr) {
	if !c.cfg.IPv4Prefix.IsValid() || !opt.Address.IsValid() {
		return mipv6.IPv4AddressAck{}, netip.Addr{}
	}
	status := c.checkIPv4(b.HomeAddress, opt)
	if status != mipv6.IPv4StatusSuccess {
		return mipv6.IPv4AddressAck{Present: true, Status: status, PrefixLen: opt.PrefixLen, Address: opt.Address},
			c.setIPv4(b, netip.Addr{})
	}
	return mipv6.IPv4AddressAck{Present: true, Status: status, PrefixLen: 32, Address: opt.Address},
		c.setIPv4(b, opt.Address)
}

// checkIPv4 returns the IPv4 Address Acknowledgement status for home
// address hoa asking for opt (RFC 5555, statuses of §3.2.1). The
// lab Home Agent binds single addresses the mobile node names: it neither
// allocates prefixes nor assigns addresses.
func (c *Cache) checkIPv4(hoa netip.Addr, opt mipv6.IPv4HomeAddress) uint8 {
	a, p := opt.Address, c.cfg.IPv4Prefix
	switch {
	case opt.PrefixLen != 32 || opt.RequestPrefix:
		return mipv6.IPv4StatusPrefixUnauthorized
	case a.IsUnspecified():
		return mipv6.IPv4StatusDynamicUnavailable
	case !p.Contains(a):
		return mipv6.IPv4StatusIncorrectHome
	case p.Bits() < 31 && (a == p.Addr() || a == lastAddr(p)):
		// The subnet's own address and its broadcast address name no host.
		return mipv6.IPv4StatusInvalidAddress
	}
	if holder, ok := c.ipv4[a]; ok && holder != hoa {
		return mipv6.IPv4StatusProhibited
	}
	return mipv6.IPv4StatusSuccess
}

// refuseIPv4 is the IPv4 acknowledgement of a Binding Update refused as a
// whole or whose first registration failed: no IPv4 binding without an
// IPv6 one, for no reason of IPv4's own (RFC 5555 §3.2.1, status 128).
func (c *Cache) refuseIPv4(opt mipv6.IPv4HomeAddress) mipv6.IPv4AddressAck {
	if !c.cfg.IPv4Prefix.IsValid() || !opt.Address.IsValid() {
		return mipv6.IPv4AddressAck{}
	}
	return mipv6.IPv4AddressAck{Present: true, Status: mipv6.IPv4StatusUnspecified, PrefixLen: opt.PrefixLen, Address: opt.Address}
}

// setIPv4 makes b hold IPv4 home address a (none when a is the zero Addr)
// and returns the address it held before when that is released.
func (c *Cache) setIPv4(b *Binding, a netip.Addr) netip.Addr {
	old := b.IPv4HomeAddress
	if old == a {
		return netip.Addr{}
	}
	if old.IsValid() {
		delete(c.ipv4, old)
	}
	b.IPv4HomeAddress = a
	if a.IsValid() {
		c.ipv4[a] = b.HomeAddress
	}
	return old
}

// lastAddr returns the highest address of IPv4 prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// grant returns the lifetime granted for a request of units 4-second
// units, capped by the configured maximum (RFC 6275 §10.3.1).
func (c *Cache) grant(units uint16) uint16 {
	limit := uint16(c.cfg.MaxLifetime / lifetimeUnit)
	if limit == 0 {
		limit = 1
	}
	return min(units, limit)
}

// CompleteDAD finishes the first registration of hoa after Duplicate
// Address Detection: duplicate reports whether anything on the home link
// answered for the address. The returned Decision is a Reply: status 134
// and no binding when duplicate, otherwise an Add whose lifetime counts
// from now. It returns a Drop when no DAD was pending for hoa.
func (c *Cache) CompleteDAD(hoa netip.Addr, duplicate bool, now time.Time) Decision {
	p, ok := c.dad[hoa]
	if !ok {
		return Decision{Verdict: Drop, HomeAddress: hoa, Reason: "no DAD pending"}
	}
	delete(c.dad, hoa)
	d := Decision{Verdict: Reply, HomeAddress: hoa, CareOf: p.req.CareOf}
	if duplicate {
		d.Reason = "home address in use on the home link"
		d.Ack = Ack{Status: mipv6.StatusDADFailed, Sequence: p.req.Sequence, IPv4: c.refuseIPv4(p.req.IPv4HomeAddress)}
		return d
	}
	b := &Binding{
		HomeAddress: hoa,
		CareOf:      p.req.CareOf,
		Sequence:    p.req.Sequence,
		Flags:       p.req.Flags,
		Lifetime:    time.Duration(p.ack.Lifetime) * lifetimeUnit,
		Registered:  now,
	}
	b.Expires = now.Add(b.Lifetime)
	c.bindings[hoa] = b
	d.Action = Add
	d.Ack = p.ack
	// Decided now, not when DAD started: another home address may have
	// taken the IPv4 address meanwhile.
	d.Ack.IPv4, _ = c.decideIPv4(b, p.req.IPv4HomeAddress)
	d.Binding = *b
	return d
}

// Expire removes and returns, in home address order, the bindings whose
// lifetime has ended at now.
func (c *Cache) Expire(now time.Time) []Binding {
	var out []Binding
	for hoa, b := range c.bindings {
		if !now.Before(b.Expires) {
			out = append(out, *b)
			c.setIPv4(b, netip.Addr{})
			delete(c.bindings, hoa)
		}
	}
	sortBindings(out)
	return out
}

// NextExpiry returns the earliest expiry time of all bindings, and false
// when the cache is empty.
func (c *Cache) NextExpiry() (time.Time, bool) {
	var t time.Time
	for _, b := range c.bindings {
		if t.IsZero() || b.Expires.Before(t) {
			t = b.Expires
		}
	}
	return t, !t.IsZero()
}

// Lookup returns the binding for hoa.
func (c *Cache) Lookup(hoa netip.Addr) (Binding, bool) {
	b, ok := c.bindings[hoa]
	if !ok {
		return Binding{}, false
	}
	return *b, true
}

// Bindings returns a copy of all bindings in home address order.
func (c *Cache) Bindings() []Binding {
	out := make([]Binding, 0, len(c.bindings))
	for _, b := range c.bindings {
		out = append(out, *b)
	}
	sortBindings(out)
	return out
}

func sortBindings(bs []Binding) {
	sort.Slice(bs, func(i, j int) bool { return bs[i].HomeAddress.Less(bs[j].HomeAddress) })
}
