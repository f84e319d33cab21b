package datapath

import (
	"net/netip"
	"testing"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
)

// FuzzHandle feeds arbitrary frames, from a guest's MAC and from the LAN, through
// the datapath: whatever arrives, it must not panic, and anything it writes must
// be a well-formed IPv6 or IPv4 packet, IPv4 in the tunnel no bigger than it
// carries.
func FuzzHandle(f *testing.F) {
	f.Add(ethFrame(lanMAC, guestMAC, udpPacket(hoa, cn, 20)))
	back := udpPacket(cn, hoa, 20)
	tun := make([]byte, netpkt.IPv6Len)
	netpkt.PutIPv6(tun, len(back), 41, 64, ha, coa)
	f.Add(ethFrame(kgMAC, lanMAC, append(tun, back...)))
	f.Add(ethFrame(lanMAC, guestMAC, udpPacket(hoa, cn, 1500)))
	f.Add(ethFrame(kgMAC, lanMAC, icmpError(icmpDestUnreachable, ha, coa, tunnelled(coa, ha, hoa), 0)))
	f.Add(guestFrame4(100, true))
	f.Add(guestFrame4(4000, false))
	f.Add(guestFrame4(1500, true))
	f.Add(ethFrame4(lanMAC, guestMAC, udp4To(cn4, 1, true, 20)))
	f.Add(ethFrame4(lanMAC, guestMAC, dhcp(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"))))
	f.Add(arpForGW)
	f.Add(tunnelFrame4(100))
	super4, _ := tcpSuperFrame4(3000, 0x10)
	f.Add(super4)

	conn := datapathtest.NewConn()
	up := datapathtest.NewUplink(64)
	g := boundGuest4(f)
	// Without a responder: its answers are its own package's to check.
	g.V4 = nil
	d, _ := newTestDatapath(conn, up, g)
	buf := make([]byte, headroom+maxFrame)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > maxFrame {
			return
		}
		n := copy(buf[headroom:], frame)
		d.handle(buf, n, nil)
		d.flush()
		for {
			select {
			case s := <-up.Out:
				outer, err := netpkt.ParseIPv6(s.Pkt)
				if err != nil {
					t.Fatalf("uplink got a malformed packet: %v", err)
				}
				if outer.NextHeader() == netpkt.ProtoIPv4 {
					inner, err := netpkt.ParseIPv4(outer.Payload())
					if err != nil || len(inner) != len(outer.Payload()) || len(inner) > TunnelMTU {
						t.Fatalf("uplink got a malformed or oversized IPv4 packet of %d bytes: %v", len(outer.Payload()), err)
					}
				}
				continue
			case out := <-conn.Out:
				eth := netpkt.Ethernet(out)
				var err error
				if eth.EtherType() == netpkt.EtherTypeIPv4 {
					_, err = netpkt.ParseIPv4(eth.Payload())
				} else {
					_, err = netpkt.ParseIPv6(eth.Payload())
				}
				if err != nil {
					t.Fatalf("internal port got a malformed frame: %v", err)
				}
				continue
			case <-d.signal:
				continue
			case <-d.refused:
				continue
			default:
			}
			break
		}
	})
}
