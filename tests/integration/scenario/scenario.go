// Package scenario runs kgswitch in the netns lab: it builds the binaries,
// starts the lab Home Agent and one kgswitch per host, and provides the probes
// (ping streams, TCP streams, captures) that both the integration tests and
// `make demo` use, so the demo shows exactly what the tests assert.
package scenario

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vswitch "github.com/kgswitch/kgswitch/switch"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// Binaries are the programs a scenario runs inside the lab.
type Binaries struct {
	Kgswitch, LabHA, TCPCheck string
}

// Build compiles kgswitch, the lab Home Agent and tcpcheck into dir.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{
		Kgswitch: filepath.Join(dir, "kgswitch"),
		LabHA:    filepath.Join(dir, "labha"),
		TCPCheck: filepath.Join(dir, "tcpcheck"),
	}
	for out, pkg := range map[string]string{
		b.Kgswitch: "./cmd/kgswitch",
		b.LabHA:    "./tests/integration/cmd/labha",
		b.TCPCheck: "./tests/integration/cmd/tcpcheck",
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("go build %s: %v\n%s", pkg, err, o)
		}
	}
	return b, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find the kgswitch module (run from inside the repository): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Env is a lab with kgswitch's binaries at hand.
type Env struct {
	Lab *lab.Lab
	Bin Binaries

	mu sync.Mutex
	// homeAgents are the lab Home Agents started, by node, and the flags
	// beyond the lab's each was started with.
	homeAgents    map[string]*exec.Cmd
	homeAgentArgs map[string][]string
	// BindingLifetime, when not zero, is the binding_lifetime WriteConfig
	// puts in kgswitch's configuration (kgswitch's default otherwise).
	BindingLifetime time.Duration
}

// HALog is where the lab Home Agent's JSON event lines go.
func (e *Env) HALog() string { return e.HALogOf(lab.HomeNet) }

// HALogOf is where the Home Agent of home network hn logs (HALog for
// lab.HomeNet).
func (e *Env) HALogOf(hn lab.HomeNetwork) string {
	if hn.HANode == lab.HomeNet.HANode {
		return filepath.Join(e.Lab.Dir, "labha.log")
	}
	return filepath.Join(e.Lab.Dir, "labha-"+hn.HANode+".log")
}

// StartHomeAgent runs the lab Home Agent in the ha namespace.
func (e *Env) StartHomeAgent(ctx context.Context) error {
	return e.StartHomeAgentOf(ctx, lab.HomeNet)
}

// StartHomeAgentOf runs the lab Home Agent of home network hn in its
// namespace (lab.HomeNet2's needs a lab built with ExtraGuests), with extra
// flags after the lab's (see homeAgentArgv).
func (e *Env) StartHomeAgentOf(ctx context.Context, hn lab.HomeNetwork, extra ...string) error {
	cmd, err := e.Lab.Start(ctx, hn.HANode, e.HALogOf(hn), e.homeAgentArgv(hn, extra)...)
	if err == nil {
		e.mu.Lock()
		if e.homeAgents == nil {
			e.homeAgents = map[string]*exec.Cmd{}
		}
		e.homeAgents[hn.HANode] = cmd
		if e.homeAgentArgs == nil {
			e.homeAgentArgs = map[string][]string{}
		}
		e.homeAgentArgs[hn.HANode] = extra
		e.mu.Unlock()
	}
	return err
}

// homeAgentArgv is the lab Home Agent's command line for hn: its link,
// address and prefix, and on a home link with IPv4 (lab.HomeNet) the IPv4
// home subnet, so that it carries IPv4 home addresses (RFC 5555). A Home
// Agent with it behaves as one without towards a mobile node that asks for
// no IPv4 home address, so every test gets it.
func (e *Env) homeAgentArgv(hn lab.HomeNetwork, extra []string) []string {
	argv := []string{e.Bin.LabHA, "-iface", "eth0", "-addr", hn.HAAddr.String(), "-prefix", hn.Prefix.String()}
	if hn.Prefix4.IsValid() {
		argv = append(argv, "-ipv4-prefix", hn.Prefix4.String())
	}
	return append(argv, extra...)
}

// HAEvent is one JSON line of the lab Home Agent's log: Msg is one of the
// labha Event constants, and the other fields are set where the event has
// them.
type HAEvent struct {
	Time   time.Time `json:"time"`
	Msg    string    `json:"msg"`
	HoA    string    `json:"hoa"`
	CoA    string    `json:"coa"`
	OldCoA string    `json:"old_coa"`
	Seq    uint16    `json:"seq"`
	// Status is the Binding Acknowledgement's status, for ba-sent.
	Status   int    `json:"status"`
	Lifetime uint16 `json:"lifetime"`
	Reason   string `json:"reason"`
	// ESPSeq is the ESP sequence number of a Binding Update received or an
	// Ack sent under ESP, 0 in clear; Detail is the error behind a
	// bu-dropped whose Reason is one of labha's Reason constants.
	ESPSeq uint32 `json:"esp_seq"`
	Detail string `json:"detail"`
	// LifetimeS and Expires are the binding's grant in seconds and its end,
	// for the binding cache events.
	LifetimeS int       `json:"lifetime_s"`
	Expires   time.Time `json:"expires"`
	// HoA4 is the IPv4 home address an event is about (Dual-Stack MIPv6)
	// and IPv4Status the IPv4 Address Acknowledgement's status, for
	// ba-sent and the binding cache events; nil when the Ack carried none.
	HoA4       string `json:"hoa4"`
	IPv4Status *int   `json:"ipv4_status"`
}

// HAEvents reads the lab Home Agent's log so far, in order. Lines that are not
// JSON (the Home Agent's last words on stderr) are skipped.
func (e *Env) HAEvents() ([]HAEvent, error) {
	b, err := os.ReadFile(e.HALog())
	if err != nil {
		return nil, err
	}
	var evs []HAEvent
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var ev HAEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			// The Home Agent may be writing this line right now.
			continue
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// ControlSocket is kgswitch's control socket on host.
func (e *Env) ControlSocket(host string) string {
	return filepath.Join(e.Lab.Dir, host+"-kgswitch.sock")
}

// KgswitchLog is where kgswitch on host logs.
func (e *Env) KgswitchLog(host string) string {
	return filepath.Join(e.Lab.Dir, host+"-kgswitch.log")
}

// WriteConfig writes kgswitch's TOML configuration for host; with declareVM the
// guest's port is declared in it (the port need not exist yet).
func (e *Env) WriteConfig(host string, declareVM bool) (string, error) {
	c := Config{Homes: []lab.HomeNetwork{lab.HomeNet}}
	if declareVM {
		c.Guests = []lab.Guest{lab.VM}
	}
	return e.WriteConfigWith(host, c)
}

// Config is what WriteConfigWith declares beyond the host's own settings.
type Config struct {
	// Homes are the [[home_network]] tables; when empty, those of Guests,
	// in order of first appearance.
	Homes []lab.HomeNetwork
	// Guests are the [[vm]] tables (port, home address, MAC); a guest with
	// no Port is declared by its MAC only.
	Guests []lab.Guest
	// AdvertiseInterval, when not zero, adds a [home_network.advertise]
	// table with this interval (and kgswitch's default lifetimes) to every
	// home network, so kgswitch repeats a Router Advertisement of the home
	// prefix to the network's guests away from home.
	AdvertiseInterval time.Duration
	// Advertise, when not nil, is the whole [home_network.advertise] table
	// (it wins over AdvertiseInterval).
	Advertise *Advertise
	// IPv4 declares the IPv4 side (RFC 5555): an [home_network.ipv4] table
	// with the lab DHCPv4 server's values for every home network that has
	// an IPv4 subnet, and ipv4_address for every guest with an IPv4 home
	// address. GatewayMAC, when set, is the table's gateway_mac.
	IPv4       bool
	GatewayMAC net.HardwareAddr
}

// WriteConfigWith writes kgswitch's TOML configuration for host with the
// home networks and guests of c, and returns its path.
func (e *Env) WriteConfigWith(host string, c Config) (string, error) {
	ovs := e.Lab.OVS(host)
	coa := lab.HostAddr(host)
	if ovs == nil || !coa.IsValid() {
		return "", fmt.Errorf("write kgswitch config: %q is not a lab host", host)
	}
	homes := c.Homes
	if len(homes) == 0 {
		for _, g := range c.Guests {
			if !slices.Contains(homes, g.Home) {
				homes = append(homes, g.Home)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "bridge = %q\novs_rundir = %q\nuplink = %q\ncare_of_address = %q\ncontrol_socket = %q\n",
		ovs.Bridge, ovs.RunDir, lab.Uplink, coa.String(), e.ControlSocket(host))
	if ovs.UplinkBridge != "" {
		fmt.Fprintf(&b, "uplink_bridge = %q\n", ovs.UplinkBridge)
	}
	if ovs.CareOfNIC != "" {
		fmt.Fprintf(&b, "care_of_interface = %q\n", ovs.CareOfNIC)
	}
	if e.BindingLifetime != 0 {
		fmt.Fprintf(&b, "binding_lifetime = %q\n", e.BindingLifetime.String())
	}
	for _, hn := range homes {
		fmt.Fprintf(&b, "\n[[home_network]]\nprefix = %q\nhome_agent = %q\nrouter_link_local = %q\nrouter_addresses = [%q]\n",
			hn.Prefix.String(), hn.HAAddr.String(), hn.RouterLinkLocal.String(), hn.RouterAddr.String())
		switch adv := c.Advertise; {
		case adv != nil:
			fmt.Fprintf(&b, "\n[home_network.advertise]\ninterval = %q\nrouter_lifetime = %q\nvalid_lifetime = %q\npreferred_lifetime = %q\n",
				adv.Interval.String(), adv.RouterLifetime.String(), adv.ValidLifetime.String(), adv.PreferredLifetime.String())
		case c.AdvertiseInterval != 0:
			fmt.Fprintf(&b, "\n[home_network.advertise]\ninterval = %q\n", c.AdvertiseInterval.String())
		}
		if c.IPv4 && hn.Prefix4.IsValid() {
			fmt.Fprintf(&b, "\n[home_network.ipv4]\nsubnet = %q\ngateway = %q\ndhcp_server = %q\ndns_servers = [%q]\nlease_time = %q\ndomain = %q\n",
				hn.Prefix4.String(), hn.RouterAddr4.String(), lab.DHCP4ServerID.String(), lab.DHCP4DNS.String(),
				e.Lab.DHCP4Lease().String(), lab.DHCP4Domain)
			if c.GatewayMAC != nil {
				fmt.Fprintf(&b, "gateway_mac = %q\n", c.GatewayMAC.String())
			}
		}
	}
	for _, g := range c.Guests {
		// A guest without a port is found by its MAC alone (OVSDB's
		// attached-mac), as a libvirt guest whose tap's name differs per host.
		b.WriteString("\n[[vm]]\n")
		if g.Port != "" {
			fmt.Fprintf(&b, "port = %q\n", g.Port)
		}
		fmt.Fprintf(&b, "home_address = %q\nmac = %q\n", g.HoA.String(), g.MAC.String())
		if c.IPv4 && g.HoA4.IsValid() {
			fmt.Fprintf(&b, "ipv4_address = %q\n", netip.PrefixFrom(g.HoA4, g.Home.Prefix4.Bits()).String())
		}
	}
	path := filepath.Join(e.Lab.Dir, host+"-kgswitch.toml")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// StartKgswitch runs `kgswitch run` on host with the given configuration,
// logging at debug level, and waits until its control socket answers.
func (e *Env) StartKgswitch(ctx context.Context, host, cfgPath string) error {
	_, err := e.RunKgswitch(ctx, host, cfgPath, "--log-level", "debug")
	return err
}

// RunKgswitch runs `kgswitch run --config cfgPath` with extra flags on host,
// waits until its control socket answers, and returns its process, so a test
// can signal it (`ip netns exec` execs kgswitch in place, so the process is
// kgswitch itself).
func (e *Env) RunKgswitch(ctx context.Context, host, cfgPath string, extra ...string) (*exec.Cmd, error) {
	argv := append([]string{e.Bin.Kgswitch, "run", "--config", cfgPath}, extra...)
	cmd, err := e.Lab.Start(ctx, host, e.KgswitchLog(host), argv...)
	if err != nil {
		return nil, err
	}
	err = wait.Until(ctx, 15*time.Second, 20*time.Millisecond, func() error {
		_, err := e.Kgswitch(ctx, host, "status", "--json")
		if err != nil && !lab.ProcessAlive(cmd.Process.Pid) {
			return wait.Fatal(fmt.Errorf("kgswitch exited: %v", err))
		}
		return err
	})
	if err != nil {
		log, _ := os.ReadFile(e.KgswitchLog(host))
		return nil, fmt.Errorf("kgswitch on %s did not come up: %v\n%s", host, err, log)
	}
	return cmd, nil
}

// Kgswitch runs a kgswitch CLI command against host's daemon.
func (e *Env) Kgswitch(ctx context.Context, host string, args ...string) (string, error) {
	argv := append([]string{e.Bin.Kgswitch}, args...)
	argv = append(argv, "--control", e.ControlSocket(host))
	return e.Lab.Run(ctx, host, argv...)
}

// PortStatus is one VM's line of `kgswitch status --json`.
type PortStatus = vswitch.PortStatus

// Status returns kgswitch's view of port on host.
func (e *Env) Status(ctx context.Context, host, port string) (PortStatus, error) {
	out, err := e.Kgswitch(ctx, host, "status", "--json")
	if err != nil {
		return PortStatus{}, err
	}
	var st []PortStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return PortStatus{}, fmt.Errorf("status output: %v: %s", err, out)
	}
	for _, p := range st {
		if p.Port == port {
			return p, nil
		}
	}
	return PortStatus{}, fmt.Errorf("kgswitch on %s does not know %s", host, port)
}

// WaitBinding waits until port's binding on host reaches state, and returns
// port's last status.
func (e *Env) WaitBinding(ctx context.Context, host, port, state string, timeout time.Duration) (PortStatus, error) {
	var st PortStatus
	err := wait.Until(ctx, timeout, 50*time.Millisecond, func() error {
		var err error
		if st, err = e.Status(ctx, host, port); err != nil {
			return fmt.Errorf("binding of %s on %s: %v", port, host, err)
		}
		if st.BindingState != state {
			return fmt.Errorf("binding of %s on %s is %q (%s), not %q", port, host, st.BindingState, st.Reason, state)
		}
		return nil
	})
	return st, err
}

// Ping sends count pings from node to addr and returns how many were answered.
func (e *Env) Ping(ctx context.Context, node, addr string, count int) (int, error) {
	out, err := e.Lab.Run(ctx, node, "ping", pingFamily(addr), "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", addr)
	m := regexp.MustCompile(`(\d+) received`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s from %s: %v\n%s", addr, node, err, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n, nil
}

// pingFamily is ping's flag for addr's family: the probes of this package
// take an IPv6 or an IPv4 address alike (an IPv6 one may have a zone).
func pingFamily(addr string) string {
	if a, err := netip.ParseAddr(addr); err == nil && a.Is4() {
		return "-4"
	}
	return "-6"
}

// WaitReachable pings addr from node, one echo request per try, until one is
// answered, and returns how long that took; it fails after timeout.
func (e *Env) WaitReachable(ctx context.Context, node, addr string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	err := wait.Until(ctx, timeout, 100*time.Millisecond, func() error {
		n, err := e.Ping(ctx, node, addr, 1)
		if n == 1 {
			return nil
		}
		if err == nil {
			err = errors.New("no answer")
		}
		return fmt.Errorf("%s cannot reach %s (last try: %v)", node, addr, err)
	})
	return time.Since(start), err
}

// PingStream is a background ping at a fixed interval, for counting loss
// during a move.
type PingStream struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	seen map[int]time.Time // icmp_seq -> when the reply arrived
	done chan struct{}
	out  strings.Builder
}

// StartPingStream pings addr (IPv6 or IPv4) from node every interval until
// Stop.
func (e *Env) StartPingStream(ctx context.Context, node, addr string, interval time.Duration) (*PingStream, error) {
	cmd := e.Lab.Command(ctx, node, "ping", pingFamily(addr), "-n", "-D", "-i", fmt.Sprintf("%.3f", interval.Seconds()), addr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &PingStream{cmd: cmd, seen: map[int]time.Time{}, done: make(chan struct{})}
	// Only echo replies count, late ones too: ping prints the errors it is
	// told of ("From ... icmp_seq=N Destination unreachable") with a
	// sequence number as well.
	re := regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from .*icmp_seq=(\d+) `)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			if m := re.FindStringSubmatch(line); m != nil {
				sec, _ := strconv.ParseInt(m[1], 10, 64)
				usec, _ := strconv.ParseInt((m[2] + "000000")[:6], 10, 64)
				seq, _ := strconv.Atoi(m[3])
				p.seen[seq] = time.Unix(sec, usec*1000)
			}
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// PingResult summarises a ping stream.
type PingResult struct {
	Sent, Received, Lost int
	// FirstAfter is when the first reply after the longest gap arrived.
	LongestGap time.Duration
	FirstAfter time.Time
}

// RepliesAfter returns how many replies arrived after t.
func (p *PingStream) RepliesAfter(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, at := range p.seen {
		if at.After(t) {
			n++
		}
	}
	return n
}

// WaitReplies waits until n replies have arrived after since (with the zero
// time: since the stream started), that is, until the probes go through.
func (p *PingStream) WaitReplies(ctx context.Context, since time.Time, n int, timeout time.Duration) error {
	return wait.Until(ctx, timeout, 10*time.Millisecond, func() error {
		if got := p.RepliesAfter(since); got < n {
			return fmt.Errorf("ping stream: %d replies since %s, want %d", got, since.Format("15:04:05.000"), n)
		}
		return nil
	})
}

// WaitSent waits until the stream's figures cover n probes: the reply to
// the nth or a later one has arrived (see Stop).
func (p *PingStream) WaitSent(ctx context.Context, n int, timeout time.Duration) error {
	return wait.Until(ctx, timeout, 10*time.Millisecond, func() error {
		p.mu.Lock()
		highest := 0
		for s := range p.seen {
			highest = max(highest, s)
		}
		p.mu.Unlock()
		if highest < n {
			return fmt.Errorf("ping stream: the highest answered probe is number %d, want %d", highest, n)
		}
		return nil
	})
}

// Stop ends the stream and counts: a sequence number below the highest answered
// one that got no answer is lost (the tail still in flight is not counted).
func (p *PingStream) Stop() PingResult {
	p.cmd.Process.Signal(os.Interrupt)
	p.cmd.Wait()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	var r PingResult
	max := -1
	for s := range p.seen {
		if s > max {
			max = s
		}
	}
	r.Sent = max // icmp_seq starts at 1
	r.Received = len(p.seen)
	r.Lost = r.Sent - r.Received
	var prev time.Time
	for s := 1; s <= max; s++ {
		t, ok := p.seen[s]
		if !ok {
			continue
		}
		if !prev.IsZero() && t.Sub(prev) > r.LongestGap {
			r.LongestGap, r.FirstAfter = t.Sub(prev), t
		}
		prev = t
	}
	return r
}

// Capture is a tcpdump running in a namespace.
type Capture struct {
	cmd  *exec.Cmd
	Path string
}

// StartCapture captures IPv6 on iface in node into a pcap file.
func (e *Env) StartCapture(ctx context.Context, node, iface, name string) (*Capture, error) {
	return e.startCapture(ctx, node, iface, name, "ip6", false)
}

// StartCaptureFilter captures what matches the tcpdump filter expression
// (every frame when it is "") on iface in node into a pcap file. Unlike
// StartCapture it captures in immediate mode: libpcap otherwise hands frames
// over in blocks up to a second late, and the frames of the last block are
// lost when Stop ends tcpdump, so a capture stopped right after the traffic
// it is to prove would miss its end.
func (e *Env) StartCaptureFilter(ctx context.Context, node, iface, name, filter string) (*Capture, error) {
	return e.startCapture(ctx, node, iface, name, filter, true)
}

// StartCaptureReceived is StartCaptureFilter for the frames iface receives
// only (tcpdump -Q in): what reaches a node, without what it sends itself.
func (e *Env) StartCaptureReceived(ctx context.Context, node, iface, name, filter string) (*Capture, error) {
	return e.startCapture(ctx, node, iface, name, filter, true, "-Q", "in")
}

func (e *Env) startCapture(ctx context.Context, node, iface, name, filter string, immediate bool, extra ...string) (*Capture, error) {
	path := filepath.Join(e.Lab.Dir, name+".pcap")
	argv := append([]string{"tcpdump", "-i", iface, "-U", "-n", "-w", path}, extra...)
	if immediate {
		argv = append(argv, "--immediate-mode")
	}
	if filter != "" {
		argv = append(argv, filter)
	}
	cmd := e.Lab.Command(ctx, node, argv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// tcpdump says "listening on" once the capture is live.
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				ready <- nil
				for sc.Scan() {
				}
				return
			}
		}
		ready <- errors.New("tcpdump exited before capturing")
	}()
	select {
	case err := <-ready:
		if err != nil {
			cmd.Wait()
			return nil, err
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		return nil, errors.New("tcpdump did not start within 10s")
	}
	return &Capture{cmd: cmd, Path: path}, nil
}

// Stop ends the capture and flushes the file.
func (c *Capture) Stop() {
	c.cmd.Process.Signal(os.Interrupt)
	c.cmd.Wait()
}

// Tshark runs tshark on the capture with args (e.g. "-Y", filter, "-V").
func (c *Capture) Tshark(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "tshark", append([]string{"-r", c.Path}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("tshark: %v: %s", err, stderr.String())
	}
	return string(out), nil
}

// Count returns how many frames of the capture match the display filter. The
// capture may still run: the frame tcpdump is writing at the moment is not
// counted.
func (c *Capture) Count(ctx context.Context, filter string) (int, error) {
	out, err := c.Tshark(ctx, "-Y", filter, "-T", "fields", "-e", "frame.number")
	if err != nil && !strings.Contains(err.Error(), "cut short in the middle of a packet") {
		return 0, fmt.Errorf("tshark -Y %q: %v\n%s", filter, err, out)
	}
	return len(strings.Fields(out)), nil
}

// WaitCount waits until at least n frames of the capture match the display
// filter: until what a test sent or expects has reached the capture.
func (c *Capture) WaitCount(ctx context.Context, filter string, n int, timeout time.Duration) error {
	return wait.Until(ctx, timeout, 100*time.Millisecond, func() error {
		got, err := c.Count(ctx, filter)
		if err != nil {
			return wait.Fatal(err)
		}
		if got < n {
			return fmt.Errorf("%s holds %d frames matching %q, want %d", filepath.Base(c.Path), got, filter, n)
		}
		return nil
	})
}

// TCPReport is tcpcheck's JSON report.
type TCPReport struct {
	Role       string  `json:"role"`
	Sent       int64   `json:"sent"`
	SentSHA    string  `json:"sent_sha256"`
	Received   int64   `json:"received"`
	ReceivedSH string  `json:"received_sha256"`
	Seconds    float64 `json:"seconds"`
	Error      string  `json:"error"`
}

// StreamIntact checks a TCP echo stream from both ends' reports (client: the
// sender, server: the guest): neither end saw an error (no reset, no
// timeout), the sender sent all total bytes, and both what the guest received
// and what came back to the sender are exactly what was sent, by length and
// SHA-256. It returns nil for an intact stream, else what is wrong.
func StreamIntact(total int64, client, server TCPReport) error {
	var errs []error
	if client.Error != "" || server.Error != "" {
		errs = append(errs, fmt.Errorf("TCP stream broke: sender %q, guest %q", client.Error, server.Error))
	}
	if client.Sent != total || server.Received != client.Sent || server.ReceivedSH != client.SentSHA {
		errs = append(errs, fmt.Errorf("guest received %d bytes (sha256 %.12s), sender sent %d of %d (sha256 %.12s)",
			server.Received, server.ReceivedSH, client.Sent, total, client.SentSHA))
	}
	if client.Received != client.Sent || client.ReceivedSH != client.SentSHA {
		errs = append(errs, fmt.Errorf("sender got %d echoed bytes (sha256 %.12s), sent %d (sha256 %.12s)",
			client.Received, client.ReceivedSH, client.Sent, client.SentSHA))
	}
	return errors.Join(errs...)
}

// TCPStream is a paced TCP echo stream from one node to the guest.
type TCPStream struct {
	lab            *lab.Lab
	port           uint16
	server, client *exec.Cmd
	serverOut      strings.Builder
	clientOut      strings.Builder
}

// StartTCPStream starts tcpcheck serve in the guest and tcpcheck send on node
// towards the guest's home address; total bytes at rate bytes/s.
func (e *Env) StartTCPStream(ctx context.Context, node string, total, rate int64) (*TCPStream, error) {
	return e.StartTCPStreamTo(ctx, node, lab.HoA, total, rate)
}

// StartTCPStreamTo is StartTCPStream towards to, one of the guest's
// addresses: lab.HoA4 for a stream over IPv4 (tcpcheck serve listens on
// both families). A stream over each family may run at once: they use
// ports of their own.
func (e *Env) StartTCPStreamTo(ctx context.Context, node string, to netip.Addr, total, rate int64) (*TCPStream, error) {
	s := &TCPStream{lab: e.Lab, port: 5001}
	if to.Is4() {
		s.port = 5004
	}
	s.server = e.Lab.Command(ctx, "vm", e.Bin.TCPCheck, "serve", "-listen", "[::]:"+strconv.Itoa(int(s.port)))
	s.server.Stdout = &s.serverOut
	stderr, err := s.server.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := s.server.Start(); err != nil {
		return nil, err
	}
	line, _ := bufio.NewReader(stderr).ReadString('\n')
	if !strings.Contains(line, "listening") {
		s.server.Process.Kill()
		s.server.Wait()
		return nil, fmt.Errorf("tcpcheck serve: %q", line)
	}
	s.client = e.Lab.Command(ctx, node, e.Bin.TCPCheck, "send", "-to", netip.AddrPortFrom(to, s.port).String(),
		"-bytes", strconv.FormatInt(total, 10), "-rate", strconv.FormatInt(rate, 10))
	s.client.Stdout = &s.clientOut
	if err := s.client.Start(); err != nil {
		s.server.Process.Kill()
		s.server.Wait()
		return nil, err
	}
	return s, nil
}

// WaitEstablished waits until the guest's end of the stream has its
// connection established: from then on the stream carries data.
func (s *TCPStream) WaitEstablished(ctx context.Context, timeout time.Duration) error {
	return wait.Until(ctx, timeout, 20*time.Millisecond, func() error {
		out, err := s.lab.Run(ctx, "vm", "ss", "-Htn", "state", "established", "sport", "=", ":"+strconv.Itoa(int(s.port)))
		if err != nil || strings.TrimSpace(out) == "" {
			return fmt.Errorf("tcpcheck serve in the guest has no established connection (%v)", err)
		}
		return nil
	})
}

// Wait waits for both ends and returns their reports.
func (s *TCPStream) Wait() (client, server TCPReport, err error) {
	cerr := s.client.Wait()
	serr := s.server.Wait()
	if e := json.Unmarshal([]byte(s.clientOut.String()), &client); e != nil {
		return client, server, fmt.Errorf("tcpcheck send (%v): %q", cerr, s.clientOut.String())
	}
	if e := json.Unmarshal([]byte(s.serverOut.String()), &server); e != nil {
		return client, server, fmt.Errorf("tcpcheck serve (%v): %q", serr, s.serverOut.String())
	}
	return client, server, nil
}
