#!/bin/busybox sh
# PID 1 of the kgswitch test guest (see image.go). It configures eth0 from the
# kgs.* parameters on the kernel command line (IPv4 by DHCP with kgs.dhcp4=1),
# starts a command shell on the virtio console and then prints a heartbeat on
# the console forever.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# Before eth0 exists, so that it inherits them: no Router Advertisements, no
# Duplicate Address Detection (the link-local address would be tentative for
# a second and the guest would stay silent meanwhile).
sysctl -q -w net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
	net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0

# The cloud kernel builds virtio and virtio-net as modules; image.go lists
# them in load order (dependencies first).
for m in $(cat /etc/modules); do
	insmod "/lib/modules/$m.ko" || echo "kgs-guest: insmod $m failed"
done

ADDR= GW= HB=100000 DHCP4=
for p in $(cat /proc/cmdline); do
	case "$p" in
	kgs.addr=*) ADDR=${p#kgs.addr=} ;;
	kgs.gw=*) GW=${p#kgs.gw=} ;;
	kgs.hb_us=*) HB=${p#kgs.hb_us=} ;;
	kgs.dhcp4=*) DHCP4=${p#kgs.dhcp4=} ;;
	esac
done

ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 500 ]; do
	usleep 10000
	i=$((i + 1))
done
ip link set eth0 up
# Traffic flows at once (the qdisc is attached when eth0 opens with carrier
# or when the carrier comes); the operational state, and with it the
# link-local address, follows up to a second later (linkwatch), which ready
# does not wait for.
# No nodad: busybox ip lacks it; accept_dad=0 above has the same effect.
[ -n "$ADDR" ] && ip -6 addr add "$ADDR" dev eth0
[ -n "$GW" ] && ip -6 route add default via "$GW" dev eth0
# IPv4 as a dual-stack VM gets it: from DHCP, renewed for as long as the
# guest runs, wherever it runs. The script (the netns guests' own, see
# lab.DHCP4Script) applies each lease and logs each event to
# /tmp/dhcp4.log; udhcpc's own words go to /tmp/udhcpc.log.
if [ "$DHCP4" = 1 ]; then
	KGS_DHCP4_LOG=/tmp/dhcp4.log udhcpc -f -i eth0 -s /etc/udhcpc.sh -t 10 -T 1 \
		>/tmp/udhcpc.log 2>&1 &
fi

# The command shell: commands arrive on the virtio console hvc0 and their
# output goes back there. A read loop hands sh each line as it arrives
# (`cat /dev/hvc0 | sh` passed a command on only once the next one came), and
# reading from a pipe makes sh non-interactive: no prompt, no line editing.
# The tty stays open on fd 3, or it would lose its raw mode between opens; a
# shell that exits (say, on a syntax error) is replaced.
i=0
while [ ! -e /dev/hvc0 ] && [ $i -lt 500 ]; do
	usleep 10000
	i=$((i + 1))
done
(
	exec 3<>/dev/hvc0
	stty raw -echo <&3
	while :; do
		while IFS= read -r line; do
			printf '%s\n' "$line"
		done <&3 | setsid sh >&3 2>&3
	done
) &

echo "kgs-guest ready mac=$(cat /sys/class/net/eth0/address) addr=$ADDR gw=$GW dhcp4=$DHCP4"
n=0
while :; do
	read -r up _ </proc/uptime
	echo "hb $n $up"
	n=$((n + 1))
	usleep "$HB"
done
