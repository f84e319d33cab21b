package scenario

import "testing"

func TestParseGuestIPv4(t *testing.T) {
	// iproute2 (a netns guest) and busybox (the QEMU guest) print the same
	// configuration.
	iproute2 := `2: eth0@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000 link-netns kg1x0-hostA
    inet 192.0.2.10/24 scope global eth0
       valid_lft forever preferred_lft forever
ROUTES
default via 192.0.2.1 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.10
`
	busybox := `2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast qlen 1000
    inet 192.0.2.10/24 scope global eth0
ROUTES
192.0.2.0/24 dev eth0 scope link  src 192.0.2.10 
default via 192.0.2.1 dev eth0 metric 5 linkdown
`
	a, b := ParseGuestIPv4(iproute2), ParseGuestIPv4(busybox)
	want := GuestIPv4{
		Addrs:  []string{"192.0.2.10/24 scope global"},
		Routes: []string{"192.0.2.0/24 dev eth0 scope link src 192.0.2.10", "default via 192.0.2.1 dev eth0"},
	}
	if !a.Equal(want) || !b.Equal(want) {
		t.Errorf("got %v (iproute2) and %v (busybox), want %v", a, b, want)
	}
	if empty := ParseGuestIPv4("2: eth0: <UP>\nROUTES\n"); len(empty.Addrs)+len(empty.Routes) != 0 || empty.Equal(want) {
		t.Errorf("got %v for a guest without IPv4, want nothing", empty)
	}
}
