package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const base = `
uplink = "eth0"
care_of_address = "2001:db8:3000::3"
[[home_network]]
prefix = "2001:db8:2000::/64"
home_agent = "2001:db8:2000::1"
router_link_local = "fe80::1"
`

func TestExampleConfigLoads(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	c, err := Load(filepath.Join(filepath.Dir(file), "..", "configs", "kgswitch.toml"))
	if err != nil {
		t.Fatalf("configs/kgswitch.toml: %v", err)
	}
	if len(c.VMs) != 1 || c.VMs[0].Port != "vnet3" || c.VMs[0].HomeAddress != netip.MustParseAddr("2001:db8:2000::10") {
		t.Fatalf("got VMs %+v, want vnet3 with 2001:db8:2000::10", c.VMs)
	}
	vm := c.VMs[0]
	if vm.Home.HomeAgent != netip.MustParseAddr("2001:db8:2000::1") || vm.Home.RouterLinkLocal != netip.MustParseAddr("fe80::1") || vm.MAC.String() != "52:54:00:00:00:10" {
		t.Errorf("got VM %+v", vm)
	}
	if vm.IPv4Address != netip.MustParsePrefix("192.0.2.10/24") || vm.Home.IPv4 == nil || vm.Home.IPv4.Gateway != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("got IPv4 %v on %+v, want 192.0.2.10/24 behind 192.0.2.1", vm.IPv4Address, vm.Home.IPv4)
	}
	if c.Arrival != DefaultArrival || c.Departure != DefaultDeparture {
		t.Errorf("got arrival %+v departure %+v, want the example to show the defaults", c.Arrival, c.Departure)
	}
	if c.BindingLifetime != 10*time.Minute || c.BridgeTarget() != "unix:/var/run/openvswitch/br0.mgmt" {
		t.Errorf("got lifetime %v target %v", c.BindingLifetime, c.BridgeTarget())
	}
}

func TestAdvertiseDefaults(t *testing.T) {
	c, err := Parse(base + "[home_network.advertise]\nrouter_lifetime = \"30s\"\nvalid_lifetime = \"30s\"\npreferred_lifetime = \"30s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	a := c.HomeNetworks[0].Advertise
	if a == nil || a.Interval != 10*time.Second || a.HopLimit != 64 || !a.OnLink || !a.Autonomous {
		t.Fatalf("got %+v, want interval 10s (a third of 30s), hop limit 64, L and A set", a)
	}
	if c, _ := Parse(base); c.HomeNetworks[0].Advertise != nil {
		t.Error("advertisement without an advertise table")
	}
}

func TestDepartureSettings(t *testing.T) {
	c, err := Parse(base + "[[vm]]\nport = \"a\"\nhome_address = \"2001:db8:2000::10\"\n[[vm]]\nport = \"b\"\nhome_address = \"2001:db8:2000::11\"\ndeparture_hold = false\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Departure != DefaultDeparture || c.VMs[0].NoDepartureHold || !c.VMs[1].NoDepartureHold {
		t.Errorf("got %+v, VMs %v %v", c.Departure, c.VMs[0].NoDepartureHold, c.VMs[1].NoDepartureHold)
	}
	c, err = Parse(base + "[departure]\nenabled = false\nbuffer_frames = 64\nmax_hold = \"1500ms\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Departure != (Departure{Enabled: false, BufferFrames: 64, MaxHold: 1500 * time.Millisecond}) {
		t.Errorf("got %+v", c.Departure)
	}
}

func TestArrivalSettings(t *testing.T) {
	c, err := Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if c.Arrival != DefaultArrival || DefaultArrival != (Arrival{Enabled: true, BufferFrames: 1024, BufferBytes: 4 << 20, MaxHold: 3 * time.Second}) {
		t.Errorf("got %+v without an [arrival] table, want the defaults %+v", c.Arrival, DefaultArrival)
	}
	c, err = Parse(base + "[arrival]\nenabled = false\nbuffer_frames = 64\nbuffer_bytes = 65536\nmax_hold = \"1500ms\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Arrival{Enabled: false, BufferFrames: 64, BufferBytes: 65536, MaxHold: 1500 * time.Millisecond}); c.Arrival != want {
		t.Errorf("got %+v, want %+v", c.Arrival, want)
	}
	c, err = Parse(base + "[arrival]\nmax_hold = \"5s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Arrival{Enabled: true, BufferFrames: 1024, BufferBytes: 4 << 20, MaxHold: 5 * time.Second}); c.Arrival != want {
		t.Errorf("got %+v, want the defaults but max_hold %+v", c.Arrival, want)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		wantErr string // substring; "" = valid
	}{
		{"minimal", base, ""},
		{"vm from home network", base + "[[vm]]\nport = \"vnet3\"\nhome_address = \"2001:db8:2000::10\"\n", ""},
		{"vm inline home", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:5::10\"\nhome_agent = \"2001:db8:5::1\"\nhome_prefix = \"2001:db8:5::/64\"\nrouter_link_local = \"fe80::1\"\n", ""},
		{"syntax error has line", "bridge = \n" + base, "line 1"},
		{"unknown key", "brdige = \"br0\"\n" + base, "unknown key brdige"},
		{"bad care-of", strings.Replace(base, "2001:db8:3000::3", "10.0.0.1", 1), "care_of_address"},
		{"missing uplink", strings.Replace(base, "uplink = \"eth0\"", "", 1), "uplink: missing"},
		{"relative rundir", "ovs_rundir = \"run\"\n" + base, "absolute"},
		{"bad lifetime", "binding_lifetime = \"1s\"\n" + base, "binding_lifetime"},
		{"HA outside prefix", strings.Replace(base, "home_agent = \"2001:db8:2000::1\"", "home_agent = \"2001:db8:9::1\"", 1), "outside"},
		{"router not link-local", strings.Replace(base, "fe80::1", "2001:db8:2000::fffe", 1), "link-local"},
		{"vm without home", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:7::10\"\n", "no home_network"},
		{"bad hoa", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:2000::zz\"\n", "not an IPv6 address"},
		{"bad mac", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:2000::10\"\nmac = \"01:00:5e:00:00:01\"\n", "multicast"},
		{"duplicate hoa", base + "[[vm]]\nport = \"a\"\nhome_address = \"2001:db8:2000::10\"\n[[vm]]\nport = \"b\"\nhome_address = \"2001:db8:2000::10\"\n", "already used by port a"},
		{"duplicate port", base + "[[vm]]\nport = \"a\"\nhome_address = \"2001:db8:2000::10\"\n[[vm]]\nport = \"a\"\nhome_address = \"2001:db8:2000::11\"\n", "already bound"},
		{"duplicate mac", base + "[[vm]]\nport = \"a\"\nhome_address = \"2001:db8:2000::10\"\nmac = \"52:54:00:00:00:10\"\n[[vm]]\nport = \"b\"\nhome_address = \"2001:db8:2000::11\"\nmac = \"52:54:00:00:00:10\"\n", "mac 52:54:00:00:00:10"},
		{"duplicate iface_id", base + "[[vm]]\niface_id = \"x\"\nhome_address = \"2001:db8:2000::10\"\n[[vm]]\niface_id = \"x\"\nhome_address = \"2001:db8:2000::11\"\n", "iface_id x: already used by the VM with home address 2001:db8:2000::10"},
		{"advertise defaults", base + "[home_network.advertise]\n", ""},
		{"advertise short lifetimes", base + "[home_network.advertise]\nrouter_lifetime = \"30s\"\nvalid_lifetime = \"30s\"\npreferred_lifetime = \"30s\"\n", ""},
		{"advertise interval too long", base + "[home_network.advertise]\ninterval = \"40s\"\nrouter_lifetime = \"30s\"\n", "shorter than every lifetime"},
		{"advertise bad duration", base + "[home_network.advertise]\nvalid_lifetime = \"forever\"\n", "advertise.valid_lifetime"},
		{"advertise unknown key", base + "[home_network.advertise]\nintervall = \"4s\"\n", "unknown key home_network.advertise.intervall"},
		{"departure off", base + "[departure]\nenabled = false\n", ""},
		{"departure bad buffer", base + "[departure]\nbuffer_frames = 0\n", "departure.buffer_frames"},
		{"departure bad hold", base + "[departure]\nmax_hold = \"2h\"\n", "departure.max_hold"},
		{"arrival off", base + "[arrival]\nenabled = false\n", ""},
		{"arrival no frames", base + "[arrival]\nbuffer_frames = 0\n", "arrival.buffer_frames 0: want 1..65536"},
		{"arrival too many frames", base + "[arrival]\nbuffer_frames = 100000\n", "arrival.buffer_frames"},
		{"arrival bytes below a packet", base + "[arrival]\nbuffer_bytes = 1000\n", "arrival.buffer_bytes 1000: want 1500..268435456"},
		{"arrival bytes too many", base + "[arrival]\nbuffer_bytes = 1073741824\n", "arrival.buffer_bytes"},
		{"arrival bytes not a number", base + "[arrival]\nbuffer_bytes = \"4MiB\"\n", "buffer_bytes"},
		{"arrival hold not a duration", base + "[arrival]\nmax_hold = \"3\"\n", "arrival.max_hold"},
		{"arrival hold zero", base + "[arrival]\nmax_hold = \"0s\"\n", "arrival.max_hold"},
		{"arrival hold too long", base + "[arrival]\nmax_hold = \"2m\"\n", "arrival.max_hold"},
		{"arrival unknown key", base + "[arrival]\nbuffer = 10\n", "unknown key arrival.buffer"},
		{"vm departure hold off", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:2000::10\"\ndeparture_hold = false\n", ""},
		{"prefix ::/0", strings.Replace(base, "2001:db8:2000::/64", "::/0", 1), "want a length from /16 to /126"},
		{"prefix too short", strings.Replace(base, "2001:db8:2000::/64", "2001::/15", 1), "want a length"},
		{"prefix /126", strings.Replace(strings.Replace(base, "2001:db8:2000::/64", "2001:db8:2000::/126", 1), "2001:db8:2000::1\"", "2001:db8:2000::1\"", 1), ""},
		{"prefix /127", strings.Replace(base, "2001:db8:2000::/64", "2001:db8:2000::/127", 1), "want a length"},
		{"vm is the home agent", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:2000::1\"\n", "the Home Agent's address"},
		{"vm is the router", strings.Replace(base, "router_link_local = \"fe80::1\"", "router_link_local = \"fe80::1\"\nrouter_addresses = [\"2001:db8:2000::fffe\"]", 1) + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:2000::fffe\"\n", "home router"},
		{"vm is the subnet-router anycast", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:2000::\"\n", "Subnet-Router anycast"},
		{"vm is a reserved anycast", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:2000::fdff:ffff:ffff:ffff\"\n", "RFC 2526"},
		{"vm just below the reserved anycast", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:2000::fdff:ffff:ffff:ff7f\"\n", ""},
		{"inline vm is its home agent", base + "[[vm]]\nport = \"v\"\nhome_address = \"2001:db8:5::1\"\nhome_agent = \"2001:db8:5::1\"\nhome_prefix = \"2001:db8:5::/64\"\nrouter_link_local = \"fe80::1\"\n", "the Home Agent's address"},
		{"vm on the bridge port", base + "[[vm]]\nport = \"br0\"\nhome_address = \"2001:db8:2000::10\"\n", "bridge's own (LOCAL) port is never a VM"},
		{"vm on the uplink", base + "[[vm]]\nport = \"eth0\"\nhome_address = \"2001:db8:2000::10\"\n", "the uplink is never a VM"},
		{"vm on the internal port", base + "[[vm]]\nport = \"kgs0\"\nhome_address = \"2001:db8:2000::10\"\n", "internal port is never a VM"},
		{"control group", "control_socket_group = \"kgswitch\"\n" + base, ""},
		{"control group by number", "control_socket_group = \"998\"\n" + base, ""},
		{"control group not a name", "control_socket_group = \"a b\"\n" + base, "control_socket_group"},
		{"overlapping home networks", base + "[[home_network]]\nprefix = \"2001:db8:2000::/48\"\nhome_agent = \"2001:db8:2000::1\"\nrouter_link_local = \"fe80::1\"\n", "overlaps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.text)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestErrorsNameTheLine(t *testing.T) {
	for _, tt := range []struct {
		name string
		text string
		line int
	}{
		{"syntax", "uplink = \"eth0\"\ncare_of_address = \n", 2},
		{"bad top-level address", "uplink = \"eth0\"\n\ncare_of_address = \"10.0.0.1\"\n", 3},
		{"unknown key", base + "[[vm]]\nport = \"a\"\nhome_adress = \"2001:db8:2000::10\"\n", 10},
		{"bad home agent", strings.Replace(base, "2001:db8:2000::1\"", "2001:db8:9::1\"", 1), 6},
		{"duplicate home address", base + "[[vm]]\nport = \"a\"\nhome_address = \"2001:db8:2000::10\"\n[[vm]]\nport = \"b\"\nhome_address = \"2001:db8:2000::10\"\n", 13},
		{"mac collision", base + "[[vm]]\nport = \"a\"\nhome_address = \"2001:db8:2000::10\"\nmac = \"52:54:00:00:00:10\"\n[[vm]]\nport = \"b\"\nhome_address = \"2001:db8:2000::11\"\nmac = \"52:54:00:00:00:10\"\n", 15},
		{"bad departure", base + "[departure]\nmax_hold = \"2h\"\n", 9},
		{"bad arrival frames", base + "[arrival]\nenabled = true\nbuffer_frames = -1\n", 10},
		{"bad arrival bytes", base + "[departure]\nbuffer_frames = 8\n[arrival]\nbuffer_bytes = 10\nmax_hold = \"1s\"\n", 11},
		{"bad arrival hold", base + "[arrival]\nmax_hold = \"forever\"\n", 9},
		{"unknown arrival key", base + "[arrival]\nenabled = true\nmax_held = \"1s\"\n", 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "k.toml")
			if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			want := fmt.Sprintf("%s:%d: ", path, tt.line)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("got error %v, want it to start with %q", err, want)
			}
		})
	}
}

// ipsec_keys names a key file whose SAs must come in pairs for each VM
// they protect; the key file's own errors name its line.
func TestIPsecKeys(t *testing.T) {
	dir := t.TempDir()
	key := func(n int) string { return "0x" + strings.Repeat("ab", n) }
	bu := `ip xfrm state add src 2001:db8:2000::10 dst 2001:db8:2000::1 proto esp spi 0x1000 mode transport enc "cbc(aes)" ` + key(16) + ` auth-trunc "hmac(sha256)" ` + key(32) + " 128\n"
	ba := `ip xfrm state add src 2001:db8:2000::1 dst 2001:db8:2000::10 proto esp spi 0x2000 mode transport enc "cbc(aes)" ` + key(16) + ` auth-trunc "hmac(sha256)" ` + key(32) + " 128\n"
	write := func(name, text string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	vm := "[[vm]]\nport = \"vnet3\"\nhome_address = \"2001:db8:2000::10\"\n"
	for _, tc := range []struct {
		name, keys string
		wantErr    string
	}{
		{"both directions", write("both", bu+ba, 0o600), ""},
		{"one direction", write("one", bu, 0o600), "SA for one direction only; add one for Binding Acks"},
		{"readable by others", write("open", bu+ba, 0o644), "lets group or others at the keys"},
		{"relative path", "ipsec.keys", "must be an absolute path"},
		{"bad line", write("bad", "ip xfrm state add src ::1\n", 0o600), "bad:1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(fmt.Sprintf("ipsec_keys = %q\n", tc.keys) + base + vm)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if bu, ba := c.SAsFor(c.VMs[0].HomeAddress, c.VMs[0].Home.HomeAgent); bu == nil || ba == nil || bu.SPI != 0x1000 || ba.SPI != 0x2000 {
					t.Errorf("got SAs %v %v, want SPI 0x1000 for Binding Updates and 0x2000 for Acks", bu, ba)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), strings.Repeat("ab", 16)) {
				t.Errorf("error shows key material: %v", err)
			}
		})
	}
}

// The README's IPsec example is a key file kgswitch takes, protecting the
// example VM both ways.
func TestREADMEKeyFileExample(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	readme, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	continued := false
	for _, l := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(l, "    ip xfrm state add") || continued {
			lines = append(lines, strings.TrimSpace(l))
		}
		continued = (strings.HasPrefix(l, "    ip xfrm state add") || continued) && strings.HasSuffix(l, "\\")
	}
	if len(lines) == 0 {
		t.Fatal("no ip xfrm state lines in README.md")
	}
	path := filepath.Join(t.TempDir(), "ipsec.keys")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "configs", "kgswitch.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(fmt.Sprintf("ipsec_keys = %q\n", path) + string(text))
	if err != nil {
		t.Fatalf("README's key file with the example configuration: %v", err)
	}
	if bu, ba := c.SAsFor(c.VMs[0].HomeAddress, c.VMs[0].Home.HomeAgent); bu == nil || ba == nil || bu.SPI != 0x3e8 || ba.SPI != 0x3e9 {
		t.Errorf("got SAs %v and %v, want SPI 0x3e8 for Binding Updates and 0x3e9 for Acks", bu, ba)
	}
}

// TestFileCheckedAsAddVM: the index a file's VMs are checked with refuses
// what AddVM refuses, with the same message, for VMs that clash in every
// way and with several VMs at once.
func TestFileCheckedAsAddVM(t *testing.T) {
	mac := func(b byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0, b} }
	hoa := func(b byte) netip.Addr { return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x20, 15: b}) }
	vms := []VM{
		{Port: "a", HomeAddress: hoa(1), MAC: mac(1)},
		{IfaceID: "i", HomeAddress: hoa(2)},
		{Port: "b", HomeAddress: hoa(3), MAC: mac(3), IfaceID: "j"},
		{Port: "c", HomeAddress: hoa(4)},
	}
	tries := []VM{
		{Port: "a", HomeAddress: hoa(9)},
		{Port: "z", HomeAddress: hoa(2)},
		{Port: "z", HomeAddress: hoa(9), MAC: mac(3)},
		{Port: "z", HomeAddress: hoa(9), IfaceID: "i"},
		{Port: "c", HomeAddress: hoa(1)},                 // clashes with two VMs
		{HomeAddress: hoa(9), MAC: mac(1), IfaceID: "j"}, // and again
		{Port: "z", HomeAddress: hoa(9), MAC: mac(9)},
	}
	for _, try := range tries {
		var c Config
		x := newVMIndex()
		var indexed []VM
		for _, vm := range vms {
			if err := c.AddVM(vm); err != nil {
				t.Fatal(err)
			}
			var err error
			if indexed, err = x.add(indexed, vm); err != nil {
				t.Fatal(err)
			}
		}
		want := c.AddVM(try)
		_, got := x.add(indexed, try)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%+v: got %v, want AddVM's %v", try, got, want)
		}
	}
}

// BenchmarkParseManyVMs parses a file of 10,000 VMs, what a SIGHUP on a
// large host reads before the control loop sees any of it.
func BenchmarkParseManyVMs(b *testing.B) {
	var text strings.Builder
	text.WriteString(base)
	for i := range 10000 {
		fmt.Fprintf(&text, "[[vm]]\nport = \"tap%d\"\nhome_address = \"2001:db8:2000::1:%x\"\nmac = \"52:54:01:%02x:%02x:%02x\"\n",
			i, i, i>>16&0xff, i>>8&0xff, i&0xff)
	}
	for b.Loop() {
		if _, err := Parse(text.String()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUplinkBridge: uplink_bridge names the bridge of the uplink and the
// care-of address (host layout 2); left out, the uplink is on the VM bridge.
func TestUplinkBridge(t *testing.T) {
	for _, tc := range []struct {
		name, text, wantBridge, wantTarget, wantErr string
	}{
		{name: "absent", text: base, wantTarget: ""},
		{name: "br-ex", text: "bridge = \"br-int\"\nuplink_bridge = \"br-ex\"\n" + base, wantBridge: "br-ex",
			wantTarget: "unix:/var/run/openvswitch/br-ex.mgmt"},
		{name: "the bridge itself", text: "uplink_bridge = \"br0\"\n" + base, wantErr: `uplink_bridge "br0" is the bridge itself`},
		{name: "a port", text: "uplink_bridge = \"eth0\"\n" + base, wantErr: `uplink_bridge "eth0": names a port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.text)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.UplinkBridge != tc.wantBridge || c.UplinkBridgeTarget() != tc.wantTarget {
				t.Errorf("got uplink bridge %q target %q, want %q %q", c.UplinkBridge, c.UplinkBridgeTarget(), tc.wantBridge, tc.wantTarget)
			}
		})
	}
	// Its LOCAL port is no VM either.
	c, err := Parse("uplink_bridge = \"br-ex\"\n" + base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewVM("br-ex", netip.MustParseAddr("2001:db8:2000::10"), "", "", "", ""); err == nil || !strings.Contains(err.Error(), "never a VM") {
		t.Errorf("got %v for a VM on br-ex, want it refused", err)
	}
}

// TestCareOfInterface: care_of_interface names the NIC outside OVS holding
// the care-of address (host layout 3); what would be another layout, or a
// port of OVS, is refused with what to do.
func TestCareOfInterface(t *testing.T) {
	for _, tc := range []struct {
		name, text, want, wantErr string
	}{
		{name: "absent", text: base},
		{name: "eth1", text: "care_of_interface = \"eth1\"\n" + base, want: "eth1"},
		{name: "with uplink_bridge", text: "care_of_interface = \"eth1\"\nuplink_bridge = \"br-ex\"\n" + base,
			wantErr: `care_of_interface "eth1" and uplink_bridge "br-ex": each selects a host layout of its own`},
		{name: "the uplink", text: "care_of_interface = \"eth0\"\n" + base, wantErr: `care_of_interface "eth0" is the uplink`},
		{name: "the bridge", text: "care_of_interface = \"br0\"\n" + base, wantErr: `care_of_interface "br0" is a port of OVS`},
		{name: "the internal port", text: "care_of_interface = \"kgs0\"\n" + base, wantErr: `care_of_interface "kgs0" is a port of OVS`},
		{name: "not a name", text: "care_of_interface = \"eth 1\"\n" + base, wantErr: `not a network interface name`},
		{name: "too long", text: "care_of_interface = \"abcdefghijklmnop\"\n" + base, wantErr: `not a network interface name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.text)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.CareOfInterface != tc.want {
				t.Errorf("got care_of_interface %q, want %q", c.CareOfInterface, tc.want)
			}
		})
	}
	c, err := Parse("care_of_interface = \"eth1\"\n" + base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewVM("eth1", netip.MustParseAddr("2001:db8:2000::10"), "", "", "", ""); err == nil || !strings.Contains(err.Error(), "never a VM") {
		t.Errorf("got %v for a VM on eth1, want it refused", err)
	}
}
