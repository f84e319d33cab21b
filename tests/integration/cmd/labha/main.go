// Command labha runs the lab Home Agent (package labha) on one interface of
// the current network namespace until SIGTERM or SIGINT, printing one JSON
// line per event on stdout (see the labha Event constants). On exit it
// removes its TUN device, routes and proxy neighbour entries.
//
// Usage (inside the lab's ha namespace, as root):
//
//	labha -iface eth0 -addr 2001:db8:2000::1 -prefix 2001:db8:2000::/64 -dad 1s
//
// With -ipsec-keys FILE it protects the signalling of the home addresses
// FILE has SAs for with ESP, as a Linux Home Agent does with manually keyed
// SAs: FILE holds the operator's `ip xfrm state add` lines (esp.ParseKeys),
// a pair per home address (src HoA dst HA for Binding Updates, src HA dst
// HoA for Acks), and must not be readable by group or others.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/labha"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "labha:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		iface     = flag.String("iface", lab.Uplink, "home link interface")
		addr      = flag.String("addr", lab.HAAddr.String(), "Home Agent address on the home link")
		prefix    = flag.String("prefix", lab.HomePrefix.String(), "home prefix")
		dad       = flag.Duration("dad", labha.DefaultDADTimeout, "DAD wait before the first Binding Acknowledgement")
		maxLife   = flag.Duration("max-lifetime", 0, "cap on granted lifetimes (the prefix's valid lifetime); 0 = 262140s")
		prefixDsc = flag.Bool("prefix-discovery", false, "answer successful registrations with status 1 instead of 0")
		tun       = flag.String("tun", "labha%d", "TUN device name (pattern)")
		ackDelay  = flag.Duration("ack-delay", 0, "hold every Binding Acknowledgement back this long (a distant Home Agent)")
		prefix4   = flag.String("ipv4-prefix", "", "IPv4 home subnet in which IPv4 home addresses are bound (RFC 5555); empty = a Home Agent without RFC 5555")
		keyFile   = flag.String("ipsec-keys", "", "file of `ip xfrm state add` lines: ESP SAs for the home addresses whose signalling must be protected")
	)
	flag.Parse()
	a, err := netip.ParseAddr(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	p, err := netip.ParsePrefix(*prefix)
	if err != nil {
		return fmt.Errorf("-prefix: %w", err)
	}
	var p4 netip.Prefix
	if *prefix4 != "" {
		if p4, err = netip.ParsePrefix(*prefix4); err != nil {
			return fmt.Errorf("-ipv4-prefix: %w", err)
		}
	}
	var keys []esp.SA
	if *keyFile != "" {
		if keys, err = esp.ParseKeyFile(*keyFile); err != nil {
			return fmt.Errorf("-ipsec-keys: %w", err)
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, at slog.Attr) slog.Attr {
			// Millisecond timestamps in UTC are enough to measure DAD and
			// refresh timing, and easy to parse.
			if at.Key == slog.TimeKey && at.Value.Kind() == slog.KindTime {
				at.Value = slog.StringValue(at.Value.Time().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
			}
			return at
		},
	}))
	ha, err := labha.New(labha.Config{
		Iface:           *iface,
		Addr:            a,
		Prefix:          p,
		DADTimeout:      *dad,
		MaxLifetime:     *maxLife,
		PrefixDiscovery: *prefixDsc,
		IPv4Prefix:      p4,
		TunName:         *tun,
		AckDelay:        *ackDelay,
		Keys:            keys,
	}, logger)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	start := time.Now()
	err = ha.Run(ctx)
	if err != nil {
		return fmt.Errorf("after %v: %w", time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}
