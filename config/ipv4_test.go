package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

const ipv4Table = `
[home_network.ipv4]
subnet = "192.0.2.0/24"
gateway = "192.0.2.1"
gateway_mac = "02:00:00:00:00:01"
dns_servers = ["192.0.2.53", "198.51.100.53"]
lease_time = "30m"
domain = "home.example"
`

func TestIPv4HomeNetwork(t *testing.T) {
	c, err := Parse(base + ipv4Table + `
[[vm]]
port = "vnet3"
home_address = "2001:db8:2000::10"
ipv4_address = "192.0.2.10/24"
`)
	if err != nil {
		t.Fatal(err)
	}
	vm := c.VMs[0]
	if vm.IPv4Address != netip.MustParsePrefix("192.0.2.10/24") {
		t.Errorf("ipv4_address: got %v", vm.IPv4Address)
	}
	h := vm.Home.IPv4
	if h == nil {
		t.Fatal("the VM has no IPv4 home link")
	}
	if h.Subnet != netip.MustParsePrefix("192.0.2.0/24") || h.Gateway != netip.MustParseAddr("192.0.2.1") ||
		h.GatewayMAC.String() != "02:00:00:00:00:01" || len(h.DNS) != 2 || h.DNS[1] != netip.MustParseAddr("198.51.100.53") ||
		h.LeaseTime != 30*time.Minute || h.Domain != "home.example" || h.MTU != 0 {
		t.Errorf("IPv4 home link: got %+v", h)
	}
}

// A VM of a home network without an IPv4 table names its own gateway, and
// gets the defaults.
func TestIPv4GatewayPerVM(t *testing.T) {
	c, err := Parse(base + `
[[vm]]
port = "vnet3"
home_address = "2001:db8:2000::10"
ipv4_address = "10.1.2.3/16"
ipv4_gateway = "10.1.0.1"
`)
	if err != nil {
		t.Fatal(err)
	}
	h := c.VMs[0].Home.IPv4
	if h == nil || h.Subnet != netip.MustParsePrefix("10.1.0.0/16") || h.Gateway != netip.MustParseAddr("10.1.0.1") || h.LeaseTime != DefaultLeaseTime {
		t.Errorf("got %+v", h)
	}
	if c.HomeNetworks[0].IPv4 != nil {
		t.Error("a VM's own gateway leaked into its home network")
	}
}

func TestIPv4Refused(t *testing.T) {
	vm := func(lines ...string) string {
		return "\n[[vm]]\nport = \"vnet3\"\nhome_address = \"2001:db8:2000::10\"\n" + strings.Join(lines, "\n") + "\n"
	}
	two := vm(`ipv4_address = "192.0.2.10/24"`) + "\n[[vm]]\nport = \"vnet4\"\nhome_address = \"2001:db8:2000::11\"\nipv4_address = \"192.0.2.10/24\"\n"
	for _, tc := range []struct {
		name, text, want string
	}{
		{"IPv6 address", base + vm(`ipv4_address = "2001:db8::1/64"`), "ipv4_address"},
		{"no length", base + vm(`ipv4_address = "192.0.2.10"`), "with its subnet's length"},
		{"too short", base + vm(`ipv4_address = "10.0.0.1/7"`, `ipv4_gateway = "10.0.0.2"`), "ipv4_address"},
		{"no gateway", base + vm(`ipv4_address = "192.0.2.10/24"`), "no gateway"},
		{"gateway outside", base + vm(`ipv4_address = "192.0.2.10/24"`, `ipv4_gateway = "192.0.3.1"`), "outside"},
		{"is the gateway", base + vm(`ipv4_address = "192.0.2.1/24"`, `ipv4_gateway = "192.0.2.1"`), "gateway's address"},
		{"network address", base + vm(`ipv4_address = "192.0.2.0/24"`, `ipv4_gateway = "192.0.2.1"`), "network or broadcast"},
		{"broadcast address", base + vm(`ipv4_address = "192.0.2.255/24"`, `ipv4_gateway = "192.0.2.1"`), "network or broadcast"},
		{"gateway alone", base + vm(`ipv4_gateway = "192.0.2.1"`), "without ipv4_address"},
		{"outside the network's subnet", base + ipv4Table + vm(`ipv4_address = "198.51.100.7/24"`), "outside its home network's"},
		{"other length than the network's", base + ipv4Table + vm(`ipv4_address = "192.0.2.10/25"`), "outside its home network's"},
		{"taken twice", base + ipv4Table + two, "already used"},
		{"subnet not IPv4", base + strings.Replace(ipv4Table, "192.0.2.0/24", "2001:db8::/64", 1), "ipv4.subnet"},
		{"gateway not in subnet", base + strings.Replace(ipv4Table, `gateway = "192.0.2.1"`, `gateway = "10.0.0.1"`, 1), "ipv4.gateway"},
		{"lease too short", base + strings.Replace(ipv4Table, "30m", "5s", 1), "ipv4.lease_time"},
		{"lease not whole seconds", base + strings.Replace(ipv4Table, "30m", "10.5s", 1), "ipv4.lease_time"},
		{"DNS not IPv4", base + strings.Replace(ipv4Table, "192.0.2.53", "2001:db8::53", 1), "ipv4.dns_servers"},
		{"MTU too small", base + ipv4Table + "mtu = 100\n", "ipv4.mtu"},
		{"unknown key", base + ipv4Table + "lease = 3\n", "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Errorf("error %q names no line", err)
			}
		})
	}
}

func TestLastAddr4(t *testing.T) {
	for p, want := range map[string]string{
		"192.0.2.0/24": "192.0.2.255", "10.0.0.0/8": "10.255.255.255", "192.0.2.8/30": "192.0.2.11", "192.0.2.77/26": "192.0.2.127",
	} {
		if got := lastAddr4(netip.MustParsePrefix(p)); got.String() != want {
			t.Errorf("%s: got %v, want %v", p, got, want)
		}
	}
}
