package lab

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSwitchArgs: in LayoutPatch the uplink goes to br-ex, the guests' ports
// to br0, and a patch pair naming each other joins the two; otherwise
// every port is on br0.
func TestSwitchArgs(t *testing.T) {
	const init = "--no-wait init -- add-br br0 -- set bridge br0 datapath_type=netdev"
	for _, tc := range []struct {
		name   string
		upBr   string
		want   string
		wantNr []string
	}{
		{name: "one bridge", want: init + " -- add-port br0 eth0 -- add-port br0 vnet3", wantNr: []string{"eth0", "vnet3"}},
		{name: "patch", upBr: UplinkBridge, want: init + " -- add-br br-ex -- set bridge br-ex datapath_type=netdev" +
			" -- add-port br0 int-br-ex -- set interface int-br-ex type=patch options:peer=phy-br-ex" +
			" -- add-port br-ex phy-br-ex -- set interface phy-br-ex type=patch options:peer=int-br-ex" +
			" -- add-port br-ex eth0 -- add-port br0 vnet3",
			wantNr: []string{"eth0", "vnet3", "int-br-ex", "phy-br-ex"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &OVSHost{Bridge: Bridge, UplinkBridge: tc.upBr}
			ports := []string{Uplink, "vnet3"}
			if got := strings.Join(h.switchArgs(ports), " "); got != tc.want {
				t.Errorf("got switchArgs\n%s\nwant\n%s", got, tc.want)
			}
			if diff := cmp.Diff(tc.wantNr, h.numberedPorts(ports)); diff != "" {
				t.Errorf("numberedPorts (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPatchIPConfig: the host's address and routes move to br-ex, nothing
// else changes, and the original table is left alone.
func TestPatchIPConfig(t *testing.T) {
	in := [][]string{
		{"addr", "add", "2001:db8:3000::3/64", "dev", "br0", "nodad"},
		{"route", "add", "default", "via", "fe80::1", "dev", "br0"},
		{"route", "add", "br0", "dev", "eth0"}, // "br0" not after "dev" stays
	}
	want := [][]string{
		{"addr", "add", "2001:db8:3000::3/64", "dev", "br-ex", "nodad"},
		{"route", "add", "default", "via", "fe80::1", "dev", "br-ex"},
		{"route", "add", "br0", "dev", "eth0"},
	}
	if diff := cmp.Diff(want, moveIPConfig(in, UplinkBridge)); diff != "" {
		t.Errorf("patchIPConfig (-want +got):\n%s", diff)
	}
	if in[0][4] != "br0" {
		t.Error("patchIPConfig changed its input")
	}
}
