package datapath

import (
	"net/netip"
	"testing"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
)

// icmpError is an ICMPv6 error of type typ (code 4, as Linux's tunnel
// handler sends) from src to dst.
func icmpError(typ uint8, src, dst netip.Addr, invoking []byte, quote int) []byte {
	return datapathtest.ICMPv6Error(typ, 4, src, dst, invoking, quote)
}

// tunnelled is a packet kgswitch tunnels for the guest: coa to ha, IP6IP6,
// inner source innerSrc.
func tunnelled(outerSrc, outerDst, innerSrc netip.Addr) []byte {
	inner := udpPacket(innerSrc, cn, 100)
	pkt := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(inner))
	netpkt.PutIPv6(pkt, len(inner), netpkt.ProtoIPv6, 64, outerSrc, outerDst)
	return append(pkt, inner...)
}

// A Destination Unreachable from the guest's Home Agent about a packet
// tunnelled for the guest is a hint that the binding is lost; every other
// ICMPv6 error goes to the host's stack as before.
func TestTunnelRefusedHint(t *testing.T) {
	other := netip.MustParseAddr("2001:db8:9999::1")
	ours := tunnelled(coa, ha, hoa)
	corrupt := icmpError(icmpDestUnreachable, ha, coa, ours, 0)
	corrupt[len(corrupt)-1] ^= 0xff
	for _, tc := range []struct {
		name string
		pkt  []byte
		hint bool
	}{
		{"home agent refuses the tunnel", icmpError(icmpDestUnreachable, ha, coa, ours, 0), true},
		{"quote cut after the inner header", icmpError(icmpDestUnreachable, ha, coa, ours, 2*netpkt.IPv6Len), true},
		{"quote too short for the inner header", icmpError(icmpDestUnreachable, ha, coa, ours, 2*netpkt.IPv6Len-1), false},
		{"from another node", icmpError(icmpDestUnreachable, other, coa, ours, 0), false},
		{"about a packet to another node", icmpError(icmpDestUnreachable, ha, coa, tunnelled(coa, other, hoa), 0), false},
		{"about a packet from another care-of address", icmpError(icmpDestUnreachable, ha, coa, tunnelled(other, ha, hoa), 0), false},
		{"about another home address", icmpError(icmpDestUnreachable, ha, coa, tunnelled(coa, ha, other), 0), false},
		{"about a packet that was not tunnelled", icmpError(icmpDestUnreachable, ha, coa, udpPacket(coa, ha, 100), 0), false},
		{"packet too big", icmpError(2, ha, coa, ours, 0), false},
		{"parameter problem", icmpError(4, ha, coa, ours, 0), false},
		{"bad checksum", corrupt, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := datapathtest.NewConn()
			g := boundGuest(t)
			d, _ := newTestDatapath(conn, datapathtest.NewUplink(1), g)
			buf := make([]byte, headroom+maxFrame)
			n := copy(buf[headroom:], ethFrame(kgMAC, lanMAC, tc.pkt))
			d.handle(buf, n, nil)
			d.flush()
			var got bool
			select {
			case key := <-d.Events().TunnelRefused:
				if key != g.Key {
					t.Errorf("got hint for %q, want %q", key, g.Key)
				}
				got = true
			default:
			}
			if got != tc.hint {
				t.Fatalf("got hint %v, want %v", got, tc.hint)
			}
			if c := g.Link.Counters.TunnelRefused.Load(); (c == 1) != tc.hint {
				t.Errorf("got TunnelRefused = %d, want %v", c, tc.hint)
			}
			// What is not a hint goes to the host's stack, unchanged.
			if passed := len(conn.Out) == 1; passed == tc.hint {
				t.Errorf("got %d frames to the host, want %v", len(conn.Out), !tc.hint)
			}
		})
	}
}

// A burst of refusals never blocks the datapath: hints beyond the channel's
// room are dropped (the next refused packet repeats them), all are counted.
func TestTunnelRefusedBurst(t *testing.T) {
	g := boundGuest(t)
	d, _ := newTestDatapath(datapathtest.NewConn(), datapathtest.NewUplink(1), g)
	pkt := icmpError(icmpDestUnreachable, ha, coa, tunnelled(coa, ha, hoa), 0)
	buf := make([]byte, headroom+maxFrame)
	const n = 100
	for range n {
		k := copy(buf[headroom:], ethFrame(kgMAC, lanMAC, pkt))
		d.handle(buf, k, nil)
	}
	if got := g.Link.Counters.TunnelRefused.Load(); got != n {
		t.Errorf("got TunnelRefused = %d, want %d", got, n)
	}
	if got := len(d.Events().TunnelRefused); got == 0 || got > n {
		t.Errorf("got %d hints queued, want between 1 and the channel's room", got)
	}
}
