package scenario

import (
	"context"
	"slices"
	"strings"
)

// GuestIPv4Command is the shell command whose output ParseGuestIPv4 reads:
// the IPv4 addresses of a guest's eth0, then its IPv4 routes.
const GuestIPv4Command = "ip -4 addr show dev eth0; echo ROUTES; ip -4 route show"

// GuestIPv4 is a guest's IPv4 configuration, normalised so that two views
// of the same configuration compare equal: iproute2 (netns guests) and
// busybox (the QEMU guest) print it differently, and lifetimes, flags
// ("dynamic") and route origins ("proto kernel") say nothing about where
// packets go.
type GuestIPv4 struct {
	// Addrs are eth0's addresses as "A/N scope S", in order.
	Addrs []string
	// Routes are the routes as `ip route` prints them without "proto X",
	// "metric N" and "linkdown", with single spaces, sorted.
	Routes []string
}

// String is the configuration on one line, for messages.
func (c GuestIPv4) String() string {
	return "addrs [" + strings.Join(c.Addrs, "; ") + "] routes [" + strings.Join(c.Routes, "; ") + "]"
}

// Equal reports whether c and d are the same configuration.
func (c GuestIPv4) Equal(d GuestIPv4) bool {
	return slices.Equal(c.Addrs, d.Addrs) && slices.Equal(c.Routes, d.Routes)
}

// ParseGuestIPv4 reads GuestIPv4Command's output.
func ParseGuestIPv4(out string) GuestIPv4 {
	addrOut, routeOut, _ := strings.Cut(out, "ROUTES\n")
	var c GuestIPv4
	for _, line := range strings.Split(addrOut, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "inet" {
			continue
		}
		a := f[1]
		if i := slices.Index(f, "scope"); i > 0 && i+1 < len(f) {
			a += " scope " + f[i+1]
		}
		c.Addrs = append(c.Addrs, a)
	}
	for _, line := range strings.Split(routeOut, "\n") {
		f := strings.Fields(line)
		var keep []string
		for i := 0; i < len(f); i++ {
			switch f[i] {
			case "proto", "metric":
				i++
			case "linkdown":
			default:
				keep = append(keep, f[i])
			}
		}
		if len(keep) > 0 {
			c.Routes = append(c.Routes, strings.Join(keep, " "))
		}
	}
	slices.Sort(c.Routes)
	return c
}

// GuestIPv4Of returns the IPv4 configuration of a netns guest (a Guest's
// Node, say "vm").
func (e *Env) GuestIPv4Of(ctx context.Context, node string) (GuestIPv4, error) {
	out, err := e.Lab.Run(ctx, node, "sh", "-c", GuestIPv4Command)
	if err != nil {
		return GuestIPv4{}, err
	}
	return ParseGuestIPv4(out), nil
}
