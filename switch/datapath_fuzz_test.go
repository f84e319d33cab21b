package vswitch

import (
	"net/netip"
	"testing"

	"github.com/kgswitch/kgswitch/ndresponder"
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

	conn := newFakeConn()
	up := &fakeUplink{out: make(chan sent, 1)}
	d := newDatapath(conn, up)
	nd, err := ndresponder.New(ndresponder.HomeLink{Prefix: netip.MustParsePrefix("2001:db8:2000::/64"), RouterLinkLocal: routerLL}, kgMAC)
	if err != nil {
		f.Fatal(err)
	}
	g := &guest{port: "vnet3", mac: [6]byte(guestMAC), hoa: hoa, ha: ha, tunnel: true, nd: nd, ptbFrom: routerLL, counters: &Counters{}, ownLL: new([]netip.Addr)}
	d.fib.Store(&fib{coa: coa, mtu: tunnelMTU, routerMAC: kgMAC,
		byMAC: map[[6]byte]*guest{g.mac: g}, byHoA: map[netip.Addr]*guest{hoa: g}})
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
			case s := <-up.out:
				if _, err := netpkt.ParseIPv6(s.pkt); err != nil {
					t.Fatalf("uplink got a malformed packet: %v", err)
				}
				continue
			case out := <-conn.out:
				if _, err := netpkt.ParseIPv6(netpkt.Ethernet(out).Payload()); err != nil {
					t.Fatalf("internal port got a malformed frame: %v", err)
				}
				continue
			case <-d.signal:
				continue
			default:
			}
			break
		}
	})
}
