// Command demo builds the netns lab, runs kgswitch on a home and a foreign
// host, moves a guest between them while a correspondent pings it, and tells a
// person what happened, step by step. `make demo` runs it. Everything it
// creates is removed at the end, also on Ctrl-C.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

var start = time.Now()

func step(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := lab.Preflight(); err != nil {
		return err
	}
	lab.CleanupStale(nil)

	step("building kgswitch, the lab Home Agent and tcpcheck")
	dir, err := os.MkdirTemp("", "kgswitch-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins, err := scenario.Build(ctx, dir)
	if err != nil {
		return err
	}

	step("building the lab: cn, router, Home Agent, hostA (home) and hostB (foreign), each host with its own OVS")
	l, err := lab.New(ctx, lab.Options{})
	if err != nil {
		return err
	}
	defer func() {
		l.Close()
		step("lab removed")
	}()
	e := &scenario.Env{Lab: l, Bin: bins}
	fmt.Printf("           cn %v -- rtr -- home link %v (Home Agent %v, hostA %v)\n", lab.CNAddr, lab.HomePrefix, lab.HAAddr, lab.HostAAddr)
	fmt.Printf("                        \\-- foreign link %v (hostB, care-of address %v)\n", lab.ForeignPrefix, lab.CareOfAddr)
	fmt.Printf("           guest: home address %v, MAC %v, port %s on hostA's bridge\n", lab.HoA, lab.GuestMAC, lab.GuestPort)

	if err := e.StartHomeAgent(ctx); err != nil {
		return err
	}
	for _, host := range []string{"hostA", "hostB"} {
		cfg, err := e.WriteConfig(host, true)
		if err != nil {
			return err
		}
		if err := e.StartKgswitch(ctx, host, cfg); err != nil {
			return err
		}
	}
	step("Home Agent and kgswitch (on hostA and hostB) running")
	st, _ := e.Status(ctx, "hostA", lab.GuestPort)
	step("hostA's kgswitch sees the guest %s: it is at home, so kgswitch leaves its traffic alone", st.Location)

	hoa := lab.HoA.String()
	n, err := e.Ping(ctx, "cn", hoa, 3)
	if err != nil || n != 3 {
		return fmt.Errorf("cn cannot reach the guest at home: %d/3 (%v)", n, err)
	}
	step("cn pings the guest at %s on its home link: 3/3 answered", hoa)

	stream, err := e.StartTCPStream(ctx, "cn", 4<<20, 192<<10)
	if err != nil {
		return err
	}
	pings, err := e.StartPingStream(ctx, "cn", hoa, 10*time.Millisecond)
	if err != nil {
		return err
	}
	step("cn opens a TCP echo stream to the guest (4 MiB at 192 KiB/s) and pings it every 10 ms")
	time.Sleep(2 * time.Second)

	if err := l.MoveGuest(ctx, "hostA", "hostB"); err != nil {
		return err
	}
	moved := time.Now()
	step("MOVE: the guest's port %s now sits on hostB's bridge; the guest itself is untouched", lab.GuestPort)
	st, err = e.WaitBinding(ctx, "hostB", lab.GuestPort, "bound", 15*time.Second)
	if err != nil {
		return err
	}
	step("hostB's kgswitch: Binding Update sent from %s, Home Agent answered %q after %.2fs (DAD on the home link)",
		st.CareOf, st.Reason, time.Since(moved).Seconds())

	if _, err := e.WaitReachable(ctx, "cn", hoa, 40*time.Second); err != nil {
		return fmt.Errorf("after the move: %w", err)
	}
	step("cn reaches the guest again, %.2fs after the move, now through the Home Agent and kgswitch's tunnel", time.Since(moved).Seconds())

	client, server, err := stream.Wait()
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	loss := pings.Stop()
	intact := client.Error == "" && server.Error == "" && client.SentSHA == server.ReceivedSH && client.SentSHA == client.ReceivedSH
	step("TCP stream finished: %d bytes each way, %s", client.Sent, map[bool]string{true: "no reset, every byte intact (SHA-256 match)", false: "BROKEN: " + client.Error + server.Error}[intact])

	fmt.Println()
	out, _ := e.Kgswitch(ctx, "hostB", "status")
	fmt.Println("kgswitch status on hostB:")
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Println("  " + line)
	}
	fmt.Println()
	fmt.Printf("Loss during the move: %d of %d pings at 10 ms lost (longest gap %.2fs).\n", loss.Lost, loss.Sent, loss.LongestGap.Seconds())
	fmt.Println("Most of the gap is the Home Agent's takeover: 1 s of DAD, then ~9 s until the home")
	fmt.Println("router drops the guest's old MAC (the Home Agent's advertisement lacks the Override flag).")
	if !intact {
		return fmt.Errorf("TCP stream did not survive intact")
	}
	return nil
}
