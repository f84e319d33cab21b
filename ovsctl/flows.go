package ovsctl

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/digitalocean/go-openvswitch/ovs"
)

// Cookie marks every OpenFlow flow kgswitch installs: "kg" (0x6b67) in the
// top 16 bits. Per-VM flows put a port-specific value in the low 48 bits,
// so one VM's flows can be replaced or deleted without touching another's.
const Cookie uint64 = 0x6b67000000000000

// CookieMask selects the bits of a cookie that say "this flow is
// kgswitch's"; Dump(Cookie, CookieMask) lists all of them.
const CookieMask uint64 = 0xffff000000000000

// ErrForeignCookie is returned when asked to replace or delete flows whose
// cookie does not carry the kgswitch prefix: those flows belong to someone
// else (the default NORMAL flow has cookie 0).
var ErrForeignCookie = errors.New("ovsctl: cookie lacks kgswitch prefix 0x6b67")

// Flows installs and inspects OpenFlow flows on one switch by running
// ovs-ofctl through go-openvswitch. All methods are safe for concurrent use.
type Flows struct {
	target string
	log    *slog.Logger
	// mu serialises ovs-ofctl runs: go-openvswitch builds argument lists
	// by appending to shared slices.
	mu sync.Mutex
	of *ovs.OpenFlowService
	// of10 speaks OpenFlow 1.0 for mod-port: OFPPC_NO_FLOOD exists only
	// there (OpenFlow 1.0.0 section 5.2.1; 1.1 dropped it), and OVS
	// silently ignores no-flood in a 1.1+ port_mod.
	of10 *ovs.OpenFlowService
	// ofctl runs ovs-ofctl for the commands whose output go-openvswitch
	// does not expose (flow_count, cookies of unparsed flows).
	ofctl func(args ...string) ([]byte, error)
}

// NewFlows returns a Flows for the switch at target, the bridge management
// socket ("unix:/RUNDIR/br0.mgmt"). Naming the socket rather than the bridge
// keeps ovs-ofctl away from the default run directory, so several OVS
// instances can run side by side. ovs-ofctl speaks OpenFlow 1.4, the first
// version with bundles (OpenFlow 1.4.0 section 7.3.9), except SetNoFlood,
// which needs OpenFlow 1.0; the bridge must allow both, as OVS does by
// default.
//
// Every ovs-ofctl run is bounded (--timeout): an ovs-vswitchd that does not
// service OpenFlow (restarting, or without its database) must not stall the
// caller.
func NewFlows(target string, logger *slog.Logger) *Flows {
	return newFlows(target, logger, ovs.Timeout(ofctlTimeout))
}

// ofctlTimeout bounds each ovs-ofctl run, in seconds.
const ofctlTimeout = 5

// newFlows is NewFlows with extra go-openvswitch options, which tests use
// to replace the ovs-ofctl executable.
func newFlows(target string, logger *slog.Logger, opts ...ovs.OptionFunc) *Flows {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	with := func(proto string) *ovs.OpenFlowService {
		o := append([]ovs.OptionFunc{ovs.Protocols([]string{proto})}, opts...)
		return ovs.New(o...).OpenFlow
	}
	return &Flows{
		target: target,
		log:    logger,
		of:     with(ovs.ProtocolOpenFlow14),
		of10:   with(ovs.ProtocolOpenFlow10),
		ofctl:  runOfctl,
	}
}

// runOfctl runs ovs-ofctl and returns its standard output; a failure
// carries what it printed on standard error.
func runOfctl(args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("ovs-ofctl", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// ownCookie reports whether cookie is in kgswitch's cookie space.
func ownCookie(cookie uint64) bool {
	return cookie&CookieMask == Cookie
}

// cookieMatch selects, in every table, the flows whose cookie is exactly
// cookie (ovs-ofctl "cookie=X/-1").
func cookieMatch(cookie uint64) *ovs.MatchFlow {
	// CookieMask 0 is go-openvswitch's spelling of "/-1", an exact match.
	return &ovs.MatchFlow{Cookie: cookie, Table: ovs.AnyTable}
}

// Replace atomically swaps the set of flows carrying cookie for flows: one
// OpenFlow 1.4 atomic bundle (ovs-ofctl --bundle) deletes every flow whose
// cookie is exactly cookie and adds flows, each stamped with cookie, so
// packets never see a table with neither or both sets. Replacing with the
// same set twice leaves the same flows installed. The callers' Flow values
// are not modified. An empty flows deletes.
func (f *Flows) Replace(cookie uint64, flows []*ovs.Flow) error {
	return f.ReplaceSets(map[uint64][]*ovs.Flow{cookie: flows})
}

// ReplaceSets is Replace for several cookies in one atomic bundle: one
// ovs-ofctl run, which matters when a migrated guest's first frames are
// already on their way.
func (f *Flows) ReplaceSets(sets map[uint64][]*ovs.Flow) error {
	cookies := make([]uint64, 0, len(sets))
	var stamped []*ovs.Flow
	for cookie, flows := range sets {
		if !ownCookie(cookie) {
			return fmt.Errorf("%w: %#x", ErrForeignCookie, cookie)
		}
		cookies = append(cookies, cookie)
		for i, fl := range flows {
			if fl == nil {
				return fmt.Errorf("ovsctl: flow %d of cookie %#x is nil", i, cookie)
			}
			c := *fl
			c.Cookie = cookie
			stamped = append(stamped, &c)
		}
	}
	slices.Sort(cookies)
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.of.AddFlowBundle(f.target, func(tx *ovs.FlowTransaction) error {
		for _, c := range cookies {
			tx.Delete(cookieMatch(c))
		}
		tx.Add(stamped...)
		return tx.Commit()
	})
	if err != nil {
		return fmt.Errorf("ovsctl: replace flows with cookies %#x on %s: %w", cookies, f.target, err)
	}
	f.log.Debug("replaced flows", "target", f.target, "cookies", fmt.Sprintf("%#x", cookies), "count", len(stamped))
	return nil
}

// deleteCookie removes every flow whose cookie is exactly cookie.
func (f *Flows) deleteCookie(cookie uint64) error {
	if !ownCookie(cookie) {
		return fmt.Errorf("%w: %#x", ErrForeignCookie, cookie)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.of.DelFlows(f.target, cookieMatch(cookie)); err != nil {
		return fmt.Errorf("ovsctl: delete flows with cookie %#x on %s: %w", cookie, f.target, err)
	}
	return nil
}

// Dump returns the flows, in all tables, whose cookie matches cookie in the
// bits set in mask; mask 0 returns every flow. go-openvswitch's parser is
// lossy for some fields and actions, so compare Dump output structurally
// only on what kgswitch itself installs.
func (f *Flows) Dump(cookie, mask uint64) ([]*ovs.Flow, error) {
	var m *ovs.MatchFlow
	if mask != 0 {
		m = &ovs.MatchFlow{Cookie: cookie & mask, CookieMask: mask, Table: ovs.AnyTable}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	flows, err := f.of.DumpFlowsWithFlowArgs(f.target, m)
	if err != nil {
		return nil, fmt.Errorf("ovsctl: dump flows on %s: %w", f.target, err)
	}
	return flows, nil
}

// SetNoFlood sets (on) or clears the OpenFlow OFPPC_NO_FLOOD port config
// bit (OpenFlow 1.0.0 section 5.2.1) of port (a name or number) with
// ovs-ofctl -O OpenFlow10 mod-port. Open vSwitch then leaves the port out
// of floods, both of the FLOOD action and of the NORMAL action's flooding
// of broadcast, multicast and unknown-destination frames (checked by
// TestIntegrationNoFlood on the userspace datapath of OVS 3.1). The bit is
// OpenFlow state, not OVSDB state: it is lost when ovs-vswitchd restarts
// or the port is re-added, so callers re-apply it.
func (f *Flows) SetNoFlood(port string, on bool) error {
	action := ovs.PortActionFlood
	if on {
		action = ovs.PortActionNoFlood
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.of10.ModPort(f.target, port, action); err != nil {
		return fmt.Errorf("ovsctl: mod-port %s %s on %s: %w", port, action, f.target, err)
	}
	return nil
}

// PortStats returns the OpenFlow port counters of port (a name or number).
func (f *Flows) PortStats(port string) (*ovs.PortStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.of.DumpPort(f.target, port)
	if err != nil {
		return nil, fmt.Errorf("ovsctl: dump-ports %s on %s: %w", port, f.target, err)
	}
	return st, nil
}

// Packets returns how many packets and bytes the flows with exactly this cookie
// have matched (ovs-ofctl dump-aggregate). Replace resets these counters.
func (f *Flows) Packets(cookie uint64) (packets, bytes uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.of.DumpAggregate(f.target, cookieMatch(cookie))
	if err != nil {
		return 0, 0, fmt.Errorf("ovsctl: dump-aggregate cookie %#x on %s: %w", cookie, f.target, err)
	}
	return st.PacketCount, st.ByteCount, nil
}

// cookieArg is ovs-ofctl's match on cookie in the bits of mask.
func cookieArg(cookie, mask uint64) string {
	return fmt.Sprintf("cookie=%#x/%#x", cookie&mask, mask)
}

// Count returns how many flows, in all tables, have a cookie that matches
// cookie in the bits set in mask (mask 0: every flow), with one ovs-ofctl
// dump-aggregate. It is cheap enough to poll: after ovs-vswitchd restarts
// Count(Cookie, CookieMask) is 0 until kgswitch reinstalls its flows.
func (f *Flows) Count(cookie, mask uint64) (int, error) {
	args := []string{"dump-aggregate", "--protocols=" + ovs.ProtocolOpenFlow14, f.target}
	if mask != 0 {
		args = append(args, cookieArg(cookie, mask))
	}
	f.mu.Lock()
	out, err := f.ofctl(args...)
	f.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("ovsctl: dump-aggregate on %s: %w", f.target, err)
	}
	n, err := parseFlowCount(out)
	if err != nil {
		return 0, fmt.Errorf("ovsctl: dump-aggregate on %s: %w", f.target, err)
	}
	return n, nil
}

// Cookies returns every cookie in kgswitch's space (Cookie under
// CookieMask) that has flows installed, with its number of flows, from one
// ovs-ofctl dump-flows. At start kgswitch deletes the cookies it no longer
// wants: flows with other cookies are never listed, so never touched.
func (f *Flows) Cookies() (map[uint64]int, error) {
	f.mu.Lock()
	out, err := f.ofctl("dump-flows", "--protocols="+ovs.ProtocolOpenFlow14, f.target, cookieArg(Cookie, CookieMask))
	f.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("ovsctl: dump-flows on %s: %w", f.target, err)
	}
	all, err := parseCookies(out)
	if err != nil {
		return nil, fmt.Errorf("ovsctl: dump-flows on %s: %w", f.target, err)
	}
	// The switch filtered already; filtering again keeps a foreign
	// cookie out even if a future ovs-ofctl ignored the mask.
	maps.DeleteFunc(all, func(c uint64, _ int) bool { return !ownCookie(c) })
	return all, nil
}

// PacketsByCookie returns, with one dump-flows, how many packets the flows
// of each kgswitch cookie have matched: status reads every VM's counters at
// the cost of one ovs-ofctl run, not one per VM.
func (f *Flows) PacketsByCookie() (map[uint64]uint64, error) {
	f.mu.Lock()
	out, err := f.ofctl("dump-flows", "--protocols="+ovs.ProtocolOpenFlow14, f.target, cookieArg(Cookie, CookieMask))
	f.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("ovsctl: dump-flows on %s: %w", f.target, err)
	}
	got := map[uint64]uint64{}
	for _, line := range strings.Split(string(out), "\n") {
		var cookie, packets uint64
		var okC, okP bool
		for _, field := range strings.FieldsFunc(strings.TrimSpace(line), func(r rune) bool { return r == ',' || r == ' ' }) {
			if v, ok := strings.CutPrefix(field, "cookie="); ok {
				cookie, err = strconv.ParseUint(v, 0, 64)
				okC = err == nil
			} else if v, ok := strings.CutPrefix(field, "n_packets="); ok {
				packets, err = strconv.ParseUint(v, 10, 64)
				okP = err == nil
			}
		}
		if okC && okP && ownCookie(cookie) {
			got[cookie] += packets
		}
	}
	return got, nil
}

// parseFlowCount reads flow_count from ovs-ofctl dump-aggregate output
// ("OFPST_AGGREGATE reply (OF1.4) (xid=0x2): packet_count=0 byte_count=0
// flow_count=3").
func parseFlowCount(out []byte) (int, error) {
	for _, field := range strings.Fields(string(out)) {
		v, ok := strings.CutPrefix(field, "flow_count=")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return 0, fmt.Errorf("bad flow_count %q", v)
		}
		return int(n), nil
	}
	return 0, fmt.Errorf("no flow_count in %q", bytes.TrimSpace(out))
}

// parseCookies counts the flows per cookie in ovs-ofctl dump-flows output,
// where each flow is a line starting with "cookie=0x...,". Only the cookie
// is read, so flows go-openvswitch cannot parse still count.
func parseCookies(out []byte) (map[uint64]int, error) {
	got := make(map[uint64]int)
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		v, ok := strings.CutPrefix(line, "cookie=")
		if !ok {
			continue // the reply header, blank lines
		}
		if i := strings.IndexAny(v, ", "); i >= 0 {
			v = v[:i]
		}
		c, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("bad cookie in flow %q", line)
		}
		got[c]++
	}
	return got, nil
}
