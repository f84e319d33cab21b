package libvirt

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/qemu"
)

// Domain is a libvirt domain of the lab's guest image (qemu.Image): the
// same kernel, initramfs and command line as a guest of qemu.Start, with
// its NIC on the host's OVS bridge through libvirt.
type Domain struct {
	// Name is the domain's name; it names its console sockets too.
	Name  string
	Image qemu.Image
	// MAC is the NIC's MAC address (lab.GuestMAC when nil).
	MAC net.HardwareAddr
	// Addr is the guest's address on eth0 (lab.HoA/64 when invalid), and
	// Gateway its default router (lab.RouterLinkLocal when invalid).
	Addr    netip.Prefix
	Gateway netip.Addr
	// MemoryMB is the guest's memory (256 when 0).
	MemoryMB int
}

func (dom *Domain) setDefaults() {
	if dom.MAC == nil {
		dom.MAC = lab.GuestMAC
	}
	if !dom.Addr.IsValid() {
		dom.Addr = netip.PrefixFrom(lab.HoA, lab.HomePrefix.Bits())
	}
	if !dom.Gateway.IsValid() {
		dom.Gateway = lab.RouterLinkLocal
	}
	if dom.MemoryMB == 0 {
		dom.MemoryMB = 256
	}
}

// ConsoleSocket and ShellSocket are the unix sockets of the guest's serial
// console and command shell, as the daemon and its QEMUs see them (see
// Daemon.Path).
func (dom Domain) ConsoleSocket() string {
	return filepath.Join(GuestSocketDir, dom.Name+"-con.sock")
}

// ShellSocket: see ConsoleSocket.
func (dom Domain) ShellSocket() string { return filepath.Join(GuestSocketDir, dom.Name+"-sh.sock") }

// domainXML is the domain. The interface is what a libvirt host on Open
// vSwitch declares: a bridge interface with an openvswitch virtualport, for
// which libvirt creates a tap (vnetN, the first free N on the host), adds it
// to the bridge with ovs-vsctl and sets its external_ids attached-mac,
// iface-id (the virtualport's interfaceid, random here) and vm-id (the
// domain's UUID).
//
// The NIC's checksum offloads are off (<host csum='off'/>, <guest
// csum='off'/>: QEMU's csum=off,guest_csum=off): libvirt opens the tap with
// a virtio-net header, through which a guest with csum on would leave its
// TCP and UDP checksums to the host, and the lab's userspace datapath
// forwards such packets unfilled (qemu.Start opens its tap with
// vnet_hdr=off for the same reason). A KVM host with the kernel datapath
// fills them and needs no such setting.
//
// The serial console and a virtio console (the guest's hvc0, where init.sh
// runs its command shell) are unix sockets QEMU listens on; without <target
// type='virtio'/> the console would be the serial port again.
var domainXML = template.Must(template.New("domain").Funcs(template.FuncMap{"x": xmlEscape}).Parse(`<domain type='qemu'>
  <name>{{x .Name}}</name>
  <memory unit='MiB'>{{.MemoryMB}}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{{x .Image.Kernel}}</kernel>
    <initrd>{{x .Image.Initrd}}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 kgs.addr={{.Addr}} kgs.gw={{.Gateway}}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='bridge'>
      <source bridge='br0'/>
      <virtualport type='openvswitch'/>
      <mac address='{{.MAC}}'/>
      <model type='virtio'/>
      <driver name='qemu'>
        <host csum='off'/>
        <guest csum='off'/>
      </driver>
      <rom enabled='no'/>
    </interface>
    <serial type='unix'>
      <source mode='bind' path='{{x .ConsoleSocket}}'/>
      <target port='0'/>
    </serial>
    <console type='unix'>
      <source mode='bind' path='{{x .ShellSocket}}'/>
      <target type='virtio' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
`))

func xmlEscape(s string) (string, error) {
	var b strings.Builder
	err := xml.EscapeText(&b, []byte(s))
	return b.String(), err
}

// XML returns the domain's XML.
func (dom Domain) XML() (string, error) {
	dom.setDefaults()
	var b bytes.Buffer
	if err := domainXML.Execute(&b, dom); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Create starts the domain on d (virsh create --paused), attaches to its
// console and shell and lets it run (virsh resume): the console has every
// line of the boot. The returned VM's Close only hangs up; Daemon.Close
// destroys the domain.
func (d *Daemon) Create(ctx context.Context, dom Domain) (*qemu.VM, error) {
	text, err := dom.XML()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(d.Dir, dom.Name+".xml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return nil, err
	}
	d.removeSockets(dom)
	started := time.Now()
	if _, err := d.Virsh(ctx, "create", "--paused", path); err != nil {
		return nil, errors.Join(err, d.qemuLog(dom))
	}
	vm, err := d.attach(ctx, dom, started)
	if err != nil {
		return nil, err
	}
	if _, err := d.Virsh(ctx, "resume", dom.Name); err != nil {
		vm.Close()
		return nil, err
	}
	d.logf("libvirt %s: domain %s created and resumed", d.Host, dom.Name)
	return vm, nil
}

// attach attaches to the console and shell of dom on d.
func (d *Daemon) attach(ctx context.Context, dom Domain, started time.Time) (*qemu.VM, error) {
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	vm, err := qemu.Attach(actx, qemu.AttachConfig{
		Host: d.Host, Name: dom.Name + "@" + d.Host,
		ConsoleSocket: d.Path(dom.ConsoleSocket()), ShellSocket: d.Path(dom.ShellSocket()),
		ConsoleLog: filepath.Join(d.Dir, dom.Name+"-console.log"),
		Started:    started,
	})
	if err != nil {
		return nil, errors.Join(err, d.qemuLog(dom))
	}
	return vm, nil
}

// removeSockets removes what an earlier QEMU of dom on d left of its
// sockets, so that attach connects to none of them.
func (d *Daemon) removeSockets(dom Domain) {
	for _, s := range []string{dom.ConsoleSocket(), dom.ShellSocket()} {
		_ = os.Remove(d.Path(s))
	}
}

// qemuLog returns an error carrying QEMU's log of dom on d (libvirt writes
// QEMU's command line and output there).
func (d *Daemon) qemuLog(dom Domain) error {
	b, err := os.ReadFile(filepath.Join(d.Dir, "log", "qemu", dom.Name+".log"))
	if err != nil || len(b) == 0 {
		return nil
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return fmt.Errorf("QEMU log of %s on %s:\n%s", dom.Name, d.Host, strings.Join(lines[max(0, len(lines)-10):], "\n"))
}

// Tap returns the name of the tap libvirt made for the domain's NIC on d
// (virsh domiflist).
func (d *Daemon) Tap(ctx context.Context, name string) (string, error) {
	out, err := d.Virsh(ctx, "domiflist", name)
	if err != nil {
		return "", err
	}
	// Interface Type Source Model MAC
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 5 && f[1] == "bridge" {
			return f[0], nil
		}
	}
	return "", fmt.Errorf("%s: domain %s has no bridge interface: %q", d.Host, name, out)
}

// Migration is what Migrate saw of one live migration.
type Migration struct {
	// Start and End bracket `virsh migrate`.
	Start, End time.Time
	// JobInfo is the destination's `virsh domjobinfo --completed`, or why
	// it is missing.
	JobInfo string
	// Downtime is the guest's pause as libvirt reports it ("Total
	// downtime" in JobInfo); zero when it does not.
	Downtime time.Duration
}

// parseDowntime returns the "Total downtime:   415   ms" of domjobinfo.
func parseDowntime(jobinfo string) time.Duration {
	for _, line := range strings.Split(jobinfo, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Total downtime:")
		if f := strings.Fields(rest); ok && len(f) == 2 && f[1] == "ms" {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return time.Duration(n) * time.Millisecond
			}
		}
	}
	return 0
}

// Migrate live-migrates the domain from d to dst, peer to peer:
//
//	virsh -c d.URI migrate --live --p2p NAME dst.TCPURI
//
// d's libvirtd connects to dst's over TCP inside the lab, and d's QEMU sends
// the guest to the QEMU dst's libvirtd starts, on the address of dst's
// migration_host. It attaches to the destination's console and shell as
// soon as that QEMU listens, and returns the guest there once the migration
// completed.
func (d *Daemon) Migrate(ctx context.Context, dom Domain, dst *Daemon) (*qemu.VM, Migration, error) {
	dst.removeSockets(dom)
	type attached struct {
		vm  *qemu.VM
		err error
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan attached, 1)
	m := Migration{Start: time.Now()}
	go func() {
		vm, err := dst.attach(actx, dom, m.Start)
		ch <- attached{vm, err}
	}()
	_, err := d.Virsh(ctx, "migrate", "--live", "--p2p", dom.Name, dst.TCPURI)
	m.End = time.Now()
	if err != nil {
		cancel()
		if a := <-ch; a.vm != nil {
			a.vm.Close()
		}
		return nil, m, errors.Join(err, d.qemuLog(dom), dst.qemuLog(dom))
	}
	a := <-ch
	if a.err != nil {
		return nil, m, a.err
	}
	if out, err := dst.Virsh(ctx, "domjobinfo", "--completed", dom.Name); err != nil {
		m.JobInfo = err.Error()
	} else {
		m.JobInfo = out
		m.Downtime = parseDowntime(out)
	}
	d.logf("libvirt: %s migrated %s -> %s in %v", dom.Name, d.Host, dst.Host, m.End.Sub(m.Start).Round(time.Millisecond))
	return a.vm, m, nil
}
