package scenario

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/labha"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// RestartHomeAgent stops the lab Home Agent of lab.HomeNet as a service
// manager would (SIGTERM: it removes its routes and proxy entries, and its
// bindings and ESP sequence numbers are gone) and starts it again with the
// same flags. It returns the time of the new Home Agent's ready event: from
// then on it answers.
func (e *Env) RestartHomeAgent(ctx context.Context) (time.Time, error) {
	e.mu.Lock()
	cmd, extra := e.homeAgents["ha"], e.homeAgentArgs["ha"]
	e.mu.Unlock()
	if cmd == nil {
		return time.Time{}, errors.New("restart Home Agent: not started by StartHomeAgent")
	}
	before, err := e.HAEvents()
	if err != nil {
		return time.Time{}, err
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
		return time.Time{}, fmt.Errorf("restart Home Agent: stop: %w", err)
	}
	_ = cmd.Wait() // killed by a signal: an error by design
	if err := e.StartHomeAgentOf(ctx, lab.HomeNet, extra...); err != nil {
		return time.Time{}, err
	}
	var ready time.Time
	err = wait.Until(ctx, 10*time.Second, 10*time.Millisecond, func() error {
		evs, err := e.HAEvents()
		if err != nil {
			return err
		}
		for _, ev := range evs[min(len(before), len(evs)):] {
			if ev.Msg == labha.EventReady {
				ready = ev.Time
				return nil
			}
		}
		return errors.New("restarted Home Agent not ready")
	})
	return ready, err
}
