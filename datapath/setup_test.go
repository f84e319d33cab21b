package datapath

import (
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/clock/clocktest"
	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/ndresponder"
)

var (
	hoa      = datapathtest.HomeAddr
	ha       = datapathtest.HomeAgent
	coa      = datapathtest.CareOf
	cn       = datapathtest.CN
	routerLL = datapathtest.RouterLL
	guestMAC = datapathtest.GuestMAC
	kgMAC    = datapathtest.KgMAC
	lanMAC   = datapathtest.LanMAC
	homePfx  = datapathtest.HomePrefix
)

var (
	ethFrame  = datapathtest.EthFrame
	udpPacket = datapathtest.UDPPacket
)

// boundGuest is a guest of the home link whose binding is accepted.
func boundGuest(tb testing.TB) *Guest {
	tb.Helper()
	nd, err := ndresponder.New(ndresponder.HomeLink{Prefix: homePfx, RouterLinkLocal: routerLL}, kgMAC)
	if err != nil {
		tb.Fatal(err)
	}
	return &Guest{Key: hoa.String(), MAC: [6]byte(guestMAC), HomeAddr: hoa, Prefix: homePfx, HomeAgent: ha,
		Tunnel: true, ND: nd, PTBFrom: routerLL, Link: &GuestLink{}}
}

// newTestDatapath is a datapath on conn and up serving g (when not nil) on a
// foreign host, on a fake clock.
func newTestDatapath(conn FrameConn, up Uplink, g *Guest) (*Datapath, *clocktest.Clock) {
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	d := New(conn, up, clk, &Counters{})
	f := NewFIB(coa, TunnelMTU, kgMAC)
	if g != nil {
		f.AddGuest(g)
	}
	d.Publish(f)
	return d, clk
}
