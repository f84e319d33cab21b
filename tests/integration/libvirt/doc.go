// Package libvirt runs Debian's libvirtd on the hosts of the netns lab
// (package lab), one daemon per host, and live-migrates the lab's guest
// (qemu.Image) between them with virsh, for the test that kgswitch keeps a
// guest reachable when libvirt, not the test, plugs its tap into Open
// vSwitch and moves it.
//
// Start runs libvirtd in a host's network namespace and in a mount
// namespace of its own, where its /run, /etc/libvirt, /var/lib/libvirt,
// /var/log/libvirt and /var/cache/libvirt are directories of the lab and
// /run/openvswitch is the host's OVS run directory: libvirt's ovs-vsctl
// plugs taps into that host's bridge. Daemons talk to each other over TCP
// on the hosts' lab addresses (peer-to-peer migration). Domain is the
// guest's domain XML; Daemon.Create boots it, Daemon.Migrate moves it
// (virsh migrate --live --p2p), and both return a qemu.VM attached to the
// guest's console and shell (qemu.Attach).
package libvirt
