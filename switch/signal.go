package vswitch

import (
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/kgswitch/kgswitch/datapath"
	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/ndresponder"
)

func (s *Switch) sendBU(bu mipv6.BUPacket) {
	if sa, _ := s.cfg.SAsFor(bu.HomeAddress, bu.Dst); sa != nil {
		var err error
		if s.buBuf, err = s.protectBU(sa, bu); err != nil {
			s.log.Error("protect Binding Update", "hoa", bu.HomeAddress, "home_agent", bu.Dst, "err", err)
			return
		}
	} else {
		s.buBuf = mipv6.AppendBUPacket(s.buBuf[:0], bu)
	}
	if err := s.deps.Uplink.WriteIPv6(s.buBuf, bu.Dst); err != nil {
		s.log.Warn("send Binding Update", "hoa", bu.HomeAddress, "home_agent", bu.Dst, "err", err)
		return
	}
	s.log.Debug("sent Binding Update", "hoa", bu.HomeAddress, "seq", bu.Sequence, "lifetime_s", int(bu.Lifetime)*4)
}

// handleSignal applies a Mobility Header packet the datapath received for the
// care-of address: Binding Acknowledgement, Binding Error or Binding Refresh
// Request. Anything else, or anything that does not match a binding, is
// counted and dropped.
func (s *Switch) handleSignal(pkt []byte) {
	now := s.clock.Now()
	var (
		hoa  netip.Addr
		kind string
		// apply runs the message against the binding of its home address.
		apply func(b *mipv6.Binding) (mipv6.BUPacket, bool, error)
		// protected: it came under ESP, through the VM's SA.
		protected bool
	)
	if spi, err := esp.PacketSPI(pkt); err == nil {
		ba, ok := s.openBA(pkt, spi)
		if !ok {
			return
		}
		hoa, kind, protected = ba.HomeAddress, "Binding Acknowledgement", true
		apply = func(b *mipv6.Binding) (mipv6.BUPacket, bool, error) { return b.HandleBA(now, ba) }
	} else if ba, err := mipv6.ParseBAPacket(pkt); err == nil {
		hoa, kind = ba.HomeAddress, "Binding Acknowledgement"
		apply = func(b *mipv6.Binding) (mipv6.BUPacket, bool, error) { return b.HandleBA(now, ba) }
	} else if be, err2 := mipv6.ParseBindingErrorPacket(pkt); err2 == nil {
		hoa, kind = be.HomeAddress, "Binding Error"
		apply = func(b *mipv6.Binding) (mipv6.BUPacket, bool, error) { return b.HandleBE(now, be) }
	} else if brr, err3 := mipv6.ParseBRRPacket(pkt); err3 == nil {
		// A Binding Refresh Request reaches the care-of address with the home
		// address in a type 2 routing header or not at all; match by sender
		// and refresh every binding with that Home Agent.
		sent := false
		for _, p := range s.vms {
			if p.binding != nil && p.binding.HomeAgent == brr.Src && !s.underESP(p) {
				if bu, ok := p.binding.RefreshNow(now, brr.Src); ok {
					s.sendBU(bu)
					sent = true
				}
			}
		}
		if !sent {
			// From the Home Agent's address, but too soon after the last or
			// with no binding in use: it changes nothing.
			s.dpCounters.Drop(datapath.DropSignalIgnored)
			s.logLimited(slog.LevelInfo, "ignored Binding Refresh Request "+brr.Src.String(), "Binding Refresh Request changed nothing",
				"home_agent", brr.Src)
			return
		}
		s.log.Info("Binding Refresh Request", "home_agent", brr.Src, "refreshed", sent)
		return
	} else {
		s.dpCounters.Drop(datapath.DropSignalRejected)
		s.log.Debug("dropped signalling packet", "err", errors.Join(err, err2, err3))
		return
	}
	for _, p := range s.vms {
		if p.binding == nil || p.vm.HomeAddress != hoa {
			continue
		}
		if !protected && s.underESP(p) {
			// Whoever sent it, the Home Agent would not have: it protects
			// this VM's signalling.
			p.link.Counters.Drop(datapath.DropSignalClear)
			s.warnLimited("clear "+kind+" "+p.key(), "dropped "+kind+" in clear: this VM's signalling is under ESP",
				"port", p.name())
			return
		}
		was, was4 := p.binding.Tunnelling(now), p.binding.IPv4Tunnelling(now)
		prev := p.binding.Snapshot(now)
		bu, send, err := apply(p.binding)
		if err != nil {
			p.link.Counters.Drop(datapath.DropSignalRejected)
			s.warnLimited("rejected "+kind+" "+p.key(), "dropped "+kind, "port", p.name(), "err", err)
			return
		}
		snap := p.binding.Snapshot(now)
		if !send && snap == prev {
			// A hint too soon after the last, an Ack to a Binding Update
			// already answered: harmless, but anyone can send them at any
			// rate, so their lines are rate-limited like rejected ones and
			// they are counted.
			p.link.Counters.Drop(datapath.DropSignalIgnored)
			s.logLimited(slog.LevelInfo, "unchanged "+kind+" "+p.key(), kind+" changed nothing", "port", p.name(),
				"state", snap.State.String())
			return
		}
		s.log.Info(kind, "port", p.name(), "hoa", hoa, "status", snap.Status, "reason", snap.Reason,
			"state", snap.State.String(), "granted_s", snap.Granted.Seconds(), "after", now.Sub(p.since).String())
		s.noteIPv4(p, prev, snap)
		if send {
			s.sendBU(bu)
		}
		if p.phase == returning && snap.State == mipv6.StateDeregistered && p.naLeft == 0 {
			// The Home Agent holds no binding now, whether it removed one
			// (accepted) or had none (133: the Ack of the accepted try was
			// lost, or the VM never left the home link): either way the
			// neighbours may still map the home address to the Home Agent.
			p.naLeft = homeAdvertisements
			s.announceHome(p, now)
			return
		}
		// A refusal ends the arrival hold at once: the retry is seconds away,
		// and what the guest sends meanwhile would only expire in the hold;
		// and nothing from the tunnel is for the guest any more.
		if p.binding.Tunnelling(now) != was || p.binding.IPv4Tunnelling(now) != was4 || snap.State == mipv6.StateFailed {
			s.publish()
		}
		return
	}
	s.dpCounters.Drop(datapath.DropSignalRejected)
	s.log.Debug(kind+" for a home address not served here", "hoa", hoa)
}

// tunnelRefused acts on the Home Agent's Destination Unreachable about a
// packet tunnelled for the VM key: the Home Agent may have restarted and lost
// the binding, so kgswitch asks again at once rather than at the next refresh
// (mipv6.Binding.HandleTunnelRefused rate-limits it; the tunnel stays up).
func (s *Switch) tunnelRefused(key string) {
	p := s.byKey[key]
	if p == nil || p.binding == nil {
		return
	}
	if bu, ok := p.binding.HandleTunnelRefused(s.clock.Now()); ok {
		s.log.Info("Home Agent refused the tunnel: registering again", "port", p.name(), "hoa", p.vm.HomeAddress,
			"refused", p.link.Counters.TunnelRefused.Load())
		s.sendBU(bu)
	}
}

// advertise sends the home router's Router Advertisement to a guest, as the
// home router would every interval.
func (s *Switch) advertise(p *vmPort, now time.Time) {
	p.nextRA = now.Add(p.nd.Interval())
	frame, err := p.nd.AppendRouterAdvertisement(nil, p.mac, ndresponder.AllNodes, datapath.TunnelMTU)
	if err == nil {
		err = s.dp.Send(frame)
	}
	if err != nil {
		p.link.Counters.Drop(datapath.DropWriteError)
		s.log.Warn("send Router Advertisement", "port", p.name(), "err", err)
		return
	}
	p.link.Counters.RASent.Add(1)
}
