package vswitch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/kgswitch/kgswitch/config"
)

// PortStore keeps the bindings made with `kgswitch add-port` across restarts:
// an operator who bound a port expects it bound after a reboot as it would
// be had it been written in the configuration file.
type PortStore interface {
	LoadPorts() ([]AddPortRequest, error)
	SavePorts([]AddPortRequest) error
}

// portsFile is the FileStore's file for add-port bindings, next to the bindings.
const portsFile = "ports.json"

// LoadPorts reads the saved add-port bindings; none when nothing was saved.
func (f *FileStore) LoadPorts() ([]AddPortRequest, error) {
	path := filepath.Join(filepath.Dir(f.Path), portsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var reqs []AddPortRequest
	if err := json.Unmarshal(b, &reqs); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return reqs, nil
}

// SavePorts replaces the saved add-port bindings, atomically.
func (f *FileStore) SavePorts(reqs []AddPortRequest) error {
	b, err := json.MarshalIndent(reqs, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(filepath.Dir(f.Path), portsFile), b)
}

// savePorts saves the add-port bindings after one was made or removed. A
// failure is logged: the binding stands for this run.
func (s *Switch) savePorts() {
	if s.deps.Ports == nil {
		return
	}
	var reqs []AddPortRequest
	for _, p := range s.vms {
		if p.origin == fromAddPort {
			reqs = append(reqs, p.added)
		}
	}
	slices.SortFunc(reqs, func(a, b AddPortRequest) int {
		if a.Port < b.Port {
			return -1
		}
		if a.Port > b.Port {
			return 1
		}
		return 0
	})
	if err := s.deps.Ports.SavePorts(reqs); err != nil {
		s.log.Error("save add-port bindings: they end with this run", "err", err)
	}
}

// restorePorts binds again what add-port bound before a restart, unless the
// configuration now claims the port or home address itself. The ports need
// not be on the bridge yet: they are served when they appear, as configured
// VMs are.
func (s *Switch) restorePorts() {
	if s.deps.Ports == nil {
		return
	}
	reqs, err := s.deps.Ports.LoadPorts()
	if err != nil {
		s.log.Error("cannot read saved add-port bindings", "err", err)
		return
	}
	for _, req := range reqs {
		vm, err := s.newAddPortVM(req)
		if err == nil {
			err = s.cfg.AddVM(vm)
		}
		if err != nil {
			s.log.Warn("add-port binding not restored", "port", req.Port, "hoa", req.HomeAddress, "err", err)
			continue
		}
		p := s.addVMPort(vm)
		p.origin, p.added = fromAddPort, req
		s.log.Info("add-port binding restored", "port", req.Port, "hoa", req.HomeAddress)
	}
}

// newAddPortVM validates an add-port request as a VM binding.
func (s *Switch) newAddPortVM(req AddPortRequest) (config.VM, error) {
	hoa, err := netip.ParseAddr(req.HomeAddress)
	if err != nil {
		return config.VM{}, fmt.Errorf("%w: home address %q: %v", ErrInvalid, req.HomeAddress, err)
	}
	vm, err := s.cfg.NewVM(req.Port, hoa, req.MAC, req.HomeAgent, req.HomePrefix, req.RouterLL)
	if err == nil {
		err = s.setIPv4(&vm, req.IPv4Address, req.IPv4Gateway)
	}
	if err != nil {
		return vm, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return vm, nil
}
