package ndresponder

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/mdlayher/ndp"
)

// Advertisement is what the home router advertises on the home link (RFC 4861
// §4.2, §4.6.1). kgswitch repeats it to a guest on a foreign host so that a
// guest that configured its address and default route from Router
// Advertisements keeps both however long it stays away.
type Advertisement struct {
	// Interval between unsolicited advertisements; it must be shorter than every
	// lifetime so that none runs out.
	Interval          time.Duration
	HopLimit          uint8
	Managed, Other    bool
	RouterLifetime    time.Duration
	ValidLifetime     time.Duration
	PreferredLifetime time.Duration
	// OnLink and Autonomous are the prefix's L and A flags.
	OnLink, Autonomous bool
}

// Validate checks that the advertisement keeps the guest's state alive.
func (a *Advertisement) Validate() error {
	switch {
	case a.Interval <= 0:
		return fmt.Errorf("interval %v: must be positive", a.Interval)
	case a.RouterLifetime > 9000*time.Second:
		return fmt.Errorf("router_lifetime %v: at most 9000s (RFC 4861 §6.2.1)", a.RouterLifetime)
	case a.PreferredLifetime > a.ValidLifetime:
		return fmt.Errorf("preferred_lifetime %v exceeds valid_lifetime %v", a.PreferredLifetime, a.ValidLifetime)
	}
	for _, l := range []time.Duration{a.RouterLifetime, a.ValidLifetime, a.PreferredLifetime} {
		if l > 0 && a.Interval >= l {
			return fmt.Errorf("interval %v: must be shorter than every lifetime (%v), or the guest's state lapses between advertisements", a.Interval, l)
		}
	}
	return nil
}

// AppendRouterAdvertisement appends an Ethernet frame carrying the home router's
// Router Advertisement to out, addressed to the guest's MAC only (never a
// multicast MAC: the foreign LAN must not see it) and to dst, the all-nodes
// group for unsolicited advertisements or the soliciting address (RFC 4861
// §6.2.6). Its source is the home router's link-local address, as the guest
// knows it; the MTU option carries mtu, what the tunnel can carry, so the guest
// never sends a packet the tunnel would have to refuse.
func (r *Responder) AppendRouterAdvertisement(out []byte, guest net.HardwareAddr, dst netip.Addr, mtu int) ([]byte, error) {
	a := r.link.Advertise
	if a == nil {
		return out, fmt.Errorf("ndresponder: no advertisement configured for %v", r.link.Prefix)
	}
	ra := &ndp.RouterAdvertisement{
		CurrentHopLimit:      a.HopLimit,
		ManagedConfiguration: a.Managed,
		OtherConfiguration:   a.Other,
		RouterLifetime:       a.RouterLifetime,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: r.routerMAC()},
			ndp.NewMTU(uint32(mtu)),
			&ndp.PrefixInformation{
				PrefixLength:                   uint8(r.link.Prefix.Bits()),
				OnLink:                         a.OnLink,
				AutonomousAddressConfiguration: a.Autonomous,
				ValidLifetime:                  a.ValidLifetime,
				PreferredLifetime:              a.PreferredLifetime,
				Prefix:                         r.link.Prefix.Addr(),
			},
		},
	}
	src := r.link.RouterLinkLocal
	msg, err := ndp.MarshalMessageChecksum(ra, src, dst)
	if err != nil {
		return out, fmt.Errorf("ndresponder: encode RA: %w", err)
	}
	n := len(out)
	out = append(out, make([]byte, netpkt.EthernetLen+netpkt.IPv6Len)...)
	netpkt.PutEthernet(out[n:], guest, r.routerMAC(), netpkt.EtherTypeIPv6)
	netpkt.PutIPv6(out[n+netpkt.EthernetLen:], len(msg), netpkt.ProtoICMPv6, 255, src, dst)
	return append(out, msg...), nil
}

// Advertises reports whether this home link has an advertisement to repeat.
func (r *Responder) Advertises() bool { return r.link.Advertise != nil }

// Interval is the time between unsolicited advertisements.
func (r *Responder) Interval() time.Duration { return r.link.Advertise.Interval }

// Unsolicited describes an unsolicited Neighbor Advertisement (RFC 4861
// §7.2.6), always with the Override flag, so that every neighbour cache that
// hears it, whatever its state, takes LLAddr for Target at once.
type Unsolicited struct {
	Target netip.Addr
	LLAddr net.HardwareAddr // the target link-layer address advertised
	From   net.HardwareAddr // the frame's source MAC
	// To is the frame's destination MAC; nil means all nodes on the link.
	To     net.HardwareAddr
	Router bool
}

// AppendUnsolicitedNA appends the advertisement u describes, to the
// all-nodes group. kgswitch sends it on a home link for a guest back home
// (LLAddr = the guest's MAC), for a guest that left (LLAddr = the Home Agent's
// MAC, whose own advertisement lacks the Override flag), and to a guest back
// home for its router (LLAddr = the real router's MAC, where abroad it may
// have learnt kgswitch's).
func AppendUnsolicitedNA(out []byte, u Unsolicited) ([]byte, error) {
	na := &ndp.NeighborAdvertisement{
		Router:        u.Router,
		Override:      true,
		TargetAddress: u.Target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: u.LLAddr}},
	}
	msg, err := ndp.MarshalMessageChecksum(na, u.Target, allNodes)
	if err != nil {
		return out, fmt.Errorf("ndresponder: encode NA: %w", err)
	}
	to := u.To
	if to == nil {
		to = netpkt.MulticastMAC(allNodes)
	}
	n := len(out)
	out = append(out, make([]byte, netpkt.EthernetLen+netpkt.IPv6Len)...)
	netpkt.PutEthernet(out[n:], to, u.From, netpkt.EtherTypeIPv6)
	netpkt.PutIPv6(out[n+netpkt.EthernetLen:], len(msg), netpkt.ProtoICMPv6, 255, u.Target, allNodes)
	return append(out, msg...), nil
}

var allNodes = netip.MustParseAddr("ff02::1")
