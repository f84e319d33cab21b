package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// Advertise is kgswitch's [home_network.advertise] table: the home router's
// Router Advertisement that kgswitch repeats to a guest away from home.
type Advertise struct {
	Interval                                         time.Duration
	RouterLifetime, ValidLifetime, PreferredLifetime time.Duration
}

// WriteConfigHoA writes kgswitch's configuration for host with the guest
// declared at home address hoa (a guest that configured itself by SLAAC has
// another address than lab.HoA) and, when adv is not nil, the home network's
// advertise table.
func (e *Env) WriteConfigHoA(host string, hoa netip.Addr, adv *Advertise) (string, error) {
	g := lab.VM
	g.HoA = hoa
	return e.WriteConfigWith(host, Config{Guests: []lab.Guest{g}, Advertise: adv})
}

// AddrState is one IPv6 address of an interface as `ip -6 addr show` reports
// it.
type AddrState struct {
	// Valid and Preferred are the remaining lifetimes; Forever is set when
	// the address does not expire (a static one).
	Valid, Preferred time.Duration
	Forever          bool
	// Deprecated is set once the preferred lifetime ran out (RFC 4862
	// §5.5.4).
	Deprecated bool
	// Line is ip's line for the address.
	Line string
}

var lftRe = regexp.MustCompile(`valid_lft (\S+) preferred_lft (\S+)`)

// Addr returns the state of address a on dev in node, or an error that
// includes every address of dev when a is not there.
func (e *Env) Addr(ctx context.Context, node, dev string, a netip.Addr) (AddrState, error) {
	out, err := e.Lab.Run(ctx, node, "ip", "-6", "-o", "addr", "show", "dev", dev)
	if err != nil {
		return AddrState{}, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "inet6" || !strings.HasPrefix(f[3], a.String()+"/") {
			continue
		}
		st := AddrState{Line: strings.TrimSpace(line), Deprecated: strings.Contains(line, " deprecated")}
		m := lftRe.FindStringSubmatch(line)
		if m == nil {
			return st, fmt.Errorf("no lifetimes in %q", line)
		}
		if m[1] == "forever" {
			st.Forever = true
			return st, nil
		}
		st.Valid, err = parseSec(m[1])
		if err == nil {
			st.Preferred, err = parseSec(m[2])
		}
		return st, err
	}
	return AddrState{}, fmt.Errorf("%s has no address %v on %s:\n%s", node, a, dev, out)
}

// parseSec parses ip's "29sec".
func parseSec(s string) (time.Duration, error) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "sec"))
	if err != nil {
		return 0, fmt.Errorf("lifetime %q: %w", s, err)
	}
	return time.Duration(n) * time.Second, nil
}

var mtuRe = regexp.MustCompile(`\bmtu (\d+)\b`)

// RouteMTU returns the path MTU node's route cache holds towards dst (`ip -6
// route get`), or 0 when it holds none (the link's MTU applies), and ip's
// output.
func (e *Env) RouteMTU(ctx context.Context, node string, dst netip.Addr) (int, string, error) {
	out, err := e.Lab.Run(ctx, node, "ip", "-6", "route", "get", dst.String())
	if err != nil {
		return 0, out, err
	}
	m := mtuRe.FindStringSubmatch(out)
	if m == nil {
		return 0, out, nil
	}
	n, err := strconv.Atoi(m[1])
	return n, out, err
}

// StartIperf3Server runs an iperf3 server in node and waits until it listens.
// It runs until the lab is closed.
func (e *Env) StartIperf3Server(ctx context.Context, node string) error {
	log := filepath.Join(e.Lab.Dir, node+"-iperf3.log")
	if _, err := e.Lab.Start(ctx, node, log, "iperf3", "-s", "-6"); err != nil {
		return err
	}
	// iperf3 buffers what it prints to a file: ask the kernel instead.
	return wait.Until(ctx, 5*time.Second, 20*time.Millisecond, func() error {
		if out, err := e.Lab.Run(ctx, node, "ss", "-Hltn", "sport", "=", ":5201"); err != nil || !strings.Contains(out, "LISTEN") {
			b, _ := os.ReadFile(log)
			return fmt.Errorf("iperf3 server in %s does not listen on port 5201: %s", node, b)
		}
		return nil
	})
}

// IperfResult is what one iperf3 client run measured at its receiving end.
type IperfResult struct {
	// BitsPerSecond is the receiver's average.
	BitsPerSecond float64
	// Intervals are the bytes transferred in each reporting interval (one
	// second).
	Intervals []int64
	// Retransmits is the sender's count, when the client sent.
	Retransmits int64
	// JSON is iperf3's whole report.
	JSON string
}

// Iperf3 runs an iperf3 client in node against server for d; with reverse the
// server sends (iperf3 -R).
func (e *Env) Iperf3(ctx context.Context, node string, server netip.Addr, d time.Duration, reverse bool) (IperfResult, error) {
	argv := []string{"iperf3", "-6", "-c", server.String(), "-J", "-t", strconv.Itoa(int(d / time.Second)), "--connect-timeout", "5000"}
	if reverse {
		argv = append(argv, "-R")
	}
	out, err := e.Lab.Run(ctx, node, argv...)
	// The iperf3 server serves one test at a time and resets connections
	// while it finishes the last one, longer on a loaded machine: a client
	// that comes too soon is turned away, and tries again.
	for try := 0; try < 5 && strings.Contains(out, "unable to connect to server"); try++ {
		time.Sleep(300 * time.Millisecond)
		out, err = e.Lab.Run(ctx, node, argv...)
	}
	var rep struct {
		Intervals []struct {
			Sum struct {
				Bytes int64 `json:"bytes"`
			} `json:"sum"`
		} `json:"intervals"`
		End struct {
			SumSent struct {
				Retransmits int64 `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	r := IperfResult{JSON: out}
	// iperf3 -J reports its errors in the JSON too; the combined output
	// may carry a warning line before it.
	js := out
	if i := strings.Index(js, "{"); i > 0 {
		js = js[i:]
	}
	if jerr := json.Unmarshal([]byte(js), &rep); jerr != nil {
		return r, fmt.Errorf("iperf3 in %s: %v (%v)\n%s", node, err, jerr, out)
	}
	if rep.Error != "" || err != nil {
		return r, fmt.Errorf("iperf3 in %s: %v: %s", node, err, rep.Error)
	}
	r.BitsPerSecond = rep.End.SumReceived.BitsPerSecond
	r.Retransmits = rep.End.SumSent.Retransmits
	for _, iv := range rep.Intervals {
		r.Intervals = append(r.Intervals, iv.Sum.Bytes)
	}
	return r, nil
}

// RASent returns kgswitch's ra_sent counter for port on host: how many Router
// Advertisements it sent to the guest.
func (e *Env) RASent(ctx context.Context, host, port string) (uint64, error) {
	out, err := e.Kgswitch(ctx, host, "status", "--json")
	if err != nil {
		return 0, err
	}
	var st []struct {
		Port   string `json:"port"`
		RASent uint64 `json:"ra_sent"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return 0, fmt.Errorf("status output: %v: %s", err, out)
	}
	for _, p := range st {
		if p.Port == port {
			return p.RASent, nil
		}
	}
	return 0, fmt.Errorf("kgswitch on %s does not know %s", host, port)
}
