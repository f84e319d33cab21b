#!/usr/bin/env bash
# Installs what `make demo`, `make test` and `make bench` need on a Debian 12
# machine, and nothing that is already there: safe to run any number of times.
set -euo pipefail

# command -> Debian package that provides it
declare -A need=(
	[ovs-vswitchd]=openvswitch-switch
	[ovsdb-server]=openvswitch-switch
	[ip]=iproute2
	[ethtool]=ethtool
	[iperf3]=iperf3
	[tshark]=tshark
	[tcpdump]=tcpdump
	[ping]=iputils-ping
	[pgrep]=procps
	[radvd]=radvd
	# The QEMU live-migration tests (tests/integration/qemu); their guest
	# kernel is fetched with `apt-get download` when they run, not installed.
	[qemu-system-x86_64]=qemu-system-x86
	# The libvirt migration test (tests/integration/libvirt) runs one libvirtd
	# per lab host and drives it with virsh.
	[libvirtd]=libvirt-daemon-system
	[virsh]=libvirt-clients
)
missing=()
for cmd in "${!need[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# scapy is a Python module, not a command: it cross-checks mipv6's wire format.
/usr/bin/python3 -c 'import scapy' >/dev/null 2>&1 || missing+=(python3-scapy)
# scapy's IPsec needs cryptography: it cross-checks esp's ESP.
/usr/bin/python3 -c 'import cryptography' >/dev/null 2>&1 || missing+=(python3-cryptography)
# The QEMU guests' initramfs needs a statically linked busybox; Debian's
# busybox package is dynamically linked, busybox-static replaces it.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)

if ((${#missing[@]})); then
	pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
	echo "install-deps: installing Debian packages: $pkgs"
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: need root to install packages (and to run the netns lab)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $pkgs
	# The lab starts a libvirtd of its own in each host's namespace, with its
	# own /run, /etc/libvirt and /var/lib/libvirt (tests/integration/libvirt).
	# It needs none of the system-wide daemons the package starts under
	# systemd, and the system libvirtd would autostart its "default" network
	# (virbr0, dnsmasq, firewall rules) in the root namespace: stop and disable
	# them, but only when this script installed libvirt, not a libvirtd the
	# machine already ran.
	if [[ " $pkgs " == *" libvirt-daemon-system "* ]] && [ -d /run/systemd/system ]; then
		systemctl disable --now libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket \
			virtlogd.service virtlogd.socket virtlogd-admin.socket virtlockd.service virtlockd.socket virtlockd-admin.socket \
			libvirt-guests.service 2>/dev/null || true
	fi
fi

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "install-deps: Go is at /usr/local/go/bin; add it to PATH" >&2
	else
		echo "install-deps: Go 1.26 or newer is required (https://go.dev/dl/), installed at /usr/local/go" >&2
	fi
	exit 1
fi

go mod download
# staticcheck, pinned: the module proxy here refuses @latest.
if [ ! -x "$(go env GOPATH)/bin/staticcheck" ]; then
	echo "install-deps: installing staticcheck v0.8.2"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
