package coafilter

import (
	"fmt"
	"net/netip"
	"strings"
)

// Table is the nftables table kgswitch owns: nothing else is ever touched.
const Table = "inet kgswitch"

// Ruleset returns the nftables script that (re)creates kgswitch's table:
// in prerouting at raw priority, before the host stack looks at a packet
// (AF_PACKET has had its copy already), it drops what arrives on nic for
// coa and the host kernel would answer with ICMPv6 errors, having neither
// ip6_tunnel nor MIP6:
//
//   - IPv6 or IPv4 in IPv6, and the Mobility Header after any extension
//     headers (meta l4proto skips them);
//   - anything with a type 2 routing header;
//   - ESP from espFrom, the Home Agents that protect signalling (another
//     source's ESP may be the host's own IPsec).
//
// What Program accepts besides (ICMPv6 Destination Unreachable, ESP from
// others) the host gets too. The script first creates the table and deletes
// it, so one transaction replaces whatever a previous run left, or creates
// it afresh: applying it twice is applying it once.
func Ruleset(nic string, coa netip.Addr, espFrom []netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s\ndelete table %s\ntable %s {\n", Table, Table, Table)
	b.WriteString("\tchain prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n")
	match := fmt.Sprintf("iifname %q ip6 daddr %s", nic, coa)
	fmt.Fprintf(&b, "\t\t%s meta l4proto { %d, %d, %d } counter drop\n", match, protoIPv4, protoIPv6, protoMH)
	fmt.Fprintf(&b, "\t\t%s rt type 2 counter drop\n", match)
	if len(espFrom) > 0 {
		src := make([]string, len(espFrom))
		for i, a := range espFrom {
			src[i] = a.String()
		}
		fmt.Fprintf(&b, "\t\t%s ip6 saddr { %s } meta l4proto esp counter drop\n", match, strings.Join(src, ", "))
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// Removal is the nftables script that deletes kgswitch's table, whether or
// not it is there.
func Removal() string {
	return fmt.Sprintf("table %s\ndelete table %s\n", Table, Table)
}
