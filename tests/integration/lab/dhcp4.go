package lab

import (
	"context"
	_ "embed"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// The home link's DHCPv4 server and the guests' DHCPv4 client, busybox's
// udhcpd and udhcpc. A dual-stack guest gets its IPv4 home address as a VM
// usually does, from DHCP, and renews the lease wherever it runs (RFC 2131
// §4.4.5: unicast to the server at T1, half the lease; broadcast at T2), so
// a guest away from home must still reach its home server.

const (
	// dhcp4ServerNode runs the server, on dhcp4ServerIface: the home
	// router is the home link's DHCPv4 server, as in many a small network.
	dhcp4ServerNode  = "rtr"
	dhcp4ServerIface = "home0"

	// DefaultDHCP4Lease is the lease time the server grants when
	// Options.DHCP4Lease is zero: long enough that no test sees a renewal
	// it did not ask for.
	DefaultDHCP4Lease = time.Hour
	// DHCP4Domain is the domain name (option 15) the server hands out.
	DHCP4Domain = "home.example"
)

var (
	// DHCP4ServerID is the server identifier (option 54) the server sends:
	// its address on the home link, where renewals go.
	DHCP4ServerID = RouterHomeAddr4
	// DHCP4DNS is the DNS server (option 6) the server hands out. Nothing
	// answers there; it is only a value a test can compare.
	DHCP4DNS = netip.MustParseAddr("192.0.2.53")
	// dhcp4Pool is the range for clients without a static lease.
	dhcp4Pool = [2]netip.Addr{netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("192.0.2.199")}
)

// DHCP4Script is udhcpc's event script for the lab's guests (udhcpc.sh):
// it applies a lease with ip and logs each event to $KGS_DHCP4_LOG in the
// format ParseDHCP4Events reads. The QEMU guest image carries it too.
//
//go:embed udhcpc.sh
var DHCP4Script string

// DHCP4Lease returns the lease time the lab's DHCPv4 server grants (see
// Options.DHCP4Lease).
func (l *Lab) DHCP4Lease() time.Duration {
	if l.dhcp4Lease == 0 {
		return DefaultDHCP4Lease
	}
	return l.dhcp4Lease
}

// udhcpdConf renders udhcpd's configuration: a static lease for each guest
// of HomeNet with an IPv4 home address, the pool for any other client, and
// the options a guest applies (subnet mask, router) or a test compares
// (DNS server, domain). udhcpd takes the server identifier from the
// interface's address, DHCP4ServerID.
func (l *Lab) udhcpdConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "interface %s\nstart %s\nend %s\nmax_leases 100\n", dhcp4ServerIface, dhcp4Pool[0], dhcp4Pool[1])
	fmt.Fprintf(&b, "lease_file %s\npidfile %s\n", filepath.Join(l.Dir, "udhcpd.leases"), filepath.Join(l.Dir, "udhcpd.pid"))
	for _, g := range l.topo.guests {
		if g.HoA4.IsValid() && g.Home == HomeNet {
			fmt.Fprintf(&b, "static_lease %s %s\n", g.MAC, g.HoA4)
		}
	}
	mask := net.IP(net.CIDRMask(HomePrefix4.Bits(), 32)).String()
	fmt.Fprintf(&b, "opt subnet %s\nopt router %s\nopt dns %s\nopt domain %s\nopt lease %d\n",
		mask, RouterHomeAddr4, DHCP4DNS, DHCP4Domain, int(l.DHCP4Lease()/time.Second))
	return b.String()
}

// startDHCP4Server starts udhcpd in the router on the home link. It does
// not wait for it: a client retries its discover, and New stays fast.
func (l *Lab) startDHCP4Server(ctx context.Context) error {
	conf := filepath.Join(l.Dir, "udhcpd.conf")
	if err := os.WriteFile(conf, []byte(l.udhcpdConf()), 0o644); err != nil {
		return err
	}
	// udhcpd complains about a missing lease file.
	if err := os.WriteFile(filepath.Join(l.Dir, "udhcpd.leases"), nil, 0o644); err != nil {
		return err
	}
	// Not bound to ctx, which may only bound New: the server lives until
	// Close.
	_, err := l.Start(context.Background(), dhcp4ServerNode, filepath.Join(l.Dir, "udhcpd.log"),
		l.tools.busybox, "udhcpd", "-f", conf)
	return err
}

// DHCP4Log is where guest's DHCPv4 client logs its events (guest is a
// Guest's Node); see ParseDHCP4Events.
func (l *Lab) DHCP4Log(guest string) string {
	return filepath.Join(l.Dir, guest+"-dhcp4.log")
}

// StartGuestDHCP4 configures guest's IPv4 as a dual-stack VM does at boot:
// it starts busybox udhcpc on the guest's eth0 and waits until the lease is
// bound and applied, then returns the bound event. The client runs until
// Close and renews the lease as RFC 2131 has it (its script is DHCP4Script;
// it logs to DHCP4Log(guest), its own output goes to Dir/GUEST-udhcpc.log).
// The lab does not start it itself: a guest with IPv4 sends DHCP and ARP
// that the IPv6-only tests need not see.
func (l *Lab) StartGuestDHCP4(ctx context.Context, guest string) (DHCP4Event, error) {
	if _, ok := l.guest(guest); !ok {
		return DHCP4Event{}, fmt.Errorf("lab: DHCPv4 client for %q: no such guest in this lab", guest)
	}
	script := filepath.Join(l.Dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte(DHCP4Script), 0o755); err != nil {
		return DHCP4Event{}, err
	}
	// One discover a second: the server may still be starting.
	cmd, err := l.Start(context.Background(), guest, filepath.Join(l.Dir, guest+"-udhcpc.log"),
		"env", "KGS_DHCP4_LOG="+l.DHCP4Log(guest),
		l.tools.busybox, "udhcpc", "-f", "-i", Uplink, "-s", script, "-t", "10", "-T", "1")
	if err != nil {
		return DHCP4Event{}, err
	}
	l.mu.Lock()
	l.dhcp4Clients[guest] = cmd
	l.mu.Unlock()
	var bound DHCP4Event
	err = wait.Until(ctx, 15*time.Second, 20*time.Millisecond, func() error {
		evs, err := l.GuestDHCP4Events(guest)
		if err != nil && !os.IsNotExist(err) {
			return wait.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Event == "bound" {
				bound = ev
				return nil
			}
		}
		if cmd.ProcessState != nil || !ProcessAlive(cmd.Process.Pid) {
			return wait.Fatal(fmt.Errorf("udhcpc in %s exited", guest))
		}
		return fmt.Errorf("lab: %s's DHCPv4 client has not bound a lease (events %+v)", guest, evs)
	})
	if err != nil {
		out, _ := os.ReadFile(filepath.Join(l.Dir, guest+"-udhcpc.log"))
		return DHCP4Event{}, fmt.Errorf("%w\nudhcpc:\n%s", err, out)
	}
	return bound, nil
}

// RenewGuestDHCP4 has guest's DHCPv4 client (StartGuestDHCP4) renew its
// lease now (SIGUSR1), as it does at T1: a unicast DHCPREQUEST to the
// server that granted it.
func (l *Lab) RenewGuestDHCP4(guest string) error {
	l.mu.Lock()
	cmd := l.dhcp4Clients[guest]
	l.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("lab: renew %s's DHCPv4 lease: no client started", guest)
	}
	// `ip netns exec` and env exec in place: the process is udhcpc.
	return cmd.Process.Signal(syscall.SIGUSR1)
}

// GuestDHCP4Events reads guest's DHCPv4 event log so far (see
// StartGuestDHCP4).
func (l *Lab) GuestDHCP4Events(guest string) ([]DHCP4Event, error) {
	b, err := os.ReadFile(l.DHCP4Log(guest))
	if err != nil {
		return nil, err
	}
	return ParseDHCP4Events(string(b))
}

// DHCP4Event is one event of a guest's DHCPv4 client, as DHCP4Script logs
// it.
type DHCP4Event struct {
	// Time is when the script ran: to the second in a QEMU guest, whose
	// busybox date has no nanoseconds, and by the guest's clock there.
	Time time.Time
	// Event is udhcpc's: "deconfig", "bound", "renew", "leasefail" or
	// "nak".
	Event string
	// Addr is the leased address and prefix length; Router the first
	// router, ServerID the server identifier, DNS the DNS servers; all
	// zero for an event without a lease.
	Addr     netip.Prefix
	Router   netip.Addr
	ServerID netip.Addr
	DNS      []netip.Addr
	Domain   string
	Lease    time.Duration
}

// ParseDHCP4Events reads DHCP4Script's log: one line per event, "TIME EVENT
// ip=A mask=N router=R serverid=S lease=SECONDS dns=D1,D2 domain=NAME".
// A last line without its newline (the script may be writing it) is left
// out.
func ParseDHCP4Events(log string) ([]DHCP4Event, error) {
	var evs []DHCP4Event
	lines := strings.Split(log, "\n")
	for i, line := range lines[:len(lines)-1] {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		ev, err := parseDHCP4Event(f)
		if err != nil {
			return evs, fmt.Errorf("lab: DHCPv4 event log line %d %q: %w", i+1, line, err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

func parseDHCP4Event(f []string) (DHCP4Event, error) {
	sec, frac, _ := strings.Cut(f[0], ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return DHCP4Event{}, fmt.Errorf("time: %w", err)
	}
	ns, _ := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
	ev := DHCP4Event{Time: time.Unix(s, ns), Event: f[1]}
	kv := map[string]string{}
	for _, x := range f[2:] {
		k, v, _ := strings.Cut(x, "=")
		kv[k] = v
	}
	if ip := kv["ip"]; ip != "" {
		if ev.Addr, err = netip.ParsePrefix(ip + "/" + kv["mask"]); err != nil {
			return ev, err
		}
	}
	if r, _, _ := strings.Cut(kv["router"], ","); r != "" {
		if ev.Router, err = netip.ParseAddr(r); err != nil {
			return ev, err
		}
	}
	if s := kv["serverid"]; s != "" {
		if ev.ServerID, err = netip.ParseAddr(s); err != nil {
			return ev, err
		}
	}
	for _, d := range strings.Split(kv["dns"], ",") {
		if d == "" {
			continue
		}
		a, err := netip.ParseAddr(d)
		if err != nil {
			return ev, err
		}
		ev.DNS = append(ev.DNS, a)
	}
	ev.Domain = kv["domain"]
	if s := kv["lease"]; s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return ev, fmt.Errorf("lease: %w", err)
		}
		ev.Lease = time.Duration(n) * time.Second
	}
	return ev, nil
}

// CountDHCP4 counts the events named event ("bound", "renew", ...) at or
// after since.
func CountDHCP4(evs []DHCP4Event, event string, since time.Time) int {
	n := 0
	for _, ev := range evs {
		if ev.Event == event && !ev.Time.Before(since) {
			n++
		}
	}
	return n
}
