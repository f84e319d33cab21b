package labha

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// A gratuitous ARP leaves the SOCK_DGRAM link socket as an ARP packet to
// the broadcast MAC, the kernel building the Ethernet header.
func TestFrameSockaddr(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	f, err := GratuitousARP(netip.MustParseAddr("192.0.2.10"), mac)
	if err != nil {
		t.Fatal(err)
	}
	sa, payload, err := frameSockaddr(7, f)
	if err != nil {
		t.Fatal(err)
	}
	if sa.Protocol != htons(unix.ETH_P_ARP) || sa.Ifindex != 7 || sa.Halen != 6 ||
		!bytes.Equal(sa.Addr[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("got sockaddr %+v, want ARP to ff:ff:ff:ff:ff:ff on ifindex 7", sa)
	}
	if !bytes.Equal(payload, f[ethHeaderLen:]) || len(payload) != arpLen {
		t.Errorf("got payload % x, want the %d-octet ARP packet % x", payload, arpLen, f[ethHeaderLen:])
	}
	if _, _, err := frameSockaddr(7, f[:ethHeaderLen-1]); err == nil {
		t.Errorf("got no error for a %d-octet frame, want one", ethHeaderLen-1)
	}
}

// Home addresses are routed as host routes: /128 for IPv6, /32 for IPv4.
func TestHostRoute(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"2001:db8:2000::10", "2001:db8:2000::10/128"},
		{"192.0.2.10", "192.0.2.10/32"},
	} {
		if got := hostRoute(netip.MustParseAddr(tc.addr)).String(); got != tc.want {
			t.Errorf("got hostRoute(%s) = %s, want = %s", tc.addr, got, tc.want)
		}
	}
}
