#!/bin/sh
# udhcpc's event script for the lab's guests, the netns ones
# (lab.StartGuestDHCP4) and the QEMU one (qemu/init.sh) alike: it applies
# the lease to $interface with ip (iproute2's or busybox's), then appends a
# line for the event to $KGS_DHCP4_LOG, which lab.ParseDHCP4Events reads.
# udhcpc passes the lease in the environment (ip, mask, router, serverid,
# lease, dns, domain) and the event as $1.
case $1 in
deconfig)
	# No lease (udhcpc starting, or the lease lost): no IPv4 address.
	ip -4 addr flush dev "$interface"
	;;
bound | renew)
	# A renewal that keeps the address leaves it alone, so that no
	# connection notices.
	if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$mask "; then
		ip -4 addr flush dev "$interface"
		ip addr add "$ip/$mask" dev "$interface"
	fi
	for r in $router; do
		ip -4 route replace default via "$r" dev "$interface"
		break
	done
	;;
esac
t=$(date +%s.%N)
case $t in *N) t=$(date +%s) ;; esac # busybox's date has no %N
echo "$t $1 ip=$ip mask=$mask router=${router%% *} serverid=$serverid lease=$lease dns=$(echo $dns | tr ' ' ,) domain=$domain" >>"${KGS_DHCP4_LOG:-/dev/null}"
