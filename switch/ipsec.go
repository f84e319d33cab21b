package vswitch

import (
	"crypto/rand"
	"errors"
	"net/netip"
	"time"

	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
)

// A VM whose home address has ESP SAs in the key file (ipsec_keys) has its
// signalling protected as a Home Agent with MN-HA IPsec requires (RFC 3776,
// docs/home-agents.md section 7): Binding Updates sealed with the SA from
// the home address to the Home Agent, Acks opened with the reverse one, and
// nothing of it accepted in clear.

// ESP sequence numbers must rise across restarts of kgswitch and across
// hosts: a VM that moves keeps its SAs, and the Home Agent drops, silently,
// a Binding Update whose number is not above what it saw on the SA (replay
// window). Like Binding Update numbers they follow the hosts' clock, which
// NTP keeps together: ten a second since espEpoch, faster than a binding may
// send (mipv6.MaxUpdateRate), so no host's numbers run ahead of the clock;
// 32 bits of them last until 2037.
var espEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const espTick = 100 * time.Millisecond

// espClock is the ESP sequence number the clock gives at now (never 0,
// which RFC 4303 §3.3.3 reserves).
func espClock(now time.Time) uint32 {
	d := now.Sub(espEpoch)
	if d < 0 {
		return 1
	}
	return uint32(d/espTick) + 1
}

// espKey names an outbound SA: an SPI is unique per destination.
type espKey struct {
	spi uint32
	dst netip.Addr
}

// errESPExhausted: the SA's sequence numbers are used up; only new SAs help.
var errESPExhausted = errors.New("ESP sequence numbers of the SA exhausted: install new SAs")

// protectBU seals bu with sa, numbered above anything sent on sa from
// anywhere.
func (s *Switch) protectBU(sa *esp.SA, bu mipv6.BUPacket) ([]byte, error) {
	if s.espSent == nil {
		s.espSent = map[espKey]uint32{}
	}
	k := espKey{sa.SPI, sa.Dst}
	last := s.espSent[k]
	if last == ^uint32(0) {
		return s.buBuf[:0], errESPExhausted
	}
	seq := max(last+1, espClock(s.clock.Now()))
	s.espSent[k] = seq
	return esp.AppendBUPacket(s.buBuf[:0], sa, seq, bu, rand.Reader)
}

// underESP reports whether p's signalling is protected.
func (s *Switch) underESP(p *vmPort) bool {
	bu, _ := s.cfg.SAsFor(p.vm.HomeAddress, p.vm.Home.HomeAgent)
	return bu != nil
}

// openBA checks and opens a Binding Ack under ESP with the SA whose SPI it
// names; what fails is counted and dropped. Replays need no window here: an
// Ack counts only as the answer to a Binding Update of the current series
// (mipv6.Binding.HandleBA), so a replayed one changes nothing, and the Home
// Agent may start its numbers again at 1 (when it restarts) without being
// refused.
func (s *Switch) openBA(pkt []byte, spi uint32) (mipv6.BAPacket, bool) {
	var sa *esp.SA
	for i := range s.cfg.SAs {
		c := &s.cfg.SAs[i]
		if c.SPI == spi && s.byKey[c.Dst.String()] != nil {
			sa = c
			break
		}
	}
	if sa == nil {
		s.dpCounters.Drop(datapath.DropESPUnknownSPI)
		s.warnLimited("esp unknown spi", "dropped ESP signalling: no SA with its SPI", "spi", spi)
		return mipv6.BAPacket{}, false
	}
	_, ba, err := esp.ParseBAPacket(pkt, sa)
	if err != nil {
		p := s.byKey[sa.Dst.String()]
		p.link.Counters.Drop(datapath.DropESPInvalid)
		s.warnLimited("esp invalid "+p.key(), "dropped ESP signalling", "port", p.name(), "sa", sa.String(), "err", err)
		return mipv6.BAPacket{}, false
	}
	return ba, true
}

// restoreESPSequences takes up, from the saved bindings, the last ESP
// sequence number this host sent on each SA, so that numbering goes on
// above it whatever the clock says.
func (s *Switch) restoreESPSequences() {
	for key, sb := range s.stored {
		hoa, err1 := netip.ParseAddr(key)
		ha, err2 := netip.ParseAddr(sb.HomeAgent)
		if err1 != nil || err2 != nil || sb.ESPSequence == 0 {
			continue
		}
		if sa, _ := s.cfg.SAsFor(hoa, ha); sa != nil {
			if s.espSent == nil {
				s.espSent = map[espKey]uint32{}
			}
			k := espKey{sa.SPI, sa.Dst}
			s.espSent[k] = max(s.espSent[k], sb.ESPSequence)
		}
	}
}
