package datapath

import (
	"testing"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
)

// FuzzHandle feeds arbitrary frames, from a guest's MAC and from the LAN, through
// the datapath: whatever arrives, it must not panic, and anything it writes must
// be a well-formed IPv6 packet.
func FuzzHandle(f *testing.F) {
	f.Add(ethFrame(lanMAC, guestMAC, udpPacket(hoa, cn, 20)))
	back := udpPacket(cn, hoa, 20)
	tun := make([]byte, netpkt.IPv6Len)
	netpkt.PutIPv6(tun, len(back), 41, 64, ha, coa)
	f.Add(ethFrame(kgMAC, lanMAC, append(tun, back...)))
	f.Add(ethFrame(lanMAC, guestMAC, udpPacket(hoa, cn, 1500)))
	f.Add(ethFrame(kgMAC, lanMAC, icmpError(icmpDestUnreachable, ha, coa, tunnelled(coa, ha, hoa), 0)))

	conn := datapathtest.NewConn()
	up := datapathtest.NewUplink(1)
	d, _ := newTestDatapath(conn, up, boundGuest(f))
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
				if _, err := netpkt.ParseIPv6(s.Pkt); err != nil {
					t.Fatalf("uplink got a malformed packet: %v", err)
				}
				continue
			case out := <-conn.Out:
				if _, err := netpkt.ParseIPv6(netpkt.Ethernet(out).Payload()); err != nil {
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
