package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// GuestTCP is a paced TCP echo stream from cn to tcpcheck serving in a QEMU
// guest (the image's /bin/tcpcheck, see ImageOptions.TCPCheck). The server
// lives in the guest's memory, so it moves with every migration.
type GuestTCP struct {
	// Started is when cn started sending.
	Started time.Time
	port    uint16 // the guest's serve listens there and reports in files named after it
	client  *exec.Cmd
	out     bytes.Buffer
}

// guestTCPPort is the port of a stream started by StartGuestTCP or
// StartGuestTCPTo.
const guestTCPPort = 5001

// StartGuestTCP starts tcpcheck serve in vm's guest and tcpcheck send on cn
// towards the guest's home address: total bytes at rate bytes/s, both
// giving up after timeout.
func StartGuestTCP(ctx context.Context, e *scenario.Env, vm *VM, total, rate int64, timeout time.Duration) (*GuestTCP, error) {
	return StartGuestTCPTo(ctx, e, vm, lab.HoA, total, rate, timeout)
}

// StartGuestTCPTo is StartGuestTCP towards to, one of the guest's
// addresses: lab.HoA4 for a stream over IPv4 (tcpcheck serve listens on
// both families).
func StartGuestTCPTo(ctx context.Context, e *scenario.Env, vm *VM, to netip.Addr, total, rate int64, timeout time.Duration) (*GuestTCP, error) {
	return StartGuestTCPPort(ctx, e, vm, netip.AddrPortFrom(to, guestTCPPort), total, rate, timeout)
}

// StartGuestTCPPort is StartGuestTCPTo on to's port: tcpcheck serve takes
// one connection, so streams that run side by side (one over IPv4, one
// over IPv6) each need a port of their own.
func StartGuestTCPPort(ctx context.Context, e *scenario.Env, vm *VM, to netip.AddrPort, total, rate int64, timeout time.Duration) (*GuestTCP, error) {
	s := &GuestTCP{port: to.Port()}
	if _, err := vm.Shell(ctx, fmt.Sprintf("rm -f %[1]s.*; tcpcheck serve -listen '[::]:%[2]d' -timeout %[3]s >%[1]s.json 2>%[1]s.err &", s.files(), s.port, timeout)); err != nil {
		return nil, err
	}
	if err := wait.Until(ctx, 10*time.Second, 50*time.Millisecond, func() error {
		out, err := vm.Shell(ctx, "cat "+s.files()+".err")
		if err != nil || !strings.Contains(out, "listening") {
			return fmt.Errorf("tcpcheck serve in the guest: not listening (%v): %q", err, out)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	s.client = e.Lab.Command(ctx, "cn", e.Bin.TCPCheck, "send", "-to", to.String(),
		"-bytes", fmt.Sprint(total), "-rate", fmt.Sprint(rate), "-timeout", timeout.String())
	s.client.Stdout = &s.out
	s.Started = time.Now()
	if err := s.client.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Wait waits for the stream to end and returns both ends' reports; vm is
// where the guest runs by now.
func (s *GuestTCP) Wait(ctx context.Context, vm *VM) (client, server scenario.TCPReport, err error) {
	cerr := s.client.Wait()
	if err := json.Unmarshal(s.out.Bytes(), &client); err != nil {
		return client, server, fmt.Errorf("tcpcheck send on cn (%v): %q", cerr, s.out.String())
	}
	err = wait.Until(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		out, err := vm.Shell(ctx, "cat "+s.files()+".json")
		if err != nil || !strings.HasPrefix(out, "{") {
			return fmt.Errorf("tcpcheck serve in the guest: no report (%v): %q", err, out)
		}
		if err := json.Unmarshal([]byte(out), &server); err != nil {
			return wait.Fatal(fmt.Errorf("tcpcheck serve in the guest: %q: %v", out, err))
		}
		return nil
	})
	return client, server, err
}

// files is the stem of the guest's files of the stream: its serve's report
// (.json) and errors (.err).
func (s *GuestTCP) files() string { return fmt.Sprintf("/tmp/serve-%d", s.port) }

// End is when the stream ended, by cn's report.
func (s *GuestTCP) End(client scenario.TCPReport) time.Time {
	return s.Started.Add(time.Duration(client.Seconds * float64(time.Second)))
}
