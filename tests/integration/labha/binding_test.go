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

// step is one event applied to a Cache: a Binding Update, the end of DAD,
// or an expiry check, at t0+at.
type step struct {
	at     time.Duration
	req    *Request
	dad    *bool // CompleteDAD for lab.HoA (or req's home address) with this outcome
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
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Prefix = lab.HomePrefix
			c := NewCache(cfg)
			hoa := lab.HoA
			for i, s := range tt.steps {
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
						d = c.CompleteDAD(hoa, *s.dad, now)
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
				}
				got := map[netip.Addr]netip.Addr{}
				for _, b := range c.Bindings() {
					got[b.HomeAddress] = b.CareOf
				}
				if s.bound != nil {
					if diff := cmp.Diff(s.bound, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
						t.Fatalf("step %d: bindings: got diff (-want +got):\n%s", i, diff)
					}
				}
			}
		})
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
