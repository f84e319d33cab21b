package scenario

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// IntruderDev is the interface of the home link's intruder (AddHomeLinkIntruder)
// in the switch namespace, "sw".
const IntruderDev = "intruder"

// AddHomeLinkIntruder gives the home link a node of its own, neither router,
// Home Agent nor host: a veth whose one end is a port of the home link's
// bridge and whose other end, IntruderDev, stays in the switch namespace. IPv6
// is off there, so the intruder sends only what a test has it send (scapy's
// sendp on IntruderDev in "sw"), from its own MAC, which it returns.
func (e *Env) AddHomeLinkIntruder(ctx context.Context) (string, error) {
	for _, argv := range [][]string{
		{"ip", "link", "add", IntruderDev, "type", "veth", "peer", "name", IntruderDev + "-p"},
		{"ip", "link", "set", IntruderDev + "-p", "master", "home", "up"},
		{"ip", "link", "set", IntruderDev, "up"},
	} {
		if out, err := e.Lab.Run(ctx, "sw", argv...); err != nil {
			return "", fmt.Errorf("home link intruder: %v: %v: %s", argv, err, out)
		}
	}
	mac, err := e.Lab.LinkMAC(ctx, "sw", IntruderDev)
	if err != nil {
		return "", fmt.Errorf("home link intruder's MAC: %v", err)
	}
	return mac.String(), nil
}

// SolicitedNode returns a's solicited-node multicast address and its MAC
// (RFC 4291 §2.7.1, RFC 2464 §7): where a DAD probe for a goes.
func SolicitedNode(a netip.Addr) (string, string) {
	b := a.As16()
	return fmt.Sprintf("ff02::1:ff%02x:%02x%02x", b[13], b[14], b[15]), fmt.Sprintf("33:33:ff:%02x:%02x:%02x", b[13], b[14], b[15])
}

// WaitLogLine waits until host's kgswitch log has a line containing s after
// line from (see KgswitchLogLines), and returns it.
func (e *Env) WaitLogLine(ctx context.Context, host string, from int, s string, timeout time.Duration) (string, error) {
	var found string
	err := wait.Until(ctx, timeout, 50*time.Millisecond, func() error {
		lines, err := e.KgswitchLogLines(host, from)
		if err != nil {
			return err
		}
		for _, l := range lines {
			if strings.Contains(l, s) {
				found = l
				return nil
			}
		}
		return fmt.Errorf("no line %q in kgswitch's log on %s", s, host)
	})
	return found, err
}

// CountHAEvents counts the lab Home Agent's events named msg.
func CountHAEvents(evs []HAEvent, msg string) int {
	n := 0
	for _, ev := range evs {
		if ev.Msg == msg {
			n++
		}
	}
	return n
}
