package wait

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	ctx := context.Background()
	n := 0
	if err := Until(ctx, time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("got Until = %v after %d calls, want nil after 3", err, n)
	}

	start := time.Now()
	err := Until(ctx, 20*time.Millisecond, time.Millisecond, func() error { return errors.New("state is x, not y") })
	if err == nil || !strings.Contains(err.Error(), "state is x, not y") || !strings.Contains(err.Error(), "20ms") {
		t.Errorf("got Until = %v on timeout, want the condition's last error and the timeout", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("Until gave up after %v, before its 20ms timeout", d)
	}

	gone := errors.New("process exited")
	n = 0
	err = Until(ctx, time.Minute, time.Millisecond, func() error { n++; return Fatal(gone) })
	if err != gone || n != 1 {
		t.Errorf("got Until = %v after %d calls, want the fatal error itself after 1", err, n)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = Until(cctx, time.Minute, time.Millisecond, func() error { return errors.New("not yet") })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "not yet") {
		t.Errorf("got Until = %v with ctx cancelled, want the condition's error and context.Canceled", err)
	}
}
