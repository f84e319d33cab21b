package scenario

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// StartHomeAgentProc runs the lab Home Agent of lab.HomeNet like
// StartHomeAgent and returns its process, for CPU and memory figures.
func (e *Env) StartHomeAgentProc(ctx context.Context) (*exec.Cmd, error) {
	return e.Lab.Start(ctx, lab.HomeNet.HANode, e.HALogOf(lab.HomeNet), e.homeAgentArgv(lab.HomeNet, nil)...)
}

// ProcUsage is a process's CPU time so far and its memory, from /proc.
type ProcUsage struct {
	CPU time.Duration
	// RSSKiB is the resident set now, HWMKiB its peak so far.
	RSSKiB, HWMKiB int
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times on Linux.
const clockTicks = 100

// Usage reads pid's CPU time and resident memory.
func Usage(pid int) (ProcUsage, error) {
	var u ProcUsage
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return u, err
	}
	// Fields after the command, which may hold spaces: state is field 3,
	// utime and stime fields 14 and 15.
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			u.RSSKiB = n
		case "VmHWM":
			u.HWMKiB = n
		}
	}
	return u, nil
}

// ExtraGuests returns n made-up guests of lab.HomeNet for a configuration
// with many VMs: ports "vmx0001"..., home addresses 2001:db8:2000::1:0 + i,
// locally administered MACs. No namespace exists for them.
func ExtraGuests(n int) []lab.Guest {
	gs := make([]lab.Guest, n)
	for i := range gs {
		a := lab.HomePrefix.Addr().As16()
		a[12], a[13], a[14], a[15] = 0, 1, byte((i+1)>>8), byte(i+1)
		gs[i] = lab.Guest{Port: fmt.Sprintf("vmx%04d", i+1), HoA: netip.AddrFrom16(a),
			MAC: net.HardwareAddr{0x02, 0x6b, 0x62, 0, byte((i + 1) >> 8), byte(i + 1)}, Home: lab.HomeNet}
	}
	return gs
}

// BenchIperfResult is what a benchmark keeps of one iperf3 run, as the
// receiver saw it, TCP or UDP.
type BenchIperfResult struct {
	BitsPerSecond float64 `json:"bits_per_second"`
	// Packets, Lost and PacketsPerSecond are UDP's: what reached the server.
	Packets          int64   `json:"packets,omitempty"`
	Lost             int64   `json:"lost,omitempty"`
	PacketsPerSecond float64 `json:"packets_per_second,omitempty"`
	Retransmits      int64   `json:"retransmits,omitempty"`
}

// BenchIperf runs an iperf3 client on node against server with args (say "-t",
// "5", "-P", "4") and returns the receiver's figures. An iperf3 server must
// run there (StartIperf3Server).
func (e *Env) BenchIperf(ctx context.Context, node, server string, args ...string) (BenchIperfResult, error) {
	argv := append([]string{"iperf3", "-6", "-J", "-c", server}, args...)
	out, err := e.Lab.Command(ctx, node, argv...).Output()
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int64 `json:"retransmits"`
			} `json:"sum_sent"`
			Sum struct {
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
				Packets       int64   `json:"packets"`
				LostPackets   int64   `json:"lost_packets"`
			} `json:"sum"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return BenchIperfResult{}, fmt.Errorf("iperf3 %s: %v (%v): %.300s", strings.Join(args, " "), err, jerr, out)
	}
	if r.Error != "" {
		return BenchIperfResult{}, fmt.Errorf("iperf3 %s: %s", strings.Join(args, " "), r.Error)
	}
	if slices.Contains(args, "-u") {
		s := r.End.Sum
		res := BenchIperfResult{Packets: s.Packets, Lost: s.LostPackets}
		if s.Seconds > 0 {
			res.PacketsPerSecond = float64(s.Packets-s.LostPackets) / s.Seconds
			res.BitsPerSecond = s.BitsPerSecond * float64(s.Packets-s.LostPackets) / float64(max(s.Packets, 1))
		}
		return res, nil
	}
	return BenchIperfResult{BitsPerSecond: r.End.SumReceived.BitsPerSecond, Retransmits: r.End.SumSent.Retransmits}, nil
}

var rttRe = regexp.MustCompile(`icmp_seq=(\d+) .*time=([0-9.]+) ms`)

// PingRTTs sends count pings from node to addr every interval and returns
// the round-trip time of each one answered.
func (e *Env) PingRTTs(ctx context.Context, node, addr string, count int, interval time.Duration) ([]time.Duration, error) {
	cmd := e.Lab.Command(ctx, node, "ping", pingFamily(addr), "-n", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "1", addr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var rtts []time.Duration
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if m := rttRe.FindStringSubmatch(sc.Text()); m != nil {
			ms, _ := strconv.ParseFloat(m[2], 64)
			rtts = append(rtts, time.Duration(ms*float64(time.Millisecond)))
		}
	}
	err = cmd.Wait()
	if len(rtts) == 0 {
		return nil, fmt.Errorf("ping %s from %s: no answer (%v)", addr, node, err)
	}
	return rtts, nil
}
