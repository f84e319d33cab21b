package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// radvdIface is the router's interface on the home link.
const radvdIface = "home0"

// RAConfig is what StartRadvd has the home router advertise (RFC 4861 §6.2.1).
// Durations are whole seconds on the wire; radvd needs MinInterval ≥ 3 s and
// at most 0.75 MaxInterval.
type RAConfig struct {
	MinInterval, MaxInterval time.Duration
	// RouterLifetime is the Router Advertisement's router lifetime: how long
	// the guest keeps the router as its default route.
	RouterLifetime time.Duration
	// ValidLifetime and PreferredLifetime are HomePrefix's lifetimes in the
	// Prefix Information option (on-link and autonomous).
	ValidLifetime, PreferredLifetime time.Duration
}

// radvdConf renders c as radvd.conf for the home link. AdvRASrcAddress makes
// radvd send from RouterLinkLocal, the guests' default router, rather than from
// the interface's EUI-64 link-local address.
func (c RAConfig) radvdConf() string {
	sec := func(d time.Duration) int { return int(d / time.Second) }
	return fmt.Sprintf(`interface %s {
	AdvSendAdvert on;
	MinRtrAdvInterval %d;
	MaxRtrAdvInterval %d;
	AdvDefaultLifetime %d;
	AdvRASrcAddress { %s; };
	prefix %s {
		AdvOnLink on;
		AdvAutonomous on;
		AdvValidLifetime %d;
		AdvPreferredLifetime %d;
	};
};
`, radvdIface, sec(c.MinInterval), sec(c.MaxInterval), sec(c.RouterLifetime), RouterLinkLocal,
		HomePrefix, sec(c.ValidLifetime), sec(c.PreferredLifetime))
}

// StartRadvd runs radvd in rtr so that the home router sends Router
// Advertisements on the home link as c says, from RouterLinkLocal. radvd
// sends its first advertisement at once. Its log is Dir/radvd.log; Close stops
// it. It fails when radvd is not installed (Debian package radvd) or rejects
// the configuration.
func (l *Lab) StartRadvd(ctx context.Context, c RAConfig) error {
	radvd, err := lookTool("radvd")
	if err != nil {
		return errMissing("radvd", "Debian package radvd")
	}
	conf := filepath.Join(l.Dir, "radvd.conf")
	if err := os.WriteFile(conf, []byte(c.radvdConf()), 0o644); err != nil {
		return err
	}
	if _, err := l.Run(ctx, "rtr", radvd, "--configtest", "-C", conf); err != nil {
		return fmt.Errorf("lab: radvd config:\n%s\n%w", c.radvdConf(), err)
	}
	_, err = l.Start(ctx, "rtr", filepath.Join(l.Dir, "radvd.log"), radvd, "--nodaemon",
		"--logmethod", "stderr", "--debug", "1",
		"-C", conf, "-p", filepath.Join(l.Dir, "radvd.pid"))
	return err
}

// EUI64Addr returns the address SLAAC forms in prefix (a /64) for an interface
// with MAC mac: the modified EUI-64 interface identifier (RFC 4291, appendix A;
// RFC 4862 §5.5.3 (d)).
func EUI64Addr(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
	a := prefix.Masked().Addr().As16()
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// GuestSLAACAddr is the guest's address in HomePrefix when it configures
// itself by SLAAC (see GuestUseSLAAC).
var GuestSLAACAddr = EUI64Addr(HomePrefix, GuestMAC)

// GuestUseSLAAC switches the guest from its static configuration to SLAAC, as
// a VM image with default network settings is: its eth0 accepts Router
// Advertisements and autoconfigures addresses, and the static HoA and default
// route go away, so that its global address and default route exist only
// while advertisements keep them alive. Call it before StartRadvd, whose first
// advertisement then configures the guest at once (see WaitGuestSLAAC).
func (l *Lab) GuestUseSLAAC(ctx context.Context) error {
	if err := l.sysctl(ctx, "vm",
		"net.ipv6.conf."+Uplink+".accept_ra=1",
		"net.ipv6.conf."+Uplink+".autoconf=1"); err != nil {
		return err
	}
	if err := l.ipn(ctx, "vm", "addr", "del", netip.PrefixFrom(HoA, HomePrefix.Bits()).String(), "dev", Uplink); err != nil &&
		!strings.Contains(err.Error(), "Cannot assign") {
		return err
	}
	if err := l.ipn(ctx, "vm", "route", "del", "default", "via", RouterLinkLocal.String(), "dev", Uplink, "proto", "boot"); err != nil &&
		!strings.Contains(err.Error(), "No such process") {
		return err
	}
	return nil
}

// WaitGuestSLAAC waits up to timeout until the guest has GuestSLAACAddr and a
// default route learnt from a Router Advertisement.
func (l *Lab) WaitGuestSLAAC(ctx context.Context, timeout time.Duration) error {
	return wait.Until(ctx, timeout, 50*time.Millisecond, func() error {
		addrs, _ := l.Run(ctx, "vm", l.tools.ip, "-6", "-o", "addr", "show", "dev", Uplink, "scope", "global")
		route, _ := l.Run(ctx, "vm", l.tools.ip, "-6", "route", "show", "default")
		if !strings.Contains(addrs, GuestSLAACAddr.String()+"/64") || !strings.Contains(route, "proto ra") {
			return fmt.Errorf("lab: guest has no SLAAC address %v and default route from an advertisement:\n%s%s",
				GuestSLAACAddr, addrs, route)
		}
		return nil
	})
}
