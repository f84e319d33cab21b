package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// KgswitchCookie selects kgswitch's flows in ovs-ofctl: every flow it
// installs has 0x6b67 in its cookie's top 16 bits.
const KgswitchCookie = "cookie=0x6b67000000000000/0xffff000000000000"

// StopKgswitch ends a kgswitch started by RunKgswitch with sig (SIGKILL for a
// crash, SIGTERM for a clean stop) and reaps it; it returns the exit error
// of the process, if any (a SIGKILLed process always has one), and fails
// when the process is still there after timeout.
func StopKgswitch(cmd *exec.Cmd, sig syscall.Signal, timeout time.Duration) (exitErr error, err error) {
	if err := cmd.Process.Signal(sig); err != nil {
		return nil, fmt.Errorf("signal kgswitch (pid %d): %w", cmd.Process.Pid, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case werr := <-done:
		return werr, nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return nil, fmt.Errorf("kgswitch (pid %d) still running %v after %v", cmd.Process.Pid, timeout, sig)
	}
}

// AppendConfig appends text to the configuration file at path.
func AppendConfig(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// StateDir returns a fresh directory below the lab's for kgswitch's
// state_dir on host.
func (e *Env) StateDir(host string) (string, error) {
	dir := filepath.Join(e.Lab.Dir, host+"-state")
	return dir, os.MkdirAll(dir, 0o755)
}

// Flow is one OpenFlow flow as ovs-ofctl prints it, without its counters.
type Flow struct {
	Cookie   string
	Priority int
	// Match is the match fields, as printed ("in_port=vnet3,dl_dst=...").
	Match   string
	Actions string
}

// Key is the flow's identity in its table: priority and match. Two flows of
// a table with the same Key are the same flow installed twice, which OVS
// would never do by itself.
func (f Flow) Key() string { return strconv.Itoa(f.Priority) + " " + f.Match }

// String is the flow without its cookie, as kgswitch's three ways of
// declaring a VM must produce it alike.
func (f Flow) String() string { return f.Key() + " actions=" + f.Actions }

// flowCounters are the fields of a dump-flows line that change by themselves.
var flowCounters = regexp.MustCompile(`^(duration|n_packets|n_bytes|idle_age|hard_age|idle_timeout|table)=`)

// ParseFlows reads `ovs-ofctl dump-flows` output.
func ParseFlows(out string) ([]Flow, error) {
	var flows []Flow
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "NXST_FLOW") || strings.HasPrefix(line, "OFPST_FLOW") {
			continue
		}
		head, actions, ok := strings.Cut(line, " actions=")
		if !ok {
			return nil, fmt.Errorf("dump-flows line without actions: %q", line)
		}
		f := Flow{Actions: actions}
		var match []string
		for _, field := range strings.Split(strings.ReplaceAll(head, ", ", ","), ",") {
			field = strings.TrimSpace(field)
			switch {
			case field == "":
			case strings.HasPrefix(field, "cookie="):
				f.Cookie = strings.TrimPrefix(field, "cookie=")
			case strings.HasPrefix(field, "priority="):
				p, err := strconv.Atoi(strings.TrimPrefix(field, "priority="))
				if err != nil {
					return nil, fmt.Errorf("dump-flows line %q: %v", line, err)
				}
				f.Priority = p
			case flowCounters.MatchString(field):
			default:
				match = append(match, field)
			}
		}
		if f.Priority == 0 && !strings.Contains(head, "priority=0") {
			f.Priority = 32768 // OpenFlow's default, which ovs-ofctl leaves out
		}
		f.Match = strings.Join(match, ",")
		flows = append(flows, f)
	}
	sort.Slice(flows, func(i, j int) bool { return flows[i].String() < flows[j].String() })
	return flows, nil
}

// KgswitchFlows returns the flows with kgswitch's cookie on host's bridge,
// ports by name, sorted.
func (e *Env) KgswitchFlows(ctx context.Context, host string) ([]Flow, error) {
	out, err := e.Lab.OVS(host).Ofctl(ctx, "--names", "dump-flows", KgswitchCookie)
	if err != nil {
		return nil, err
	}
	return ParseFlows(out)
}

// Duplicates returns the flows whose Key occurs more than once.
func Duplicates(flows []Flow) []Flow {
	n := map[string]int{}
	for _, f := range flows {
		n[f.Key()]++
	}
	var dup []Flow
	for _, f := range flows {
		if n[f.Key()] > 1 {
			dup = append(dup, f)
		}
	}
	return dup
}

// ExternalID returns the value of key in Interface iface's external_ids on
// host, "" when the key is not set.
func (e *Env) ExternalID(ctx context.Context, host, iface, key string) (string, error) {
	out, err := e.Lab.OVS(host).Vsctl(ctx, "--if-exists", "get", "Interface", iface, "external_ids:"+key)
	if err != nil {
		return "", err
	}
	return strings.Trim(strings.TrimSpace(out), `"`), nil
}

// WaitExternalID waits until key in iface's external_ids on host is want.
func (e *Env) WaitExternalID(ctx context.Context, host, iface, key, want string, timeout time.Duration) error {
	return wait.Until(ctx, timeout, 50*time.Millisecond, func() error {
		got, err := e.ExternalID(ctx, host, iface, key)
		if err != nil || got != want {
			return fmt.Errorf("%s external_ids:%s on %s is %q (err %v), not %q", iface, key, host, got, err, want)
		}
		return nil
	})
}

// StatusAll returns `kgswitch status --json` on host: every VM it knows.
func (e *Env) StatusAll(ctx context.Context, host string) ([]PortStatus, error) {
	out, err := e.Kgswitch(ctx, host, "status", "--json")
	if err != nil {
		return nil, err
	}
	var st []PortStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status output: %v: %s", err, out)
	}
	return st, nil
}

// Metrics fetches kgswitch's Prometheus metrics at http://addr/metrics from
// inside host's namespace (where the daemon listens).
func (e *Env) Metrics(ctx context.Context, host, addr string) (string, error) {
	prog := "import sys, urllib.request\n" +
		"sys.stdout.write(urllib.request.urlopen('http://" + addr + "/metrics', timeout=5).read().decode())\n"
	cmd := e.Lab.Command(ctx, host, "python3", "-c", prog)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("fetch http://%s/metrics in %s: %v: %s", addr, host, err, stderr.String())
	}
	return string(out), nil
}

// Metric is one sample of the Prometheus text format.
type Metric struct {
	Name   string
	Labels map[string]string
	Value  float64
}

var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)`)
var metricLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// ParseMetrics reads the Prometheus text exposition format (comments
// skipped).
func ParseMetrics(text string) ([]Metric, error) {
	var ms []Metric
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("not a metric line: %q", line)
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %v", line, err)
		}
		mt := Metric{Name: m[1], Labels: map[string]string{}, Value: v}
		for _, l := range metricLabel.FindAllStringSubmatch(m[3], -1) {
			mt.Labels[l[1]] = l[2]
		}
		ms = append(ms, mt)
	}
	return ms, nil
}

// FindMetric returns the first sample named name whose labels include every
// label of want.
func FindMetric(ms []Metric, name string, want map[string]string) (Metric, bool) {
next:
	for _, m := range ms {
		if m.Name != name {
			continue
		}
		for k, v := range want {
			if m.Labels[k] != v {
				continue next
			}
		}
		return m, true
	}
	return Metric{}, false
}

// PrependConfig puts text at the top of the configuration file at path,
// where top-level keys must go (after a table header, a key belongs to the
// table).
func PrependConfig(path, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(text), b...), 0o644)
}

// FirstReplyAfter returns when the first reply that arrived after t
// arrived.
func (p *PingStream) FirstReplyAfter(t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first time.Time
	for _, at := range p.seen {
		if at.After(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// LongestGapBetween returns the longest time without a reply between a and
// b, counting a and b as replies.
func (p *PingStream) LongestGapBetween(a, b time.Time) time.Duration {
	p.mu.Lock()
	at := []time.Time{a, b}
	for _, t := range p.seen {
		if t.After(a) && t.Before(b) {
			at = append(at, t)
		}
	}
	p.mu.Unlock()
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	var gap time.Duration
	for i := 1; i < len(at); i++ {
		gap = max(gap, at[i].Sub(at[i-1]))
	}
	return gap
}
