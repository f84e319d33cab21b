package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

// The acceptance of a return home: kgswitch logs no warning or error, counts
// no rejected Acknowledgement, and the home router's neighbour entry for the
// home address points at the guest's MAC within returnNeighBound of the Home
// Agent's Acknowledgement of the de-registration.
const returnNeighBound = 50 * time.Millisecond

// kgswitchLogProblems returns the lines of host's kgswitch log (slog text or
// JSON) at level WARN or ERROR logged at since or later (a line whose time
// does not parse counts too).
func kgswitchLogProblems(e *scenario.Env, host string, since time.Time) ([]string, error) {
	f, err := os.Open(e.KgswitchLog(host))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var level, at string
		if strings.HasPrefix(line, "{") {
			var rec struct {
				Time  string `json:"time"`
				Level string `json:"level"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil {
				level, at = rec.Level, rec.Time
			}
		} else {
			if m := textLevelRe.FindStringSubmatch(line); m != nil {
				level = m[1]
			}
			if m := textTimeRe.FindStringSubmatch(line); m != nil {
				at = m[1]
			}
		}
		if level != "WARN" && level != "ERROR" {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, at); err == nil && t.Before(since) {
			continue
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

var (
	textLevelRe = regexp.MustCompile(`(?:^|\s)level=(\S+)`)
	textTimeRe  = regexp.MustCompile(`^time=(\S+)`)
)

var signalRejectedRe = regexp.MustCompile(`signal-rejected=(\d+)`)

// signalRejected sums the signalling kgswitch on host rejected, its VMs' and
// the datapath's own (the text status prints both; JSON only the VMs').
func signalRejected(ctx context.Context, e *scenario.Env, host string) (uint64, string, error) {
	out, err := e.Kgswitch(ctx, host, "status")
	if err != nil {
		return 0, out, err
	}
	var n uint64
	for _, m := range signalRejectedRe.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		n += v
	}
	return n, out, nil
}

// checkQuietReturn fails the test for any warning or error in the kgswitch
// logs of hosts since the scenario began (since: the daemons' start-up
// warnings are about the lab's configuration, such as its lack of a
// state_dir), and for any signalling they rejected.
func checkQuietReturn(t *testing.T, ctx context.Context, e *scenario.Env, since time.Time, hosts ...string) {
	t.Helper()
	for _, h := range hosts {
		lines, err := kgswitchLogProblems(e, h, since)
		if err != nil {
			t.Errorf("kgswitch log of %s: %v", h, err)
		}
		if len(lines) > 0 {
			t.Errorf("kgswitch on %s logged %d warnings or errors, want none:\n%s", h, len(lines), strings.Join(lines, "\n"))
		}
		n, out, err := signalRejected(ctx, e, h)
		if err != nil {
			t.Errorf("kgswitch status on %s: %v", h, err)
		} else if n != 0 {
			t.Errorf("kgswitch on %s rejected %d signalling packets, want none:\n%s", h, n, out)
		}
	}
}

// neighWatch records a node's neighbour table changes (`ip -ts monitor
// neigh`), timed by the host clock like the captures.
type neighWatch struct {
	path string
	dev  string
}

// watchNeigh starts recording node's neighbour changes on dev.
func watchNeigh(t *testing.T, ctx context.Context, e *scenario.Env, node, dev string) *neighWatch {
	t.Helper()
	path := filepath.Join(e.Lab.Dir, node+"-neigh-monitor.log")
	if _, err := e.Lab.Start(ctx, node, path, "ip", "-ts", "-6", "monitor", "neigh"); err != nil {
		t.Fatal(err)
	}
	// The monitor subscribes once it runs: wait for that before anything
	// it must see happens.
	time.Sleep(200 * time.Millisecond)
	return &neighWatch{path: path, dev: dev}
}

// neighChange is one change of an entry's link-layer address.
type neighChange struct {
	At     time.Time
	LLAddr string // "" when the entry was deleted or has none
	Line   string
}

var neighLineRe = regexp.MustCompile(`^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\] (Deleted )?(\S+) dev (\S+)(?: lladdr (\S+))?`)

// changes returns the recorded changes of the entry for a, in order.
func (w *neighWatch) changes(a netip.Addr) ([]neighChange, error) {
	b, err := os.ReadFile(w.path)
	if err != nil {
		return nil, err
	}
	var out []neighChange
	for _, line := range strings.Split(string(b), "\n") {
		m := neighLineRe.FindStringSubmatch(line)
		if m == nil || m[3] != a.String() || m[4] != w.dev {
			continue
		}
		at, err := time.ParseInLocation("2006-01-02T15:04:05.999999", m[1], time.Local)
		if err != nil {
			return nil, fmt.Errorf("neighbour monitor line %q: %v", line, err)
		}
		ll := m[5]
		if m[2] != "" {
			ll = ""
		}
		out = append(out, neighChange{At: at, LLAddr: ll, Line: line})
	}
	return out, nil
}

// pointedAt replays changes up to by and reports whether the entry then
// names mac, and since when.
func pointedAt(changes []neighChange, by time.Time, mac string) (time.Time, bool) {
	var since time.Time
	cur := ""
	for _, c := range changes {
		if c.At.After(by) {
			break
		}
		if c.LLAddr == mac && cur != mac {
			since = c.At
		}
		cur = c.LLAddr
	}
	return since, cur == mac
}

// checkNeighAfterAck checks that the router's entry for a names mac within
// returnNeighBound of the Home Agent's Ack, and returns the delay (negative
// when it already did before the Ack: the guest's own announcement).
func checkNeighAfterAck(t *testing.T, w *neighWatch, a netip.Addr, mac string, ack time.Time, what string) time.Duration {
	t.Helper()
	changes, err := w.changes(a)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return 0
	}
	since, ok := pointedAt(changes, ack.Add(returnNeighBound), mac)
	if !ok {
		var all strings.Builder
		for _, c := range changes {
			fmt.Fprintf(&all, "\n  %+.1fms %s", ms(c.At.Sub(ack)), c.Line)
		}
		t.Errorf("%s: the router's entry for %s does not name %s within %v of the Home Agent's Ack at %s; its changes (from the Ack):%s",
			what, a, mac, returnNeighBound, ack.Format("15:04:05.000000"), all.String())
		return 0
	}
	return since.Sub(ack)
}
