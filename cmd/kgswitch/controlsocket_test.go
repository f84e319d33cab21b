package main

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The control socket is 0660 whatever the umask the daemon was started
// with, and belongs to the control group when one is configured.
func TestControlSocketMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	own, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, group string
		wantGID     int
	}{
		{"no group", "", os.Getgid()},
		{"group by number", own.Gid, os.Getgid()},
		{"group by name", own.Name, os.Getgid()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kgswitch.sock")
			ln, err := listenControl(path, tc.group)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != controlMode {
				t.Errorf("got mode %v, want %v", got, os.FileMode(controlMode))
			}
			if got := int(fi.Sys().(*syscall.Stat_t).Gid); got != tc.wantGID {
				t.Errorf("got group %d, want %d", got, tc.wantGID)
			}
		})
	}
	t.Run("unknown group", func(t *testing.T) {
		_, err := listenControl(filepath.Join(t.TempDir(), "kgswitch.sock"), "no-such-group-kgswitch")
		if err == nil || !strings.Contains(err.Error(), `group "no-such-group-kgswitch": no such group`) {
			t.Errorf("got %v, want an error naming the group", err)
		}
	})
}
