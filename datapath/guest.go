package datapath

import (
	"github.com/kgswitch/kgswitch/ndresponder"
	"github.com/kgswitch/kgswitch/netpkt"
)

// fromGuest handles a frame a guest on this foreign host sent: its Neighbor
// and Router Solicitations are answered as its home link would, what must
// stay on the pseudo home link stays, what it may send goes to a guest of
// its home link here or through the tunnel (held while its binding is being
// set up), and the rest is dropped and counted.
func (d *Datapath) fromGuest(f *FIB, g *Guest, buf []byte, n int, out []byte) []byte {
	frame := buf[headroom : headroom+n]
	eth := netpkt.Ethernet(frame)
	if g.Pending {
		// The first frame of a resumed guest (QEMU announces itself with RARP
		// at once) is the sign it runs here: only now may the Home Agent hear
		// of the move, or it finds the guest still on its home link (status
		// 134). Until the control loop has acted, frames are held back.
		if !g.Link.asked.Swap(true) {
			select {
			case d.activate <- g.Key:
			default:
				g.Link.asked.Store(false)
			}
		}
		g.Link.Counters.Drop(DropInactive)
		return out
	}
	if eth.EtherType() != netpkt.EtherTypeIPv6 {
		if g.HomeAddr4.IsValid() && (eth.EtherType() == netpkt.EtherTypeIPv4 || eth.EtherType() == netpkt.EtherTypeARP) {
			return d.fromGuest4(f, g, buf, n, out)
		}
		g.Link.Counters.Drop(DropNotIPv6)
		return out
	}
	ip, err := netpkt.ParseIPv6(eth.Payload())
	if err != nil {
		g.Link.Counters.Drop(DropMalformed)
		return out
	}
	src, dst := ip.Src(), ip.Dst()
	if src.IsLinkLocalUnicast() && len(g.Link.ownLL) < maxOwnLL && !g.owns(src) && f.mayOwn(g, src) {
		g.Link.ownLL = append(g.Link.ownLL, src)
	}
	if ip.NextHeader() == netpkt.ProtoICMPv6 && len(ip.Payload()) > 0 {
		switch ip.Payload()[0] {
		case 135: // Neighbor Solicitation
			reply, decision, err := g.ND.Respond(out, frame, ndresponder.Guest{MAC: eth.Src(), Owns: g.owns})
			if err != nil {
				g.Link.Counters.Drop(DropMalformed)
				return out
			}
			if decision != ndresponder.Answered {
				g.Link.Counters.Drop(DropNDIgnored)
				return out
			}
			if err := d.conn.WriteFrame(reply); err != nil {
				g.Link.Counters.Drop(DropWriteError)
			} else {
				g.Link.Counters.NDAnswered.Add(1)
			}
			return reply[:0]
		case 133: // Router Solicitation
			if !g.ND.Advertises() {
				g.Link.Counters.Drop(DropAbsorbed)
				return out
			}
			// RFC 4861 §6.2.6: to the soliciting address, or all-nodes from an
			// address-less guest; always to the guest's MAC alone.
			to := src
			if !to.IsValid() || to.IsUnspecified() {
				to = ndresponder.AllNodes
			}
			ra, err := g.ND.AppendRouterAdvertisement(out, eth.Src(), to, f.mtu)
			if err == nil {
				err = d.conn.WriteFrame(ra)
			}
			if err != nil {
				g.Link.Counters.Drop(DropWriteError)
				return out
			}
			g.Link.Counters.RASent.Add(1)
			return ra[:0]
		case 136, 130, 131, 132, 143:
			// The guest's own NAs and MLD stay on the pseudo home link: nothing
			// beyond it may see them.
			g.Link.Counters.Drop(DropAbsorbed)
			return out
		}
	}
	switch {
	case dst.IsMulticast():
		g.Link.Counters.Drop(DropAbsorbed)
		return out
	case src != g.HomeAddr:
		g.Link.Counters.Drop(DropBadSource)
		return out
	case dst.IsLinkLocalUnicast():
		g.Link.Counters.Drop(DropLinkLocal)
		return out
	}
	if r := guestRefusal(ip); r >= 0 {
		g.Link.Counters.Drop(r)
		return out
	}
	if peer := f.byHoA[dst]; peer != nil && peer.Prefix == g.Prefix {
		// Two guests of one home link on this host: they are neighbours, and
		// the frame goes straight across instead of round the Home Agent.
		netpkt.PutEthernet(frame, peer.MAC[:], f.routerMAC, netpkt.EtherTypeIPv6)
		d.queuePort(frame[:netpkt.EthernetLen+len(ip)], &g.Link.Counters, countLocal, len(ip))
		return out
	}
	if !g.Tunnel {
		if g.Hold != nil && len(ip) <= f.mtu {
			d.holdFromGuest(g.Hold, g, buf, ip)
			return out
		}
		// A frame bigger than the tunnel carries needs segmenting or a Packet
		// Too Big, both answers for a path that does not exist yet: it is
		// dropped as before, and the guest's retransmission meets the tunnel.
		g.Link.Counters.Drop(DropNotBound)
		return out
	}
	if len(ip) > f.mtu+netpkt.IPv6Len && ip.NextHeader() == protoTCP && d.segmentTCP(f, g, ip) {
		// Bigger than any link: a segmentation offload's work (see segmentTCP).
		return out
	}
	if len(ip) > f.mtu {
		out = appendPacketTooBig(out, frame, len(ip), f.mtu, f.routerMAC, g.PTBFrom)
		if err := d.conn.WriteFrame(out); err != nil {
			g.Link.Counters.Drop(DropWriteError)
		}
		g.Link.Counters.Drop(DropTooBig)
		return out[:0]
	}
	pkt := encapsulate(buf, headroom+netpkt.EthernetLen, len(ip), f.coa, g.HomeAgent)
	d.queueUplink(pkt, g.HomeAgent, &g.Link.Counters, len(ip))
	return out
}
