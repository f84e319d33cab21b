// Package qemu runs real QEMU guests on the hosts of the netns lab (package
// lab) and live-migrates them between hosts, for the tests that a VM that
// moves between Open vSwitch hosts stays reachable at its home address.
//
// BuildImage makes the guest: Debian's cloud kernel (fetched with apt-get
// download and cached, never installed) and an initramfs of busybox-static,
// the virtio modules and init.sh, which configures eth0 from the kernel
// command line, writes a heartbeat ("hb N UPTIME") on the serial console every
// 100 ms and runs a command shell on a virtio console. Under TCG (no KVM) it
// boots in about 2-3 s.
//
// Start runs qemu-system-x86_64 inside a host's network namespace with the
// guest's NIC on a persistent tap that is a port of the host's bridge, as
// libvirt sets it up; VM.Shell runs commands in the guest, VM.Heartbeats and
// VM.Crash read its console. Migrate moves a guest into a VM started with
// Incoming through QMP (migrate-incoming, migrate over a unix socket) and
// reports QEMU's downtime and the STOP and RESUME times of both QEMUs.
package qemu
