// Package wait is how the lab, its tools and the integration tests wait for
// something to happen (a binding to come up, a log line, a flow, a process to
// exit): they poll for the condition itself until a deadline, never sleep for
// a guessed time.
package wait

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Until calls cond until it returns nil, and then returns nil. It tries at
// most once per interval (a slow condition, such as a ping that times out,
// is tried again at once). cond's error says what is awaited and how things stand, e.g. `binding of
// vnet3 on hostB is "registering", not "bound"`. When timeout passes first,
// Until returns cond's last error with how long it waited; when ctx ends
// first, cond's last error with ctx's. An error that cond wraps with Fatal
// ends the wait at once (the awaited thing can no longer happen, say, the
// process died), and Until returns it unwrapped.
func Until(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		try := time.Now()
		err := cond()
		if err == nil {
			return nil
		}
		var f fatalError
		if errors.As(err, &f) {
			return f.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (waited %v)", err, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(interval - time.Since(try)):
		}
	}
}

// Fatal marks err, returned by a condition, as the end of the wait: Until
// returns err at once instead of trying again.
func Fatal(err error) error { return fatalError{err} }

type fatalError struct{ err error }

func (f fatalError) Error() string { return f.err.Error() }
func (f fatalError) Unwrap() error { return f.err }
