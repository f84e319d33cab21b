package qemu

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// The newc ("new ASCII") cpio format is what the Linux kernel unpacks as an
// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst): each
// entry is a 110-byte header of "070701" and thirteen 8-digit hex fields,
// the NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes;
// the archive ends with an entry named "TRAILER!!!".
const (
	cpioMagic     = "070701"
	cpioHeaderLen = 110
	cpioTrailer   = "TRAILER!!!"
)

// Mode bits of a cpio entry (the st_mode file types of stat(2)).
const (
	cpioModeDir     = 0o040000
	cpioModeRegular = 0o100000
	cpioModeSymlink = 0o120000
	cpioModeCharDev = 0o020000
)

// cpioWriter writes a newc cpio archive. Entries are written in the order
// the methods are called, so a directory must come before what it holds.
// The first error sticks: later calls do nothing and Close returns it.
type cpioWriter struct {
	w   *bufio.Writer
	ino uint32
	err error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), ino: 1}
}

// Dir adds a directory with permission bits perm.
func (c *cpioWriter) Dir(name string, perm fs.FileMode) {
	c.entry(name, cpioModeDir|uint32(perm.Perm()), 2, 0, 0, nil)
}

// File adds a regular file.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) {
	c.entry(name, cpioModeRegular|uint32(perm.Perm()), 1, 0, 0, data)
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) {
	c.entry(name, cpioModeSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDev adds a character device node. The archive can hold one although
// whoever writes it may not be allowed to mknod: the kernel creates it while
// unpacking, which is how /dev/console exists before init runs.
func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) {
	c.entry(name, cpioModeCharDev|uint32(perm.Perm()), 1, major, minor, nil)
}

// Close writes the trailer and flushes; it does not close the underlying
// writer.
func (c *cpioWriter) Close() error {
	c.ino = 0
	c.entry(cpioTrailer, 0, 1, 0, 0, nil)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

func (c *cpioWriter) entry(name string, mode, nlink, rdevMajor, rdevMinor uint32, data []byte) {
	if c.err != nil {
		return
	}
	if name == "" || strings.HasPrefix(name, "/") || strings.IndexByte(name, 0) >= 0 {
		c.err = fmt.Errorf("cpio: bad entry name %q (want a relative path without NUL)", name)
		return
	}
	if name == cpioTrailer && c.ino != 0 {
		c.err = fmt.Errorf("cpio: an entry named %q would end the archive", name)
		return
	}
	if uint64(len(data)) > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: %d bytes do not fit a newc entry", name, len(data))
		return
	}
	ino := c.ino
	if ino != 0 {
		c.ino++
	}
	fields := [13]uint32{
		ino, mode, 0, 0, nlink, 0, uint32(len(data)),
		0, 0, rdevMajor, rdevMinor, uint32(len(name) + 1), 0,
	}
	var hdr strings.Builder
	hdr.WriteString(cpioMagic)
	for _, f := range fields {
		fmt.Fprintf(&hdr, "%08x", f)
	}
	hdr.WriteString(name)
	hdr.WriteByte(0)
	c.write([]byte(hdr.String()))
	c.pad(cpioHeaderLen + len(name) + 1)
	c.write(data)
	c.pad(len(data))
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

// pad writes the NUL bytes that align n bytes to 4.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}
