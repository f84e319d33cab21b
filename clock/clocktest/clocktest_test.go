package clocktest

import (
	"testing"
	"time"
)

func TestTimersFireInAdvance(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(start)
	a := c.NewTimer(time.Second)
	b := c.NewTimer(2 * time.Second)
	c.Advance(999 * time.Millisecond)
	select {
	case <-a.C():
		t.Fatal("fired before its deadline")
	default:
	}
	c.Advance(time.Millisecond)
	select {
	case got := <-a.C():
		if !got.Equal(start.Add(time.Second)) {
			t.Errorf("got %v, want %v", got, start.Add(time.Second))
		}
	default:
		t.Fatal("did not fire at its deadline")
	}
	b.Stop()
	c.Advance(time.Hour)
	select {
	case <-b.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	b.Reset(0)
	select {
	case <-b.C():
	default:
		t.Fatal("a timer reset to 0 did not fire at once")
	}
	if got := c.Now(); !got.Equal(start.Add(time.Hour + time.Second)) {
		t.Errorf("got now %v", got)
	}
}
