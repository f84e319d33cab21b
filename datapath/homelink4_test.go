package datapath

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
)

// A departed dual-stack VM's IPv4 frames and the home link's broadcast ARP
// requests for its IPv4 home address are held, and released to the Home
// Agent's MAC once it took over; ARP that asks nothing is let be, and a VM
// without IPv4 holds no ARP at all.
func TestDepartedIPv4(t *testing.T) {
	var (
		hoa4     = datapathtest.HomeAddr4.Addr()
		gateway  = datapathtest.Gateway4
		gwMAC    = net.HardwareAddr{0x42, 0x0d, 0x24, 0x0b, 0xaf, 0x8c}
		other4   = netip.MustParseAddr("192.0.2.20")
		request  = datapathtest.ARPRequest(gwMAC, gateway, hoa4)
		toVM4    = datapathtest.EthFrame4(guestMAC, gwMAC, datapathtest.UDPPacket4(datapathtest.CN4, hoa4, 8))
		withByte = func(f []byte, i int, b ...byte) []byte {
			f = append([]byte(nil), f...)
			copy(f[i:], b)
			return f
		}
		// unicastRequest polls the entry the gateway holds: to the VM's MAC.
		unicastRequest = withByte(request, 0, guestMAC...)
		probe          = datapathtest.ARPRequest(gwMAC, netip.IPv4Unspecified(), hoa4)
		announcement   = datapathtest.ARPRequest(haMAC, hoa4, hoa4)
		reply          = withByte(request, 21, netpkt.ARPReply)
		otherRequest   = datapathtest.ARPRequest(gwMAC, gateway, other4)
	)
	for _, tt := range []struct {
		name string
		// noIPv4: the departed VM has no IPv4 home address.
		noIPv4 bool
		// before are the frames before the Home Agent takes over, after
		// those after.
		before, after [][]byte
		// wantOut are the frames, in order, that go to the Home Agent's MAC.
		wantOut [][]byte
		// wantHeld counts the frames held; wantUnknown the frames counted
		// as unknown-source.
		wantHeld, wantUnknown uint64
	}{
		{name: "IPv4 and broadcast ARP held, then released in order",
			before: [][]byte{toVM4, request, unicastRequest}, wantOut: [][]byte{toVM4, request, unicastRequest}, wantHeld: 3},
		{name: "after the takeover IPv4 goes on, broadcast ARP does not",
			after: [][]byte{toVM4, request}, wantOut: [][]byte{toVM4}},
		{name: "probe, announcement and reply ask nothing",
			before: [][]byte{probe, announcement, reply}},
		{name: "a request for another address is no departed VM's",
			before: [][]byte{otherRequest}, wantUnknown: 1},
		{name: "a VM without IPv4 holds only what is sent to its MAC", noIPv4: true,
			before: [][]byte{request, toVM4}, wantOut: [][]byte{toVM4}, wantHeld: 1, wantUnknown: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn := datapathtest.NewConn()
			d, clk := newTestDatapath(conn, datapathtest.NewUplink(1), nil)
			c := &Counters{}
			a4 := hoa4
			if tt.noIPv4 {
				a4 = netip.Addr{}
			}
			dep := NewDeparted(hoa.String(), guestMAC, hoa, a4, 10, 10*time.Second, c)
			f := NewFIB(coa, TunnelMTU, kgMAC)
			f.AddDeparted(dep)
			d.Publish(f)
			send := func(frames [][]byte) {
				for _, fr := range frames {
					buf := make([]byte, headroom+maxFrame)
					n := copy(buf[headroom:], fr)
					d.handle(buf, n, nil)
					d.flush()
					clk.Advance(time.Millisecond)
				}
			}
			send(tt.before)
			if len(conn.Out) != 0 {
				t.Fatalf("got %d frames out before the takeover, want none", len(conn.Out))
			}
			d.Release(dep, haMAC)
			send(tt.after)
			for i, want := range tt.wantOut {
				var got []byte
				select {
				case got = <-conn.Out:
				default:
					t.Fatalf("got %d frames out, want %d", i, len(tt.wantOut))
				}
				eth := netpkt.Ethernet(got)
				if eth.Dst().String() != haMAC.String() || eth.Src().String() != kgMAC.String() || !bytes.Equal(eth.Payload(), want[netpkt.EthernetLen:]) {
					t.Errorf("frame %d: got %v -> %v, payload % x; want kgs0 -> the Home Agent, payload % x", i, eth.Src(), eth.Dst(), eth.Payload(), want[netpkt.EthernetLen:])
				}
			}
			if n := len(conn.Out); n != 0 {
				t.Errorf("got %d more frames out, want = 0", n)
			}
			if got := c.Held.Load(); got != tt.wantHeld {
				t.Errorf("got held = %d, want = %d", got, tt.wantHeld)
			}
			if got := c.Released.Load(); got != uint64(len(tt.wantOut)) {
				t.Errorf("got released = %d, want = %d", got, len(tt.wantOut))
			}
			if got := d.global.Drops[DropUnknownSource].Load(); got != tt.wantUnknown {
				t.Errorf("got unknown-source = %d, want = %d", got, tt.wantUnknown)
			}
			if m := c.DropMap(); len(m) != 0 {
				t.Errorf("got the VM's drops %v, want none", m)
			}
		})
	}
}

// The broadcast requests share the VM's hold queue and its bounds.
func TestDepartedIPv4HoldBounds(t *testing.T) {
	conn := datapathtest.NewConn()
	d, _ := newTestDatapath(conn, datapathtest.NewUplink(1), nil)
	c := &Counters{}
	dep := NewDeparted(hoa.String(), guestMAC, hoa, datapathtest.HomeAddr4.Addr(), 2, time.Second, c)
	f := NewFIB(coa, TunnelMTU, kgMAC)
	f.AddDeparted(dep)
	d.Publish(f)
	req := datapathtest.ARPRequest(lanMAC, datapathtest.Gateway4, datapathtest.HomeAddr4.Addr())
	for range 3 {
		buf := make([]byte, headroom+maxFrame)
		d.handle(buf, copy(buf[headroom:], req), nil)
	}
	if held, over := c.Held.Load(), c.Drops[DropHoldOverflow].Load(); held != 2 || over != 1 {
		t.Errorf("got held = %d, hold-overflow = %d; want = 2 and 1", held, over)
	}
}
