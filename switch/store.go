package vswitch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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
	tmp := f.Path + ".tmp"
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
	return os.Rename(tmp, f.Path)
}
