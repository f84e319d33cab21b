package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/kgswitch/kgswitch/config"
	vswitch "github.com/kgswitch/kgswitch/switch"
)

func cmdAddPort(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("add-port", "add-port PORT --hoa ADDR [--hoa4 ADDR/LEN [--gateway4 ADDR]] [flags]", stderr)
	hoa := fs.String("hoa", "", "the VM's IPv6 home `address` (required)")
	mac := fs.String("mac", "", "the guest's `MAC`; default: the interface's external_ids:attached-mac")
	ha := fs.String("home-agent", "", "Home Agent `address`; default: from the home_network containing --hoa")
	prefix := fs.String("home-prefix", "", "home link `prefix`, e.g. 2001:db8:2000::/64; default: as --home-agent")
	router := fs.String("router", "", "home router's link-local `address`; default: as --home-agent")
	hoa4 := fs.String("hoa4", "", "the VM's IPv4 home `address` with its subnet's length, e.g. 192.0.2.10/24 (Dual-Stack MIPv6); default: IPv6 only")
	gw4 := fs.String("gateway4", "", "its IPv4 home subnet's gateway `address`; default: from the home_network's [ipv4] table")
	activate := fs.Bool("activate", false, "the guest already runs on this host: register at once instead of waiting for its first frame")
	socket := fs.String("control", config.DefaultControlSocket, "daemon control `socket`")
	port, err := parsePortArgs(fs, args)
	if err != nil {
		return err
	}
	if *hoa == "" {
		return usageErr("missing --hoa")
	}
	if a, err := netip.ParseAddr(*hoa); err != nil || !a.Is6() || a.Is4In6() || !a.IsGlobalUnicast() {
		return usageErr("--hoa %q: not a global IPv6 address", *hoa)
	}
	if *mac != "" {
		if _, err := config.ParseMAC(*mac); err != nil {
			return usageErr("--mac: %v", err)
		}
	}
	if (*ha != "" || *prefix != "" || *router != "") && (*ha == "" || *prefix == "" || *router == "") {
		return usageErr("--home-agent, --home-prefix and --router go together")
	}
	if *gw4 != "" && *hoa4 == "" {
		return usageErr("--gateway4 without --hoa4")
	}
	if *hoa4 != "" {
		// The daemon checks it against the home network; what is no IPv4
		// prefix at all is refused here, as a bad --hoa is.
		if p, err := netip.ParsePrefix(*hoa4); err != nil || !p.Addr().Is4() {
			return usageErr("--hoa4 %q: want an IPv4 address with its subnet's length, e.g. 192.0.2.10/24", *hoa4)
		}
	}
	if *gw4 != "" {
		if a, err := netip.ParseAddr(*gw4); err != nil || !a.Is4() {
			return usageErr("--gateway4 %q: not an IPv4 address", *gw4)
		}
	}
	body, _ := json.Marshal(vswitch.AddPortRequest{Port: port, HomeAddress: *hoa, MAC: *mac, HomeAgent: *ha, HomePrefix: *prefix, RouterLL: *router,
		IPv4Address: *hoa4, IPv4Gateway: *gw4, Activate: *activate})
	var out struct{}
	if err := call(*socket, http.MethodPost, "/v1/ports", body, &out); err != nil {
		return err
	}
	if *hoa4 != "" {
		fmt.Fprintf(stdout, "%s bound to %s and %s\n", port, *hoa, *hoa4)
		return nil
	}
	fmt.Fprintf(stdout, "%s bound to %s\n", port, *hoa)
	return nil
}

// parsePortArgs parses "PORT [flags]" or "[flags] PORT". Go's flag package
// stops at the first positional argument, so a leading port name is taken
// off before the flags are parsed.
func parsePortArgs(fs *flag.FlagSet, args []string) (string, error) {
	var port string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		port, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	switch {
	case port == "" && fs.NArg() == 1:
		port = fs.Arg(0)
	case fs.NArg() > 0:
		return "", usageErr("unexpected argument %q", fs.Arg(fs.NArg()-1))
	}
	if port == "" {
		return "", usageErr("missing PORT (the OVS interface name, e.g. vnet3)")
	}
	return port, nil
}

// cmdPortVerb runs `kgswitch activate|deactivate PORT`.
func cmdPortVerb(verb string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(verb, verb+" PORT [flags]", stderr)
	socket := fs.String("control", config.DefaultControlSocket, "daemon control `socket`")
	port, err := parsePortArgs(fs, args)
	if err != nil {
		return err
	}
	var out struct{}
	if err := call(*socket, http.MethodPost, "/v1/ports/"+url.PathEscape(port)+"/"+verb, nil, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %sd\n", port, verb)
	return nil
}

// cmdDelPort runs `kgswitch del-port PORT`.
func cmdDelPort(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("del-port", "del-port PORT [flags]", stderr)
	socket := fs.String("control", config.DefaultControlSocket, "daemon control `socket`")
	port, err := parsePortArgs(fs, args)
	if err != nil {
		return err
	}
	var out struct{}
	if err := call(*socket, http.MethodDelete, "/v1/ports/"+url.PathEscape(port), nil, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s unbound\n", port)
	return nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "status [--json]", stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts instead of a table")
	socket := fs.String("control", config.DefaultControlSocket, "daemon control `socket`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var st []vswitch.PortStatus
	if err := call(*socket, http.MethodGet, "/v1/status", nil, &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tHOME ADDRESS\tWHERE\tBINDING\tREASON\tCARE-OF\tHOME AGENT\tSEQ\tLIFETIME\tTO HA pkts/bytes\tFROM HA pkts/bytes\tHELD/RELEASED\tDROPS")
	for _, p := range st {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.0fs\t%d/%d\t%d/%d\t%d/%d\t%s\n", p.Port, p.HomeAddress, p.Location,
			dash(p.BindingState), dash(p.Reason), dash(p.CareOf), p.HomeAgent, p.Sequence, p.LifetimeLeftSec,
			p.ToTunnelPackets, p.ToTunnelBytes, p.FromTunnelPackets, p.FromTunnelBytes, p.Held, p.Released, dash(formatDrops(p.Drops)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// A line per dual-stack VM: the table is wide enough already, and a
	// refusal's reason is words, not a column.
	for _, p := range st {
		if p.IPv4 == "" {
			continue
		}
		line := fmt.Sprintf("%s: ipv4 %s", p.Port, p.IPv4)
		if p.IPv4Refused > 0 {
			line += fmt.Sprintf("; refused %d times", p.IPv4Refused)
		}
		if p.V4Answered > 0 {
			line += fmt.Sprintf("; %d ARP/DHCP answered", p.V4Answered)
		}
		if _, err := fmt.Fprintln(stdout, line); err != nil {
			return err
		}
	}
	// Drops of no VM's: a table row per VM cannot show a full socket or a
	// stranger's frames, and they are what an operator looks for first.
	var dp datapathStatus
	if err := call(*socket, http.MethodGet, "/v1/datapath", nil, &dp); err != nil {
		return err
	}
	if len(dp.Drops) > 0 {
		_, err := fmt.Fprintf(stdout, "datapath drops (no VM's): %s\n", formatDrops(dp.Drops))
		return err
	}
	return nil
}

// formatDrops prints drop counters as reason=n, sorted by reason.
func formatDrops(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(out, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// call sends one request to the daemon; daemon-side refusals come back as
// exitErrors carrying the status the daemon chose.
func call(socket, method, path string, body []byte, out any) error {
	req, err := http.NewRequest(method, "http://kgswitch"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := controlClient(socket).Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the kgswitch daemon at %s (is `kgswitch run` running?): %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == "" {
			return fmt.Errorf("daemon answered %s", resp.Status)
		}
		return &exitError{code: e.Code, err: fmt.Errorf("%s", e.Error)}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
