// Package clocktest is a clock.Clock that moves only when a test says so.
package clocktest

import (
	"sync"
	"time"

	"github.com/kgswitch/kgswitch/clock"
)

// Clock is a fake clock. Its timers fire during Advance, in deadline order.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

// New returns a clock that reads start until advanced.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock reaches now+d.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	t := &timer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	return t
}

// Advance moves the clock forward by d and fires every timer whose deadline
// is reached. A timer's channel holds one firing; a timer that fires again
// before its firing is received keeps the first.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var due []*timer
	for _, t := range c.timers {
		if t.armed && !t.at.After(now) {
			t.armed = false
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		select {
		case t.ch <- now:
		default:
		}
	}
}

type timer struct {
	c     *Clock
	ch    chan time.Time
	at    time.Time // guarded by c.mu
	armed bool      // guarded by c.mu
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Reset(d time.Duration) {
	t.c.mu.Lock()
	t.at, t.armed = t.c.now.Add(d), true
	t.c.mu.Unlock()
	t.drain()
	if d <= 0 {
		t.c.Advance(0)
	}
}

func (t *timer) Stop() {
	t.c.mu.Lock()
	t.armed = false
	t.c.mu.Unlock()
	t.drain()
}

func (t *timer) drain() {
	select {
	case <-t.ch:
	default:
	}
}
