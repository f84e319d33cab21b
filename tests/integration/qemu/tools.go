package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// lookTool finds a program in PATH or, because a non-login root shell (and
// CI) may lack them in PATH, in the sbin directories.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func errMissing(what, hint string) error {
	return fmt.Errorf("%s missing (%s)", what, hint)
}

// Preflight checks what running guests needs beyond the netns lab (see
// lab.Preflight): qemu-system-x86_64, a static busybox, apt-get and dpkg-deb
// to fetch the kernel, and /dev/net/tun for the taps. The error names
// everything that is missing.
func Preflight() error {
	var errs []error
	for _, x := range []struct{ name, pkg string }{
		{"qemu-system-x86_64", "qemu-system-x86"},
		{"busybox", "busybox-static"},
		{"apt-get", "apt"},
		{"apt-cache", "apt"},
		{"dpkg-deb", "dpkg"},
		{"ip", "iproute2"},
		{"ethtool", "ethtool"},
		{"sysctl", "procps"},
	} {
		if _, err := lookTool(x.name); err != nil {
			errs = append(errs, errMissing(x.name, "Debian package "+x.pkg))
		}
	}
	if bb, err := lookTool("busybox"); err == nil {
		if _, err := readStatic(bb, "Debian package busybox-static"); err != nil {
			errs = append(errs, err)
		}
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		errs = append(errs, fmt.Errorf("/dev/net/tun unusable (the guests' NICs are taps): %w", err))
	} else {
		f.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("qemu preflight: %w", err)
	}
	return nil
}
