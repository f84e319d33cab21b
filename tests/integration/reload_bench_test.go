package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// BenchmarkSIGHUPReload measures, with the lab's real Open vSwitch, a SIGHUP
// that adds n VMs to kgswitch on the foreign host (hostB): from the signal
// until kgswitch has logged "configuration reloaded" and OVS holds a flow
// for each new VM (a VM whose port is elsewhere gets one on a foreign host,
// which sends its frames to kgswitch when it arrives). Meanwhile a client
// asks the control socket for the status every 50 ms, as an operator or a
// monitoring agent would; the longest answer is status-wait-ms. Then a
// second reload, of n other VMs, is interrupted with SIGTERM once the
// control loop is in it; sigterm-s is how long kgswitch took to exit.
//
//	go test -run '^$' -bench BenchmarkSIGHUPReload -benchtime 1x ./tests/integration/
func BenchmarkSIGHUPReload(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			b.StopTimer()
			e := newEnv(b, ctx)
			var reload, statusWait, term time.Duration
			for range b.N {
				r := measureReload(b, ctx, e, n)
				reload, statusWait, term = max(reload, r.reload), max(statusWait, r.statusWait), max(term, r.term)
			}
			b.ReportMetric(reload.Seconds(), "reload-s")
			b.ReportMetric(float64(statusWait.Microseconds())/1000, "status-wait-ms")
			b.ReportMetric(term.Seconds(), "sigterm-s")
			// The control loop must never be away long enough for an
			// operator to think the daemon hung, nor ignore a stop.
			if statusWait > time.Second {
				b.Errorf("status waited %v during the reload, want under 1s", statusWait)
			}
			if term > 2*time.Second {
				b.Errorf("SIGTERM during the reload took %v, want under 2s", term)
			}
		})
	}
}

// reloadFigures are one reload's.
type reloadFigures struct {
	reload, statusWait, term time.Duration
}

// reloadVMs is n VMs of the lab's home network whose ports are on no
// bridge of the lab; batch tells two sets apart (addresses, MACs, ports).
func reloadVMs(n, batch int) []lab.Guest {
	gs := make([]lab.Guest, n)
	for i := range gs {
		a := lab.HomePrefix.Addr().As16()
		a[11], a[12], a[13], a[14], a[15] = byte(batch), 1, byte(i>>16), byte(i>>8), byte(i)
		gs[i] = lab.Guest{
			Port: fmt.Sprintf("tap%d-%d", batch, i),
			HoA:  netip.AddrFrom16(a),
			MAC:  net.HardwareAddr{0x52, 0x54, byte(batch), byte(i >> 16), byte(i >> 8), byte(i)},
			Home: lab.HomeNet,
		}
	}
	return gs
}

// measureReload runs one kgswitch on hostB through a measured reload of n
// VMs and a reload cut short by SIGTERM; kgswitch has exited when it
// returns.
func measureReload(b *testing.B, ctx context.Context, e *scenario.Env, n int) reloadFigures {
	var f reloadFigures
	// The lab's guest, configured and elsewhere, makes hostB a foreign
	// host for its home network: kgswitch sets up its internal port at
	// start, as it would on any host of a cloud.
	write := func(extra []lab.Guest) string {
		cfg, err := e.WriteConfigWith("hostB", scenario.Config{Guests: append([]lab.Guest{lab.VM}, extra...)})
		if err != nil {
			b.Fatal(err)
		}
		return cfg
	}
	cfg := write(nil)
	kg, err := e.RunKgswitch(ctx, "hostB", cfg)
	if err != nil {
		b.Fatal(err)
	}
	base, err := stableFlowCount(ctx, e)
	if err != nil {
		b.Fatal(err)
	}
	write(reloadVMs(n, 1))
	logFrom := fileSize(e.KgswitchLog("hostB"))

	probe := startStatusProbe(e.ControlSocket("hostB"))
	start := time.Now()
	b.StartTimer()
	if err := kg.Process.Signal(syscall.SIGHUP); err != nil {
		b.Fatal(err)
	}
	var logged, flowsIn time.Duration
	werr := wait.Until(ctx, 5*time.Minute, 50*time.Millisecond, func() error {
		if logged == 0 && strings.Contains(logSince(e.KgswitchLog("hostB"), logFrom), "configuration reloaded") {
			logged = time.Since(start)
		}
		if flowsIn == 0 {
			if c, err := flowCount(ctx, e); err == nil && c == base+n {
				flowsIn = time.Since(start)
			}
		}
		if logged == 0 || flowsIn == 0 {
			return fmt.Errorf("reload of %d VMs: logged after %v, flows in after %v (0: not yet)", n, logged, flowsIn)
		}
		return nil
	})
	b.StopTimer()
	f.statusWait, err = probe.stop()
	if err != nil {
		b.Errorf("status during the reload: %v", err)
	}
	if werr != nil {
		b.Fatalf("%v\n%s", werr, tail(logSince(e.KgswitchLog("hostB"), logFrom), 20))
	}
	f.reload = max(logged, flowsIn)
	b.Logf("%d VMs: reload logged after %v, OVS holds every flow (%d) after %v; status waited at most %v in %d requests",
		n, logged.Round(time.Millisecond), base+n, flowsIn.Round(time.Millisecond), f.statusWait.Round(time.Millisecond), probe.count())

	// A reload of n other VMs (n removed, n added), stopped as soon as the
	// control loop is in it (it logs each VM it removes): the daemon must
	// not finish it first.
	write(reloadVMs(n, 2))
	logFrom = fileSize(e.KgswitchLog("hostB"))
	hup := time.Now()
	if err := kg.Process.Signal(syscall.SIGHUP); err != nil {
		b.Fatal(err)
	}
	err = wait.Until(ctx, time.Minute, 2*time.Millisecond, func() error {
		if !strings.Contains(logSince(e.KgswitchLog("hostB"), logFrom), "reload: VM removed or changed") {
			return errors.New("the second reload has not reached the control loop")
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	termAt := time.Now()
	exitErr, err := scenario.StopKgswitch(kg, syscall.SIGTERM, 30*time.Second)
	f.term = time.Since(termAt)
	if err != nil {
		b.Fatal(err)
	}
	finished := strings.Count(logSince(e.KgswitchLog("hostB"), logFrom), "configuration reloaded") > 0
	b.Logf("SIGTERM %v into the second reload: exited after %v (%v; the reload finished first: %v)",
		termAt.Sub(hup).Round(time.Millisecond), f.term.Round(time.Millisecond), exitErr, finished)
	return f
}

var flowCountRE = regexp.MustCompile(`flow_count=(\d+)`)

// flowCount is how many flows of kgswitch's cookie hostB's bridge holds.
func flowCount(ctx context.Context, e *scenario.Env) (int, error) {
	out, err := e.Lab.OVS("hostB").Ofctl(ctx, "dump-aggregate", scenario.KgswitchCookie)
	if err != nil {
		return 0, err
	}
	m := flowCountRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("dump-aggregate: no flow_count in %q", out)
	}
	return strconv.Atoi(m[1])
}

// stableFlowCount waits until kgswitch's flows on hostB stop changing (its
// start is through: internal port, host-wide flows, stale ones removed) and
// returns their number.
func stableFlowCount(ctx context.Context, e *scenario.Env) (int, error) {
	last, since := -1, time.Now()
	var n int
	err := wait.Until(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		c, err := flowCount(ctx, e)
		if err != nil {
			return err
		}
		if c != last {
			last, since = c, time.Now()
		}
		if c == 0 || time.Since(since) < time.Second {
			return fmt.Errorf("kgswitch's flows on hostB: %d, changed %v ago", c, time.Since(since).Round(time.Millisecond))
		}
		n = c
		return nil
	})
	return n, err
}

// statusProbe asks the control socket for the status every 50 ms, as the CLI
// does (a connection per request), and keeps the longest answer time.
type statusProbe struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	longest  time.Duration
	requests int
	err      error
}

func startStatusProbe(socket string) *statusProbe {
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	p := &statusProbe{done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			start := time.Now()
			err := getStatus(client)
			took := time.Since(start)
			p.mu.Lock()
			p.longest, p.requests = max(p.longest, took), p.requests+1
			if err != nil && p.err == nil {
				p.err = err
			}
			p.mu.Unlock()
			select {
			case <-p.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return p
}

func getStatus(client *http.Client) error {
	resp, err := client.Get("http://kgswitch/v1/status")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

// stop ends the probe and returns the longest answer time and the first
// failed request's error.
func (p *statusProbe) stop() (time.Duration, error) {
	close(p.done)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.longest, p.err
}

func (p *statusProbe) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince is the file at path from byte offset off on.
func logSince(path string, off int64) string {
	b, _ := os.ReadFile(path)
	if off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
