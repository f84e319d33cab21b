package datapath

import (
	"fmt"
	"sync/atomic"
)

// DropReason says why the datapath dropped a frame.
type DropReason int

// Drop reasons, each with its own counter so an operator can tell a hostile
// guest from a misconfigured Home Agent.
const (
	DropMalformed          DropReason = iota // frame or packet too short or inconsistent
	DropNotIPv6                              // guest sent what its pseudo home link does not carry: ARP or IPv4 without an IPv4 home address, RARP, ...
	DropBadSource                            // guest used an IPv6 source that is not its home address
	DropLinkLocal                            // link-local unicast cannot cross the tunnel
	DropAbsorbed                             // multicast, RS, MLD, NA: kept on the pseudo home link
	DropNDIgnored                            // a solicitation the home link would not answer either
	DropNotBound                             // no binding with the Home Agent yet
	DropTooBig                               // larger than the tunnel MTU; a Packet Too Big (IPv4 with DF: Fragmentation Needed) went back
	DropWriteError                           // the internal port or uplink refused the frame
	DropUnknownSource                        // frame from neither a known guest nor the tunnel
	DropUnknownHome                          // tunnelled packet for a home address not served here
	DropBadTunnelSource                      // tunnelled packet not from the guest's Home Agent
	DropSignalQueueFull                      // control loop behind; signalling packet dropped
	DropSignalRejected                       // BA/BE/BRR not matching a binding (sender, home address, sequence)
	DropInactive                             // the guest has not been activated on this host yet
	DropHoldExpired                          // held longer than departure.max_hold or arrival.max_hold, or held when the hold ended unreleased
	DropHoldOverflow                         // beyond departure.buffer_frames, or arrival.buffer_frames or buffer_bytes
	DropSocketOverflow                       // the kernel's receive queue of the internal port was full: kgswitch read too slowly
	DropTunnelLinkLocal                      // from the tunnel with a link-local or multicast source (IPv4: 169.254/16, 224/4): no router forwards those
	DropTunnelND                             // Neighbor Discovery from the tunnel: valid only from the guest's own link
	DropGuestMobility                        // a guest's Mobility Header: the Home Agent would take it as the mobile node's signalling
	DropGuestRoutingHeader                   // a guest's routing header of type 0 or 2
	DropSignalIgnored                        // valid signalling that changed nothing: a hint within 1.5 s of the last, an Ack already answered
	DropNotHomeAgent                         // a DAD probe or takeover advertisement for a VM's home address not from its Home Agent's MAC
	DropESPUnknownSPI                        // ESP from a Home Agent with an SPI of no configured SA
	DropESPInvalid                           // ESP signalling that failed its integrity check, or malformed under ESP
	DropSignalClear                          // signalling in clear for a VM whose signalling is under ESP
	DropARPDHCPIgnored                       // a guest's ARP or DHCP message nothing answered: no IPv4 responder, or one its home link would not answer either
	DropTTLExpired                           // a guest's IPv4 packet kgswitch would forward as its gateway with TTL 1 or 0; a Time Exceeded went back
	DropMartian                              // IPv4 to or from 0/8, 127/8 or 240/4, which no router forwards (RFC 1812 §5.3.7)
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"malformed", "not-ipv6", "bad-source", "link-local", "absorbed", "nd-ignored", "not-bound",
	"too-big", "write-error", "unknown-source", "unknown-home", "bad-tunnel-source", "signal-queue-full",
	"signal-rejected", "inactive", "hold-expired", "hold-overflow", "socket-overflow",
	"tunnel-link-local", "tunnel-nd", "guest-mobility-header", "guest-routing-header", "signal-ignored",
	"not-home-agent", "esp-unknown-spi", "esp-invalid", "signal-clear", "arp-dhcp-ignored", "ttl-expired",
	"martian",
}

func (r DropReason) String() string {
	if r >= 0 && r < numDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("drop(%d)", int(r))
}

// Counters are a port's (or the datapath's) packet counters; all atomic, so the
// control loop reads them while the datapath writes.
type Counters struct {
	ToTunnelPackets   atomic.Uint64
	ToTunnelBytes     atomic.Uint64
	FromTunnelPackets atomic.Uint64
	FromTunnelBytes   atomic.Uint64
	NDAnswered        atomic.Uint64
	RASent            atomic.Uint64
	V4Answered        atomic.Uint64 // ARP and DHCP messages the IPv4 responder answered
	LocalPackets      atomic.Uint64 // to another guest of the same home link on this host
	Held              atomic.Uint64 // frames held: for a VM that left this home host, or from a guest whose binding is being set up here
	Released          atomic.Uint64 // of those, sent on to the Home Agent (a departed VM's later frames too)
	// TunnelRefused counts the Home Agent's Destination Unreachable errors
	// about packets tunnelled to it: each a hint that it lost the binding.
	TunnelRefused atomic.Uint64
	Drops         [numDropReasons]atomic.Uint64
}

// Drop counts one frame dropped for reason r.
func (c *Counters) Drop(r DropReason) { c.Drops[r].Add(1) }

// DropMap returns the non-zero drop counters by reason name.
func (c *Counters) DropMap() map[string]uint64 {
	m := map[string]uint64{}
	for i := range c.Drops {
		if v := c.Drops[i].Load(); v > 0 {
			m[DropReason(i).String()] = v
		}
	}
	return m
}
