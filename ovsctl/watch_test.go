package ovsctl

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSwitchAddr(t *testing.T) {
	t.Setenv("OVS_RUNDIR", "/run/lab")
	tests := []struct {
		target, network, addr string
		wantErr               bool
	}{
		{"unix:/run/x/br0.mgmt", "unix", "/run/x/br0.mgmt", false},
		{"tcp:127.0.0.1:6653", "tcp", "127.0.0.1:6653", false},
		{"br0", "unix", "/run/lab/br0.mgmt", false},
		{"ssl:1.2.3.4:6653", "", "", true},
		{"", "", "", true},
		{"../br0", "", "", true},
	}
	for _, tt := range tests {
		network, addr, err := switchAddr(tt.target)
		if network != tt.network || addr != tt.addr || (err != nil) != tt.wantErr {
			t.Errorf("got switchAddr(%q) = %q, %q, %v, want %q, %q, error %v", tt.target, network, addr, err, tt.network, tt.addr, tt.wantErr)
		}
	}
}

func TestSwitchStateString(t *testing.T) {
	for s, want := range map[SwitchState]string{SwitchUp: "SwitchUp", SwitchDown: "SwitchDown", 0: "SwitchState(0)"} {
		if got := s.String(); got != want {
			t.Errorf("got SwitchState(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

// fakeSwitch is an OpenFlow listener on a unix socket that says hello and
// sends one echo request per connection, reporting whether the reply came.
type fakeSwitch struct {
	ln      net.Listener
	replied chan bool
}

func startFakeSwitch(t *testing.T, path string) *fakeSwitch {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeSwitch{ln: ln, replied: make(chan bool, 10)}
}

// serveOne accepts a connection, talks, and closes it when hangup fires.
func (s *fakeSwitch) serveOne(t *testing.T, hangup <-chan struct{}) {
	c, err := s.ln.Accept()
	if err != nil {
		t.Errorf("accept: %v", err)
		return
	}
	defer c.Close()
	r := bufio.NewReader(c)
	h, _, err := readOFMessage(r)
	if err != nil || h.Type != ofTypeHello {
		t.Errorf("got first message %+v, %v, want hello", h, err)
		return
	}
	if _, err := c.Write([]byte{4, ofTypeHello, 0, 8, 0, 0, 0, 1}); err != nil {
		t.Errorf("write hello: %v", err)
		return
	}
	// Unrelated traffic first (a port status), then the echo request.
	c.Write([]byte{4, 12, 0, 12, 0, 0, 0, 0, 1, 2, 3, 4})
	c.Write([]byte{4, ofTypeEchoRequest, 0, 10, 0, 0, 0, 77, 'h', 'i'})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, msg, err := readOFMessage(r)
	s.replied <- err == nil && h.Type == ofTypeEchoReply && h.XID == 77 && string(msg[ofHeaderLen:]) == "hi"
	<-hangup
}

func TestWatchSwitchFake(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "kgwatch-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "br0.mgmt")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := NewFlows("unix:"+path, nil)
	ch := f.WatchSwitch(ctx)

	next := func(want SwitchState) SwitchEvent {
		t.Helper()
		select {
		case ev, ok := <-ch:
			if !ok || ev.State != want {
				t.Fatalf("got event %+v (open %v), want %v", ev, ok, want)
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatalf("no %v within 5s", want)
		}
		return SwitchEvent{}
	}
	// No switch yet: the first event says so.
	if ev := next(SwitchDown); ev.Err == nil || !strings.Contains(ev.Err.Error(), path) {
		t.Errorf("got SwitchDown error %v, want one naming the socket", ev.Err)
	}
	sw := startFakeSwitch(t, path)
	defer sw.ln.Close()
	for round := range 2 {
		hangup := make(chan struct{})
		done := make(chan struct{})
		go func() { defer close(done); sw.serveOne(t, hangup) }()
		next(SwitchUp)
		select {
		case ok := <-sw.replied:
			if !ok {
				t.Errorf("round %d: echo request not answered correctly", round)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: no echo reply", round)
		}
		close(hangup)
		<-done
		next(SwitchDown)
	}
	cancel()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("channel not closed 5s after cancel")
	}
}

func TestWatchSwitchBadTarget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := NewFlows("ssl:1.2.3.4:6653", nil).WatchSwitch(ctx)
	if ev := <-ch; ev.State != SwitchDown || ev.Err == nil {
		t.Errorf("got %+v, want SwitchDown with an error", ev)
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Errorf("got another event, want the channel closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("channel not closed 5s after cancel")
	}
}
