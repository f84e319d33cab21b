package scenario

import (
	"context"
	"os"
	"strconv"
	"strings"
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
