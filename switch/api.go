package vswitch

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/kgswitch/kgswitch/config"
)

// Activate tells the Switch that the guest on port runs on this host now, for
// automation that knows before the guest's first frame (QEMU's
// pause-before-switchover, a libvirt event).
func (s *Switch) Activate(ctx context.Context, port string) error {
	return s.onPort(ctx, port, func(p *vmPort) error {
		switch {
		case p.ofport == 0:
			return fmt.Errorf("%w: %s", ErrUnknownPort, port)
		case p.phase == returnWaiting:
			s.beginReturn(p, "activate command")
		case !s.foreignFor(p):
			return fmt.Errorf("%w: %s is on its home link; there is nothing to activate", ErrInvalid, port)
		case p.phase == absent:
			// Its port waits for the internal port: activated when served.
			p.seenRunning = s.clock.Now()
		default:
			s.activateGuest(p, "activate command")
		}
		return nil
	})
}

// onPort runs fn in the control loop on the VM whose interface is port.
func (s *Switch) onPort(ctx context.Context, port string, fn func(p *vmPort) error) error {
	var err error
	if e := s.do(ctx, func() {
		p := s.ports[port]
		if p == nil {
			err = notBoundError(port)
			return
		}
		err = fn(p)
	}); e != nil {
		return e
	}
	return err
}

// AddPortRequest binds a port to a home address on the running daemon.
type AddPortRequest struct {
	Port        string `json:"port"`
	HomeAddress string `json:"home_address"`
	MAC         string `json:"mac,omitempty"`
	HomeAgent   string `json:"home_agent,omitempty"`
	HomePrefix  string `json:"home_prefix,omitempty"`
	RouterLL    string `json:"router_link_local,omitempty"`
	// IPv4Address, when set, is the VM's IPv4 home address with its
	// subnet's length (192.0.2.10/24); IPv4Gateway its gateway, needed
	// unless the home network has an [ipv4] table (config.SetIPv4).
	IPv4Address string `json:"ipv4_address,omitempty"`
	IPv4Gateway string `json:"ipv4_gateway,omitempty"`
	// Activate: the guest already runs on this host (a port bound after the
	// guest's first frames went by); register at once.
	Activate bool `json:"activate,omitempty"`
}

// AddPort binds a port that exists on the bridge to a home address, and serves
// it at once.
func (s *Switch) AddPort(ctx context.Context, req AddPortRequest) error {
	var err error
	var wait chan struct{}
	if e := s.do(ctx, func() { err = s.addPort(req); wait = s.dpWait }); e != nil {
		return e
	}
	if err != nil {
		return err
	}
	// The port is served once the internal port is open; OVS has what the
	// port needs once the queue is through.
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		if e := s.do(ctx, func() {
			if p := s.ports[req.Port]; p != nil && p.phase == broken && p.origin == fromAddPort {
				err = errors.New(p.err)
				s.dropAddPort(p)
			}
		}); e != nil {
			return e
		}
		if err != nil {
			return err
		}
	}
	return s.ovs.wait(ctx)
}

func (s *Switch) addPort(req AddPortRequest) error {
	iface, ok := s.deps.DB.Interface(req.Port)
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownPort, req.Port)
	}
	vm, err := s.newAddPortVM(req)
	if err != nil {
		return err
	}
	if old := s.ports[req.Port]; old != nil && old.vm.HomeAddress == vm.HomeAddress && old.vm.IPv4Address == vm.IPv4Address {
		return nil // already bound the same way: nothing to do
	}
	if err := s.cfg.AddVM(vm); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	p := s.addVMPort(vm)
	p.origin, p.added = fromAddPort, req
	p.added.Activate = false // a moment's fact, not part of the binding
	if err := s.prepare(); err != nil {
		s.dropAddPort(p)
		return err
	}
	if iface.OFPort > 0 {
		if req.Activate && s.foreignFor(p) {
			// Acted on when the port is prepared, now or once the internal
			// port is open.
			p.seenRunning = s.clock.Now()
		}
		s.handleEvent(eventAdded(iface))
		if p.phase == broken {
			err := errors.New(p.err)
			s.dropAddPort(p)
			return err
		}
		if req.Activate && p.phase == prepared {
			s.activateGuest(p, "add-port --activate")
		}
	}
	s.savePorts()
	return nil
}

// dropAddPort undoes a failed add-port: nothing of it stays, so that trying
// again after the fix starts afresh instead of finding it "already bound".
func (s *Switch) dropAddPort(p *vmPort) {
	s.removeVM(p)
	s.savePorts()
}

// DeletePort unbinds a port that add-port bound: kgswitch stops serving the
// VM there and forgets the binding, also across restarts. Ports bound by the
// configuration file or by external_ids are unbound where they were bound.
func (s *Switch) DeletePort(ctx context.Context, port string) error {
	if err := s.onPort(ctx, port, func(p *vmPort) error {
		switch p.origin {
		case fromConfig:
			return fmt.Errorf("%w: %s is bound in the configuration file: remove it there and reload (SIGHUP)", ErrInvalid, port)
		case fromOVSDB:
			return fmt.Errorf("%w: %s is declared in its interface's external_ids: remove the %s keys there", ErrInvalid, port, KeyHomeAddress)
		}
		s.log.Info("port unbound by del-port", "port", port, "hoa", p.vm.HomeAddress)
		s.dropAddPort(p)
		return nil
	}); err != nil {
		return err
	}
	return s.ovs.wait(ctx)
}

// Reload applies a new configuration: VMs added to the file are served, VMs
// removed from it are let go (their flows removed), changed ones are replaced.
// VMs bound by add-port or declared in external_ids stay. Settings that
// define the host itself (bridge, uplink, care-of address, sockets, state
// directory) cannot change without a restart: such a reload is refused and
// the running configuration stays, as it does when nothing is applied.
func (s *Switch) Reload(ctx context.Context, cfg *config.Config) error {
	var err error
	if e := s.do(ctx, func() { err = s.reload(cfg) }); e != nil {
		return e
	}
	if err != nil {
		return err
	}
	return s.ovs.wait(ctx)
}

func (s *Switch) reload(cfg *config.Config) error {
	old := s.cfg
	for _, c := range []struct {
		key      string
		was, now any
	}{
		{"bridge", old.Bridge, cfg.Bridge}, {"ovs_rundir", old.OVSRunDir, cfg.OVSRunDir}, {"uplink", old.Uplink, cfg.Uplink}, {"uplink_bridge", old.UplinkBridge, cfg.UplinkBridge},
		{"care_of_address", old.CareOfAddress, cfg.CareOfAddress}, {"care_of_interface", old.CareOfInterface, cfg.CareOfInterface}, {"internal_port", old.InternalPort, cfg.InternalPort},
		{"control_socket", old.ControlSocket, cfg.ControlSocket}, {"state_dir", old.StateDir, cfg.StateDir},
	} {
		if c.was != c.now {
			return fmt.Errorf("%s changed from %v to %v: that needs a restart; keeping the running configuration", c.key, c.was, c.now)
		}
	}
	// VMs bound at run time join the new configuration, unless it claims
	// their home address, port, MAC or iface-id itself.
	for _, p := range s.vms {
		if p.origin != fromConfig {
			if err := cfg.AddVM(p.vm); err != nil {
				return fmt.Errorf("%v (bound by %s at run time); keeping the running configuration", err, map[bool]string{true: "add-port", false: "external_ids"}[p.origin == fromAddPort])
			}
		}
	}
	want := map[string]config.VM{}
	for _, vm := range cfg.VMs {
		want[vm.HomeAddress.String()] = vm
	}
	// One snapshot for the whole reload: the datapath sees the old
	// configuration's VMs or the new one's.
	defer s.holdPublish()()
	var removed []*vmPort
	for _, p := range s.vms {
		if p.origin != fromConfig {
			continue
		}
		if vm, ok := want[p.key()]; ok && reflect.DeepEqual(vm, p.vm) {
			delete(want, p.key())
			continue
		}
		s.log.Info("reload: VM removed or changed", "port", p.name(), "hoa", p.vm.HomeAddress)
		removed = append(removed, p)
	}
	s.removeVMs(removed) // from the old configuration
	added := 0
	s.cfg = cfg
	for _, vm := range cfg.VMs {
		if _, ok := want[vm.HomeAddress.String()]; !ok {
			continue
		}
		p := s.addVMPort(vm)
		added++
		s.log.Info("reload: VM added", "port", p.name(), "hoa", vm.HomeAddress)
		if vm.Port != "" {
			if i, ok := s.deps.DB.Interface(vm.Port); ok {
				s.handleEvent(eventAdded(i))
			}
		}
		if p.ofport == 0 {
			s.syncFlows(p)
		}
	}
	if err := s.prepare(); err != nil {
		s.log.Error("reload: prepare", "err", err)
	}
	s.globalInstalled = false // home networks may have changed
	s.installGlobalFlows()
	s.log.Info("configuration reloaded", "vms", len(s.vms), "added", added, "removed", len(removed))
	return nil
}
