package qemu

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// initScript is the guest's /init.
//
//go:embed init.sh
var initScript []byte

// Image is a bootable guest: a kernel and an initramfs that holds
// everything the guest runs (see init.sh).
type Image struct {
	// Kernel is the path of the kernel (vmlinuz).
	Kernel string
	// Initrd is the path of the gzip-compressed newc cpio initramfs.
	Initrd string
	// KernelPackage names the Debian package the kernel comes from, with its
	// version ("linux-image-6.1.0-56-cloud-amd64-unsigned 6.1.192-2").
	KernelPackage string
}

// ImageOptions configures BuildImage.
type ImageOptions struct {
	// CacheDir holds the downloaded kernels and the built initramfs images;
	// DefaultCacheDir() when empty.
	CacheDir string
	// TCPCheck, when not empty, is a statically linked tcpcheck binary (see
	// BuildTCPCheck) that the guest gets as /bin/tcpcheck.
	TCPCheck string
	// Logf, when not nil, receives a line for each step.
	Logf func(format string, args ...any)
}

// DefaultCacheDir is where BuildImage keeps its downloads and images:
// $KGSWITCH_TEST_CACHE if set, else $XDG_CACHE_HOME/kgswitch-test, else
// /var/cache/kgswitch-test.
func DefaultCacheDir() string {
	if d := os.Getenv("KGSWITCH_TEST_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kgswitch-test")
	}
	return "/var/cache/kgswitch-test"
}

// guestModuleRoots are the drivers the guest needs for its NIC
// (virtio-net-pci) and its command shell (a virtio console); their
// dependencies (virtio, virtio_ring, failover, ...) are found in the modules
// themselves. The kernel config symbol says
// whether each is built in.
var guestModuleRoots = []struct{ module, config string }{
	{"virtio_pci", "CONFIG_VIRTIO_PCI"},
	{"virtio_net", "CONFIG_VIRTIO_NET"},
	{"virtio_console", "CONFIG_VIRTIO_CONSOLE"},
}

// guestBuiltins are what the guest needs built into the kernel, since the
// initramfs carries no modules for them: IPv4 and IPv6, and packet sockets,
// on which busybox's udhcpc sends and receives before eth0 has an address.
// Debian's cloud kernel has them all.
var guestBuiltins = []string{"CONFIG_INET", "CONFIG_IPV6", "CONFIG_PACKET"}

// BuildImage returns the guest image, building what the cache lacks: the
// newest linux-image-*-cloud-amd64 kernel the apt sources offer (fetched
// with `apt-get download`, unpacked with dpkg-deb, never installed), and an
// initramfs of busybox-static, the kernel's virtio-net modules, init.sh and
// optionally tcpcheck. Kernels are cached per package version and initramfs
// images by content, so repeated runs download and write nothing. When apt
// cannot name a kernel (no network, no package lists), the newest cached one
// is used.
func BuildImage(ctx context.Context, opt ImageOptions) (Image, error) {
	if opt.CacheDir == "" {
		opt.CacheDir = DefaultCacheDir()
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(opt.CacheDir, 0o755); err != nil {
		return Image{}, fmt.Errorf("guest image cache: %w", err)
	}
	kdir, err := kernel(ctx, opt.CacheDir, opt.Logf)
	if err != nil {
		return Image{}, err
	}
	pkg, err := os.ReadFile(filepath.Join(kdir, "package"))
	if err != nil {
		return Image{}, err
	}
	initrd, err := buildInitrd(kdir, opt)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Kernel:        filepath.Join(kdir, "vmlinuz"),
		Initrd:        initrd,
		KernelPackage: strings.TrimSpace(string(pkg)),
	}, nil
}

// kernel returns the cache directory of the guest kernel, fetching it if
// needed; it is named by package, version and the set of modules staged. The directory holds vmlinuz, the modules listed in load order in
// "modules" (as NAME.ko files in modules/) and "package".
func kernel(ctx context.Context, cacheDir string, logf func(string, ...any)) (string, error) {
	kernels := filepath.Join(cacheDir, "kernel")
	name, version, lookErr := cloudKernelPackage(ctx)
	if lookErr != nil {
		// Offline: any kernel fetched before will do.
		cached, _ := filepath.Glob(filepath.Join(kernels, "linux-image-*"))
		if len(cached) == 0 {
			return "", lookErr
		}
		sort.Slice(cached, func(i, j int) bool { return lessKernel(filepath.Base(cached[i]), filepath.Base(cached[j])) })
		logf("qemu: %v; using the cached %s", lookErr, filepath.Base(cached[len(cached)-1]))
		return cached[len(cached)-1], nil
	}
	// The staged modules depend on guestModuleRoots as well as the package.
	var roots []string
	for _, r := range guestModuleRoots {
		roots = append(roots, r.module)
	}
	rootsSum := sha256.Sum256([]byte(strings.Join(roots, ",")))
	dir := filepath.Join(kernels, name+"_"+strings.NewReplacer(":", "_", "/", "_").Replace(version)+"_"+hex.EncodeToString(rootsSum[:4]))
	if _, err := os.Stat(filepath.Join(dir, "package")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(kernels, 0o755); err != nil {
		return "", err
	}
	// Built in a temp dir and renamed into place, so that a concurrent run
	// or an interrupted one never sees half a kernel.
	tmp, err := os.MkdirTemp(kernels, ".fetch-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	logf("qemu: fetching %s %s into %s", name, version, kernels)
	dl := exec.CommandContext(ctx, "apt-get", "download", "-q", name+"="+version)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s=%s: %v: %s", name, version, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: got %d .deb files, want 1", name, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %v: %s", debs[0], err, bytes.TrimSpace(out))
	}
	stage := filepath.Join(tmp, "kernel")
	if err := stageKernel(root, stage); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(stage, "package"), []byte(name+" "+version+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(stage, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "package")); serr == nil {
			return dir, nil // a concurrent run was faster
		}
		return "", err
	}
	return dir, nil
}

// cloudKernelRe matches the image packages of Debian's cloud kernel flavour
// (as opposed to the linux-image-cloud-amd64 meta-package).
var cloudKernelRe = regexp.MustCompile(`^linux-image-[0-9][0-9.]*-[0-9]+-cloud-amd64(-unsigned)?$`)

// cloudKernelPackage asks apt for the newest cloud-amd64 kernel image
// package and its candidate version.
func cloudKernelPackage(ctx context.Context) (name, version string, err error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "search", "--names-only", `^linux-image-[0-9.]+-[0-9]+-cloud-amd64`).Output()
	if err != nil {
		return "", "", fmt.Errorf("apt-cache search for the guest kernel: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if n, _, _ := strings.Cut(line, " "); cloudKernelRe.MatchString(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "", "", errors.New("apt-cache knows no linux-image-*-cloud-amd64 package (run apt-get update; the guest kernel comes from Debian's cloud flavour)")
	}
	sort.Slice(names, func(i, j int) bool { return lessKernel(names[i], names[j]) })
	name = names[len(names)-1]
	out, err = exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", name).Output()
	if err != nil {
		return "", "", fmt.Errorf("apt-cache show %s: %w", name, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Version: "); ok {
			return name, strings.TrimSpace(v), nil
		}
	}
	return "", "", fmt.Errorf("apt-cache show %s: no Version", name)
}

// lessKernel orders kernel package names (or cache dir names, which start
// with one) by the numbers in their ABI version, "6.1.0-56" < "6.1.0-100";
// the -unsigned package sorts after its signed twin, both hold the same
// kernel.
func lessKernel(a, b string) bool {
	na, nb := kernelNumbers(a), kernelNumbers(b)
	for i := 0; i < len(na) && i < len(nb); i++ {
		if na[i] != nb[i] {
			return na[i] < nb[i]
		}
	}
	if len(na) != len(nb) {
		return len(na) < len(nb)
	}
	return !strings.Contains(a, "-unsigned") && strings.Contains(b, "-unsigned")
}

var abiRe = regexp.MustCompile(`^linux-image-([0-9][0-9.]*-[0-9]+)-`)

func kernelNumbers(name string) []int {
	m := abiRe.FindStringSubmatch(name)
	if m == nil {
		return nil
	}
	var ns []int
	for _, f := range strings.FieldsFunc(m[1], func(r rune) bool { return r == '.' || r == '-' }) {
		n, _ := strconv.Atoi(f)
		ns = append(ns, n)
	}
	return ns
}

// stageKernel copies, from an unpacked kernel package at root, vmlinuz and
// the modules the guest's NIC needs into dst.
func stageKernel(root, dst string) error {
	vmlinuz, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	configs, _ := filepath.Glob(filepath.Join(root, "boot", "config-*"))
	if len(vmlinuz) != 1 || len(configs) != 1 {
		return fmt.Errorf("package holds %d vmlinuz and %d config files, want 1 each", len(vmlinuz), len(configs))
	}
	config, err := os.ReadFile(configs[0])
	if err != nil {
		return err
	}
	for _, sym := range guestBuiltins {
		if v := kernelConfig(config, sym); v != "y" {
			return fmt.Errorf("kernel has %s=%q; the guest needs it built in", sym, v)
		}
	}
	var roots []string
	for _, r := range guestModuleRoots {
		switch v := kernelConfig(config, r.config); v {
		case "y":
		case "m":
			roots = append(roots, r.module)
		default:
			return fmt.Errorf("kernel has %s=%q; the guest needs it (y or m)", r.config, v)
		}
	}
	index, err := indexModules(filepath.Join(root, "lib", "modules"))
	if err != nil {
		return err
	}
	order, err := loadOrder(roots, func(name string) ([]string, error) {
		p, ok := index[name]
		if !ok {
			return nil, fmt.Errorf("module %s not in the package", name)
		}
		return moduleDepends(p)
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dst, "modules"), 0o755); err != nil {
		return err
	}
	if err := copyFile(vmlinuz[0], filepath.Join(dst, "vmlinuz")); err != nil {
		return err
	}
	for _, m := range order {
		if err := copyFile(index[m], filepath.Join(dst, "modules", m+".ko")); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dst, "modules.order"), []byte(strings.Join(order, "\n")+"\n"), 0o644)
}

// kernelConfig returns the value of symbol in a kernel .config ("y", "m",
// a string), or "" when it is not set.
func kernelConfig(config []byte, symbol string) string {
	for _, line := range strings.Split(string(config), "\n") {
		if v, ok := strings.CutPrefix(line, symbol+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// indexModules maps each module name under dir (NAME.ko, uncompressed as
// Debian ships them) to its path. Module names treat '-' and '_' alike; the
// index uses '_'.
func indexModules(dir string) (map[string]string, error) {
	index := make(map[string]string)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := strings.CutSuffix(d.Name(), ".ko"); ok && !d.IsDir() {
			index[strings.ReplaceAll(name, "-", "_")] = path
		}
		return nil
	})
	if err == nil && len(index) == 0 {
		err = fmt.Errorf("no .ko modules under %s (compressed modules are not supported)", dir)
	}
	return index, err
}

// moduleDepends reads the "depends=" entry of a kernel module's .modinfo
// section: the modules it needs loaded first (what depmod would put in
// modules.dep, which the package does not ship).
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return parseModinfoDepends(data), nil
}

// parseModinfoDepends extracts the dependency list from a .modinfo section:
// NUL-separated key=value strings, one of them "depends=a,b".
func parseModinfoDepends(modinfo []byte) []string {
	var deps []string
	for _, kv := range bytes.Split(modinfo, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		for _, d := range strings.Split(string(v), ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, strings.ReplaceAll(d, "-", "_"))
			}
		}
	}
	return deps
}

// loadOrder returns roots and everything they depend on, each module after
// its dependencies, as insmod needs them.
func loadOrder(roots []string, depends func(string) ([]string, error)) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(m string, path []string) error
	visit = func(m string, path []string) error {
		switch state[m] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(path, m), " -> "))
		case 2:
			return nil
		}
		state[m] = 1
		deps, err := depends(m)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(path, m)); err != nil {
				return err
			}
		}
		state[m] = 2
		order = append(order, m)
		return nil
	}
	for _, r := range roots {
		if err := visit(r, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// buildInitrd writes the initramfs into the cache, named by the hash of its
// content, unless it is there already, and returns its path.
func buildInitrd(kdir string, opt ImageOptions) (string, error) {
	busybox, err := lookTool("busybox")
	if err != nil {
		return "", errMissing("busybox", "Debian package busybox-static")
	}
	bb, err := readStatic(busybox, "Debian package busybox-static")
	if err != nil {
		return "", err
	}
	var tcpcheck []byte
	if opt.TCPCheck != "" {
		if tcpcheck, err = readStatic(opt.TCPCheck, "build it with BuildTCPCheck"); err != nil {
			return "", err
		}
	}
	orderFile, err := os.ReadFile(filepath.Join(kdir, "modules.order"))
	if err != nil {
		return "", err
	}
	order := strings.Fields(string(orderFile))

	var raw bytes.Buffer
	c := newCPIOWriter(&raw)
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp"} {
		c.Dir(d, 0o755)
	}
	// The kernel opens /dev/console for init before init can mount devtmpfs.
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("bin/busybox", 0o755, bb)
	c.Symlink("bin/sh", "busybox")
	if tcpcheck != nil {
		c.File("bin/tcpcheck", 0o755, tcpcheck)
	}
	c.File("init", 0o755, initScript)
	// The DHCPv4 client's script, the netns guests' own (see init.sh).
	c.File("etc/udhcpc.sh", 0o755, []byte(lab.DHCP4Script))
	c.File("etc/modules", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	for _, m := range order {
		b, err := os.ReadFile(filepath.Join(kdir, "modules", m+".ko"))
		if err != nil {
			return "", err
		}
		c.File("lib/modules/"+m+".ko", 0o644, b)
	}
	if err := c.Close(); err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw.Bytes())
	path := filepath.Join(opt.CacheDir, "initrd-"+hex.EncodeToString(sum[:8])+".cpio.gz")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(opt.CacheDir, ".initrd-")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(gz.Bytes()); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	opt.Logf("qemu: built initramfs %s (%d modules: %s; tcpcheck %v)", path, len(order), strings.Join(order, " "), tcpcheck != nil)
	return path, os.Rename(tmp.Name(), path)
}

// readStatic reads an executable that must run in the guest, which has no
// shared libraries: it must be a statically linked ELF (no PT_INTERP).
func readStatic(path, hint string) ([]byte, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", path, hint, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked; the guest has no shared libraries (%s)", path, hint)
		}
	}
	return os.ReadFile(path)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// BuildTCPCheck compiles tests/integration/cmd/tcpcheck statically
// (CGO_ENABLED=0), so that it runs in the guest, into dir and returns its
// path. It must run inside the kgswitch module.
func BuildTCPCheck(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find the kgswitch module (run from inside the repository): %w", err)
	}
	bin := filepath.Join(dir, "tcpcheck-static")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./tests/integration/cmd/tcpcheck")
	cmd.Dir = strings.TrimSpace(string(out))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build tcpcheck: %v\n%s", err, o)
	}
	return bin, nil
}
