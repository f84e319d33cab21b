package labha

import (
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// A destination gets a burst of six errors, then one a second; another
// destination has its own bucket.
func TestErrorLimiter(t *testing.T) {
	l := newErrorLimiter(time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sent := 0
	for i := range 100 {
		if l.allow(lab.CareOfAddr, t0.Add(time.Duration(i)*10*time.Millisecond)) {
			sent++
		}
	}
	if sent != errorBurst {
		t.Errorf("got %d errors in the first second, want a burst of %d", sent, errorBurst)
	}
	if !l.allow(lab.CareOfAddrC, t0.Add(time.Second)) {
		t.Error("another destination was refused")
	}
	at := t0.Add(time.Second) // six spent, 10 ms earned per call: the seventh at 1 s
	if !l.allow(lab.CareOfAddr, at) {
		t.Error("no error after a second's worth of tokens")
	}
	if l.allow(lab.CareOfAddr, at.Add(500*time.Millisecond)) {
		t.Error("an error half a second after the last")
	}
	if !l.allow(lab.CareOfAddr, at.Add(time.Second)) {
		t.Error("no error a second after the last")
	}
}
