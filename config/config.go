// Package config reads and validates kgswitch's TOML configuration. Validation is
// strict (unknown keys, bad addresses and duplicates are errors) because a daemon
// that guesses at an operator's intent can steer the wrong VM's traffic.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/ndresponder"
)

// Defaults an operator gets when a key is left out.
const (
	DefaultOVSRunDir       = "/var/run/openvswitch"
	DefaultBridge          = "br0"
	DefaultInternalPort    = "kgs0"
	DefaultControlSocket   = "/run/kgswitch/kgswitch.sock"
	DefaultBindingLifetime = 10 * time.Minute
)

// Config is the daemon's whole configuration.
type Config struct {
	// Bridge is the OVS bridge the VM ports are on.
	Bridge string
	// OVSRunDir holds db.sock and <bridge>.mgmt.
	OVSRunDir string
	// Uplink is the bridge port facing the host's LAN: a port of Bridge,
	// or of UplinkBridge when that is set.
	Uplink string
	// UplinkBridge, when set, is the OVS bridge holding the uplink and the
	// care-of address (its LOCAL port), joined to Bridge by a patch port
	// pair (OpenStack's br-ex and br-int); empty: the uplink is on Bridge.
	UplinkBridge string
	// CareOfInterface, when set, is the host's NIC that holds the care-of
	// address and is in no OVS bridge (host layout 3): kgswitch reads what
	// is its there with AF_PACKET and keeps the host kernel from answering
	// it. Uplink stays the VM bridge's own port towards the LAN, which the
	// guests at home here reach their home link through.
	CareOfInterface string
	// CareOfAddress is this host's address on its LAN; Binding Updates are sent from it.
	CareOfAddress netip.Addr
	// InternalPort is the OVS internal port kgswitch creates and reads guest frames from.
	InternalPort string
	// ControlSocket is where `kgswitch add-port` and `kgswitch status` reach the daemon.
	ControlSocket string
	// ControlGroup, when set, owns the control socket (mode 0660): its
	// members may drive kgswitch without being root. A group name or number.
	ControlGroup string
	// BindingLifetime is the lifetime requested in Binding Updates.
	BindingLifetime time.Duration
	// MetricsAddress is where Prometheus metrics are served (host:port);
	// empty: off.
	MetricsAddress string
	// StateDir keeps what must survive a restart (bindings, sequence numbers);
	// empty: nothing survives.
	StateDir string
	// IPsecKeys is the file of manually keyed ESP SAs (ip xfrm state lines)
	// protecting the signalling of the VMs they name; SAs are what it holds.
	IPsecKeys    string
	SAs          []esp.SA
	HomeNetworks []HomeNetwork
	VMs          []VM
	// Departure: how a home host covers a departing VM until its Home Agent
	// takes the home address over.
	Departure Departure
	// Arrival: how a foreign host keeps a guest's frames until its binding
	// stands.
	Arrival Arrival
}

// Arrival configures the foreign host's hold of what a guest sends between
// its first frame there and the Home Agent's acceptance of its binding: the
// frames are sent through the tunnel once it stands.
type Arrival struct {
	Enabled bool
	// BufferFrames and BufferBytes bound what is held per VM (the bytes of
	// its IPv6 packets); more is dropped and counted.
	BufferFrames int
	BufferBytes  int
	// MaxHold bounds how long a frame is held.
	MaxHold time.Duration
}

// Default arrival settings: a first registration takes the Home Agent about
// 1.1 s (DAD), so 3 s covers it with room for a lost Binding Update. 1024
// frames at the tunnel MTU are about 1.5 MiB, so at these defaults the frame
// count binds first; the 4 MiB byte bound is what still caps a VM's memory
// when an operator raises buffer_frames for a guest of many small packets.
var DefaultArrival = Arrival{Enabled: true, BufferFrames: 1024, BufferBytes: 4 << 20, MaxHold: 3 * time.Second}

// Departure configures the home host's cover for a VM that leaves it: frames
// for the VM are held until the Home Agent takes over, then released to it.
type Departure struct {
	Enabled bool
	// BufferFrames bounds the frames held per VM; more are dropped and counted.
	BufferFrames int
	// MaxHold bounds how long a frame is held.
	MaxHold time.Duration
}

// Default departure settings: a first registration takes the Home Agent about
// 1.1 s (DAD), so 3 s of hold covers it with room, and 1024 frames cover a
// 10 ms probe stream plus a few hundred packets a second of other traffic.
var DefaultDeparture = Departure{Enabled: true, BufferFrames: 1024, MaxHold: 3 * time.Second}

// HomeNetwork describes a home link and its Home Agent.
type HomeNetwork struct {
	Prefix          netip.Prefix
	HomeAgent       netip.Addr
	RouterLinkLocal netip.Addr
	RouterAddrs     []netip.Addr
	// RouterMAC is the home router's MAC, when known; see ndresponder.
	RouterMAC net.HardwareAddr
	// HomeAgentMAC is the Home Agent's MAC on the home link, when
	// configured; otherwise a home host learns it from its neighbour table.
	// Only from it are DAD probes and takeover advertisements believed.
	HomeAgentMAC net.HardwareAddr
	// Advertise mirrors the home router's Router Advertisements to guests away
	// from home; nil when the home router sends none.
	Advertise *ndresponder.Advertisement
	// IPv4 is the network's IPv4 side, for its dual-stack VMs; nil: none
	// declared (a VM may still give its own gateway).
	IPv4 *HomeNetwork4
}

// VM binds a VM to a home address. The VM is found on the bridge by its port
// name, or, when the name is not known in advance (libvirt names taps vnetN
// per host), by the external_ids libvirt and OpenStack set on its interface:
// iface-id or attached-mac.
type VM struct {
	Port        string
	IfaceID     string
	HomeAddress netip.Addr
	// MAC may be nil: then the interface's external_ids:attached-mac is used.
	MAC  net.HardwareAddr
	Home HomeNetwork
	// NoDepartureHold switches the home host's departure cover off for this VM.
	NoDepartureHold bool
	// IPv4Address is the VM's IPv4 home address with its subnet's length
	// (RFC 5555); not valid for a VM without IPv4. Home.IPv4 then describes
	// its IPv4 home link.
	IPv4Address netip.Prefix
}

type fileConfig struct {
	Bridge          string            `toml:"bridge"`
	OVSRunDir       string            `toml:"ovs_rundir"`
	Uplink          string            `toml:"uplink"`
	UplinkBridge    string            `toml:"uplink_bridge"`
	CareOfInterface string            `toml:"care_of_interface"`
	CareOfAddress   string            `toml:"care_of_address"`
	InternalPort    string            `toml:"internal_port"`
	ControlSocket   string            `toml:"control_socket"`
	ControlGroup    string            `toml:"control_socket_group"`
	BindingLifetime string            `toml:"binding_lifetime"`
	StateDir        string            `toml:"state_dir"`
	IPsecKeys       string            `toml:"ipsec_keys"`
	MetricsAddress  string            `toml:"metrics_address"`
	HomeNetworks    []fileHomeNetwork `toml:"home_network"`
	VMs             []fileVM          `toml:"vm"`
	Departure       *fileDeparture    `toml:"departure"`
	Arrival         *fileArrival      `toml:"arrival"`
}

type fileArrival struct {
	Enabled      *bool  `toml:"enabled"`
	BufferFrames *int   `toml:"buffer_frames"`
	BufferBytes  *int   `toml:"buffer_bytes"`
	MaxHold      string `toml:"max_hold"`
}

type fileDeparture struct {
	Enabled      *bool  `toml:"enabled"`
	BufferFrames *int   `toml:"buffer_frames"`
	MaxHold      string `toml:"max_hold"`
}

type fileHomeNetwork struct {
	Prefix          string            `toml:"prefix"`
	HomeAgent       string            `toml:"home_agent"`
	RouterLinkLocal string            `toml:"router_link_local"`
	RouterAddrs     []string          `toml:"router_addresses"`
	RouterMAC       string            `toml:"router_mac"`
	HomeAgentMAC    string            `toml:"home_agent_mac"`
	Advertise       *fileAdvertise    `toml:"advertise"`
	IPv4            *fileHomeNetwork4 `toml:"ipv4"`
}

type fileAdvertise struct {
	Interval          string `toml:"interval"`
	HopLimit          *int   `toml:"hop_limit"`
	Managed           bool   `toml:"managed"`
	Other             bool   `toml:"other_config"`
	RouterLifetime    string `toml:"router_lifetime"`
	ValidLifetime     string `toml:"valid_lifetime"`
	PreferredLifetime string `toml:"preferred_lifetime"`
	OnLink            *bool  `toml:"on_link"`
	Autonomous        *bool  `toml:"autonomous"`
}

// parse turns the file form into an Advertisement with RFC 4861 §6.2.1 defaults
// for what is left out.
func (f *fileAdvertise) parse() (*ndresponder.Advertisement, error) {
	a := &ndresponder.Advertisement{HopLimit: 64, RouterLifetime: 1800 * time.Second,
		ValidLifetime: 30 * 24 * time.Hour, PreferredLifetime: 7 * 24 * time.Hour, OnLink: true, Autonomous: true}
	for _, d := range []struct {
		key string
		s   string
		to  *time.Duration
	}{
		{"interval", f.Interval, &a.Interval},
		{"router_lifetime", f.RouterLifetime, &a.RouterLifetime},
		{"valid_lifetime", f.ValidLifetime, &a.ValidLifetime},
		{"preferred_lifetime", f.PreferredLifetime, &a.PreferredLifetime},
	} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("advertise.%s %q: not a duration", d.key, d.s)
		}
		*d.to = v
	}
	if a.Interval == 0 {
		// A third of the shortest lifetime: two advertisements may be lost
		// before anything lapses.
		a.Interval = 200 * time.Second
		for _, l := range []time.Duration{a.RouterLifetime, a.ValidLifetime, a.PreferredLifetime} {
			if l > 0 && l/3 < a.Interval {
				a.Interval = l / 3
			}
		}
	}
	if f.HopLimit != nil {
		if *f.HopLimit < 0 || *f.HopLimit > 255 {
			return nil, fmt.Errorf("advertise.hop_limit %d: want 0..255", *f.HopLimit)
		}
		a.HopLimit = uint8(*f.HopLimit)
	}
	a.Managed, a.Other = f.Managed, f.Other
	if f.OnLink != nil {
		a.OnLink = *f.OnLink
	}
	if f.Autonomous != nil {
		a.Autonomous = *f.Autonomous
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("advertise: %w", err)
	}
	return a, nil
}

type fileVM struct {
	Port            string `toml:"port"`
	HomeAddress     string `toml:"home_address"`
	MAC             string `toml:"mac"`
	HomeAgent       string `toml:"home_agent"`
	HomePrefix      string `toml:"home_prefix"`
	RouterLinkLocal string `toml:"router_link_local"`
	IfaceID         string `toml:"iface_id"`
	DepartureHold   *bool  `toml:"departure_hold"`
	IPv4Address     string `toml:"ipv4_address"`
	IPv4Gateway     string `toml:"ipv4_gateway"`
}

// Load reads and validates the file at path. Errors read "path:line: reason".
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(string(b))
	if err != nil {
		var le *LineError
		if errors.As(err, &le) {
			return nil, fmt.Errorf("%s:%d: %w", path, le.Line, le.Err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LineError is a configuration error at a line of the file.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// locator finds where things are in the TOML text, so errors found after
// decoding (which loses positions) still name a line.
type locator []string

// find returns the line of key in the index-th [[table]] (table "" = the top
// level), or the table's header line when key is "" or absent; 0 if unknown.
func (l locator) find(table string, index int, key string) int {
	cur, n, header := "", -1, 0
	for i, line := range l {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			name := strings.Trim(t, "[] \t")
			if j := strings.IndexByte(name, ']'); j >= 0 {
				name = name[:j]
			}
			switch {
			case name == table:
				// [[table]] counts; a plain [table] is its only instance.
				n++
				if !strings.HasPrefix(t, "[[") {
					n = 0
				}
				if n == index {
					header = i + 1
				}
				cur = name
			case table == "" || !strings.HasPrefix(name, table+"."):
				cur = name
			}
			continue
		}
		if key != "" && cur == table && (table == "" || n == index) {
			if k, _, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == key {
				return i + 1
			}
		}
	}
	return header
}

// at wraps err with the line of key in the index-th [[table]].
func (l locator) at(table string, index int, key string, err error) error {
	if line := l.find(table, index, key); line > 0 {
		return &LineError{Line: line, Err: err}
	}
	return err
}

// keyOf guesses which key an error is about from its leading word.
func keyOf(err error) string {
	k, _, _ := strings.Cut(err.Error(), " ")
	return strings.TrimSuffix(k, ":")
}

// Parse validates a configuration given as TOML text.
func Parse(text string) (*Config, error) {
	var f fileConfig
	md, err := toml.Decode(text, &f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &LineError{Line: pe.Position.Line, Err: errors.New(pe.Message)}
		}
		return nil, err
	}
	loc := locator(strings.Split(text, "\n"))
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		err := fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
		last := und[0][len(und[0])-1]
		for i, line := range loc {
			if k, _, ok := strings.Cut(strings.TrimSpace(line), "="); ok && strings.TrimSpace(k) == last {
				return nil, &LineError{Line: i + 1, Err: err}
			}
		}
		return nil, err
	}
	c, err := parse(&f, loc)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func parse(f *fileConfig, loc locator) (*Config, error) {
	var err error
	c := &Config{
		Bridge:          or(f.Bridge, DefaultBridge),
		OVSRunDir:       or(f.OVSRunDir, DefaultOVSRunDir),
		Uplink:          f.Uplink,
		UplinkBridge:    f.UplinkBridge,
		CareOfInterface: f.CareOfInterface,
		InternalPort:    or(f.InternalPort, DefaultInternalPort),
		ControlSocket:   or(f.ControlSocket, DefaultControlSocket),
		BindingLifetime: DefaultBindingLifetime,
		Departure:       DefaultDeparture,
		Arrival:         DefaultArrival,
	}
	c.StateDir = f.StateDir
	c.ControlGroup = f.ControlGroup
	if strings.ContainsAny(c.ControlGroup, " \t:/") {
		return nil, loc.at("", 0, "control_socket_group", fmt.Errorf("control_socket_group %q: want a group name or number", c.ControlGroup))
	}
	c.MetricsAddress = f.MetricsAddress
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			return nil, loc.at("", 0, "metrics_address", fmt.Errorf("metrics_address %q: want host:port, e.g. \"[::1]:9477\"", c.MetricsAddress))
		}
	}
	if f.IPsecKeys != "" {
		if !strings.HasPrefix(f.IPsecKeys, "/") {
			return nil, loc.at("", 0, "ipsec_keys", fmt.Errorf("ipsec_keys %q: must be an absolute path", f.IPsecKeys))
		}
		c.IPsecKeys = f.IPsecKeys
		// The key file's own errors name it and its line.
		if c.SAs, err = esp.ParseKeyFile(f.IPsecKeys); err != nil {
			return nil, err
		}
	}
	if c.StateDir != "" && !strings.HasPrefix(c.StateDir, "/") {
		return nil, loc.at("", 0, "state_dir", fmt.Errorf("state_dir %q: must be an absolute path", c.StateDir))
	}
	if !strings.HasPrefix(c.OVSRunDir, "/") {
		return nil, loc.at("", 0, "ovs_rundir", fmt.Errorf("ovs_rundir %q: must be an absolute path (OVS sockets need one)", c.OVSRunDir))
	}
	if c.Uplink == "" {
		return nil, errors.New("uplink: missing (the bridge port facing this host's LAN)")
	}
	if c.UplinkBridge == c.Bridge {
		// Said to be apart but named the same: the operator meant
		// something; guessing which would steer the wrong frames.
		return nil, loc.at("", 0, "uplink_bridge", fmt.Errorf("uplink_bridge %q is the bridge itself: leave it out when the uplink is a port of %s", c.UplinkBridge, c.Bridge))
	}
	if c.UplinkBridge == c.InternalPort || c.UplinkBridge == c.Uplink {
		return nil, loc.at("", 0, "uplink_bridge", fmt.Errorf("uplink_bridge %q: names a port, not a bridge", c.UplinkBridge))
	}
	if err := c.checkCareOfInterface(); err != nil {
		return nil, loc.at("", 0, "care_of_interface", err)
	}
	if c.CareOfAddress, err = parseAddr("care_of_address", f.CareOfAddress); err != nil {
		return nil, loc.at("", 0, "care_of_address", err)
	}
	if !c.CareOfAddress.IsGlobalUnicast() {
		return nil, loc.at("", 0, "care_of_address", fmt.Errorf("care_of_address %v: must be a global unicast address", c.CareOfAddress))
	}
	if f.BindingLifetime != "" {
		d, err := time.ParseDuration(f.BindingLifetime)
		if err != nil || d < 4*time.Second || d > 262140*time.Second {
			return nil, loc.at("", 0, "binding_lifetime", fmt.Errorf("binding_lifetime %q: want a duration from 4s to 262140s", f.BindingLifetime))
		}
		c.BindingLifetime = d
	}
	if d := f.Departure; d != nil {
		if d.Enabled != nil {
			c.Departure.Enabled = *d.Enabled
		}
		if d.BufferFrames != nil {
			if *d.BufferFrames < 1 || *d.BufferFrames > 1<<16 {
				return nil, loc.at("departure", 0, "buffer_frames", fmt.Errorf("departure.buffer_frames %d: want 1..65536", *d.BufferFrames))
			}
			c.Departure.BufferFrames = *d.BufferFrames
		}
		if d.MaxHold != "" {
			v, err := time.ParseDuration(d.MaxHold)
			if err != nil || v <= 0 || v > time.Minute {
				return nil, loc.at("departure", 0, "max_hold", fmt.Errorf("departure.max_hold %q: want a duration up to 1m", d.MaxHold))
			}
			c.Departure.MaxHold = v
		}
	}
	if a := f.Arrival; a != nil {
		if err := a.parse(&c.Arrival, loc); err != nil {
			return nil, err
		}
	}
	for i, fh := range f.HomeNetworks {
		h, err := parseHome(fh.Prefix, fh.HomeAgent, fh.RouterLinkLocal, fh.RouterAddrs)
		if err != nil {
			return nil, loc.at("home_network", i, keyOf(err), fmt.Errorf("home_network[%d]: %w", i, err))
		}
		if fh.RouterMAC != "" {
			if h.RouterMAC, err = ParseMAC(fh.RouterMAC); err != nil {
				return nil, loc.at("home_network", i, "router_mac", fmt.Errorf("home_network[%d]: router_%w", i, err))
			}
		}
		if fh.HomeAgentMAC != "" {
			if h.HomeAgentMAC, err = ParseMAC(fh.HomeAgentMAC); err != nil {
				return nil, loc.at("home_network", i, "home_agent_mac", fmt.Errorf("home_network[%d]: home_agent_%w", i, err))
			}
		}
		if fh.Advertise != nil {
			if h.Advertise, err = fh.Advertise.parse(); err != nil {
				return nil, loc.at("home_network", i, "", fmt.Errorf("home_network[%d]: %w", i, err))
			}
		}
		if fh.IPv4 != nil {
			if h.IPv4, err = fh.IPv4.parse(); err != nil {
				return nil, loc.at("home_network", i, "", fmt.Errorf("home_network[%d]: %w", i, err))
			}
		}
		for _, o := range c.HomeNetworks {
			if o.Prefix.Overlaps(h.Prefix) {
				return nil, loc.at("home_network", i, "prefix", fmt.Errorf("home_network[%d]: prefix %v overlaps %v", i, h.Prefix, o.Prefix))
			}
		}
		c.HomeNetworks = append(c.HomeNetworks, h)
	}
	vms := newVMIndex()
	for i, fv := range f.VMs {
		hoa, err := parseAddr("home_address", fv.HomeAddress)
		if err != nil {
			return nil, loc.at("vm", i, "home_address", fmt.Errorf("vm[%d]: %w", i, err))
		}
		vm, err := c.NewVM(fv.Port, hoa, fv.MAC, fv.HomeAgent, fv.HomePrefix, fv.RouterLinkLocal)
		if err != nil {
			return nil, loc.at("vm", i, keyOf(err), fmt.Errorf("vm[%d]: %w", i, err))
		}
		vm.NoDepartureHold = fv.DepartureHold != nil && !*fv.DepartureHold
		vm.IfaceID = fv.IfaceID
		if fv.IPv4Address != "" {
			if err := c.SetIPv4(&vm, fv.IPv4Address, fv.IPv4Gateway); err != nil {
				return nil, loc.at("vm", i, keyOf(err), fmt.Errorf("vm[%d]: %w", i, err))
			}
		} else if fv.IPv4Gateway != "" {
			return nil, loc.at("vm", i, "ipv4_gateway", fmt.Errorf("vm[%d]: ipv4_gateway without ipv4_address", i))
		}
		if vm.Port == "" && vm.IfaceID == "" && vm.MAC == nil {
			return nil, loc.at("vm", i, "", fmt.Errorf("vm[%d]: give port, iface_id or mac, so kgswitch can find the VM's interface", i))
		}
		if c.VMs, err = vms.add(c.VMs, vm); err != nil {
			return nil, loc.at("vm", i, keyOf(err), fmt.Errorf("vm[%d]: %w", i, err))
		}
	}
	if err := c.checkSAPairs(); err != nil {
		return nil, loc.at("", 0, "ipsec_keys", err)
	}
	return c, nil
}

// parse applies the [arrival] table over the defaults in to.
func (a *fileArrival) parse(to *Arrival, loc locator) error {
	if a.Enabled != nil {
		to.Enabled = *a.Enabled
	}
	if a.BufferFrames != nil {
		if *a.BufferFrames < 1 || *a.BufferFrames > 1<<16 {
			return loc.at("arrival", 0, "buffer_frames", fmt.Errorf("arrival.buffer_frames %d: want 1..65536", *a.BufferFrames))
		}
		to.BufferFrames = *a.BufferFrames
	}
	if a.BufferBytes != nil {
		// At least one packet of the largest a 1500-byte link carries; at
		// most 256 MiB, which is a mistake sooner than a wish.
		if *a.BufferBytes < 1500 || *a.BufferBytes > 256<<20 {
			return loc.at("arrival", 0, "buffer_bytes", fmt.Errorf("arrival.buffer_bytes %d: want 1500..268435456", *a.BufferBytes))
		}
		to.BufferBytes = *a.BufferBytes
	}
	if a.MaxHold != "" {
		v, err := time.ParseDuration(a.MaxHold)
		if err != nil || v <= 0 || v > time.Minute {
			return loc.at("arrival", 0, "max_hold", fmt.Errorf("arrival.max_hold %q: want a duration up to 1m", a.MaxHold))
		}
		to.MaxHold = v
	}
	return nil
}

func parseAddr(key, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, fmt.Errorf("%s: missing", key)
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%s %q: not an IPv6 address", key, s)
	}
	return a, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// BridgeTarget is the OpenFlow management socket of the bridge.
func (c *Config) BridgeTarget() string { return "unix:" + c.OVSRunDir + "/" + c.Bridge + ".mgmt" }

// checkCareOfInterface refuses a care_of_interface that names something of
// OVS's or goes with uplink_bridge: each would be another layout, and
// guessing which the operator meant would steer the wrong frames.
func (c *Config) checkCareOfInterface() error {
	nic := c.CareOfInterface
	switch {
	case nic == "":
		return nil
	case c.UplinkBridge != "":
		return fmt.Errorf("care_of_interface %q and uplink_bridge %q: each selects a host layout of its own (a NIC outside OVS, a bridge joined by patch ports); set one", nic, c.UplinkBridge)
	case nic == c.Uplink:
		return fmt.Errorf("care_of_interface %q is the uplink: name the NIC outside OVS that holds the care-of address, or leave it out when the care-of address is on %s", nic, c.Bridge)
	case nic == c.Bridge || nic == c.InternalPort:
		return fmt.Errorf("care_of_interface %q is a port of OVS: name the NIC outside OVS that holds the care-of address, or leave it out when the care-of address is on %s", nic, c.Bridge)
	case strings.ContainsAny(nic, " \t/") || len(nic) >= 16:
		return fmt.Errorf("care_of_interface %q: not a network interface name", nic)
	}
	return nil
}

// UplinkBridgeTarget is the OpenFlow management socket of the uplink bridge;
// empty when the uplink is on Bridge.
func (c *Config) UplinkBridgeTarget() string {
	if c.UplinkBridge == "" {
		return ""
	}
	return "unix:" + c.OVSRunDir + "/" + c.UplinkBridge + ".mgmt"
}

// OVSDBEndpoint is the OVSDB socket.
func (c *Config) OVSDBEndpoint() string { return "unix:" + c.OVSRunDir + "/db.sock" }
