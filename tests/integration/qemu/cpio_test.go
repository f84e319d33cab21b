package qemu

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// cpioEntry is one entry as readCPIO decodes it.
type cpioEntry struct {
	Name             string
	Mode             uint32
	RdevMaj, RdevMin uint32
	Data             string
}

// readCPIO decodes a newc archive up to its trailer; it exists to check
// cpioWriter, so it is strict about magic, padding and the trailer.
func readCPIO(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if len(b)-off < cpioHeaderLen {
			return out, fmt.Errorf("truncated header at %d", off)
		}
		h := b[off : off+cpioHeaderLen]
		if string(h[:6]) != cpioMagic {
			return out, fmt.Errorf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return out, fmt.Errorf("field %d at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		nameLen, size := int(f[11]), int(f[6])
		if nameLen < 1 || off+cpioHeaderLen+nameLen > len(b) {
			return out, fmt.Errorf("bad name size %d at %d", nameLen, off)
		}
		name := b[off+cpioHeaderLen : off+cpioHeaderLen+nameLen]
		if name[nameLen-1] != 0 {
			return out, fmt.Errorf("name at %d not NUL-terminated", off)
		}
		dataOff := align(off + cpioHeaderLen + nameLen)
		if dataOff+size > len(b) {
			return out, fmt.Errorf("truncated data at %d", dataOff)
		}
		e := cpioEntry{Name: string(name[:nameLen-1]), Mode: f[1], RdevMaj: f[9], RdevMin: f[10], Data: string(b[dataOff : dataOff+size])}
		off = align(dataOff + size)
		if e.Name == cpioTrailer {
			if off != len(b) {
				return out, fmt.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out, nil
		}
		out = append(out, e)
	}
}

func TestCPIOWriter(t *testing.T) {
	tests := []struct {
		name  string
		build func(c *cpioWriter)
		want  []cpioEntry
	}{
		{name: "empty", build: func(*cpioWriter) {}},
		{
			name: "every kind",
			build: func(c *cpioWriter) {
				c.Dir("bin", 0o755)
				c.File("bin/x", 0o755, []byte("hello"))
				c.Symlink("bin/sh", "x")
				c.CharDev("console", 0o600, 5, 1)
				c.File("empty", 0o644, nil)
			},
			want: []cpioEntry{
				{Name: "bin", Mode: 0o40755},
				{Name: "bin/x", Mode: 0o100755, Data: "hello"},
				{Name: "bin/sh", Mode: 0o120777, Data: "x"},
				{Name: "console", Mode: 0o20600, RdevMaj: 5, RdevMin: 1},
				{Name: "empty", Mode: 0o100644},
			},
		},
		{
			// Names of every length mod 4 exercise the padding.
			name: "padding",
			build: func(c *cpioWriter) {
				c.File("a", 0o644, []byte("1"))
				c.File("ab", 0o644, []byte("12"))
				c.File("abc", 0o644, []byte("123"))
				c.File("abcd", 0o644, []byte("1234"))
			},
			want: []cpioEntry{
				{Name: "a", Mode: 0o100644, Data: "1"},
				{Name: "ab", Mode: 0o100644, Data: "12"},
				{Name: "abc", Mode: 0o100644, Data: "123"},
				{Name: "abcd", Mode: 0o100644, Data: "1234"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			c := newCPIOWriter(&buf)
			tt.build(c)
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if buf.Len()%4 != 0 {
				t.Errorf("got archive length = %d, want a multiple of 4", buf.Len())
			}
			got, err := readCPIO(buf.Bytes())
			if err != nil {
				t.Fatalf("readCPIO: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCPIOWriterRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "/abs", "nul\x00in", cpioTrailer} {
		c := newCPIOWriter(&bytes.Buffer{})
		c.File(name, 0o644, nil)
		if err := c.Close(); err == nil {
			t.Errorf("got Close() = nil after File(%q), want an error", name)
		}
	}
}

// TestCPIOBusyboxExtracts checks the archive against an independent reader:
// busybox cpio, the one the guest image carries anyway.
func TestCPIOBusyboxExtracts(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
			t.Skip("KGSWITCH_SKIP_INTEGRATION=1 and busybox is missing (Debian package busybox-static)")
		}
		t.Fatalf("busybox missing (Debian package busybox-static; set KGSWITCH_SKIP_INTEGRATION=1 to skip): %v", err)
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("d", 0o755)
	c.File("d/f", 0o640, []byte("payload\n"))
	c.Symlink("d/l", "f")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bb, "cpio", "-i", "-d")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio -i: %v: %s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "d", "f"))
	if err != nil || string(got) != "payload\n" {
		t.Errorf("got d/f = %q (%v), want %q", got, err, "payload\n")
	}
	if fi, err := os.Stat(filepath.Join(dir, "d", "f")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("got d/f mode = %v (%v), want 0640", fi.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "d", "l")); err != nil || target != "f" {
		t.Errorf("got d/l -> %q (%v), want f", target, err)
	}
}

// FuzzCPIORoundTrip writes arbitrary files and reads them back.
func FuzzCPIORoundTrip(f *testing.F) {
	f.Add("init", []byte("#!/bin/sh\n"), "lib/x.ko", []byte{0, 1, 2})
	f.Add("a", []byte{}, "bb", []byte("xyz"))
	f.Fuzz(func(t *testing.T, n1 string, d1 []byte, n2 string, d2 []byte) {
		var buf bytes.Buffer
		c := newCPIOWriter(&buf)
		c.File(n1, 0o644, d1)
		c.File(n2, 0o600, d2)
		if err := c.Close(); err != nil {
			return // a name the format cannot carry
		}
		got, err := readCPIO(buf.Bytes())
		if err != nil {
			t.Fatalf("readCPIO: %v", err)
		}
		want := []cpioEntry{
			{Name: n1, Mode: 0o100644, Data: string(d1)},
			{Name: n2, Mode: 0o100600, Data: string(d2)},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("entries (-want +got):\n%s", diff)
		}
	})
}
