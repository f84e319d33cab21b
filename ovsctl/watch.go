package ovsctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// SwitchState says whether ovs-vswitchd serves OpenFlow on a bridge.
type SwitchState int

// The states WatchSwitch reports. More may be added: consumers must ignore
// states they do not know.
const (
	// SwitchUp means an OpenFlow connection to the bridge was just
	// established. Reported first when the switch is up at the start, and
	// again each time it comes back: after ovs-vswitchd restarted its
	// flow tables hold only the default NORMAL flow and port no-flood bits
	// are cleared, so the consumer reinstalls (Replace, SetNoFlood).
	SwitchUp SwitchState = iota + 1
	// SwitchDown means the connection was lost or cannot be made:
	// ovs-vswitchd exited, or the bridge was deleted.
	SwitchDown
)

// String returns the state's name.
func (s SwitchState) String() string {
	switch s {
	case SwitchUp:
		return "SwitchUp"
	case SwitchDown:
		return "SwitchDown"
	}
	return fmt.Sprintf("SwitchState(%d)", int(s))
}

// SwitchEvent is a change of the switch's state.
type SwitchEvent struct {
	State SwitchState
	// Err says why the switch is down; nil for SwitchUp.
	Err error
}

// Reconnection timing for WatchSwitch: fast enough that flows are back
// well within 2 s of ovs-vswitchd opening the bridge again, and a connect
// to a missing unix socket costs next to nothing.
const (
	switchRetryFirst       = 50 * time.Millisecond
	switchRetryMax         = 250 * time.Millisecond
	switchHandshakeTimeout = 5 * time.Second
	defaultOVSRunDir       = "/var/run/openvswitch"
)

// WatchSwitch reports on the returned channel when ovs-vswitchd stops and
// starts serving the bridge, until ctx is done, then closes the channel.
//
// It holds an OpenFlow connection to the target (the bridge's management
// socket) and answers the switch's echo requests; the process ending
// closes the connection at once, and a new connection is attempted every
// 50 to 250 ms until the switch is back. OVSDB cannot tell this: on the
// userspace datapath of OVS 3.1 internal ports are persistent taps, and a
// restarted ovs-vswitchd leaves every Interface column (ofport, ifindex,
// mac_in_use, link_state) and Open_vSwitch.cur_cfg as they were. The
// channel is backed by an unbounded queue and only carries changes: the
// first event is the state at the start.
func (f *Flows) WatchSwitch(ctx context.Context) <-chan SwitchEvent {
	q := newQueue[SwitchEvent]()
	network, addr, err := switchAddr(f.target)
	if err != nil {
		q.push(SwitchEvent{State: SwitchDown, Err: err})
		context.AfterFunc(ctx, q.abort)
		return q.out
	}
	go f.watchSwitch(ctx, q, network, addr)
	return q.out
}

// switchAddr turns an ovs-ofctl target into a dialable address: "unix:PATH",
// "tcp:HOST:PORT", or a bridge name, whose management socket is in
// $OVS_RUNDIR (default /var/run/openvswitch).
func switchAddr(target string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(target, "unix:"):
		return "unix", strings.TrimPrefix(target, "unix:"), nil
	case strings.HasPrefix(target, "tcp:"):
		return "tcp", strings.TrimPrefix(target, "tcp:"), nil
	case target == "" || strings.ContainsAny(target, ":/"):
		return "", "", fmt.Errorf("ovsctl: cannot watch OpenFlow target %q: want unix:PATH, tcp:HOST:PORT or a bridge name", target)
	}
	dir := os.Getenv("OVS_RUNDIR")
	if dir == "" {
		dir = defaultOVSRunDir
	}
	return "unix", filepath.Join(dir, target+".mgmt"), nil
}

func (f *Flows) watchSwitch(ctx context.Context, q *queue[SwitchEvent], network, addr string) {
	defer q.abort()
	var last SwitchState
	report := func(s SwitchState, err error) {
		if s != last {
			last = s
			q.push(SwitchEvent{State: s, Err: err})
			f.log.Info("openflow switch "+s.String(), "target", f.target, "err", err)
		}
	}
	wait := switchRetryFirst
	for {
		err := holdSwitch(ctx, network, addr, func() {
			report(SwitchUp, nil)
			wait = switchRetryFirst
		})
		if ctx.Err() != nil {
			return
		}
		report(SwitchDown, fmt.Errorf("ovsctl: OpenFlow connection to %s: %w", f.target, err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, switchRetryMax)
	}
}

// holdSwitch connects, says hello (OpenFlow 1.4.0 section 6.3.1), calls up
// once the switch said hello too, then answers echo requests until the
// connection ends, which it returns the reason for.
func holdSwitch(ctx context.Context, network, addr string, up func()) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if err := conn.SetDeadline(time.Now().Add(switchHandshakeTimeout)); err != nil {
		return err
	}
	if _, err := conn.Write(helloMessage(1)); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	for {
		h, msg, err := readOFMessage(r)
		if err != nil {
			return err
		}
		if h.Type == ofTypeHello {
			break
		}
		if h.Type == ofTypeError {
			return fmt.Errorf("switch refused hello: %x", msg)
		}
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return err
	}
	up()
	for {
		h, msg, err := readOFMessage(r)
		if errors.Is(err, io.EOF) {
			return errors.New("closed by the switch")
		}
		if err != nil {
			return err
		}
		if h.Type != ofTypeEchoRequest {
			continue // port status and the like: not ours to act on
		}
		rep, err := echoReply(msg)
		if err != nil {
			return err
		}
		if _, err := conn.Write(rep); err != nil {
			return err
		}
	}
}

// readOFMessage reads one whole OpenFlow message.
func readOFMessage(r *bufio.Reader) (ofHeader, []byte, error) {
	var hdr [ofHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return ofHeader{}, nil, err
	}
	h, err := parseOFHeader(hdr[:])
	if err != nil {
		return ofHeader{}, nil, err
	}
	msg := make([]byte, h.Length)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(r, msg[ofHeaderLen:]); err != nil {
		return ofHeader{}, nil, err
	}
	return h, msg, nil
}
