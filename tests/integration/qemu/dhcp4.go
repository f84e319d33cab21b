package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

// DHCP4Log is where the guest's DHCPv4 client logs its events, inside the
// guest (see Config.DHCP4 and init.sh).
const DHCP4Log = "/tmp/dhcp4.log"

// DHCP4Events reads the guest's DHCPv4 event log so far (Config.DHCP4):
// the same events as a netns guest's, timed by the guest's clock to the
// second. A guest that has logged nothing yet has none.
func (vm *VM) DHCP4Events(ctx context.Context) ([]lab.DHCP4Event, error) {
	out, err := vm.Shell(ctx, "cat "+DHCP4Log+" 2>/dev/null; true")
	if err != nil {
		return nil, err
	}
	return lab.ParseDHCP4Events(out)
}

// RenewDHCP4 has the guest's DHCPv4 client renew its lease now (SIGUSR1),
// as it does at T1.
func (vm *VM) RenewDHCP4(ctx context.Context) error {
	if _, err := vm.Shell(ctx, "killall -USR1 udhcpc"); err != nil {
		return fmt.Errorf("qemu %s: renew the DHCPv4 lease: %w", vm.Name, err)
	}
	return nil
}

// IPv4 returns the guest's IPv4 configuration, normalised as the netns
// guests' (scenario.GuestIPv4Of) so that the two compare. The route
// exceptions its kernel learnt (a smaller path MTU from a "fragmentation
// needed", a redirect) are left out: busybox's ip lists them among the
// routes, iproute2's does not, and they are no configuration; abroad the
// tunnel's smaller MTU teaches the guest one.
func (vm *VM) IPv4(ctx context.Context) (scenario.GuestIPv4, error) {
	out, err := vm.Shell(ctx, scenario.GuestIPv4Command+"; echo FIB; cat /proc/net/route")
	if err != nil {
		return scenario.GuestIPv4{}, err
	}
	ipOut, fib, _ := strings.Cut(out, "FIB\n")
	c := scenario.ParseGuestIPv4(ipOut)
	c.Routes, err = fibRoutes(c.Routes, fib)
	return c, err
}

// fibRoutes returns the routes (as scenario.GuestIPv4 has them) whose
// destination /proc/net/route, the routing table without the exceptions,
// lists.
func fibRoutes(routes []string, procRoute string) ([]string, error) {
	fib := map[netip.Prefix]bool{}
	for i, line := range strings.Split(procRoute, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 8 {
			continue // the header, or the end
		}
		dst, err1 := procAddr(f[1])
		mask, err2 := procAddr(f[7])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("/proc/net/route line %q: %w", line, err)
		}
		bits := net.IPMask(mask.AsSlice())
		ones, _ := bits.Size()
		fib[netip.PrefixFrom(dst, ones)] = true
	}
	var kept []string
	for _, r := range routes {
		dst, _, _ := strings.Cut(r, " ")
		var p netip.Prefix
		var err error
		switch {
		case dst == "default":
			p = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		case strings.Contains(dst, "/"):
			p, err = netip.ParsePrefix(dst)
		default:
			var a netip.Addr
			a, err = netip.ParseAddr(dst)
			p = netip.PrefixFrom(a, 32)
		}
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", r, err)
		}
		if fib[p] {
			kept = append(kept, r)
		}
	}
	return kept, nil
}

// procAddr reads an IPv4 address of /proc/net/route: 8 hex digits in the
// host's byte order (little-endian on the guest's x86).
func procAddr(s string) (netip.Addr, error) {
	n, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return netip.Addr{}, err
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(n))
	return netip.AddrFrom4(b), nil
}
