// Package v4responder impersonates a VM's IPv4 home link on a foreign host, as
// ndresponder does for IPv6 and as OVN's controller does natively: it decides
// which of the guest's ARP requests (RFC 826) and DHCPv4 client messages
// (RFC 2131) to answer and builds the answers, so that the guest keeps its
// gateway, its home-subnet neighbours and its leased address after a move.
// It does no I/O: frames come in as bytes and replies go out as bytes, always
// addressed to the guest's own MAC, never to a broadcast MAC.
//
// Decoding and encoding use gopacket's layers. That allocates per frame, which
// is acceptable here: ARP and DHCP come at control-plane rate (a few frames a
// minute per guest), not on the per-packet path the datapath keeps allocation
// free.
package v4responder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/kgswitch/kgswitch/netpkt"
)

// HomeLink4 describes the IPv4 home link as the guest knew it: what its home
// DHCP server handed out and which link-layer addresses it resolved there.
type HomeLink4 struct {
	// Subnet is the home link's on-link prefix, e.g. 192.0.2.0/24 (masked).
	Subnet netip.Prefix
	// Gateway is the default router on the home link.
	Gateway netip.Addr
	// GatewayMAC, when known, is the home gateway's real MAC: answers for the
	// gateway carry it, so a guest that resolves its gateway abroad still has
	// the right MAC when it comes home. Otherwise kgswitch's own MAC is used.
	GatewayMAC net.HardwareAddr
	// Neighbors are the real MACs of other home-link addresses, where known;
	// the same reasoning as GatewayMAC.
	Neighbors map[netip.Addr]net.HardwareAddr
	// ServerID is the home DHCP server's address, sent as the server
	// identifier (RFC 2132 §9.7). The zero value means Gateway. See
	// serverID for why it matters.
	ServerID netip.Addr
	// DNS are the DNS servers handed out (RFC 2132 §3.8), in order.
	DNS []netip.Addr
	// LeaseTime is the lease handed out (RFC 2132 §9.2), whole seconds.
	LeaseTime time.Duration
	// DomainName, when not empty, is handed out (RFC 2132 §3.17).
	DomainName string
	// MTU, when not zero, is handed out as the interface MTU (RFC 2132 §5.1).
	// 1460 is what a tunnel over a 1500-byte foreign link carries: the
	// guest's IPv4 packet travels inside an IPv6 packet whose 40-byte header
	// must fit too. A guest that knows it never sends a packet kgswitch must
	// fragment or refuse with ICMP "fragmentation needed", which many IPv4
	// paths and guests handle badly (RFC 4459 §3).
	MTU int
}

// Guest is what the responder must know of the VM it answers.
type Guest struct {
	MAC net.HardwareAddr
	// Addr is the guest's declared IPv4 home address, the one address it is
	// leased and the only sender address its ARP requests are answered for.
	Addr netip.Addr
}

// Responder answers for one IPv4 home link.
type Responder struct {
	link HomeLink4
	// mac is the link-layer address put in answers for addresses whose real
	// MAC is unknown: frames the guest sends there reach kgswitch's internal
	// port like every other frame from the guest.
	mac net.HardwareAddr
}

// New returns a responder for link that answers with link-layer address mac.
func New(link HomeLink4, mac net.HardwareAddr) (*Responder, error) {
	if err := link.validate(); err != nil {
		return nil, fmt.Errorf("v4responder: %w", err)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("v4responder: bad answering MAC %v", mac)
	}
	// The caller may change its map later; the responder's view must not.
	link.Neighbors = maps.Clone(link.Neighbors)
	return &Responder{link: link, mac: mac}, nil
}

func (l *HomeLink4) validate() error {
	if !l.Subnet.IsValid() || !l.Subnet.Addr().Is4() || l.Subnet.Masked() != l.Subnet {
		return fmt.Errorf("home subnet %v is not a masked IPv4 prefix", l.Subnet)
	}
	if !l.isHost(l.Gateway) {
		return fmt.Errorf("gateway %v is not a host address of %v", l.Gateway, l.Subnet)
	}
	if l.GatewayMAC != nil && len(l.GatewayMAC) != 6 {
		return fmt.Errorf("gateway MAC %v is not an Ethernet address", l.GatewayMAC)
	}
	for a, mac := range l.Neighbors {
		if !l.isHost(a) || len(mac) != 6 {
			return fmt.Errorf("neighbour %v at %v: want a host address of %v and an Ethernet address", a, mac, l.Subnet)
		}
	}
	if l.ServerID.IsValid() && !l.ServerID.Is4() {
		return fmt.Errorf("DHCP server identifier %v is not IPv4", l.ServerID)
	}
	for _, d := range l.DNS {
		if !d.Is4() {
			return fmt.Errorf("DNS server %v is not IPv4", d)
		}
	}
	if l.LeaseTime < time.Second || l.LeaseTime/time.Second >= math.MaxUint32 || l.LeaseTime%time.Second != 0 {
		// 0xffffffff would mean "infinite" (RFC 2131 §3.3), which a lease
		// kgswitch cannot revoke should not be.
		return fmt.Errorf("lease time %v: want whole seconds, at least 1s and finite", l.LeaseTime)
	}
	if len(l.DomainName) > 255 {
		return fmt.Errorf("domain name of %d bytes: a DHCP option holds at most 255", len(l.DomainName))
	}
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > math.MaxUint16) {
		return fmt.Errorf("MTU %d: want 68..65535 (RFC 2132 §5.1)", l.MTU)
	}
	if n := l.leaseOptionsLen(); n > minOptionsLen {
		return fmt.Errorf("%d DNS servers and a domain name of %d bytes make %d bytes of DHCP options; every client accepts %d (RFC 2131 §2), so fewer are needed",
			len(l.DNS), len(l.DomainName), n, minOptionsLen)
	}
	return nil
}

// minOptionsLen is the options field every DHCP client must accept
// (RFC 2131 §2), the magic cookie included: a longer reply may be dropped
// by a client that did not send a larger maximum message size.
const minOptionsLen = 312

// leaseOptionsLen is the length of the options field of an OFFER or ACK:
// cookie, message type, server identifier, lease time, T1, T2, subnet mask,
// router, then the optional parameters and the end option.
func (l *HomeLink4) leaseOptionsLen() int {
	n := 4 + 3 + 6 + 3*6 + 6 + 6 + 1
	if len(l.DNS) > 0 {
		n += 2 + 4*len(l.DNS)
	}
	if l.DomainName != "" {
		n += 2 + len(l.DomainName)
	}
	if l.MTU != 0 {
		n += 4
	}
	return n
}

// isHost reports whether a is an address a node of the subnet can hold: in
// the subnet and, on subnets with more than two addresses, neither the
// network nor the broadcast address (RFC 1122 §3.2.1.3; RFC 3021 for /31).
func (l *HomeLink4) isHost(a netip.Addr) bool {
	if !a.Is4() || !l.Subnet.Contains(a) {
		return false
	}
	if l.Subnet.Bits() >= 31 {
		return true
	}
	return a != l.Subnet.Addr() && a != l.broadcast()
}

func (l *HomeLink4) broadcast() netip.Addr {
	b := l.Subnet.Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) | (1<<(32-l.Subnet.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// serverID is the DHCP server identifier kgswitch answers as. A guest renews
// by unicast to the server identifier of its lease (RFC 2131 §4.4.5): when
// that is the home DHCP server's real address, the guest's renewals keep
// going to the right server after it comes home. The gateway is the default
// because it is what OVN's native DHCP and most cloud DHCP services use, and
// the gateway is an address the guest can always reach, abroad through
// kgswitch and at home on its link.
func (l *HomeLink4) serverID() netip.Addr {
	if l.ServerID.IsValid() {
		return l.ServerID
	}
	return l.Gateway
}

// Errors for frames the responder does not handle; callers count them.
var (
	// ErrNotRequest is returned for frames that are neither ARP nor a DHCPv4
	// client message (UDP to port 67).
	ErrNotRequest = errors.New("v4responder: neither ARP nor a DHCPv4 client message")
	// ErrMalformed wraps every reason an ARP or DHCPv4 frame cannot be read.
	ErrMalformed = errors.New("v4responder: malformed")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Decision says why a well-formed ARP or DHCPv4 frame got the answer it did.
type Decision int

// Decisions, for counters and tests.
const (
	// Answered: an ARP reply was built.
	Answered Decision = iota
	// IgnoredProbe: an ARP probe (sender address 0.0.0.0, RFC 5227 §2.1.1).
	IgnoredProbe
	// IgnoredOwnAddress: an ARP request for the guest's own address, such
	// as a gratuitous announcement (RFC 5227 §2.3).
	IgnoredOwnAddress
	// IgnoredOffLink: an ARP request for an address that is not a host of
	// the home subnet.
	IgnoredOffLink
	// IgnoredNotRequest: an ARP reply, a BOOTREPLY, or a DHCP message type
	// clients do not send to servers.
	IgnoredNotRequest
	// IgnoredOtherSender: the sender is not the guest (ARP sender or
	// Ethernet source not its MAC or address, DHCP chaddr not its MAC).
	IgnoredOtherSender
	// IgnoredBOOTP: a BOOTP request without a DHCP message type; the home
	// link's service is DHCP.
	IgnoredBOOTP
	// IgnoredOtherServer: a DHCPREQUEST selecting another server's offer
	// (RFC 2131 §4.3.2).
	IgnoredOtherServer
	// Offered: a DHCPOFFER was built (RFC 2131 §4.3.1).
	Offered
	// Acked: a DHCPACK for the guest's address was built (RFC 2131 §4.3.2).
	Acked
	// Nacked: a DHCPNAK was built, the guest asked for another address.
	Nacked
	// Informed: a DHCPACK without lease answered a DHCPINFORM (§4.3.5).
	Informed
	// Declined: the guest declined its address, saying it is in use (§4.3.3);
	// no answer. It deserves a counter and a log line: abroad, nothing
	// kgswitch answers should make the guest believe so.
	Declined
	// Released: the guest released its lease (§4.3.4); no answer, and
	// nothing to forget, since the lease is the declared address.
	Released
)

// Replied reports whether d came with a frame to send back: an ARP reply or
// a DHCP OFFER, ACK or NAK.
func (d Decision) Replied() bool {
	switch d {
	case Answered, Offered, Acked, Nacked, Informed:
		return true
	}
	return false
}

func (d Decision) String() string {
	switch d {
	case Answered:
		return "answered"
	case IgnoredProbe:
		return "ignored-probe"
	case IgnoredOwnAddress:
		return "ignored-own-address"
	case IgnoredOffLink:
		return "ignored-off-link"
	case IgnoredNotRequest:
		return "ignored-not-request"
	case IgnoredOtherSender:
		return "ignored-other-sender"
	case IgnoredBOOTP:
		return "ignored-bootp"
	case IgnoredOtherServer:
		return "ignored-other-server"
	case Offered:
		return "offered"
	case Acked:
		return "acked"
	case Nacked:
		return "nacked"
	case Informed:
		return "informed"
	case Declined:
		return "declined"
	case Released:
		return "released"
	}
	return fmt.Sprintf("decision(%d)", int(d))
}

// Respond inspects an Ethernet frame from guest and, when it is an ARP request
// or a DHCPv4 client message the home link would answer, appends the answer
// frame to out and returns it. Frames that are neither give ErrNotRequest;
// the caller decides their fate (a broadcast must not reach the foreign LAN).
func (r *Responder) Respond(out []byte, frame []byte, guest Guest) ([]byte, Decision, error) {
	if len(guest.MAC) != 6 || !r.link.isHost(guest.Addr) || guest.Addr == r.link.Gateway {
		return out, 0, fmt.Errorf("v4responder: guest %v at %v is not a host of %v", guest.MAC, guest.Addr, r.link.Subnet)
	}
	if len(frame) < netpkt.EthernetLen {
		return out, 0, ErrNotRequest
	}
	eth := netpkt.Ethernet(frame)
	switch eth.EtherType() {
	case uint16(layers.EthernetTypeARP):
		return r.respondARP(out, eth, guest)
	case uint16(layers.EthernetTypeIPv4):
		return r.respondDHCP(out, eth, guest)
	}
	return out, 0, ErrNotRequest
}

// feedback records gopacket's truncation reports, which are not errors to
// gopacket but are to a responder that must not answer half a frame.
type feedback struct{ truncated bool }

func (f *feedback) SetTruncated() { f.truncated = true }

// serialize appends the layers' encoding to out.
func serialize(out []byte, ls ...gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return out, err
	}
	return append(out, buf.Bytes()...), nil
}

func addr4(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}
