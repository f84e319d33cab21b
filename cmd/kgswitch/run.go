package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/kgswitch/kgswitch/config"
	"github.com/kgswitch/kgswitch/hostio"
	"github.com/kgswitch/kgswitch/ovsctl"
	vswitch "github.com/kgswitch/kgswitch/switch"
)

// newFlagSet returns a flag set whose --help prints usage and exits 0, and
// whose parse errors exit 2.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: kgswitch %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: 0, err: errHelp}
		}
		return &exitError{code: 2, err: errHelp}
	}
	return nil
}

func cmdRun(args []string, stderr io.Writer) error {
	fs := newFlagSet("run", "run --config FILE [flags]", stderr)
	cfgPath := fs.String("config", "/etc/kgswitch/kgswitch.toml", "TOML configuration `file` (see configs/kgswitch.toml)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	startProfile := profileFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	stopProfile, err := startProfile()
	if err != nil {
		return usageErr("%v", err)
	}
	defer stopProfile()
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	logger, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return usageErr("%v", err)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return usageErr("%v", err)
	}
	setMemoryLimit(len(cfg.VMs))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, err := ovsctl.Dial(ctx, cfg.OVSDBEndpoint(), logger)
	if err != nil {
		return fmt.Errorf("connect to OVSDB at %s: %w", cfg.OVSDBEndpoint(), err)
	}
	defer db.Close()
	// OpenStack's layout needs no uplink_bridge, nor a NIC outside OVS its
	// care_of_interface, where OVSDB and the host's addresses leave no doubt.
	detected := layout{uplinkBridge: vswitch.DetectUplinkBridge(cfg, db)}
	if detected.uplinkBridge == "" {
		detected.careOfInterface = vswitch.DetectCareOfInterface(cfg, db, hostio.LinkOf)
	}
	detected.apply(cfg)
	switch {
	case detected.uplinkBridge != "":
		logger.Info("host layout detected: the uplink's bridge is joined to the VM bridge by patch ports",
			"bridge", cfg.Bridge, "uplink", cfg.Uplink, "uplink_bridge", detected.uplinkBridge)
	case detected.careOfInterface != "":
		logger.Info("host layout detected: the care-of address is on a NIC outside OVS",
			"bridge", cfg.Bridge, "uplink", cfg.Uplink, "care_of_interface", detected.careOfInterface)
	}
	uplink, err := hostio.OpenUplink()
	if err != nil {
		return err
	}
	defer uplink.Close()
	var store vswitch.Store
	var ports vswitch.PortStore
	if cfg.StateDir != "" {
		fs, err := vswitch.NewFileStore(cfg.StateDir)
		if err != nil {
			return err
		}
		store, ports = fs, fs
	} else {
		logger.Warn("no state_dir configured: a restart registers every binding from scratch and forgets add-port bindings")
	}
	flows := ovsctl.NewFlows(cfg.BridgeTarget(), logger)
	// ovs-vswitchd serves both bridges: watching the VM bridge tells of its
	// restarts, after which both bridges' flows are put back.
	var upFlows vswitch.FlowTable
	if t := cfg.UplinkBridgeTarget(); t != "" {
		upFlows = ovsctl.NewFlows(t, logger)
	}
	sw := vswitch.New(cfg, vswitch.Deps{
		UplinkFlows:  upFlows,
		Store:        store,
		Ports:        ports,
		SwitchEvents: flows.WatchSwitch(ctx),
		LinkOf:       hostio.LinkOf,
		NeighborMAC:  func(a netip.Addr) net.HardwareAddr { return hostio.HostNeighbor(a, cfg.CareOfAddress) },
		DB:           db,
		Flows:        flows,
		OpenPort:     hostio.OpenInternalPort,
		OpenCareOf:   hostio.OpenCareOfNIC,
		HostFilter:   hostio.NFTables{},
		Uplink:       uplink,
		Logger:       logger,
	})
	if err := os.MkdirAll(filepath.Dir(cfg.ControlSocket), 0o755); err != nil {
		return err
	}
	srv, err := serveControl(ctx, cfg.ControlSocket, cfg.ControlGroup, sw, logger)
	if err != nil {
		return err
	}
	defer srv.Close()
	if cfg.MetricsAddress != "" {
		ms, err := serveMetrics(ctx, cfg.MetricsAddress, sw, logger)
		if err != nil {
			return err
		}
		defer ms.Close()
	}
	logger.Info("kgswitch running", "bridge", cfg.Bridge, "care_of", cfg.CareOfAddress, "care_of_interface", cfg.CareOfInterface, "vms", len(cfg.VMs), "control", cfg.ControlSocket)
	go reloadOnHangup(ctx, *cfgPath, len(cfg.VMs), detected, sw, logger)
	err = sw.Run(ctx)
	logger.Info("kgswitch stopped; flows and bindings stay in place for the next start")
	return err
}

// reloadOnHangup re-reads the configuration on each SIGHUP. A file that does
// not validate is refused with its file:line reason and the running
// configuration, of running VMs, stays.
// The layout detected at start stands for what the reloaded file still
// leaves out.
func reloadOnHangup(ctx context.Context, path string, running int, detected layout, sw *vswitch.Switch, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := config.Load(path)
		if err != nil {
			log.Error("reload refused; keeping the running configuration", "err", err)
			continue
		}
		detected.apply(cfg)
		// Both configurations live during the reload.
		setMemoryLimit(running + len(cfg.VMs))
		if err := sw.Reload(ctx, cfg); err != nil {
			log.Error("reload refused", "err", err)
		} else {
			running = len(cfg.VMs)
		}
		setMemoryLimit(running)
	}
}

// The daemon's soft memory limit. The live heap is small (~11 MiB with
// 1,000 VMs), and without a limit the collector lets garbage grow it to
// twice that. Each VM beyond keeps about 2.5 KiB live; a fixed limit below
// the live heap (10,000 VMs: about 32 MiB) would keep the collector running
// and every allocation assisting it, which made a reload of 10,000 VMs two
// to three times slower and status wait as long. So the limit grows with
// the VMs configured, leaving the collector the same room.
const (
	defaultMemoryLimit = 20 << 20
	memoryBase         = 12 << 20
	memoryPerVM        = 5 << 10
)

// memoryLimit is the soft memory limit for a daemon with vms configured.
func memoryLimit(vms int) int64 {
	return max(defaultMemoryLimit, memoryBase+int64(vms)*memoryPerVM)
}

// setMemoryLimit sets memoryLimit(vms), unless the operator's GOMEMLIMIT
// says otherwise.
func setMemoryLimit(vms int) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit(vms))
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// layout is what kgswitch detected of the host's layout at start, where the
// configuration left it out (see vswitch.DetectUplinkBridge).
type layout struct{ uplinkBridge, careOfInterface string }

// apply fills in what cfg leaves out of the layout, as detected.
func (l layout) apply(cfg *config.Config) {
	if cfg.UplinkBridge != "" || cfg.CareOfInterface != "" {
		return
	}
	cfg.UplinkBridge, cfg.CareOfInterface = l.uplinkBridge, l.careOfInterface
}
