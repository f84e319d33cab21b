package labha

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sort"
	"sync"

	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
)

// Errors of Keyring.ParseRequest for Binding Updates that IPsec drops before
// the binding cache sees them. As on a Linux Home Agent, where the kernel's
// XFRM drops them, none is answered (RFC 4303 §3.4); esp's sentinels
// (esp.ErrAuth, esp.ErrSelector, ...) say why for the rest.
var (
	// ErrUnprotected means a Binding Update in clear for a home address
	// that has SAs: the Home Agent's policy wants ESP on them (RFC 3776).
	ErrUnprotected = errors.New("labha: binding update in clear for a home address with SAs")
	// ErrUnknownSPI means an ESP packet whose SPI names no inbound SA of
	// the Home Agent (RFC 4303 §3.4.2).
	ErrUnknownSPI = errors.New("labha: no SA for the ESP SPI")
	// ErrReplay means an ESP sequence number the SA's ReplayWindow has
	// seen or left behind (RFC 4303 §3.4.3).
	ErrReplay = errors.New("labha: ESP sequence number replayed")
)

// The reason attribute of EventBUDropped for Binding Updates that IPsec
// drops (DropReason): short and fixed, for tests to match.
const (
	ReasonUnprotected = "clear BU under IPsec"
	ReasonUnknownSPI  = "esp: unknown SPI"
	ReasonReplay      = "esp: replay"
	ReasonIntegrity   = "esp: integrity"
	// ReasonSelector: the SA that opened the Binding Update is another
	// home address's.
	ReasonSelector = "esp: selector"
	// ReasonMalformedESP: an ESP header, trailer or padding that does not
	// add up.
	ReasonMalformedESP = "esp: malformed"
)

var dropReasons = []struct {
	err    error
	reason string
}{
	{ErrUnprotected, ReasonUnprotected},
	{ErrUnknownSPI, ReasonUnknownSPI},
	{ErrReplay, ReasonReplay},
	{esp.ErrAuth, ReasonIntegrity},
	{esp.ErrSelector, ReasonSelector},
	{esp.ErrShort, ReasonMalformedESP},
	{esp.ErrBlockSize, ReasonMalformedESP},
	{esp.ErrPadding, ReasonMalformedESP},
	{esp.ErrSequence, ReasonMalformedESP},
	{esp.ErrSPI, ReasonMalformedESP},
}

// DropReason returns the reason logged for a Binding Update dropped with
// err: one of the Reason constants when IPsec dropped it, else err's text.
func DropReason(err error) string {
	for _, d := range dropReasons {
		if errors.Is(err, d.err) {
			return d.reason
		}
	}
	return err.Error()
}

// authenticated reports whether a Binding Update that ESP failed with err
// passed the integrity check: what went wrong was found in the Mobility
// Header or in the addresses after decryption. The kernel's XFRM has
// advanced the replay window by then, before mip6d looks at the Mobility
// Header.
func authenticated(err error) bool {
	for _, e := range []error{esp.ErrAuth, esp.ErrShort, esp.ErrBlockSize, esp.ErrPadding, esp.ErrSequence, esp.ErrSPI, esp.ErrNotESP} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

// Keyring holds the Home Agent's manually keyed SAs, two per protected home
// address as a Linux Home Agent has them (RFC 3776 §5.2, docs/home-agents.md
// section 7): the inbound one for Binding Updates (source the home address,
// destination the Home Agent), with its ReplayWindow, and the outbound one
// for Acknowledgements (the reverse), with the last sequence number sent.
// Home addresses without SAs keep clear signalling. A Keyring made by
// NewKeyring starts every outbound sequence at 1, as the kernel does when
// the SAs are installed. It does no I/O and is safe for concurrent use.
type Keyring struct {
	ha netip.Addr

	mu    sync.Mutex
	bySPI map[uint32]*inboundSA // the Binding Update SAs
	homes map[netip.Addr]*homeSAs
}

type inboundSA struct {
	sa     esp.SA
	window ReplayWindow
}

type homeSAs struct {
	bu *inboundSA
	ba *esp.SA
	// seq is the last sequence number sent on ba; 0 before the first.
	seq uint32
}

// NewKeyring returns the keyring of Home Agent ha with sas, as
// esp.ParseKeyFile reads them. Every SA must have ha at one end, and every
// home address an SA names must have exactly one of each direction: a
// Linux Home Agent missing either drops all of the home address's
// signalling without a word, which a lab should say at start instead. Two
// inbound SAs with one SPI are refused too.
func NewKeyring(ha netip.Addr, sas []esp.SA) (*Keyring, error) {
	k := &Keyring{ha: ha, bySPI: map[uint32]*inboundSA{}, homes: map[netip.Addr]*homeSAs{}}
	home := func(hoa netip.Addr) *homeSAs {
		h := k.homes[hoa]
		if h == nil {
			h = &homeSAs{}
			k.homes[hoa] = h
		}
		return h
	}
	for _, sa := range sas {
		switch {
		case sa.Src == ha && sa.Dst == ha:
			return nil, fmt.Errorf("labha: %v: from the Home Agent to itself", sa)
		case sa.Dst == ha:
			h := home(sa.Src)
			if h.bu != nil {
				return nil, fmt.Errorf("labha: %v: home address %v already has Binding Update SA %v", sa, sa.Src, h.bu.sa)
			}
			if _, ok := k.bySPI[sa.SPI]; ok {
				return nil, fmt.Errorf("labha: %v: SPI already taken", sa)
			}
			h.bu = &inboundSA{sa: sa}
			k.bySPI[sa.SPI] = h.bu
		case sa.Src == ha:
			h := home(sa.Dst)
			if h.ba != nil {
				return nil, fmt.Errorf("labha: %v: home address %v already has Acknowledgement SA %v", sa, sa.Dst, h.ba)
			}
			h.ba = &sa
		default:
			return nil, fmt.Errorf("labha: %v: neither from nor to the Home Agent %v", sa, ha)
		}
	}
	for _, hoa := range k.HomeAddresses() {
		switch h := k.homes[hoa]; {
		case h.bu == nil:
			return nil, fmt.Errorf("labha: home address %v has an Acknowledgement SA but no Binding Update SA (src %v dst %v)", hoa, hoa, ha)
		case h.ba == nil:
			return nil, fmt.Errorf("labha: home address %v has a Binding Update SA but no Acknowledgement SA (src %v dst %v)", hoa, ha, hoa)
		}
	}
	return k, nil
}

// HomeAddresses returns the protected home addresses, in order.
func (k *Keyring) HomeAddresses() []netip.Addr {
	out := make([]netip.Addr, 0, len(k.homes))
	for hoa := range k.homes {
		out = append(out, hoa)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Protected reports whether hoa's signalling must be under ESP.
func (k *Keyring) Protected(hoa netip.Addr) bool { return k.homes[hoa] != nil }

// ParseRequest is ParseRequest for a Home Agent with these SAs, as a Linux
// Home Agent's kernel filters signalling before mip6d sees it (RFC 4303
// §3.4). A packet whose headers lead to ESP goes to the inbound SA its
// SPI names (ErrUnknownSPI), is checked against the SA's replay window
// before and recorded in it after the integrity check (ErrReplay, so a
// replay costs no cryptography), and is opened with esp.ParseBUPacket,
// which also requires the Home Address option and the SA's addresses
// (esp.ErrSelector). A packet in clear is parsed by ParseRequest and
// refused for a protected home address (ErrUnprotected). It returns the
// request and the ESP sequence number, 0 for a clear Binding Update.
// Errors of the Mobility Header are ParseRequest's sentinels, whether it
// came in clear or not.
func (k *Keyring) ParseRequest(pkt []byte) (Request, uint32, error) {
	off, ok := espOffset(pkt)
	if !ok {
		r, _, err := ParseRequest(pkt)
		if err != nil {
			return r, 0, err
		}
		hoa := r.HomeAddress
		if !hoa.IsValid() {
			hoa = r.CareOf // as HandleBU takes it
		}
		if k.Protected(hoa) {
			return Request{}, 0, fmt.Errorf("home address %v: %w", hoa, ErrUnprotected)
		}
		return r, 0, nil
	}
	if len(pkt)-off < 8 {
		return Request{}, 0, fmt.Errorf("ESP header at offset %d: %w", off, esp.ErrShort)
	}
	spi, seq := binary.BigEndian.Uint32(pkt[off:]), binary.BigEndian.Uint32(pkt[off+4:])
	k.mu.Lock()
	defer k.mu.Unlock()
	in := k.bySPI[spi]
	if in == nil {
		return Request{}, 0, fmt.Errorf("SPI %#08x: %w", spi, ErrUnknownSPI)
	}
	if !in.window.Check(seq) {
		return Request{}, 0, fmt.Errorf("%v sequence %d: %w", in.sa, seq, ErrReplay)
	}
	_, p, err := esp.ParseBUPacket(pkt, &in.sa)
	if authenticated(err) {
		in.window.Accept(seq)
	}
	if err != nil {
		if !authenticated(err) || errors.Is(err, esp.ErrSelector) {
			return Request{}, 0, err
		}
		return Request{}, 0, mobilityError(err)
	}
	return Request{
		CareOf:          p.Src,
		HomeAddress:     p.HomeAddress,
		Sequence:        p.Sequence,
		Flags:           p.Flags,
		Lifetime:        p.Lifetime,
		NonceIndices:    p.NonceIndices.Present,
		AuthData:        p.BindingAuthData,
		IPv4HomeAddress: p.IPv4HomeAddress,
	}, seq, nil
}

// AppendBA appends Binding Acknowledgement p to b, protected with the
// outbound SA of p's home address under the next sequence number when it
// has one (the IV read from rand), as mipv6.AppendBAPacket makes it
// otherwise. It returns the ESP sequence number used, 0 in clear. An SA
// whose sequence numbers ran out sends no more (RFC 4303 §3.3.3).
func (k *Keyring) AppendBA(b []byte, p mipv6.BAPacket, rand io.Reader) ([]byte, uint32, error) {
	h := k.homes[p.HomeAddress]
	if h == nil {
		return mipv6.AppendBAPacket(b, p), 0, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if h.seq == math.MaxUint32 {
		return b, 0, fmt.Errorf("labha: %v: sequence numbers exhausted", h.ba)
	}
	b, err := esp.AppendBAPacket(b, h.ba, h.seq+1, p, rand)
	if err != nil {
		return b, 0, err
	}
	h.seq++
	return b, h.seq, nil
}

// espOffset returns where the ESP header of IPv6 packet pkt starts when its
// IPv6 header and any Hop-by-Hop, Routing and Destination Options headers
// lead to one (RFC 4303 §3.1.1, transport mode), and false when they lead
// elsewhere or run past the packet.
func espOffset(pkt []byte) (int, bool) {
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return 0, false
	}
	nh, off := pkt[ipv6NextHdr], ipv6HeaderLen
	for {
		switch nh {
		case esp.IPProtoESP:
			return off, true
		case mipv6.IPProtoHopByHop, mipv6.IPProtoRouting, mipv6.IPProtoDstOpts:
		default:
			return 0, false
		}
		if len(pkt)-off < 2 {
			return 0, false
		}
		nh, off = pkt[off], off+(int(pkt[off+1])+1)*8
	}
}
