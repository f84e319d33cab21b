// Command bench measures kgswitch's datapath against the path it replaces,
// in one run of the netns lab: throughput, packet rate and round-trip time
// from cn to the guest (a) at home, through OVS alone, and (b) on a foreign
// host, through the lab Home Agent and kgswitch; kgswitch's CPU per GB and
// memory, idle, under load and with 1,000 configured VMs; and the Go
// benchmarks of encapsulation and decapsulation. It prints a table and writes
// the figures as JSON under bench/results/. `make bench` runs it; see
// bench/README.md for what limits each figure.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

var (
	start = time.Now()
	hold  bool
)

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	out := flag.String("out", "bench/results", "directory for the JSON results")
	secs := flag.Int("t", 5, "seconds per iperf3 run")
	pings := flag.Int("pings", 1000, "pings per round-trip figure (10 ms apart)")
	vms := flag.Int("vms", 1000, "VMs configured on the foreign host")
	active := flag.Int("active", 100, "of which active (bound to the Home Agent) for the memory figure")
	kgBin := flag.String("kgswitch", "", "use this kgswitch binary instead of building one (e.g. one with profiling flags)")
	flag.BoolVar(&hold, "hold", false, "after the move, keep the lab up for a person to look at until Ctrl-C")
	echo := flag.String("icmp-echo", "", "internal: answer pings to `addr` from user space (the wake-up floor's responder, run in the lab)")
	flag.Parse()
	if *echo != "" {
		// It serves until killed; returning is failing.
		fmt.Fprintf(os.Stderr, "bench: %v\n", serveICMPEcho(*echo))
		os.Exit(1)
	}
	r := &Results{Started: time.Now().UTC(), Config: RunConfig{IperfSeconds: *secs, Pings: *pings, VMs: *vms, Active: *active}}
	if err := run(r, *secs, *pings, *vms, *active, *kgBin); err != nil {
		fmt.Fprintf(os.Stderr, "bench failed: %v\n", err)
		os.Exit(1)
	}
	r.evaluate()
	r.print(os.Stdout)
	path, err := r.write(*out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("\nwritten to %s\n", path)
}

// Results is the JSON a run writes.
type Results struct {
	Started time.Time `json:"started"`
	Host    HostInfo  `json:"host"`
	Config  RunConfig `json:"config"`
	// Home is path (a): the guest on its home link, OVS alone. Foreign is
	// path (b): the guest on hostB, through the Home Agent and kgswitch.
	Home    PathFigures `json:"home"`
	Foreign PathFigures `json:"foreign"`
	Ratios  Ratios      `json:"ratios"`
	// Kgswitch is the foreign host's daemon.
	Kgswitch DaemonFigures `json:"kgswitch"`
	// HomeAgent is the lab Home Agent (part of path b).
	HomeAgent DaemonFigures `json:"home_agent"`
	Memory    MemoryFigures `json:"memory"`
	// Breakdown splits path (b)'s figures between kgswitch and the rest.
	Breakdown Breakdown `json:"breakdown"`
	// Wakeup is the round-trip cost of one user-space process on this
	// machine.
	Wakeup  WakeupFloor `json:"wakeup_floor"`
	GoBench []GoBench   `json:"go_benchmarks"`
	Goals   []Goal      `json:"goals"`
	// Profile is the top of kgswitch's CPU profile over the run, when its
	// binary has --cpuprofile.
	Profile string `json:"profile,omitempty"`
	// HeapProfile is the top of kgswitch's heap with the memory figure's
	// VMs, when its binary has --pprof.
	HeapProfile string `json:"heap_profile,omitempty"`
}

// pprofAddr is where kgswitch on hostB serves net/http/pprof, when it can.
const pprofAddr = "127.0.0.1:6060"

// HostInfo says where the figures come from.
type HostInfo struct {
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// RunConfig is how the run was made.
type RunConfig struct {
	IperfSeconds int `json:"iperf_seconds"`
	Pings        int `json:"pings"`
	VMs          int `json:"vms"`
	Active       int `json:"active"`
}

// PathFigures are one path's figures from cn to the guest.
type PathFigures struct {
	TCP1  scenario.BenchIperfResult `json:"tcp_1_stream"`
	TCP4  scenario.BenchIperfResult `json:"tcp_4_streams"`
	UDP64 scenario.BenchIperfResult `json:"udp_64_bytes"`
	// RTTMeanUs and RTTP99Us are in microseconds; Answered of Pings.
	RTTMeanUs float64 `json:"rtt_mean_us"`
	RTTP99Us  float64 `json:"rtt_p99_us"`
	Answered  int     `json:"pings_answered"`
	// CPU is each lab process's share of one CPU during the 4-stream TCP
	// run (1.0 = a whole core), to show what saturates.
	CPU map[string]float64 `json:"cpu_during_tcp4"`
	// MachineCores is the whole machine's busy CPU during that run (cores,
	// from /proc/stat: everything but idle and iowait, kernel included), and
	// MachineCPUSecondsPerGB the same per GB that reached the guest.
	MachineCores           float64 `json:"machine_cores_during_tcp4"`
	MachineCPUSecondsPerGB float64 `json:"machine_cpu_seconds_per_gb_tcp4"`
	// SocketDrops are the frames the kernel dropped during that run because
	// a packet socket's queue was full, by namespace and process (ss -0 -m).
	SocketDrops map[string]uint64 `json:"socket_drops_during_tcp4,omitempty"`
}

// Breakdown is how much of path (b)'s cost is kgswitch's.
type Breakdown struct {
	// Decap and Encap are the times a ping spends inside kgswitch, per
	// direction, from captures on hostB during a second ping run of path
	// (b): decapsulation from the tunnel frame reaching the internal port to
	// the guest's frame leaving it; encapsulation from the guest's reply
	// reaching the internal port to the tunnel packet leaving the host's
	// bridge port (so the host kernel's routing of it is included).
	DecapMedianUs float64 `json:"decap_median_us"`
	DecapP99Us    float64 `json:"decap_p99_us"`
	EncapMedianUs float64 `json:"encap_median_us"`
	EncapP99Us    float64 `json:"encap_p99_us"`
	Samples       int     `json:"samples"`
	// KgswitchCPUShare is kgswitch's CPU over the machine's busy CPU during
	// (b)'s TCP 4-stream run.
	KgswitchCPUShare float64 `json:"kgswitch_cpu_share_tcp4"`
	// RatioIfKgswitchFree bounds the TCP 4-stream ratio b/a if kgswitch cost
	// nothing and the rest of path (b) got its CPU: the measured ratio times
	// (b)'s busy cores over those cores without kgswitch's. It is an upper
	// bound: a process's CPU time includes kernel work downstream of its
	// sends (a veth delivers in the sender's context), which would remain.
	// It assumes (b) is bound by the machine's CPU, as it is in this lab.
	RatioIfKgswitchFree float64 `json:"ratio_if_kgswitch_free_tcp4"`
	// RatioIfHomeAgentFree is the same bound for the lab Home Agent, which a
	// real deployment has in its kernel.
	RatioIfHomeAgentFree float64 `json:"ratio_if_home_agent_free_tcp4"`
}

// Ratios are path (b) against path (a), measured in the same run.
type Ratios struct {
	TCP1      float64 `json:"tcp_1_stream"`
	TCP4      float64 `json:"tcp_4_streams"`
	UDP64     float64 `json:"udp_64_bytes_pps"`
	RTTAddUs  float64 `json:"rtt_mean_added_us"`
	RTTAddP99 float64 `json:"rtt_p99_added_us"`
}

// DaemonFigures are a daemon's cost on path (b).
type DaemonFigures struct {
	// CPUSecondsPerGB is CPU time per GB (1e9 bytes) of inner packets
	// forwarded through the tunnel, both ways, over the TCP and UDP runs.
	CPUSecondsPerGB float64 `json:"cpu_seconds_per_gb"`
	ForwardedBytes  uint64  `json:"forwarded_bytes,omitempty"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	IdleRSSMiB      float64 `json:"idle_rss_mib"`
	// IdleCPUPercent is its CPU over 5 s with nothing to forward, in
	// percent of one core: timers (advertisements, refreshes) and polling.
	IdleCPUPercent float64 `json:"idle_cpu_percent"`
	LoadPeakRSSMiB float64 `json:"load_peak_rss_mib"`
}

// MemoryFigures are kgswitch's memory with many configured VMs.
type MemoryFigures struct {
	Configured int     `json:"configured_vms"`
	Active     int     `json:"active_vms"`
	RSSMiB     float64 `json:"rss_mib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

// GoBench is one line of `go test -bench`.
type GoBench struct {
	Name        string  `json:"name"`
	NsPerOp     float64 `json:"ns_per_op"`
	MBPerSec    float64 `json:"mb_per_s,omitempty"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
}

// Goal is one of the datapath's performance goals (bench/README.md),
// printed, not asserted.
type Goal struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
}

func run(r *Results, secs, pings, vms, active int, kgBin string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := lab.Preflight(); err != nil {
		return err
	}
	lab.CleanupStale(nil)
	r.Host = hostInfo()

	step("Go benchmarks of the datapath (encap, decap, TSO segmentation)")
	gb, err := goBenchmarks(ctx)
	if err != nil {
		return err
	}
	r.GoBench = gb

	step("building kgswitch, the lab Home Agent and tcpcheck")
	dir, err := os.MkdirTemp("", "kgswitch-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins, err := scenario.Build(ctx, dir)
	if err != nil {
		return err
	}
	if kgBin != "" {
		bins.Kgswitch = kgBin
	}
	step("building the lab")
	l, err := lab.New(ctx, lab.Options{})
	if err != nil {
		return err
	}
	defer l.Close()
	e := &scenario.Env{Lab: l, Bin: bins}

	haCmd, err := e.StartHomeAgentProc(ctx)
	if err != nil {
		return err
	}
	cfgA, err := e.WriteConfig("hostA", true)
	if err != nil {
		return err
	}
	if _, err := e.RunKgswitch(ctx, "hostA", cfgA); err != nil {
		return err
	}
	extra := scenario.ExtraGuests(max(vms-1, 0))
	cfgB, err := e.WriteConfigWith("hostB", scenario.Config{Homes: []lab.HomeNetwork{lab.HomeNet}, Guests: append([]lab.Guest{lab.VM}, extra...)})
	if err != nil {
		return err
	}
	var kgArgs []string
	profile := filepath.Join(l.Dir, "hostB-kgswitch.cpu")
	help, _ := exec.Command(bins.Kgswitch, "run", "--help").CombinedOutput()
	if strings.Contains(string(help), "cpuprofile") {
		kgArgs = append(kgArgs, "--cpuprofile", profile)
	}
	if strings.Contains(string(help), "-pprof") {
		kgArgs = append(kgArgs, "--pprof", pprofAddr)
	}
	kgCmd, err := e.RunKgswitch(ctx, "hostB", cfgB, kgArgs...)
	if err != nil {
		return err
	}
	if err := e.StartIperf3Server(ctx, "vm"); err != nil {
		return err
	}
	hoa := lab.HoA.String()
	if _, err := e.WaitReachable(ctx, "cn", hoa, 20*time.Second); err != nil {
		return err
	}
	procs := map[string]int{"labha": haCmd.Process.Pid, "kgswitch(hostB)": kgCmd.Process.Pid}
	for _, h := range []string{"hostA", "hostB"} {
		if pids, err := l.OVS(h).DaemonPIDs(); err == nil {
			procs["ovs-vswitchd("+h+")"] = pids["ovs-vswitchd"]
		}
	}

	step("the cost of one user-space process in a round trip, on this machine")
	if r.Wakeup, err = wakeupFloor(ctx, e, min(pings, 500)); err != nil {
		return fmt.Errorf("wake-up floor: %w", err)
	}
	step("  ping answered by the kernel %.0f µs, by a woken process %.0f µs: %+.0f µs per process",
		r.Wakeup.KernelEchoMedianUs, r.Wakeup.UserEchoMedianUs, r.Wakeup.PerProcessUs)

	step("(a) guest at home on hostA: OVS alone")
	if r.Home, err = measurePath(ctx, e, secs, pings, procs, nil); err != nil {
		return fmt.Errorf("path (a): %w", err)
	}

	step("moving the guest to hostB")
	if err := l.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		return err
	}
	if _, err := e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 20*time.Second); err != nil {
		return err
	}
	if _, err := e.WaitReachable(ctx, "cn", hoa, 60*time.Second); err != nil {
		return err
	}
	// Until hostA's departure cover ends, the home router may still send to
	// the guest's MAC and hostA relays: wait for the steady path.
	// Each try pings the guest: traffic the cover relays keeps it on.
	if err := wait.Until(ctx, 90*time.Second, 0, func() error {
		st, err := e.Status(ctx, "hostA", lab.GuestPort)
		if err != nil || st.Location == "departed" {
			e.Ping(ctx, "cn", hoa, 1)
			return fmt.Errorf("hostA still covers the departed guest (%+v, %v)", st, err)
		}
		return nil
	}); err != nil {
		return err
	}
	if hold {
		step("lab %s held (dir %s); Ctrl-C ends it", l.ID, l.Dir)
		<-ctx.Done()
		return errors.New("held lab ended")
	}
	step("idle for 5 s: the daemons' CPU with nothing to forward")
	procsIdle := map[string]int{"kgswitch": kgCmd.Process.Pid, "labha": haCmd.Process.Pid}
	before := usages(procsIdle)
	time.Sleep(5 * time.Second)
	after := usages(procsIdle)
	r.Kgswitch.IdleCPUPercent = math.Round((after["kgswitch"]-before["kgswitch"]).Seconds()/5*1000) / 10
	r.HomeAgent.IdleCPUPercent = math.Round((after["labha"]-before["labha"]).Seconds()/5*1000) / 10
	idle, err := scenario.Usage(kgCmd.Process.Pid)
	if err != nil {
		return err
	}
	haIdle, _ := scenario.Usage(haCmd.Process.Pid)
	r.Kgswitch.IdleRSSMiB = mib(idle.RSSKiB)
	r.HomeAgent.IdleRSSMiB = mib(haIdle.RSSKiB)

	step("(b) guest on hostB: Home Agent and kgswitch")
	var cost loadCost
	if r.Foreign, err = measurePath(ctx, e, secs, pings, procs, &cost); err != nil {
		return fmt.Errorf("path (b): %w", err)
	}
	if cost.bytes > 0 {
		r.Kgswitch.CPUSecondsPerGB = cost.cpu["kgswitch(hostB)"].Seconds() / (float64(cost.bytes) / 1e9)
		r.HomeAgent.CPUSecondsPerGB = cost.cpu["labha"].Seconds() / (float64(cost.bytes) / 1e9)
	}
	r.Kgswitch.ForwardedBytes, r.HomeAgent.ForwardedBytes = cost.bytes, cost.bytes
	r.Kgswitch.CPUSeconds = cost.cpu["kgswitch(hostB)"].Seconds()
	r.HomeAgent.CPUSeconds = cost.cpu["labha"].Seconds()
	if u, err := scenario.Usage(kgCmd.Process.Pid); err == nil {
		r.Kgswitch.LoadPeakRSSMiB = mib(u.HWMKiB)
	}
	if u, err := scenario.Usage(haCmd.Process.Pid); err == nil {
		r.HomeAgent.LoadPeakRSSMiB = mib(u.HWMKiB)
	}
	r.ratios()
	r.breakdown()
	step("kgswitch's share of the round trip: captures on hostB during %d more pings", pings)
	if err := kgswitchLatency(ctx, e, pings, &r.Breakdown); err != nil {
		return fmt.Errorf("latency breakdown: %w", err)
	}
	step("  inside kgswitch: decapsulation %.0f µs, encapsulation %.0f µs (medians of %d)",
		r.Breakdown.DecapMedianUs, r.Breakdown.EncapMedianUs, r.Breakdown.Samples)

	step("memory: %d VMs configured on hostB, making %d active", vms, active)
	if r.Memory, err = thousandVMs(ctx, e, kgCmd.Process.Pid, extra, vms, active); err != nil {
		return fmt.Errorf("memory figure: %w", err)
	}

	if slices.Contains(kgArgs, pprofAddr) {
		top, err := l.Command(ctx, "hostB", "go", "tool", "pprof", "-top", "-nodecount=25", "-sample_index=inuse_space",
			"http://"+pprofAddr+"/debug/pprof/heap").Output()
		if err == nil {
			r.HeapProfile = string(top)
		}
	}
	if slices.Contains(kgArgs, profile) {
		// The profile is written when kgswitch exits.
		kgCmd.Process.Signal(syscall.SIGTERM)
		kgCmd.Wait()
		top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", bins.Kgswitch, profile).Output()
		if err == nil {
			r.Profile = string(top)
		}
	}
	return nil
}

func mib(kib int) float64 { return math.Round(float64(kib)/1024*10) / 10 }

// loadCost is what path (b)'s throughput runs cost the daemons.
type loadCost struct {
	cpu   map[string]time.Duration
	bytes uint64
}

// measurePath measures the path from cn to the guest as it is now. With
// cost, it adds up each process's CPU and kgswitch's forwarded bytes over
// the throughput runs.
func measurePath(ctx context.Context, e *scenario.Env, secs, pings int, procs map[string]int, cost *loadCost) (PathFigures, error) {
	var p PathFigures
	hoa := lab.HoA.String()
	t := strconv.Itoa(secs)
	runs := []struct {
		name string
		dst  *scenario.BenchIperfResult
		args []string
	}{
		{"TCP, 1 stream", &p.TCP1, []string{"-t", t}},
		{"TCP, 4 streams", &p.TCP4, []string{"-t", t, "-P", "4"}},
		{"UDP, 64-byte payload", &p.UDP64, []string{"-t", t, "-u", "-l", "64", "-b", "0"}},
	}
	if cost != nil {
		cost.cpu = map[string]time.Duration{}
	}
	for _, run := range runs {
		before := usages(procs)
		fwdBefore := forwarded(ctx, e)
		busyBefore, _ := machineBusy()
		dropsBefore := socketDrops(ctx, e)
		began := time.Now()
		res, err := e.BenchIperf(ctx, "cn", hoa, run.args...)
		if err != nil {
			return p, err
		}
		wall := time.Since(began)
		after := usages(procs)
		busyAfter, _ := machineBusy()
		*run.dst = res
		if run.dst == &p.TCP4 {
			p.CPU = map[string]float64{}
			for name := range procs {
				p.CPU[name] = math.Round((after[name]-before[name]).Seconds()/wall.Seconds()*100) / 100
			}
			busy := (busyAfter - busyBefore).Seconds()
			p.MachineCores = math.Round(busy/wall.Seconds()*100) / 100
			if gb := res.BitsPerSecond / 8 * float64(secs) / 1e9; gb > 0 {
				p.MachineCPUSecondsPerGB = math.Round(busy/gb*100) / 100
			}
			p.SocketDrops = map[string]uint64{}
			for k, n := range socketDrops(ctx, e) {
				if d := n - dropsBefore[k]; n >= dropsBefore[k] && d > 0 {
					p.SocketDrops[k] = d
				}
			}
		}
		if cost != nil {
			for name := range procs {
				cost.cpu[name] += after[name] - before[name]
			}
			cost.bytes += forwarded(ctx, e) - fwdBefore
		}
		step("  %s: %.0f Mbit/s%s", run.name, res.BitsPerSecond/1e6, udpNote(res))
	}
	rtts, err := e.PingRTTs(ctx, "cn", hoa, pings, 10*time.Millisecond)
	if err != nil {
		return p, err
	}
	p.Answered = len(rtts)
	p.RTTMeanUs, p.RTTP99Us = meanP99(rtts)
	step("  RTT: mean %.0f µs, p99 %.0f µs (%d/%d answered)", p.RTTMeanUs, p.RTTP99Us, len(rtts), pings)
	return p, nil
}

func udpNote(r scenario.BenchIperfResult) string {
	if r.Packets == 0 {
		return ""
	}
	return fmt.Sprintf(", %.0f packets/s received (%d of %d lost)", r.PacketsPerSecond, r.Lost, r.Packets)
}

// forwarded is what kgswitch on hostB has tunnelled so far, both ways, in
// inner-packet bytes; 0 where it serves nothing.
func forwarded(ctx context.Context, e *scenario.Env) uint64 {
	st, err := e.Status(ctx, "hostB", lab.GuestPort)
	if err != nil {
		return 0
	}
	return st.ToTunnelBytes + st.FromTunnelBytes
}

func usages(procs map[string]int) map[string]time.Duration {
	m := map[string]time.Duration{}
	for name, pid := range procs {
		if u, err := scenario.Usage(pid); err == nil {
			m[name] = u.CPU
		}
	}
	return m
}

func meanP99(d []time.Duration) (mean, p99 float64) {
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	mean = float64(sum.Microseconds()) / float64(len(s))
	i := int(math.Ceil(0.99*float64(len(s)))) - 1
	return math.Round(mean), float64(s[max(i, 0)].Microseconds())
}

func (r *Results) ratios() {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return math.Round(a/b*1000) / 1000
	}
	r.Ratios = Ratios{
		TCP1:      div(r.Foreign.TCP1.BitsPerSecond, r.Home.TCP1.BitsPerSecond),
		TCP4:      div(r.Foreign.TCP4.BitsPerSecond, r.Home.TCP4.BitsPerSecond),
		UDP64:     div(r.Foreign.UDP64.PacketsPerSecond, r.Home.UDP64.PacketsPerSecond),
		RTTAddUs:  r.Foreign.RTTMeanUs - r.Home.RTTMeanUs,
		RTTAddP99: r.Foreign.RTTP99Us - r.Home.RTTP99Us,
	}
}

// breakdown derives kgswitch's share of path (b)'s CPU from the 4-stream runs.
func (r *Results) breakdown() {
	kg := r.Foreign.CPU["kgswitch(hostB)"]
	if r.Foreign.MachineCores > 0 {
		r.Breakdown.KgswitchCPUShare = math.Round(kg/r.Foreign.MachineCores*1000) / 1000
	}
	without := func(cores float64) float64 {
		if rest := r.Foreign.MachineCores - cores; rest > 0 {
			return math.Round(r.Ratios.TCP4*r.Foreign.MachineCores/rest*1000) / 1000
		}
		return 0
	}
	r.Breakdown.RatioIfKgswitchFree = without(kg)
	r.Breakdown.RatioIfHomeAgentFree = without(r.Foreign.CPU["labha"])
}

// machineBusy is the CPU time the whole machine has spent busy since boot:
// the first line of /proc/stat without idle and iowait.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is in user already
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ
}

var ssDropRe = regexp.MustCompile(`users:\(\("([^"]+)",pid=\d+,fd=(\d+)\)\).*,d(\d+)\)`)

// socketDrops reads the drop counter of every packet socket in the lab's
// namespaces on path (b), keyed "node process fd".
func socketDrops(ctx context.Context, e *scenario.Env) map[string]uint64 {
	m := map[string]uint64{}
	for _, node := range []string{"hostA", "hostB", "ha"} {
		out, err := e.Lab.Command(ctx, node, "ss", "-0", "-a", "-m", "-p", "-n").Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if mm := ssDropRe.FindStringSubmatch(line); mm != nil {
				n, _ := strconv.ParseUint(mm[3], 10, 64)
				m[node+" "+mm[1]+" fd"+mm[2]] = n
			}
		}
	}
	return m
}

// kgswitchLatency pings the guest on path (b) while capturing on hostB's
// internal port and bridge port, and times each echo inside kgswitch.
func kgswitchLatency(ctx context.Context, e *scenario.Env, pings int, b *Breakdown) error {
	kgs, err := e.StartCaptureFilter(ctx, "hostB", "kgs0", "latency-kgs0", "ip6")
	if err != nil {
		return err
	}
	br, err := e.StartCaptureFilter(ctx, "hostB", lab.Bridge, "latency-br0", "ip6 proto 41")
	if err != nil {
		kgs.Stop()
		return err
	}
	_, perr := e.PingRTTs(ctx, "cn", lab.HoA.String(), pings, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	kgs.Stop()
	br.Stop()
	if perr != nil {
		return perr
	}
	in, err := echoTimes(ctx, kgs)
	if err != nil {
		return err
	}
	out, err := echoTimes(ctx, br)
	if err != nil {
		return err
	}
	var decap, encap []time.Duration
	for seq, t := range in.tunnelled {
		if d, ok := in.request[seq]; ok && d > t {
			decap = append(decap, d-t)
		}
	}
	for seq, t := range in.reply {
		if o, ok := out.tunnelledReply[seq]; ok && o > t {
			encap = append(encap, o-t)
		}
	}
	if len(decap) < pings/2 || len(encap) < pings/2 {
		return fmt.Errorf("only %d decapsulations and %d encapsulations of %d pings seen in the captures", len(decap), len(encap), pings)
	}
	b.Samples = min(len(decap), len(encap))
	b.DecapMedianUs, b.DecapP99Us = medianP99(decap)
	b.EncapMedianUs, b.EncapP99Us = medianP99(encap)
	return nil
}

// echoes are the capture times of ICMPv6 echoes by sequence number.
type echoes struct {
	tunnelled, request, reply, tunnelledReply map[int]time.Duration
}

// echoTimes reads a capture's echo requests and replies, tunnelled or not.
func echoTimes(ctx context.Context, c *scenario.Capture) (echoes, error) {
	e := echoes{map[int]time.Duration{}, map[int]time.Duration{}, map[int]time.Duration{}, map[int]time.Duration{}}
	out, err := c.Tshark(ctx, "-Y", "icmpv6.type == 128 || icmpv6.type == 129", "-T", "fields",
		"-e", "frame.time_epoch", "-e", "ipv6.nxt", "-e", "icmpv6.type", "-e", "icmpv6.echo.sequence_number")
	if err != nil {
		return e, err
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			continue
		}
		secs, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		seq, err := strconv.Atoi(last(f[3]))
		if err != nil {
			continue
		}
		t := time.Duration(secs * 1e9)
		tunnelled := strings.HasPrefix(f[1], "41")
		switch typ := last(f[2]); {
		case typ == "128" && tunnelled:
			e.tunnelled[seq] = t
		case typ == "128":
			e.request[seq] = t
		case typ == "129" && tunnelled:
			e.tunnelledReply[seq] = t
		case typ == "129":
			e.reply[seq] = t
		}
	}
	return e, nil
}

// last is the last of tshark's comma-separated values (the inner header's,
// in a tunnelled packet).
func last(s string) string { return s[strings.LastIndexByte(s, ',')+1:] }

func medianP99(d []time.Duration) (median, p99 float64) {
	s := slices.Clone(d)
	slices.Sort(s)
	us := func(x time.Duration) float64 { return math.Round(float64(x.Nanoseconds())/100) / 10 }
	return us(s[len(s)/2]), us(s[max(int(math.Ceil(0.99*float64(len(s))))-1, 0)])
}

// thousandVMs adds OVS ports for active-1 of the extra guests to hostB (the
// lab guest is the first active one), activates them, waits until the Home
// Agent bound them and reads kgswitch's memory.
func thousandVMs(ctx context.Context, e *scenario.Env, pid int, extra []lab.Guest, vms, active int) (MemoryFigures, error) {
	m := MemoryFigures{Configured: vms}
	n := min(active-1, len(extra))
	ovs := e.Lab.OVS("hostB")
	var args []string
	for _, g := range extra[:n] {
		args = append(args, "--", "add-port", ovs.Bridge, g.Port, "--", "set", "Interface", g.Port, "type=internal")
	}
	if n > 0 {
		if out, err := ovs.Vsctl(ctx, args[1:]...); err != nil {
			return m, fmt.Errorf("add %d ports: %v: %s", n, err, out)
		}
	}
	// Each port is prepared when it appears; activate it as a hook would.
	for _, g := range extra[:n] {
		if err := wait.Until(ctx, 30*time.Second, 100*time.Millisecond, func() error {
			_, err := e.Kgswitch(ctx, "hostB", "activate", g.Port)
			if err != nil {
				return fmt.Errorf("activate %s: %w", g.Port, err)
			}
			return nil
		}); err != nil {
			return m, err
		}
	}
	// One status call for all of them: it costs kgswitch a flow dump per
	// foreign port.
	if err := wait.Until(ctx, 90*time.Second, time.Second, func() error {
		bound, err := boundPorts(ctx, e)
		if err != nil || bound < n+1 {
			return fmt.Errorf("%d of %d guests bound (%v)", bound, n+1, err)
		}
		m.Active = bound
		return nil
	}); err != nil {
		return m, err
	}
	// A burst of traffic through the lab guest with all of them bound.
	if _, err := e.BenchIperf(ctx, "cn", lab.HoA.String(), "-t", "2", "-P", "4"); err != nil {
		return m, err
	}
	u, err := scenario.Usage(pid)
	if err != nil {
		return m, err
	}
	m.RSSMiB, m.PeakRSSMiB = mib(u.RSSKiB), mib(u.HWMKiB)
	return m, nil
}

// boundPorts counts the guests bound on hostB.
func boundPorts(ctx context.Context, e *scenario.Env) (int, error) {
	out, err := e.Kgswitch(ctx, "hostB", "status", "--json")
	if err != nil {
		return 0, err
	}
	var st []scenario.PortStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return 0, err
	}
	n := 0
	for _, p := range st {
		if p.Location == "foreign" && p.BindingState == "bound" {
			n++
		}
	}
	return n, nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op(?:\s+([0-9.]+) MB/s)?\s+([0-9.]+) B/op\s+([0-9.]+) allocs/op`)

func goBenchmarks(ctx context.Context) ([]GoBench, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "Encap|Decap|SegmentTCP", "-benchmem", "-count", "1", "./datapath/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %v\n%s", err, out)
	}
	var bs []GoBench
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
		bs = append(bs, GoBench{Name: m[1], NsPerOp: f(m[2]), MBPerSec: f(m[3]), BytesPerOp: f(m[4]), AllocsPerOp: f(m[5])})
	}
	if len(bs) == 0 {
		return nil, errors.New("no benchmark results in go test's output:\n" + string(out))
	}
	return bs, nil
}

func hostInfo() HostInfo {
	h := HostInfo{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	return h
}

// evaluate holds the figures against the performance goals: throughput and
// packet-rate ratios, added RTT, allocations per packet and memory with many
// VMs.
func (r *Results) evaluate() {
	maxAllocs := 0.0
	for _, b := range r.GoBench {
		if strings.HasPrefix(b.Name, "BenchmarkEncap") || strings.HasPrefix(b.Name, "BenchmarkDecap") {
			maxAllocs = max(maxAllocs, b.AllocsPerOp)
		}
	}
	r.Goals = []Goal{
		{Name: "throughput ratio b/a, TCP 1 stream", Want: ">= 0.9", Got: r.Ratios.TCP1, Met: r.Ratios.TCP1 >= 0.9},
		{Name: "throughput ratio b/a, TCP 4 streams", Want: ">= 0.9", Got: r.Ratios.TCP4, Met: r.Ratios.TCP4 >= 0.9},
		{Name: "packet rate ratio b/a, UDP 64 bytes", Want: ">= 0.9", Got: r.Ratios.UDP64, Met: r.Ratios.UDP64 >= 0.9},
		{Name: "added RTT, mean (µs)", Want: "<= 50", Got: r.Ratios.RTTAddUs, Met: r.Ratios.RTTAddUs <= 50},
		{Name: "allocations per packet (encap, decap)", Want: "0", Got: maxAllocs, Met: maxAllocs == 0},
		{Name: "kgswitch RSS, 1000 VMs configured (MiB)", Want: "<= 30 MB", Got: r.Memory.PeakRSSMiB, Met: r.Memory.PeakRSSMiB*1.048576 <= 30},
	}
}

func (r *Results) print(w *os.File) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "\nkgswitch benchmark, %s, %d CPUs, kernel %s, %s\n\n", r.Started.Format(time.RFC3339), r.Host.CPUs, r.Host.Kernel, r.Host.Go)
	fmt.Fprintln(tw, "figure\t(a) home, OVS\t(b) foreign, HA+kgswitch\tb/a or b-a\t")
	fmt.Fprintf(tw, "TCP 1 stream (Mbit/s)\t%.0f\t%.0f\t%.3f\t\n", r.Home.TCP1.BitsPerSecond/1e6, r.Foreign.TCP1.BitsPerSecond/1e6, r.Ratios.TCP1)
	fmt.Fprintf(tw, "TCP 4 streams (Mbit/s)\t%.0f\t%.0f\t%.3f\t\n", r.Home.TCP4.BitsPerSecond/1e6, r.Foreign.TCP4.BitsPerSecond/1e6, r.Ratios.TCP4)
	fmt.Fprintf(tw, "UDP 64 B received (packets/s)\t%.0f\t%.0f\t%.3f\t\n", r.Home.UDP64.PacketsPerSecond, r.Foreign.UDP64.PacketsPerSecond, r.Ratios.UDP64)
	fmt.Fprintf(tw, "RTT mean (µs)\t%.0f\t%.0f\t%+.0f\t\n", r.Home.RTTMeanUs, r.Foreign.RTTMeanUs, r.Ratios.RTTAddUs)
	fmt.Fprintf(tw, "RTT p99 (µs)\t%.0f\t%.0f\t%+.0f\t\n", r.Home.RTTP99Us, r.Foreign.RTTP99Us, r.Ratios.RTTAddP99)
	tw.Flush()

	fmt.Fprintln(w, "\nCPU during TCP 4 streams (cores):")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\t(a)\t(b)\t")
	var names []string
	for n := range r.Foreign.CPU {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t\n", n, r.Home.CPU[n], r.Foreign.CPU[n])
	}
	fmt.Fprintf(tw, "whole machine (busy cores)\t%.2f\t%.2f\t\n", r.Home.MachineCores, r.Foreign.MachineCores)
	fmt.Fprintf(tw, "whole machine (CPU s per GB to the guest)\t%.1f\t%.1f\t\n", r.Home.MachineCPUSecondsPerGB, r.Foreign.MachineCPUSecondsPerGB)
	tw.Flush()

	fmt.Fprintln(w, "\nkgswitch's share of path (b):")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "time inside kgswitch, decapsulation (µs, median / p99)\t%.0f / %.0f\t\n", r.Breakdown.DecapMedianUs, r.Breakdown.DecapP99Us)
	fmt.Fprintf(tw, "time inside kgswitch, encapsulation (µs, median / p99)\t%.0f / %.0f\t\n", r.Breakdown.EncapMedianUs, r.Breakdown.EncapP99Us)
	fmt.Fprintf(tw, "one woken process in a round trip on this machine (µs, median)\t%+.0f\t\n", r.Wakeup.PerProcessUs)
	fmt.Fprintf(tw, "kgswitch's share of the machine's CPU, TCP 4 streams\t%.0f %%\t\n", r.Breakdown.KgswitchCPUShare*100)
	fmt.Fprintf(tw, "TCP 4-stream ratio b/a if kgswitch cost nothing (at most)\t%.2f\t\n", r.Breakdown.RatioIfKgswitchFree)
	fmt.Fprintf(tw, "TCP 4-stream ratio b/a if the lab Home Agent cost nothing (at most)\t%.2f\t\n", r.Breakdown.RatioIfHomeAgentFree)
	tw.Flush()
	if len(r.Foreign.SocketDrops)+len(r.Home.SocketDrops) > 0 {
		fmt.Fprintln(w, "\nFrames dropped by full packet-socket queues during TCP 4 streams:")
		keys := slices.Sorted(maps.Keys(r.Foreign.SocketDrops))
		for k := range r.Home.SocketDrops {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "socket\t(a)\t(b)\t")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%d\t%d\t\n", k, r.Home.SocketDrops[k], r.Foreign.SocketDrops[k])
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\nDaemons on path (b):")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "daemon\tCPU s/GB\tCPU idle (% of a core)\tRSS idle (MiB)\tpeak RSS under load (MiB)\t")
	fmt.Fprintf(tw, "kgswitch\t%.2f\t%.1f\t%.1f\t%.1f\t\n", r.Kgswitch.CPUSecondsPerGB, r.Kgswitch.IdleCPUPercent, r.Kgswitch.IdleRSSMiB, r.Kgswitch.LoadPeakRSSMiB)
	fmt.Fprintf(tw, "lab Home Agent\t%.2f\t%.1f\t%.1f\t%.1f\t\n", r.HomeAgent.CPUSecondsPerGB, r.HomeAgent.IdleCPUPercent, r.HomeAgent.IdleRSSMiB, r.HomeAgent.LoadPeakRSSMiB)
	tw.Flush()
	fmt.Fprintf(w, "kgswitch with %d VMs configured, %d active: RSS %.1f MiB, peak %.1f MiB\n",
		r.Memory.Configured, r.Memory.Active, r.Memory.RSSMiB, r.Memory.PeakRSSMiB)

	fmt.Fprintln(w, "\nGo benchmarks (per packet; SegmentTCP per 64 KiB frame):")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\tns/op\tMB/s\tB/op\tallocs/op\t")
	for _, b := range r.GoBench {
		fmt.Fprintf(tw, "%s\t%.1f\t%.0f\t%.0f\t%.0f\t\n", b.Name, b.NsPerOp, b.MBPerSec, b.BytesPerOp, b.AllocsPerOp)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nGoals (printed, not asserted; see bench/README.md for what limits them):")
	for _, g := range r.Goals {
		mark := "MET    "
		if !g.Met {
			mark = "NOT MET"
		}
		fmt.Fprintf(w, "  %s  %-42s want %-8s got %g\n", mark, g.Name, g.Want, g.Got)
	}
	if r.Profile != "" {
		fmt.Fprintf(w, "\nkgswitch CPU profile over the run (top):\n%s", r.Profile)
	}
	if r.HeapProfile != "" {
		fmt.Fprintf(w, "\nkgswitch heap in use with %d VMs configured, %d active (top):\n%s", r.Memory.Configured, r.Memory.Active, r.HeapProfile)
	}
}

func (r *Results) write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, r.Started.Format("20060102T150405Z")+".json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}
