package scenario

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/kgswitch/kgswitch/tests/integration/labha"
)

// DatapathDrops reads the last line of `kgswitch status` on host: the drops
// of no VM's, by reason (none when kgswitch prints no such line).
func (e *Env) DatapathDrops(ctx context.Context, host string) (map[string]uint64, error) {
	out, err := e.Kgswitch(ctx, host, "status")
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, "datapath drops (no VM's): ")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseUint(v, 10, 64)
			m[k] = n
		}
	}
	return m, nil
}

// KgswitchLogLines returns the lines of kgswitch's log on host from line
// from (counted from 0) on: with from the number of lines read before, what
// kgswitch logged since.
func (e *Env) KgswitchLogLines(host string, from int) ([]string, error) {
	b, err := os.ReadFile(e.KgswitchLog(host))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if from > len(lines) {
		return nil, nil
	}
	return lines[from:], nil
}

// HABinding returns the lab Home Agent's binding for home address hoa: its
// last binding cache event (added, refreshed, moved, removed, expired).
func (e *Env) HABinding(hoa netip.Addr) (HAEvent, error) {
	evs, err := e.HAEvents()
	if err != nil {
		return HAEvent{}, err
	}
	var last HAEvent
	for _, ev := range evs {
		switch ev.Msg {
		case labha.EventBindingAdded, labha.EventBindingRefreshed, labha.EventBindingMoved,
			labha.EventBindingRemoved, labha.EventBindingExpired:
			if ev.HoA == hoa.String() {
				last = ev
			}
		}
	}
	if last.Msg == "" {
		return last, fmt.Errorf("the Home Agent has no binding for %s", hoa)
	}
	return last, nil
}

// HABindingUpdates counts the Binding Updates the lab Home Agent received
// from care-of address coa.
func (e *Env) HABindingUpdates(coa netip.Addr) (int, error) {
	evs, err := e.HAEvents()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ev := range evs {
		if ev.Msg == labha.EventBUReceived && ev.CoA == coa.String() {
			n++
		}
	}
	return n, nil
}
