package datapath

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
)

// TestCareOfNIC: in host layout 3, what the care-of NIC reads is handled as
// what arrives for the care-of address (a tunnel packet reaches the guest
// through the internal port), never as a guest's frame whatever its source
// MAC, and an ICMPv6 error the host kernel has too is not handed back to it.
func TestCareOfNIC(t *testing.T) {
	inner := udpPacket(cn, hoa, 100)
	tunnel := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(inner))
	netpkt.PutIPv6(tunnel, len(inner), netpkt.ProtoIPv6, 64, ha, coa)
	tunnel = append(tunnel, inner...)
	for _, tc := range []struct {
		name  string
		frame []byte
		// want is the frame the guest gets on the internal port; nil: none.
		want      []byte
		toTunnel  bool
		delivered uint64
	}{
		{name: "tunnel packet", frame: ethFrame(kgMAC, lanMAC, tunnel), want: ethFrame(guestMAC, kgMAC, inner), delivered: 1},
		{name: "with the guest's MAC as source", frame: ethFrame(kgMAC, guestMAC, udpPacket(hoa, coa, 100))},
		{name: "ICMPv6 error for the host", frame: ethFrame(kgMAC, lanMAC, icmpError(icmpDestUnreachable, ha, coa, udpPacket(coa, ha, 100), 0))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, nic, up := datapathtest.NewConn(), datapathtest.NewConn(), datapathtest.NewUplink(4)
			g := boundGuest(t)
			d, _ := newTestDatapath(conn, up, g)
			d.ReadAlso(nic)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			defer func() {
				cancel()
				d.Close()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			nic.Inject(tc.frame)
			if !nic.Idle() {
				t.Fatal("care-of NIC closed")
			}
			select {
			case got := <-conn.Out:
				if tc.want == nil {
					t.Fatalf("internal port got %x, want nothing", got)
				}
				if !bytes.Equal(got, tc.want) {
					t.Errorf("internal port got\n%x\nwant\n%x", got, tc.want)
				}
			case <-time.After(100 * time.Millisecond):
				if tc.want != nil {
					t.Fatal("nothing reached the internal port")
				}
			}
			select {
			case s := <-up.Out:
				t.Errorf("tunnelled %x, want nothing", s.Pkt)
			default:
			}
			if got := g.Link.Counters.FromTunnelPackets.Load(); got != tc.delivered {
				t.Errorf("from-tunnel counter %d, want %d", got, tc.delivered)
			}
		})
	}
}

// TestCareOfNICFails: a failing care-of NIC ends Run with its error, like a
// failing internal port, so the control loop reopens both.
func TestCareOfNICFails(t *testing.T) {
	conn, nic := datapathtest.NewConn(), datapathtest.NewConn()
	d, _ := newTestDatapath(conn, datapathtest.NewUplink(1), nil)
	d.ReadAlso(nic)
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	nic.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Run returned nil, want the NIC's error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	d.Close()
}
