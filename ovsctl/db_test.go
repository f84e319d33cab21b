package ovsctl

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestDialNoServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sock := "unix:" + filepath.Join(t.TempDir(), "db.sock")
	if d, err := Dial(ctx, sock, nil); err == nil {
		d.Close()
		t.Fatalf("Dial(%s) with no server = nil error, want error", sock)
	}
}
