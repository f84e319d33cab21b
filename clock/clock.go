// Package clock is the time source of kgswitch's control logic and datapath.
// Everything that decides by the time (binding retransmissions and refreshes,
// the departure hold queue, return-home announcements) reads it through a
// Clock, so that tests run those decisions on a clock they move by hand
// (package clocktest) instead of sleeping.
package clock

import "time"

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped-or-running timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer, like time.Timer.
type Timer interface {
	// C delivers the time when the timer fires.
	C() <-chan time.Time
	// Reset makes the timer fire d from now, dropping any earlier deadline
	// and any firing not yet received.
	Reset(d time.Duration)
	// Stop stops the timer; a firing not yet received is dropped.
	Stop()
}

// Real is the wall clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// realTimer relies on Go 1.23's timers: Stop and Reset discard a value not
// yet received, so no drain is needed.
type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }
