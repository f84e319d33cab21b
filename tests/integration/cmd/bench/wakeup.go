package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// WakeupFloor is what one user-space process in the path costs a round trip
// on this machine, before it does any work: pings across one link answered
// by the kernel, then by a Go process woken by each (the kernel's own echo
// replies switched off). Same client, same link; the difference is the
// process's wake-up, its two system calls and the runtime's poller. Path (b)
// adds four such wake-ups to every round trip (the Home Agent and kgswitch,
// each way) and path (a) none.
type WakeupFloor struct {
	KernelEchoMedianUs float64 `json:"kernel_echo_median_us"`
	UserEchoMedianUs   float64 `json:"user_echo_median_us"`
	PerProcessUs       float64 `json:"per_process_us"`
	Probes             int     `json:"probes"`
}

// serveICMPEcho answers every ICMPv6 Echo Request to addr, until killed.
func serveICMPEcho(addr string) error {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", addr)
	if err != nil {
		return err
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(58, buf[:n])
		if err != nil || m.Type != ipv6.ICMPTypeEchoRequest {
			continue
		}
		// The kernel fills in the checksum of raw ICMPv6 sockets.
		reply, err := (&icmp.Message{Type: ipv6.ICMPTypeEchoReply, Body: m.Body}).Marshal(nil)
		if err != nil {
			continue
		}
		if _, err := c.WriteTo(reply, from); err != nil {
			return err
		}
	}
}

// wakeupFloor measures WakeupFloor across the cn–rtr link of the lab.
func wakeupFloor(ctx context.Context, e *scenario.Env, probes int) (WakeupFloor, error) {
	f := WakeupFloor{Probes: probes}
	self, err := os.Executable()
	if err != nil {
		return f, err
	}
	target := lab.RouterCNAddr.String()
	kernel, err := e.PingRTTs(ctx, "cn", target, probes, 10*time.Millisecond)
	if err != nil {
		return f, err
	}
	const ignore = "net.ipv6.icmp.echo_ignore_all"
	if _, err := e.Lab.Run(ctx, "rtr", "sysctl", "-qw", ignore+"=1"); err != nil {
		return f, err
	}
	defer e.Lab.Run(context.Background(), "rtr", "sysctl", "-qw", ignore+"=0")
	srv := e.Lab.Command(ctx, "rtr", self, "-icmp-echo", target)
	if err := srv.Start(); err != nil {
		return f, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	if _, err := e.WaitReachable(ctx, "cn", target, 5*time.Second); err != nil {
		return f, fmt.Errorf("user-space echo: %w", err)
	}
	user, err := e.PingRTTs(ctx, "cn", target, probes, 10*time.Millisecond)
	if err != nil {
		return f, fmt.Errorf("user-space echo: %w", err)
	}
	if len(user) < probes/2 {
		return f, fmt.Errorf("user-space echo: %d of %d pings answered", len(user), probes)
	}
	f.KernelEchoMedianUs, _ = medianP99(kernel)
	f.UserEchoMedianUs, _ = medianP99(user)
	f.PerProcessUs = f.UserEchoMedianUs - f.KernelEchoMedianUs
	return f, nil
}
