package qemu

import (
	"context"
	"fmt"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

// DHCP4Log is where the guest's DHCPv4 client logs its events, inside the
// guest (see Config.DHCP4 and init.sh).
const DHCP4Log = "/tmp/dhcp4.log"

// DHCP4Events reads the guest's DHCPv4 event log so far (Config.DHCP4):
// the same events as a netns guest's, timed by the guest's clock to the
// second. A guest that has logged nothing yet has none.
func (vm *VM) DHCP4Events(ctx context.Context) ([]lab.DHCP4Event, error) {
	out, err := vm.Shell(ctx, "cat "+DHCP4Log+" 2>/dev/null; true")
	if err != nil {
		return nil, err
	}
	return lab.ParseDHCP4Events(out)
}

// RenewDHCP4 has the guest's DHCPv4 client renew its lease now (SIGUSR1),
// as it does at T1.
func (vm *VM) RenewDHCP4(ctx context.Context) error {
	if _, err := vm.Shell(ctx, "killall -USR1 udhcpc"); err != nil {
		return fmt.Errorf("qemu %s: renew the DHCPv4 lease: %w", vm.Name, err)
	}
	return nil
}

// IPv4 returns the guest's IPv4 configuration, normalised as the netns
// guests' (scenario.GuestIPv4Of) so that the two compare.
func (vm *VM) IPv4(ctx context.Context) (scenario.GuestIPv4, error) {
	out, err := vm.Shell(ctx, scenario.GuestIPv4Command)
	if err != nil {
		return scenario.GuestIPv4{}, err
	}
	return scenario.ParseGuestIPv4(out), nil
}
