package labha

import (
	"net/netip"
	"time"
)

// errorLimiter thins out the ICMPv6 errors sent to each destination the way
// Linux does (icmpv6_xrlim_allow, net.ipv6.icmp.ratelimit 1000 ms): a token
// bucket per destination that earns one error per interval and holds at most
// a burst of six, full for a destination not seen before.
type errorLimiter struct {
	interval time.Duration
	peers    map[netip.Addr]*peerTokens
}

type peerTokens struct {
	tokens time.Duration
	last   time.Time
}

// errorBurst is Linux's XRLIM_BURST_FACTOR.
const errorBurst = 6

func newErrorLimiter(interval time.Duration) *errorLimiter {
	return &errorLimiter{interval: interval, peers: map[netip.Addr]*peerTokens{}}
}

// allow reports whether an error may go to dst at now, and takes its token.
func (l *errorLimiter) allow(dst netip.Addr, now time.Time) bool {
	p := l.peers[dst]
	if p == nil {
		p = &peerTokens{tokens: errorBurst * l.interval, last: now}
		l.peers[dst] = p
	}
	p.tokens = min(p.tokens+now.Sub(p.last), errorBurst*l.interval)
	p.last = now
	if p.tokens < l.interval {
		return false
	}
	p.tokens -= l.interval
	return true
}
