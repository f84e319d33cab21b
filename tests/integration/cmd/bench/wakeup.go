package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

// WakeupFloor is what one user-space process in the path costs a round trip
// on this machine, before it does any work: the same one-link round trip
// answered by the kernel (ICMPv6 echo) and by a process that is woken by
// each probe (a UDP echo server in Go). Path (b) adds four such wake-ups to
// every round trip (the Home Agent and kgswitch, each way) and path (a)
// none, so this bounds what any user-space tunnel endpoint can reach here.
type WakeupFloor struct {
	KernelEchoMedianUs float64 `json:"kernel_echo_median_us"`
	UserEchoMedianUs   float64 `json:"user_echo_median_us"`
	PerProcessUs       float64 `json:"per_process_us"`
	Probes             int     `json:"probes"`
}

// echoPort is the UDP port of the echo server the floor is measured with.
const echoPort = 7777

// serveUDPEcho answers every datagram on addr with itself, until killed.
func serveUDPEcho(addr string) error {
	c, err := net.ListenPacket("udp6", addr)
	if err != nil {
		return err
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(buf[:n], from); err != nil {
			return err
		}
	}
}

// udpRTTs sends count probes to addr every interval and prints the round-trip
// times of those answered, in microseconds, as a JSON array.
func udpRTTs(addr string, count int, interval time.Duration) error {
	c, err := net.Dial("udp6", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	rtts := make([]float64, 0, count)
	buf := make([]byte, 64)
	for i := range count {
		probe := []byte(strconv.Itoa(i))
		began := time.Now()
		if _, err := c.Write(probe); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) == string(probe) {
			rtts = append(rtts, float64(time.Since(began).Nanoseconds())/1e3)
		}
		time.Sleep(interval)
	}
	return json.NewEncoder(os.Stdout).Encode(rtts)
}

// wakeupFloor measures WakeupFloor across the cn–rtr link of the lab.
func wakeupFloor(ctx context.Context, e *scenario.Env, probes int) (WakeupFloor, error) {
	f := WakeupFloor{Probes: probes}
	self, err := os.Executable()
	if err != nil {
		return f, err
	}
	target := net.JoinHostPort(lab.RouterCNAddr.String(), strconv.Itoa(echoPort))
	srv := e.Lab.Command(ctx, "rtr", self, "-udp-echo", target)
	if err := srv.Start(); err != nil {
		return f, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(200 * time.Millisecond) // the server binds
	kernel, err := e.PingRTTs(ctx, "cn", lab.RouterCNAddr.String(), probes, 10*time.Millisecond)
	if err != nil {
		return f, err
	}
	out, err := e.Lab.Command(ctx, "cn", self, "-udp-rtt", target, "-pings", strconv.Itoa(probes)).Output()
	if err != nil {
		return f, fmt.Errorf("UDP echo client: %w", err)
	}
	var user []float64
	if err := json.Unmarshal(out, &user); err != nil {
		return f, fmt.Errorf("UDP echo client: %w", err)
	}
	if len(user) < probes/2 {
		return f, fmt.Errorf("UDP echo: %d of %d probes answered", len(user), probes)
	}
	ks := make([]float64, len(kernel))
	for i, d := range kernel {
		ks[i] = float64(d.Nanoseconds()) / 1e3
	}
	f.KernelEchoMedianUs, f.UserEchoMedianUs = median(ks), median(user)
	f.PerProcessUs = f.UserEchoMedianUs - f.KernelEchoMedianUs
	return f, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return float64(int(s[len(s)/2]*10+0.5)) / 10
}
