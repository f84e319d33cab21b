package labha

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// t0 is the binding cache's clock at the start of each test.
var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

const home = mipv6.FlagA | mipv6.FlagH

// bu returns a home registration request; options tweak it.
func bu(seq, lifetime uint16, opts ...func(*Request)) Request {
	r := Request{CareOf: lab.CareOfAddr, HomeAddress: lab.HoA, Sequence: seq, Flags: home, Lifetime: lifetime}
	for _, o := range opts {
		o(&r)
	}
	return r
}

func withCoA(a netip.Addr) func(*Request) { return func(r *Request) { r.CareOf = a } }
func withHoA(a netip.Addr) func(*Request) { return func(r *Request) { r.HomeAddress = a } }
func withFlags(f uint16) func(*Request)   { return func(r *Request) { r.Flags = f } }

// withIPv4 adds an IPv4 Home Address option asking for a with prefix
// length plen.
func withIPv4(a netip.Addr, plen uint8) func(*Request) {
	return func(r *Request) { r.IPv4HomeAddress = mipv6.IPv4HomeAddress{Address: a, PrefixLen: plen} }
}

// IPv4 home subnet and addresses of the Dual-Stack MIPv6 tests.
var (
	ipv4Prefix = netip.MustParsePrefix("192.0.2.0/24")
	hoa4       = netip.MustParseAddr("192.0.2.10")
	hoa4b      = netip.MustParseAddr("192.0.2.11")
)

// ack4 is the IPv4 Address Acknowledgement with status st for address a.
func ack4(st uint8, plen uint8, a netip.Addr) mipv6.IPv4AddressAck {
	return mipv6.IPv4AddressAck{Present: true, Status: st, PrefixLen: plen, Address: a}
}

// step is one event applied to a Cache: a Binding Update, the end of DAD,
// or an expiry check, at t0+at.
type step struct {
	at     time.Duration
	req    *Request
	dad    *bool      // CompleteDAD for lab.HoA (or req's home address) with this outcome
	dadFor netip.Addr // when valid, the home address dad completes for
	expire bool

	// For req and dad steps:
	verdict Verdict
	action  Action
	ack     Ack // checked when verdict is Reply
	oldCoA  netip.Addr
	// For expire steps: the home addresses expected to expire.
	expired []netip.Addr
	// After every step: the bindings expected (home address → care-of).
	bound map[netip.Addr]netip.Addr
	// When not nil, after the step: the IPv4 home addresses bound (home
	// address → IPv4 home address), and for req and dad steps the IPv4
	// home address the decision released.
	bound4  map[netip.Addr]netip.Addr
	oldIPv4 netip.Addr
}

func ptr[T any](v T) *T { return &v }

// register is the two steps of a successful first registration at t0+at.
func register(at time.Duration, seq, lifetime uint16) []step {
	return []step{
		{at: at, req: ptr(bu(seq, lifetime)), verdict: RunDAD, action: Add, bound: map[netip.Addr]netip.Addr{}},
		{at: at + time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Status: 0, Sequence: seq, Lifetime: lifetime}, bound: map[netip.Addr]netip.Addr{lab.HoA: lab.CareOfAddr}},
	}
}

func TestCacheRules(t *testing.T) {
	bound := map[netip.Addr]netip.Addr{lab.HoA: lab.CareOfAddr}
	none := map[netip.Addr]netip.Addr{}
	tests := []struct {
		name  string
		cfg   CacheConfig
		steps []step
	}{
		{
			name:  "first registration runs DAD then accepts",
			steps: register(0, 100, 15),
		},
		{
			name: "any sequence number accepted when no binding exists",
			steps: append(register(0, 0xffff, 15),
				step{at: 2 * time.Second, req: ptr(bu(0, 15)), verdict: Reply, action: Refresh, ack: Ack{Sequence: 0, Lifetime: 15}, bound: bound}),
		},
		{
			name: "H flag missing is dropped silently",
			steps: []step{
				{req: ptr(bu(1, 15, withFlags(mipv6.FlagA))), verdict: Drop, bound: none},
			},
		},
		{
			name: "nonce indices option dropped silently",
			steps: []step{
				{req: ptr(bu(1, 15, func(r *Request) { r.NonceIndices = true })), verdict: Drop, bound: none},
			},
		},
		{
			name: "binding authorization data option dropped silently",
			steps: []step{
				{req: ptr(bu(1, 15, func(r *Request) { r.AuthData = true })), verdict: Drop, bound: none},
			},
		},
		{
			name: "A flag optional",
			steps: []step{
				{req: ptr(bu(1, 15, withFlags(mipv6.FlagH))), verdict: RunDAD, action: Add, bound: none},
				{at: time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Sequence: 1, Lifetime: 15}, bound: bound},
			},
		},
		{
			name: "K and L flags ignored",
			steps: []step{
				{req: ptr(bu(1, 15, withFlags(home|mipv6.FlagK|mipv6.FlagL))), verdict: RunDAD, action: Add, bound: none},
			},
		},
		{
			name: "R flag gives 139",
			steps: []step{
				{req: ptr(bu(1, 15, withFlags(home|mipv6.FlagR))), verdict: Reply, ack: Ack{Status: 139, Sequence: 1}, bound: none},
			},
		},
		{
			name: "home address outside the home prefix gives 132",
			steps: []step{
				{req: ptr(bu(9, 15, withHoA(lab.VM3.HoA))), verdict: Reply, ack: Ack{Status: 132, Sequence: 9}, bound: none},
			},
		},
		{
			name: "missing home address option gives 133",
			steps: []step{
				{req: ptr(bu(9, 15, withHoA(netip.Addr{}))), verdict: Reply, ack: Ack{Status: 133, Sequence: 9}, bound: none},
			},
		},
		{
			name: "missing home address option with a care-of address inside the prefix still 133",
			steps: []step{
				{req: ptr(bu(9, 15, withHoA(netip.Addr{}), withCoA(lab.VM2.HoA))), verdict: Reply, ack: Ack{Status: 133, Sequence: 9}, bound: none},
			},
		},
		{
			name: "de-registering an unknown home address gives 133",
			steps: []step{
				{req: ptr(bu(3, 0)), verdict: Reply, ack: Ack{Status: 133, Sequence: 3}, bound: none},
			},
		},
		{
			name: "DAD failure gives 134 and no binding",
			steps: []step{
				{req: ptr(bu(5, 15)), verdict: RunDAD, action: Add, bound: none},
				{at: time.Second, dad: ptr(true), verdict: Reply, ack: Ack{Status: 134, Sequence: 5}, bound: none},
				// Nothing was remembered: the next BU starts over with DAD.
				{at: 2 * time.Second, req: ptr(bu(2, 15)), verdict: RunDAD, action: Add, bound: none},
			},
		},
		{
			name: "retransmission during DAD is dropped",
			steps: []step{
				{req: ptr(bu(5, 15)), verdict: RunDAD, action: Add, bound: none},
				{at: 500 * time.Millisecond, req: ptr(bu(6, 15)), verdict: Drop, bound: none},
				{at: time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Sequence: 5, Lifetime: 15}, bound: bound},
			},
		},
		{
			name: "old sequence number gives 135 with the last accepted one",
			steps: append(register(0, 100, 15),
				step{at: 2 * time.Second, req: ptr(bu(100, 15)), verdict: Reply, ack: Ack{Status: 135, Sequence: 100}, bound: bound},
				step{at: 3 * time.Second, req: ptr(bu(99, 15)), verdict: Reply, ack: Ack{Status: 135, Sequence: 100}, bound: bound},
				step{at: 4 * time.Second, req: ptr(bu(100+0x8000, 15)), verdict: Reply, ack: Ack{Status: 135, Sequence: 100}, bound: bound},
				step{at: 5 * time.Second, req: ptr(bu(100+0x7fff, 15)), verdict: Reply, action: Refresh, ack: Ack{Sequence: 100 + 0x7fff, Lifetime: 15}, bound: bound},
			),
		},
		{
			name: "sequence numbers wrap in serial arithmetic",
			steps: append(register(0, 0xfffe, 15),
				step{at: 2 * time.Second, req: ptr(bu(1, 15)), verdict: Reply, action: Refresh, ack: Ack{Sequence: 1, Lifetime: 15}, bound: bound},
				step{at: 3 * time.Second, req: ptr(bu(0xffff, 15)), verdict: Reply, ack: Ack{Status: 135, Sequence: 1}, bound: bound},
			),
		},
		{
			name: "de-registration with an old sequence number gives 135 and keeps the binding",
			steps: append(register(0, 10, 15),
				step{at: 2 * time.Second, req: ptr(bu(10, 0)), verdict: Reply, ack: Ack{Status: 135, Sequence: 10}, bound: bound},
			),
		},
		{
			name: "refresh skips DAD",
			steps: append(register(0, 10, 15),
				step{at: 2 * time.Second, req: ptr(bu(11, 30)), verdict: Reply, action: Refresh, ack: Ack{Sequence: 11, Lifetime: 30}, bound: bound},
			),
		},
		{
			name: "care-of address change skips DAD and moves",
			steps: append(register(0, 10, 15),
				step{at: 2 * time.Second, req: ptr(bu(11, 15, withCoA(lab.CareOfAddrC))), verdict: Reply, action: Move, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 11, Lifetime: 15}, bound: map[netip.Addr]netip.Addr{lab.HoA: lab.CareOfAddrC}},
			),
		},
		{
			name: "de-registration removes and forgets the sequence number",
			steps: append(register(0, 10, 15),
				step{at: 2 * time.Second, req: ptr(bu(11, 0)), verdict: Reply, action: Remove, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 11}, bound: none},
				// Old sequence accepted again: there is no binding any more.
				step{at: 3 * time.Second, req: ptr(bu(3, 15)), verdict: RunDAD, action: Add, bound: none},
			),
		},
		{
			name: "de-registration from another care-of address",
			steps: append(register(0, 10, 15),
				step{at: 2 * time.Second, req: ptr(bu(11, 0, withCoA(lab.CareOfAddrC))), verdict: Reply, action: Remove, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 11}, bound: none},
			),
		},
		{
			name: "home address equal to care-of address de-registers",
			steps: append(register(0, 10, 15),
				step{at: 2 * time.Second, req: ptr(bu(11, 15, withCoA(lab.HoA))), verdict: Reply, action: Remove, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 11}, bound: none},
			),
		},
		{
			name: "lifetime capped at the maximum",
			cfg:  CacheConfig{MaxLifetime: 40 * time.Second},
			steps: []step{
				{req: ptr(bu(1, 1000)), verdict: RunDAD, action: Add, bound: none},
				{at: time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Sequence: 1, Lifetime: 10}, bound: bound},
			},
		},
		{
			name: "lifetime up to 262140 s granted as requested",
			steps: []step{
				{req: ptr(bu(1, 0xffff)), verdict: RunDAD, action: Add, bound: none},
				{at: time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Sequence: 1, Lifetime: 0xffff}, bound: bound},
			},
		},
		{
			name: "prefix discovery status",
			cfg:  CacheConfig{PrefixDiscovery: true},
			steps: append([]step{
				{req: ptr(bu(1, 15)), verdict: RunDAD, action: Add, bound: none},
				{at: time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Status: 1, Sequence: 1, Lifetime: 15}, bound: bound},
			},
				step{at: 2 * time.Second, req: ptr(bu(2, 0)), verdict: Reply, action: Remove, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 2}, bound: none}),
		},
		{
			name: "binding expires exactly at the granted lifetime counted from acceptance",
			steps: append(register(0, 10, 2), // accepted at 1 s, 8 s lifetime
				step{at: 9*time.Second - time.Nanosecond, expire: true, bound: bound},
				step{at: 9 * time.Second, expire: true, expired: []netip.Addr{lab.HoA}, bound: none},
				// Expiry forgets the sequence number too.
				step{at: 10 * time.Second, req: ptr(bu(1, 15)), verdict: RunDAD, action: Add, bound: none},
			),
		},
		{
			name: "refresh restarts the lifetime",
			steps: append(register(0, 10, 2),
				step{at: 8 * time.Second, req: ptr(bu(11, 2)), verdict: Reply, action: Refresh, ack: Ack{Sequence: 11, Lifetime: 2}, bound: bound},
				step{at: 15 * time.Second, expire: true, bound: bound},
				step{at: 16 * time.Second, expire: true, expired: []netip.Addr{lab.HoA}, bound: none},
			),
		},
		{
			name: "bindings are per home address",
			steps: append(register(0, 10, 15),
				step{at: 2 * time.Second, req: ptr(bu(1, 15, withHoA(lab.VM2.HoA), withCoA(lab.CareOfAddrC))), verdict: RunDAD, action: Add, bound: bound},
				step{at: 3 * time.Second, req: ptr(bu(11, 15)), verdict: Reply, action: Refresh, ack: Ack{Sequence: 11, Lifetime: 15}, bound: bound},
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runSteps(t, tt.cfg, tt.steps) })
	}
}

// runSteps applies steps to a Cache for lab.HomePrefix with cfg's other
// settings and checks each outcome.
func runSteps(t *testing.T, cfg CacheConfig, steps []step) {
	t.Helper()
	cfg.Prefix = lab.HomePrefix
	c := NewCache(cfg)
	hoa := lab.HoA
	for i, s := range steps {
		now := t0.Add(s.at)
		switch {
		case s.expire:
			var got []netip.Addr
			for _, b := range c.Expire(now) {
				got = append(got, b.HomeAddress)
			}
			if diff := cmp.Diff(s.expired, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("step %d: Expire: got diff (-want +got):\n%s", i, diff)
			}
		default:
			var d Decision
			if s.req != nil {
				if s.req.HomeAddress.IsValid() {
					hoa = s.req.HomeAddress
				}
				d = c.HandleBU(*s.req, now)
			} else {
				at := hoa
				if s.dadFor.IsValid() {
					at = s.dadFor
				}
				d = c.CompleteDAD(at, *s.dad, now)
			}
			if d.Verdict != s.verdict {
				t.Fatalf("step %d: got Verdict = %v (reason %q), want %v", i, d.Verdict, d.Reason, s.verdict)
			}
			if d.Action != s.action {
				t.Fatalf("step %d: got Action = %v, want %v", i, d.Action, s.action)
			}
			if d.Verdict == Reply && d.Ack != s.ack {
				t.Fatalf("step %d: got Ack = %+v (reason %q), want %+v", i, d.Ack, d.Reason, s.ack)
			}
			if d.OldCareOf != s.oldCoA {
				t.Fatalf("step %d: got OldCareOf = %v, want %v", i, d.OldCareOf, s.oldCoA)
			}
			if s.bound4 != nil && d.OldIPv4HomeAddress != s.oldIPv4 {
				t.Fatalf("step %d: got OldIPv4HomeAddress = %v, want %v", i, d.OldIPv4HomeAddress, s.oldIPv4)
			}
		}
		got, got4 := map[netip.Addr]netip.Addr{}, map[netip.Addr]netip.Addr{}
		for _, b := range c.Bindings() {
			got[b.HomeAddress] = b.CareOf
			if b.IPv4HomeAddress.IsValid() {
				got4[b.HomeAddress] = b.IPv4HomeAddress
			}
		}
		if s.bound4 != nil {
			if diff := cmp.Diff(s.bound4, got4, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("step %d: IPv4 bindings: got diff (-want +got):\n%s", i, diff)
			}
		}
		if s.bound != nil {
			if diff := cmp.Diff(s.bound, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("step %d: bindings: got diff (-want +got):\n%s", i, diff)
			}
		}
	}
}

func TestCacheIPv4(t *testing.T) {
	// Given by a host address: the cache masks it.
	cfg4 := CacheConfig{IPv4Prefix: netip.PrefixFrom(hoa4, 24)}
	bound := map[netip.Addr]netip.Addr{lab.HoA: lab.CareOfAddr}
	none := map[netip.Addr]netip.Addr{}
	with4 := map[netip.Addr]netip.Addr{lab.HoA: hoa4}
	outside := netip.MustParseAddr("198.51.100.10")
	// register4 is a successful first registration at t0 asking for the
	// IPv4 home address with opts, acknowledged with ack.
	register4 := func(seq uint16, ack mipv6.IPv4AddressAck, bound4 map[netip.Addr]netip.Addr, opts ...func(*Request)) []step {
		return []step{
			{req: ptr(bu(seq, 15, opts...)), verdict: RunDAD, action: Add, bound: none, bound4: none},
			{at: time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Sequence: seq, Lifetime: 15, IPv4: ack}, bound: bound, bound4: bound4},
		}
	}
	// refused is a first registration whose IPv6 binding is accepted and
	// whose IPv4 home address is refused with status st.
	refused := func(st uint8, a netip.Addr, plen uint8) []step {
		return register4(1, ack4(st, plen, a), none, withIPv4(a, plen))
	}
	tests := []struct {
		name  string
		cfg   CacheConfig
		steps []step
	}{
		{
			name:  "a /32 inside the IPv4 home prefix is bound and acknowledged",
			cfg:   cfg4,
			steps: register4(1, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
		},
		{
			name:  "prefix length 0 gives 133 and binds IPv6 alone",
			cfg:   cfg4,
			steps: refused(mipv6.IPv4StatusPrefixUnauthorized, hoa4, 0),
		},
		{
			name:  "prefix length 24 gives 133: no prefix is allocated",
			cfg:   cfg4,
			steps: refused(mipv6.IPv4StatusPrefixUnauthorized, hoa4, 24),
		},
		{
			name: "P flag gives 133",
			cfg:  cfg4,
			steps: register4(1, ack4(133, 32, hoa4), none, func(r *Request) {
				r.IPv4HomeAddress = mipv6.IPv4HomeAddress{Address: hoa4, PrefixLen: 32, RequestPrefix: true}
			}),
		},
		{
			name:  "0.0.0.0 gives 132: no dynamic assignment",
			cfg:   cfg4,
			steps: refused(mipv6.IPv4StatusDynamicUnavailable, netip.IPv4Unspecified(), 32),
		},
		{
			name:  "an address outside the IPv4 home prefix gives 130",
			cfg:   cfg4,
			steps: refused(mipv6.IPv4StatusIncorrectHome, outside, 32),
		},
		{
			name:  "the subnet's broadcast address gives 131",
			cfg:   cfg4,
			steps: refused(mipv6.IPv4StatusInvalidAddress, netip.MustParseAddr("192.0.2.255"), 32),
		},
		{
			name:  "the subnet's own address gives 131",
			cfg:   cfg4,
			steps: refused(mipv6.IPv4StatusInvalidAddress, ipv4Prefix.Addr(), 32),
		},
		{
			name:  "without an IPv4 home prefix the option is skipped: no acknowledgement",
			steps: register4(1, mipv6.IPv4AddressAck{}, none, withIPv4(hoa4, 32)),
		},
		{
			name: "without an IPv4 home prefix a refused BU carries no acknowledgement either",
			steps: []step{
				{req: ptr(bu(3, 0, withIPv4(hoa4, 32))), verdict: Reply, ack: Ack{Status: 133, Sequence: 3}, bound: none, bound4: none},
			},
		},
		{
			name: "refresh without the option keeps the IPv4 binding",
			cfg:  cfg4,
			steps: append(register4(1, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
				step{at: 2 * time.Second, req: ptr(bu(2, 15)), verdict: Reply, action: Refresh, ack: Ack{Sequence: 2, Lifetime: 15}, bound: bound, bound4: with4},
				step{at: 3 * time.Second, req: ptr(bu(3, 15, withIPv4(hoa4, 32))), verdict: Reply, action: Refresh, ack: Ack{Sequence: 3, Lifetime: 15, IPv4: ack4(0, 32, hoa4)}, bound: bound, bound4: with4},
			),
		},
		{
			name: "refresh asking for another address replaces it",
			cfg:  cfg4,
			steps: append(register4(1, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
				step{at: 2 * time.Second, req: ptr(bu(2, 15, withCoA(lab.CareOfAddrC), withIPv4(hoa4b, 32))), verdict: Reply, action: Move, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 2, Lifetime: 15, IPv4: ack4(0, 32, hoa4b)}, oldIPv4: hoa4, bound4: map[netip.Addr]netip.Addr{lab.HoA: hoa4b}},
			),
		},
		{
			name: "refresh asking for a refused address releases the bound one",
			cfg:  cfg4,
			steps: append(register4(1, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
				step{at: 2 * time.Second, req: ptr(bu(2, 15, withIPv4(outside, 32))), verdict: Reply, action: Refresh, ack: Ack{Sequence: 2, Lifetime: 15, IPv4: ack4(130, 32, outside)}, oldIPv4: hoa4, bound: bound, bound4: none},
			),
		},
		{
			name: "de-registration removes the IPv4 binding too",
			cfg:  cfg4,
			steps: append(register4(1, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
				step{at: 2 * time.Second, req: ptr(bu(2, 0)), verdict: Reply, action: Remove, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 2}, oldIPv4: hoa4, bound: none, bound4: none},
				// The address is free for another home address.
				step{at: 3 * time.Second, req: ptr(bu(1, 15, withHoA(lab.VM2.HoA), withIPv4(hoa4, 32))), verdict: RunDAD, action: Add, bound: none, bound4: none},
				step{at: 4 * time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Sequence: 1, Lifetime: 15, IPv4: ack4(0, 32, hoa4)}, bound4: map[netip.Addr]netip.Addr{lab.VM2.HoA: hoa4}},
			),
		},
		{
			name: "de-registration carrying the option acknowledges its release",
			cfg:  cfg4,
			steps: append(register4(1, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
				step{at: 2 * time.Second, req: ptr(bu(2, 0, withIPv4(hoa4, 32))), verdict: Reply, action: Remove, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 2, IPv4: ack4(0, 32, hoa4)}, oldIPv4: hoa4, bound: none, bound4: none},
			),
		},
		{
			name: "expiry releases the IPv4 home address",
			cfg:  cfg4,
			steps: append(register4(1, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
				step{at: 61 * time.Second, expire: true, expired: []netip.Addr{lab.HoA}, bound: none, bound4: none},
				step{at: 62 * time.Second, req: ptr(bu(1, 15, withHoA(lab.VM2.HoA), withIPv4(hoa4, 32))), verdict: RunDAD, action: Add, bound4: none},
				step{at: 63 * time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Sequence: 1, Lifetime: 15, IPv4: ack4(0, 32, hoa4)}, bound4: map[netip.Addr]netip.Addr{lab.VM2.HoA: hoa4}},
			),
		},
		{
			name: "an IPv4 address bound to another home address gives 129",
			cfg:  cfg4,
			steps: append(register4(1, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
				step{at: 2 * time.Second, req: ptr(bu(1, 15, withHoA(lab.VM2.HoA), withCoA(lab.CareOfAddrC), withIPv4(hoa4, 32))), verdict: RunDAD, action: Add, bound4: with4},
				step{at: 3 * time.Second, dad: ptr(false), verdict: Reply, action: Add, ack: Ack{Sequence: 1, Lifetime: 15, IPv4: ack4(129, 32, hoa4)}, bound4: with4},
				// The holder leaves; the other one's next refresh gets it.
				step{at: 4 * time.Second, req: ptr(bu(2, 0)), verdict: Reply, action: Remove, oldCoA: lab.CareOfAddr, ack: Ack{Sequence: 2}, oldIPv4: hoa4, bound4: none},
				step{at: 5 * time.Second, req: ptr(bu(2, 15, withHoA(lab.VM2.HoA), withCoA(lab.CareOfAddrC), withIPv4(hoa4, 32))), verdict: Reply, action: Refresh, ack: Ack{Sequence: 2, Lifetime: 15, IPv4: ack4(0, 32, hoa4)}, bound4: map[netip.Addr]netip.Addr{lab.VM2.HoA: hoa4}},
			),
		},
		{
			name: "two first registrations for one IPv4 address: the first to finish DAD gets it",
			cfg:  cfg4,
			steps: []step{
				{req: ptr(bu(1, 15, withIPv4(hoa4, 32))), verdict: RunDAD, action: Add, bound4: none},
				{at: 100 * time.Millisecond, req: ptr(bu(1, 15, withHoA(lab.VM2.HoA), withCoA(lab.CareOfAddrC), withIPv4(hoa4, 32))), verdict: RunDAD, action: Add, bound4: none},
				{at: time.Second, dad: ptr(false), dadFor: lab.VM2.HoA, verdict: Reply, action: Add, ack: Ack{Sequence: 1, Lifetime: 15, IPv4: ack4(0, 32, hoa4)}, bound4: map[netip.Addr]netip.Addr{lab.VM2.HoA: hoa4}},
				{at: 1100 * time.Millisecond, dad: ptr(false), dadFor: lab.HoA, verdict: Reply, action: Add, ack: Ack{Sequence: 1, Lifetime: 15, IPv4: ack4(129, 32, hoa4)}, bound4: map[netip.Addr]netip.Addr{lab.VM2.HoA: hoa4}},
			},
		},
		{
			name: "a Binding Update refused for IPv6 gives 128 and changes no IPv4 binding",
			cfg:  cfg4,
			steps: append(register4(10, ack4(0, 32, hoa4), with4, withIPv4(hoa4, 32)),
				step{at: 2 * time.Second, req: ptr(bu(9, 15, withIPv4(hoa4b, 32))), verdict: Reply, ack: Ack{Status: 135, Sequence: 10, IPv4: ack4(128, 32, hoa4b)}, bound: bound, bound4: with4},
			),
		},
		{
			name: "DAD failure gives 128 for IPv4",
			cfg:  cfg4,
			steps: []step{
				{req: ptr(bu(5, 15, withIPv4(hoa4, 32))), verdict: RunDAD, action: Add, bound4: none},
				{at: time.Second, dad: ptr(true), verdict: Reply, ack: Ack{Status: 134, Sequence: 5, IPv4: ack4(128, 32, hoa4)}, bound: none, bound4: none},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runSteps(t, tt.cfg, tt.steps) })
	}
}

func TestCacheBindingTimes(t *testing.T) {
	c := NewCache(CacheConfig{Prefix: lab.HomePrefix})
	if d := c.HandleBU(bu(1, 15), t0); d.Verdict != RunDAD {
		t.Fatalf("got Verdict = %v, want RunDAD", d.Verdict)
	}
	accepted := t0.Add(1050 * time.Millisecond)
	d := c.CompleteDAD(lab.HoA, false, accepted)
	want := Binding{
		HomeAddress: lab.HoA,
		CareOf:      lab.CareOfAddr,
		Sequence:    1,
		Flags:       home,
		Lifetime:    60 * time.Second,
		Registered:  accepted,
		Expires:     accepted.Add(60 * time.Second),
	}
	if diff := cmp.Diff(want, d.Binding, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("CompleteDAD Binding: got diff (-want +got):\n%s", diff)
	}
	if next, ok := c.NextExpiry(); !ok || !next.Equal(want.Expires) {
		t.Errorf("got NextExpiry = %v, %v, want %v, true", next, ok, want.Expires)
	}
	later := accepted.Add(30 * time.Second)
	d = c.HandleBU(bu(2, 15, withCoA(lab.CareOfAddrC)), later)
	want.CareOf, want.Sequence, want.Expires = lab.CareOfAddrC, 2, later.Add(60*time.Second)
	if diff := cmp.Diff(want, d.Binding, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Move Binding: got diff (-want +got):\n%s", diff)
	}
	if b, ok := c.Lookup(lab.HoA); !ok || b.CareOf != lab.CareOfAddrC {
		t.Errorf("got Lookup = %+v, %v, want care-of %v", b, ok, lab.CareOfAddrC)
	}
	if _, ok := c.Lookup(lab.VM2.HoA); ok {
		t.Errorf("got Lookup(%v) ok, want no binding", lab.VM2.HoA)
	}
	c.HandleBU(bu(3, 0), later)
	if _, ok := c.NextExpiry(); ok {
		t.Errorf("got NextExpiry ok after de-registration, want none")
	}
	if d := c.CompleteDAD(lab.HoA, false, later); d.Verdict != Drop {
		t.Errorf("got CompleteDAD without pending DAD Verdict = %v, want Drop", d.Verdict)
	}
}

func TestSeqAhead(t *testing.T) {
	tests := []struct {
		a, b uint16
		want bool
	}{
		{1, 0, true},
		{0, 0, false},
		{0, 1, false},
		{0, 0xffff, true},
		{0x7fff, 0, true},
		{0x8000, 0, false},
		{0x8001, 0, false},
	}
	for _, tt := range tests {
		if got := seqAhead(tt.a, tt.b); got != tt.want {
			t.Errorf("got seqAhead(%d, %d) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
