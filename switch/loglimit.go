package vswitch

import (
	"context"
	"log/slog"
	"time"
)

// logLimit lets one line a second through per key and counts the rest, so a
// flood of forged signalling cannot fill the log; the drop counters stay
// exact. Only the control loop uses it.
type logLimit struct {
	last       map[string]time.Time
	suppressed map[string]int
}

// allow reports whether a line for key may be written at now, and how many
// were suppressed since the last one written.
func (l *logLimit) allow(key string, now time.Time) (bool, int) {
	if l.last == nil {
		l.last, l.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < time.Second {
		l.suppressed[key]++
		return false, 0
	}
	n := l.suppressed[key]
	l.last[key], l.suppressed[key] = now, 0
	return true, n
}

// warnLimited writes a warning through the limiter s.logLimit under key.
func (s *Switch) warnLimited(key, msg string, args ...any) {
	s.logLimited(slog.LevelWarn, key, msg, args...)
}

// logLimited writes a line at level through the limiter s.logLimit under key.
func (s *Switch) logLimited(level slog.Level, key, msg string, args ...any) {
	ok, n := s.logLimit.allow(key, s.clock.Now())
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	s.log.Log(context.Background(), level, msg, args...)
}
