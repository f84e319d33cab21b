package vswitch

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The file store gives back what it saved, bindings and add-port bindings
// alike, starts empty, and names the file when it cannot read it.
func TestFileStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	fs, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := fs.Load(); err != nil || len(m) != 0 {
		t.Fatalf("empty store: got %v, %v", m, err)
	}
	if p, err := fs.LoadPorts(); err != nil || len(p) != 0 {
		t.Fatalf("empty store: got %v, %v", p, err)
	}
	bindings := map[string]StoredBinding{"2001:db8:2000::10": {HomeAgent: "2001:db8:2000::1", CareOf: "2001:db8:3000::3",
		Sequence: 7, Granted: 600 * time.Second, Expires: time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)}}
	ports := []AddPortRequest{{Port: "vnet4", HomeAddress: "2001:db8:2000::11", MAC: "52:54:00:00:00:11"}}
	if err := fs.Save(bindings); err != nil {
		t.Fatal(err)
	}
	if err := fs.SavePorts(ports); err != nil {
		t.Fatal(err)
	}
	if m, err := fs.Load(); err != nil || !reflect.DeepEqual(m, bindings) {
		t.Errorf("got %+v, %v; want %+v", m, err, bindings)
	}
	if p, err := fs.LoadPorts(); err != nil || !reflect.DeepEqual(p, ports) {
		t.Errorf("got %+v, %v; want %+v", p, err, ports)
	}
	if err := os.WriteFile(filepath.Join(dir, "ports.json"), []byte("{"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.LoadPorts(); err == nil {
		t.Error("a broken ports.json loaded without error")
	}
}
