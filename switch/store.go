package vswitch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Store keeps what must survive a restart of kgswitch: each binding's
// sequence number and grant, by home address.
type Store interface {
	Load() (map[string]StoredBinding, error)
	Save(map[string]StoredBinding) error
}

// StoredBinding is one binding as a restarted kgswitch needs it.
type StoredBinding struct {
	HomeAgent string        `json:"home_agent"`
	CareOf    string        `json:"care_of"`
	Sequence  uint16        `json:"sequence"`
	Granted   time.Duration `json:"granted_ns,omitempty"`
	Expires   time.Time     `json:"expires,omitzero"`
	// ESPSequence is the last ESP sequence number sent on the binding's SA
	// for Binding Updates, when its signalling is under ESP: a restart must
	// go on above it even if the clock went back meanwhile.
	ESPSequence uint32 `json:"esp_sequence,omitempty"`
	// IPv4 is the IPv4 home address the Home Agent bound with the grant
	// (RFC 5555): a restart within the grant tunnels it at once, as it
	// does IPv6, instead of dropping the guest's IPv4 until the refresh.
	IPv4 netip.Addr `json:"ipv4,omitzero"`
}

// FileStore is a Store in one JSON file, replaced atomically on each save so
// a crash leaves either the old state or the new one.
type FileStore struct{ Path string }

// NewFileStore returns a store in dir, creating dir.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return &FileStore{Path: filepath.Join(dir, "bindings.json")}, nil
}

// Load reads the saved bindings; none when nothing was saved yet.
func (f *FileStore) Load() (map[string]StoredBinding, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]StoredBinding{}, nil
	}
	if err != nil {
		return nil, err
	}
	m := map[string]StoredBinding{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return m, nil
}

// Save replaces the saved bindings.
func (f *FileStore) Save(m map[string]StoredBinding) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(f.Path, b)
}

// writeAtomic replaces the file at path with b: a crash leaves the old
// content or the new, never a part.
func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := fd.Write(b); err != nil {
		fd.Close()
		return err
	}
	if err := fd.Sync(); err != nil {
		fd.Close()
		return err
	}
	if err := fd.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// persist saves the bindings when they changed.
func (s *Switch) persist() {
	if s.deps.Store == nil {
		return
	}
	m := map[string]StoredBinding{}
	maps.Copy(m, s.stored) // not yet claimed by a VM here: keep for later
	for _, p := range s.vms {
		if p.binding == nil || p.phase == returnWaiting || p.phase == returning {
			continue
		}
		r := p.binding.Record()
		sb := StoredBinding{HomeAgent: p.binding.HomeAgent.String(), CareOf: p.binding.CareOf.String(),
			Sequence: r.Sequence, Granted: r.Granted, Expires: r.Expires, IPv4: r.IPv4}
		if sa, _ := s.cfg.SAsFor(p.vm.HomeAddress, p.binding.HomeAgent); sa != nil {
			sb.ESPSequence = s.espSent[espKey{sa.SPI, sa.Dst}]
		}
		m[p.key()] = sb
	}
	b, _ := json.Marshal(m)
	if bytes.Equal(b, s.saved) {
		return
	}
	if err := s.deps.Store.Save(m); err != nil {
		s.log.Error("save bindings", "err", err)
		return
	}
	s.saved = b
}
