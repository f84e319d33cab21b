package ovsctl

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestIntegrationFlows(t *testing.T) {
	l := startOVS(t)
	f := NewFlows(l.mgmt("br0"), nil)
	const foreign = 0x1234
	l.ofctl("add-flow", l.mgmt("br0"), fmt.Sprintf("cookie=%#x,priority=5,arp,actions=NORMAL", foreign))

	c1, c2 := Cookie|1, Cookie|2
	set1 := []*ovs.Flow{
		{Priority: 100, Protocol: ovs.ProtocolIPv6, Matches: []ovs.Match{ovs.IPv6Destination("2001:db8::1")}, Actions: []ovs.Action{ovs.Normal()}},
		{Priority: 90, InPort: 7, Actions: []ovs.Action{ovs.Drop()}},
	}
	if err := f.Replace(c1, set1); err != nil {
		t.Fatalf("Replace(c1) = %v", err)
	}
	first := l.flowLines(c1)
	if len(first) != 2 {
		t.Fatalf("got %d flows with cookie c1 = %q, want 2", len(first), first)
	}
	if set1[0].Cookie != 0 {
		t.Errorf("got caller's flow Cookie = %#x after Replace, want 0 (unmodified)", set1[0].Cookie)
	}
	if err := f.Replace(c1, set1); err != nil {
		t.Fatalf("second Replace(c1) = %v", err)
	}
	if again := l.flowLines(c1); !slices.Equal(again, first) {
		t.Errorf("got flows after identical Replace = %q, want %q", again, first)
	}

	if err := f.Replace(c2, []*ovs.Flow{{Priority: 80, Protocol: ovs.ProtocolICMPv6, Actions: []ovs.Action{ovs.Normal()}}}); err != nil {
		t.Fatalf("Replace(c2) = %v", err)
	}
	set1b := []*ovs.Flow{{Priority: 110, Protocol: ovs.ProtocolIPv6, Matches: []ovs.Match{ovs.IPv6Destination("2001:db8::2")}, Actions: []ovs.Action{ovs.Normal()}}}
	if err := f.Replace(c1, set1b); err != nil {
		t.Fatalf("Replace(c1, new set) = %v", err)
	}
	if got := l.flowLines(c1); len(got) != 1 || !strings.Contains(got[0], "2001:db8::2") {
		t.Errorf("got c1 flows after replacing = %q, want just the ipv6_dst=2001:db8::2 flow", got)
	}
	if got := l.flowLines(c2); len(got) != 1 {
		t.Errorf("got c2 flows = %q, want 1 (untouched by Replace(c1))", got)
	}

	// Start-up reconciliation sees exactly kgswitch's cookies, never the
	// foreign one.
	if got, err := f.Cookies(); err != nil || !maps.Equal(got, map[uint64]int{c1: 1, c2: 1}) {
		t.Errorf("got Cookies() = %v, %v, want {c1: 1, c2: 1}", got, err)
	}
	if n, err := f.Count(Cookie, CookieMask); err != nil || n != 2 {
		t.Errorf("got Count(Cookie, CookieMask) = %d, %v, want 2", n, err)
	}
	if n, err := f.Count(foreign, ^uint64(0)); err != nil || n != 1 {
		t.Errorf("got Count(foreign, exact) = %d, %v, want 1", n, err)
	}
	if n, err := f.Count(0, 0); err != nil || n < 4 {
		t.Errorf("got Count(0, 0) = %d, %v, want >= 4 (ours, foreign, NORMAL)", n, err)
	}

	all, err := f.Dump(Cookie, CookieMask)
	if err != nil {
		t.Fatalf("Dump(Cookie, CookieMask) = %v", err)
	}
	var cookies []uint64
	for _, fl := range all {
		cookies = append(cookies, fl.Cookie)
	}
	slices.Sort(cookies)
	if want := []uint64{c1, c2}; !slices.Equal(cookies, want) {
		t.Errorf("got Dump(Cookie, CookieMask) cookies = %#x, want %#x", cookies, want)
	}
	if every, err := f.Dump(0, 0); err != nil || len(every) < 4 {
		t.Errorf("got Dump(0, 0) = %d flows, %v, want >= 4 (ours, foreign, NORMAL)", len(every), err)
	}

	if err := f.deleteCookie(c1); err != nil {
		t.Fatalf("Delete(c1) = %v", err)
	}
	if got := l.flowLines(c1); len(got) != 0 {
		t.Errorf("got c1 flows after Delete = %q, want none", got)
	}
	if got := l.flowLines(c2); len(got) != 1 {
		t.Errorf("got c2 flows after Delete(c1) = %q, want 1", got)
	}
	if got := l.flowLines(foreign); len(got) != 1 {
		t.Errorf("got foreign flows after Delete(c1) = %q, want 1", got)
	}
	// Deleting every stale cookie Cookies lists leaves the foreign flow.
	stale, err := f.Cookies()
	if err != nil {
		t.Fatal(err)
	}
	for c := range stale {
		if err := f.deleteCookie(c); err != nil {
			t.Errorf("Delete(%#x) = %v", c, err)
		}
	}
	if got, err := f.Cookies(); err != nil || len(got) != 0 {
		t.Errorf("got Cookies() after deleting them = %v, %v, want none", got, err)
	}
	if got := l.flowLines(foreign); len(got) != 1 {
		t.Errorf("got foreign flows after deleting all of kgswitch's = %q, want 1", got)
	}
	if err := f.Replace(c2, []*ovs.Flow{{Priority: 80, Protocol: ovs.ProtocolICMPv6, Actions: []ovs.Action{ovs.Normal()}}}); err != nil {
		t.Fatal(err)
	}
	if err := f.deleteCookie(foreign); !errors.Is(err, ErrForeignCookie) {
		t.Errorf("Delete(foreign) = %v, want ErrForeignCookie", err)
	}
	if err := f.Replace(c2, nil); err != nil {
		t.Fatalf("Replace(c2, nil) = %v", err)
	}
	if got := l.flowLines(c2); len(got) != 0 {
		t.Errorf("got c2 flows after Replace(c2, nil) = %q, want none", got)
	}
	// A bundle that fails must change nothing: the delete of c1 must not
	// happen when one of the adds is rejected.
	if err := f.Replace(c1, set1); err != nil {
		t.Fatalf("Replace(c1) = %v", err)
	}
	before := l.flowLines(c1)
	bad := []*ovs.Flow{{Priority: 1, Table: 254, Actions: []ovs.Action{ovs.Normal()}}}
	if err := f.Replace(c1, bad); err == nil {
		t.Errorf("Replace(c1, flow in table 254) = nil, want error")
	}
	if after := l.flowLines(c1); !slices.Equal(after, before) {
		t.Errorf("got c1 flows after failed Replace = %q, want unchanged %q", after, before)
	}
}

func TestIntegrationNoFlood(t *testing.T) {
	l := startOVS(t)
	// Three veth pairs: x0 is on br0, x1 is the host side we send or
	// capture on.
	for _, p := range []string{"a", "b", "c"} {
		l.run("ip", "link", "add", p+"0", "type", "veth", "peer", "name", p+"1")
		for _, dev := range []string{p + "0", p + "1"} {
			l.run("ip", "link", "set", dev, "up")
			l.run("ethtool", "-K", dev, "tx", "off")
		}
		l.vsctl("add-port", "br0", p+"0")
	}
	f := NewFlows(l.mgmt("br0"), nil)
	a, b, c := l.packetSocket("a1"), l.packetSocket("b1"), l.packetSocket("c1")
	defer unix.Close(a)
	defer unix.Close(b)
	defer unix.Close(c)

	round := 0
	// flood sends one broadcast in on a0 and reports which of b1, c1 saw it.
	flood := func() (gotB, gotC bool) {
		t.Helper()
		round++
		marker := []byte(fmt.Sprintf("kgswitch-noflood-%d-%d", os.Getpid(), round))
		frame := make([]byte, 60)
		copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0xa1, 0x88, 0xb5})
		copy(frame[14:], marker)
		// Repeat so that a frame lost while ports settle does not decide.
		for range 3 {
			if err := unix.Send(a, frame, 0); err != nil {
				t.Fatalf("send on a1: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return sawMarker(b, marker), sawMarker(c, marker)
	}

	// Before: NORMAL floods to both, which shows the capture works.
	waitUntil(t, "broadcast reaching b1 and c1 (ports up)", func() bool {
		gotB, gotC := flood()
		return gotB && gotC
	})
	if err := f.SetNoFlood("b0", true); err != nil {
		t.Fatalf("SetNoFlood(b0, true) = %v", err)
	}
	if !l.noFlood("b0") {
		t.Errorf("ovs-ofctl show does not list b0 with config NO_FLOOD:\n%s", l.run("ovs-ofctl", "-O", "OpenFlow10", "show", l.mgmt("br0")))
	}
	if gotB, gotC := flood(); gotB || !gotC {
		t.Errorf("NORMAL with no-flood on b0: got b1 saw broadcast = %v, c1 = %v, want false, true", gotB, gotC)
	}
	if err := f.SetNoFlood("b0", false); err != nil {
		t.Fatalf("SetNoFlood(b0, false) = %v", err)
	}
	if gotB, gotC := flood(); !gotB || !gotC {
		t.Errorf("NORMAL after flood on b0: got b1 saw broadcast = %v, c1 = %v, want true, true", gotB, gotC)
	}
	if st, err := f.PortStats("b0"); err != nil || st.Transmitted.Packets == 0 {
		t.Errorf("got PortStats(b0) = %+v, %v, want transmitted packets", st, err)
	}

	// Packets counts what a cookie's flows matched: a drop flow for a0.
	a0, err := strconv.Atoi(strings.TrimSpace(l.vsctl("get", "Interface", "a0", "ofport")))
	if err != nil {
		t.Fatal(err)
	}
	const dropCookie = Cookie | 0x77
	if err := f.Replace(dropCookie, []*ovs.Flow{{Priority: 300, InPort: a0, Actions: []ovs.Action{ovs.Drop()}}}); err != nil {
		t.Fatal(err)
	}
	// a1's own IPv6 chatter (MLD, RS) may hit the flow too: count a delta.
	before, _, err := f.Packets(dropCookie)
	if err != nil {
		t.Fatal(err)
	}
	if gotB, gotC := flood(); gotB || gotC {
		t.Errorf("drop flow on a0: broadcast still reached b1 = %v, c1 = %v", gotB, gotC)
	}
	n, _, err := f.Packets(dropCookie)
	if err != nil || n < before+3 {
		t.Errorf("got Packets = %d, %v, want at least %d (the 3 dropped broadcasts)", n, err, before+3)
	}
	if m, err := f.PacketsByCookie(); err != nil || m[dropCookie] < n {
		t.Errorf("got PacketsByCookie = %v, %v, want %#x counted at least %d", m, err, dropCookie, n)
	}
}

// packetSocket opens an AF_PACKET socket bound to dev inside the lab's
// namespace. The socket stays in that namespace after the thread leaves it.
func (l *ovsLab) packetSocket(dev string) int {
	l.t.Helper()
	var fd int
	err := func() error {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			return err
		}
		defer orig.Close()
		h, err := netns.GetFromName(l.ns)
		if err != nil {
			runtime.UnlockOSThread()
			return err
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			return err
		}
		defer func() {
			// A thread that cannot go back must die with the goroutine.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}()
	if err != nil {
		l.t.Fatalf("AF_PACKET socket on %s in %s: %v", dev, l.ns, err)
	}
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sawMarker reads fd for up to a second and reports whether an incoming
// frame carried marker.
func sawMarker(fd int, marker []byte) bool {
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // EAGAIN at the receive timeout
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if bytes.Contains(buf[:n], marker) {
			return true
		}
	}
	return false
}

func kind(k EventKind) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == k }
}

// indexOf returns the position in seen of the first event at or after
// from for which ok holds, or -1.
func indexOf(seen []Event, from int, ok func(Event) bool) int {
	for i := from; i < len(seen); i++ {
		if ok(seen[i]) {
			return i
		}
	}
	return -1
}
