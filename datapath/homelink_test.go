package datapath

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/mdlayher/ndp"
)

var haMAC = net.HardwareAddr{0x02, 0x48, 0x41, 0, 0, 1}

// homeLinkFrame is an ND message from mac: a DAD probe for hoa (na false)
// or an advertisement of hoa naming lladdr.
func homeLinkFrame(t *testing.T, mac net.HardwareAddr, na bool, lladdr net.HardwareAddr) []byte {
	t.Helper()
	var m ndp.Message = &ndp.NeighborSolicitation{TargetAddress: hoa}
	src, dst := netip.IPv6Unspecified(), netpkt.SolicitedNode(hoa)
	if na {
		m = &ndp.NeighborAdvertisement{TargetAddress: hoa, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: lladdr}}}
		src, dst = hoa, netip.MustParseAddr("ff02::1")
	}
	msg, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	ip := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(msg))
	netpkt.PutIPv6(ip, len(msg), netpkt.ProtoICMPv6, 255, src, dst)
	return ethFrame(netpkt.MulticastMAC(dst), mac, append(ip, msg...))
}

// A DAD probe counts only from the Home Agent's MAC, once it is known, and
// the VM's own advertisement counts as its answer only soon after a probe.
func TestHomeLinkWatch(t *testing.T) {
	stranger := net.HardwareAddr{0x02, 0x66, 0x66, 0, 0, 1}
	for _, tc := range []struct {
		name   string
		known  bool
		frames func(t *testing.T) [][]byte
		want   []HomeLinkEvent
	}{
		{"probe from the Home Agent", true, func(t *testing.T) [][]byte {
			return [][]byte{homeLinkFrame(t, haMAC, false, nil)}
		}, []HomeLinkEvent{{Key: "vm"}}},
		{"probe from a stranger", true, func(t *testing.T) [][]byte {
			return [][]byte{homeLinkFrame(t, stranger, false, nil)}
		}, nil},
		{"probe while the Home Agent's MAC is unknown", false, func(t *testing.T) [][]byte {
			return [][]byte{homeLinkFrame(t, haMAC, false, nil)}
		}, nil},
		{"the VM answers the probe", true, func(t *testing.T) [][]byte {
			return [][]byte{homeLinkFrame(t, haMAC, false, nil), homeLinkFrame(t, guestMAC, true, guestMAC)}
		}, []HomeLinkEvent{{Key: "vm"}, {Key: "vm", Defended: true}}},
		{"the VM advertises without a probe", true, func(t *testing.T) [][]byte {
			return [][]byte{homeLinkFrame(t, guestMAC, true, guestMAC)}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			link := &GuestLink{}
			d, _ := newTestDatapath(datapathtest.NewConn(), datapathtest.NewUplink(1), nil)
			f := NewFIB(coa, TunnelMTU, kgMAC)
			f.AddAtHome(hoa, "vm", guestMAC, link)
			if tc.known {
				f.ExpectHomeAgent(hoa, haMAC)
			}
			d.Publish(f)
			buf := make([]byte, headroom+maxFrame)
			for _, fr := range tc.frames(t) {
				n := copy(buf[headroom:], fr)
				d.handle(buf, n, nil)
			}
			var got []HomeLinkEvent
			for len(d.homeLink) > 0 {
				got = append(got, <-d.homeLink)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("event %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// An answer after the probe's DAD wait is not one.
func TestHomeLinkAnswerWindow(t *testing.T) {
	link := &GuestLink{}
	d, clk := newTestDatapath(datapathtest.NewConn(), datapathtest.NewUplink(1), nil)
	f := NewFIB(coa, TunnelMTU, kgMAC)
	f.AddAtHome(hoa, "vm", guestMAC, link)
	f.ExpectHomeAgent(hoa, haMAC)
	d.Publish(f)
	buf := make([]byte, headroom+maxFrame)
	send := func(fr []byte) { n := copy(buf[headroom:], fr); d.handle(buf, n, nil) }
	send(homeLinkFrame(t, haMAC, false, nil))
	if len(d.homeLink) != 1 {
		t.Fatal("the Home Agent's probe was not reported")
	}
	<-d.homeLink
	clk.Advance(defendWindow + time.Millisecond)
	send(homeLinkFrame(t, guestMAC, true, guestMAC))
	if len(d.homeLink) != 0 {
		t.Errorf("got %+v, want no answer %v after the probe", <-d.homeLink, defendWindow)
	}
}
