// Package ndresponder impersonates a VM's home link on a foreign host: it decides
// which of the guest's Neighbor Solicitations to answer and builds the Neighbor
// Advertisements (RFC 4861 §7.2.4), so that the guest's neighbour entries for its
// default router and for other home-link addresses keep working after a move.
// It does no I/O: frames come in as bytes and replies go out as bytes.
package ndresponder

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/mdlayher/ndp"
)

// HomeLink describes the home link as the guest knew it.
type HomeLink struct {
	// Prefix is the home link's on-link prefix (the HoA's /64).
	Prefix netip.Prefix
	// RouterLinkLocal is the home router's link-local address, the guest's default router.
	RouterLinkLocal netip.Addr
	// RouterAddrs are the home router's other addresses; NAs for them carry the Router flag too.
	RouterAddrs []netip.Addr
	// Advertise, when not nil, is repeated to the guest as the home router's
	// Router Advertisement; nil when the home router sends none.
	Advertise *Advertisement
	// RouterMAC, when known, is the home router's real MAC: answers for the
	// router carry it, so a guest that resolves its router abroad still has
	// the right MAC when it comes home. Otherwise kgswitch's own MAC is used.
	RouterMAC net.HardwareAddr
}

// routerMAC is the link-layer address kgswitch gives for the home router.
func (r *Responder) routerMAC() net.HardwareAddr {
	if len(r.link.RouterMAC) == 6 {
		return r.link.RouterMAC
	}
	return r.mac
}

// Guest is what the responder must know of the VM it answers.
type Guest struct {
	MAC net.HardwareAddr
	// Owns reports whether addr is one of the guest's own addresses; the responder
	// never answers for those (the guest would see a duplicate).
	Owns func(addr netip.Addr) bool
}

// Responder answers for one home link.
type Responder struct {
	link HomeLink
	// mac is the link-layer address put in answers: frames the guest sends there reach
	// kgswitch's internal port like every other frame from the guest.
	mac net.HardwareAddr
}

// New returns a responder for link that answers with link-layer address mac.
func New(link HomeLink, mac net.HardwareAddr) (*Responder, error) {
	if !link.Prefix.IsValid() || !link.Prefix.Addr().Is6() {
		return nil, fmt.Errorf("ndresponder: home prefix %v is not an IPv6 prefix", link.Prefix)
	}
	if !link.RouterLinkLocal.IsLinkLocalUnicast() {
		return nil, fmt.Errorf("ndresponder: home router address %v is not link-local", link.RouterLinkLocal)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("ndresponder: bad answering MAC %v", mac)
	}
	if link.Advertise != nil {
		if err := link.Advertise.Validate(); err != nil {
			return nil, fmt.Errorf("ndresponder: router advertisement: %w", err)
		}
	}
	return &Responder{link: link, mac: mac}, nil
}

// AllNodes is the link-local all-nodes multicast address (RFC 4291 §2.7.1),
// the destination of unsolicited Router Advertisements.
var AllNodes = netip.MustParseAddr("ff02::1")

// Errors for frames that are not solicitations the responder understands; callers count them.
var (
	ErrNotSolicitation = errors.New("ndresponder: not a Neighbor Solicitation")
	ErrMalformed       = errors.New("ndresponder: malformed Neighbor Solicitation")
)

// Decision says why a well-formed solicitation got the answer it did.
type Decision int

// Decisions, for counters and tests.
const (
	Answered Decision = iota
	IgnoredDAD
	IgnoredOwnAddress
	IgnoredOffLink
)

func (d Decision) String() string {
	switch d {
	case Answered:
		return "answered"
	case IgnoredDAD:
		return "ignored-dad"
	case IgnoredOwnAddress:
		return "ignored-own-address"
	case IgnoredOffLink:
		return "ignored-off-link"
	}
	return fmt.Sprintf("decision(%d)", int(d))
}

// IsRouter reports whether a is an address of the home router, which the
// responder answers for with the router's MAC.
func (r *Responder) IsRouter(a netip.Addr) bool {
	return a == r.link.RouterLinkLocal || slices.Contains(r.link.RouterAddrs, a)
}

// Respond inspects an Ethernet frame from guest and, when it is a Neighbor
// Solicitation the home link would answer, appends the Neighbor Advertisement frame
// to out and returns it.
//
// RFC 4861 §7.2.4: the answer is solicited; the Router flag is set exactly for the
// home router's addresses (a flag that flips to 0 makes the guest drop its default
// router, §7.2.5); the Override flag is clear because kgswitch answers as a proxy
// (§7.2.4, "a unicast address for which the node is providing proxy service"), so an
// entry the guest holds for the real router's MAC is left in place — frames to either
// MAC reach kgswitch. A unicast solicitation (a NUD probe, §7.3.3) was sent to the
// link-layer address the guest has cached, and the answer confirms exactly that
// address: with Override clear, an answer carrying any other address would be
// ignored and the guest's entry would fail.
func (r *Responder) Respond(out []byte, frame []byte, guest Guest) ([]byte, Decision, error) {
	if len(frame) < netpkt.EthernetLen {
		return out, 0, ErrNotSolicitation
	}
	eth := netpkt.Ethernet(frame)
	if eth.EtherType() != netpkt.EtherTypeIPv6 {
		return out, 0, ErrNotSolicitation
	}
	ip, err := netpkt.ParseIPv6(eth.Payload())
	if err != nil || ip.NextHeader() != netpkt.ProtoICMPv6 {
		return out, 0, ErrNotSolicitation
	}
	body := ip.Payload()
	if len(body) < 4 || body[0] != 135 {
		return out, 0, ErrNotSolicitation
	}
	// RFC 4861 §7.1.1 validity checks: hop limit 255, code 0, checksum.
	if ip.HopLimit() != 255 || body[1] != 0 || !netpkt.VerifyChecksum(ip.Src(), ip.Dst(), netpkt.ProtoICMPv6, body) {
		return out, 0, ErrMalformed
	}
	m, err := ndp.ParseMessage(body)
	if err != nil {
		return out, 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok {
		return out, 0, ErrNotSolicitation
	}
	src := ip.Src()
	if src.IsUnspecified() {
		// A DAD probe: the real home link would only answer if the address were taken,
		// and kgswitch cannot know that; staying silent never breaks the guest.
		return out, IgnoredDAD, nil
	}
	target := ns.TargetAddress
	if guest.Owns != nil && guest.Owns(target) {
		return out, IgnoredOwnAddress, nil
	}
	isRouter := r.IsRouter(target)
	if !isRouter && !r.link.Prefix.Contains(target) {
		return out, IgnoredOffLink, nil
	}
	lladdr := r.mac
	if isRouter {
		lladdr = r.routerMAC()
	}
	if d := eth.Dst(); d[0]&1 == 0 {
		lladdr = d
	}
	na := &ndp.NeighborAdvertisement{
		Router:        isRouter,
		Solicited:     true,
		Override:      false,
		TargetAddress: target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: lladdr}},
	}
	// Answer from the target address itself: kgswitch stands in for that node, and the
	// guest validates NAs by target, not by source (RFC 4861 §7.1.2).
	from := target
	msg, err := ndp.MarshalMessageChecksum(na, from, src)
	if err != nil {
		return out, 0, fmt.Errorf("ndresponder: encode NA: %w", err)
	}
	dstMAC := eth.Src()
	n := len(out)
	out = append(out, make([]byte, netpkt.EthernetLen+netpkt.IPv6Len)...)
	netpkt.PutEthernet(out[n:], dstMAC, lladdr, netpkt.EtherTypeIPv6)
	netpkt.PutIPv6(out[n+netpkt.EthernetLen:], len(msg), netpkt.ProtoICMPv6, 255, from, src)
	out = append(out, msg...)
	return out, Answered, nil
}
