package vswitch

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/ovsctl"
	"github.com/mdlayher/ndp"
)

// stranger is a node of the home link that is not the Home Agent.
var stranger = net.HardwareAddr{0x02, 0x66, 0x66, 0, 0, 1}

// dadProbeFrom is a DAD probe for the guest's home address sent from mac.
func dadProbeFrom(mac net.HardwareAddr) []byte {
	ns := &ndp.NeighborSolicitation{TargetAddress: hoa}
	sn := netpkt.SolicitedNode(hoa)
	msg, _ := ndp.MarshalMessageChecksum(ns, netip.IPv6Unspecified(), sn)
	ip := make([]byte, netpkt.IPv6Len, netpkt.IPv6Len+len(msg))
	netpkt.PutIPv6(ip, len(msg), 58, 255, netip.IPv6Unspecified(), sn)
	return datapathtest.EthFrame(netpkt.MulticastMAC(sn), mac, append(ip, msg...))
}

// whereIs is where status puts vnet3.
func whereIs(h *harness) string {
	st, _ := h.sw.Status(context.Background())
	return st[0].Location
}

// A home-link node that is not the Home Agent can neither make the home host
// give up a VM that runs there nor take a departed VM's address over.
func TestHomeLinkBelievesOnlyTheHomeAgent(t *testing.T) {
	h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	h.conn.Inject(dadProbeFrom(stranger))
	h.settle(t)
	if got := whereIs(h); got != "home" {
		t.Fatalf("a stranger's DAD probe moved the VM to %s", got)
	}
	if got := h.status(t, "vnet3").Drops["not-home-agent"]; got != 1 {
		t.Errorf("got %d counted not-home-agent, want 1", got)
	}
	// The port goes (the VM left): frames are held, and a stranger's
	// takeover advertisement gets none of them.
	h.db.events <- ovsctl.Event{Kind: ovsctl.Removed, Iface: ovsctl.Interface{Name: "vnet3"}}
	if !waitFor(t, h.settle, func() bool { return whereIs(h) == "departed" }) {
		t.Fatalf("got %s, want departed", whereIs(h))
	}
	h.conn.Inject(datapathtest.EthFrame(guestMAC, lanMAC, datapathtest.UDPPacket(cn, hoa, 1)))
	h.conn.Inject(naFrame(hoa, stranger, hoa))
	// A stranger sending from the Home Agent's MAC but naming its own.
	h.conn.Inject(datapathtest.EthFrame(netpkt.MulticastMAC(netip.MustParseAddr("ff02::1")), homeAgentMAC, naFrame(hoa, stranger, hoa)[netpkt.EthernetLen:]))
	h.settle(t)
	h.noFrame(t)
	if st := h.status(t, "vnet3"); st.Location != "departed" || st.Released != 0 || st.Drops["not-home-agent"] != 3 {
		t.Fatalf("got %+v, want still departed, nothing released, 3 counted not-home-agent", st)
	}
	// The Home Agent's own takeover releases the frame to it.
	h.conn.Inject(naFrame(hoa, homeAgentMAC, hoa))
	if f := h.nextFrame(t); netpkt.Ethernet(f).Dst().String() != homeAgentMAC.String() {
		t.Errorf("released to %v, want the Home Agent's %v", netpkt.Ethernet(f).Dst(), homeAgentMAC)
	}
}

// A DAD probe (from the Home Agent's MAC, which anyone can spoof) for a VM
// that still runs here: the VM answers it, the departure is undone, and what
// was held meanwhile goes to the VM.
func TestProbeAnsweredByRunningVM(t *testing.T) {
	for _, settleBetween := range []bool{true, false} {
		h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
		h.conn.Inject(dadProbeFrom(homeAgentMAC))
		if settleBetween {
			if !waitFor(t, h.settle, func() bool { return whereIs(h) == "departed" }) {
				t.Fatalf("got %s, want departed", whereIs(h))
			}
			h.conn.Inject(datapathtest.EthFrame(guestMAC, lanMAC, datapathtest.UDPPacket(cn, hoa, 7)))
		}
		// The VM defends its address (RFC 4862 §5.4.3): an advertisement
		// with its own MAC, to all nodes.
		h.conn.Inject(naFrame(hoa, guestMAC, hoa))
		if !waitFor(t, h.settle, func() bool { return whereIs(h) == "home" }) {
			t.Fatalf("settled %v: got %s, want home again", settleBetween, whereIs(h))
		}
		if settleBetween {
			f := h.nextFrame(t)
			if eth := netpkt.Ethernet(f); eth.Dst().String() != guestMAC.String() || eth.Src().String() != kgMAC.String() {
				t.Errorf("held frame went %v -> %v, want to the VM from kgswitch's port", eth.Src(), eth.Dst())
			}
			if st := h.status(t, "vnet3"); st.Held != 1 || st.Released != 1 {
				t.Errorf("got held %d released %d, want 1 and 1", st.Held, st.Released)
			}
		}
		// The flows and snapshot of a VM at home again: its traffic no
		// longer goes through kgswitch (from the uplink).
		if !waitFor(t, h.settle, func() bool {
			return !strings.Contains(strings.Join(h.flows.text(), "\n"), "in_port=1,dl_dst="+guestMAC.String())
		}) {
			t.Errorf("settled %v: the departure's flows outlive it: %q", settleBetween, h.flows.text())
		}
		released := h.status(t, "vnet3").Released
		h.conn.Inject(datapathtest.EthFrame(guestMAC, lanMAC, datapathtest.UDPPacket(cn, hoa, 8)))
		h.settle(t)
		if got := h.status(t, "vnet3").Released; got != released {
			t.Errorf("settled %v: got %d frames released after the undo, want %d as before", settleBetween, got, released)
		}
		h.noFrame(t)
	}
}

// The Home Agent's MAC comes from the configuration, which the neighbour
// table does not override.
func TestHomeAgentMACConfigured(t *testing.T) {
	configured := net.HardwareAddr{0x02, 0x48, 0x41, 0, 0, 0x99}
	cfg := strings.Replace(homeHostConfig, `router_link_local = "fe80::1"`,
		`router_link_local = "fe80::1"`+"\nhome_agent_mac = \""+configured.String()+"\"", 1)
	h := newHarness(t, cfg, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	h.conn.Inject(dadProbeFrom(homeAgentMAC))
	h.settle(t)
	if got := whereIs(h); got != "home" {
		t.Fatalf("a probe from the neighbour table's MAC moved the VM to %s, want the configured MAC only", got)
	}
	h.conn.Inject(dadProbeFrom(configured))
	if !waitFor(t, h.settle, func() bool { return whereIs(h) == "departed" }) {
		t.Fatalf("got %s after a probe from the configured MAC, want departed", whereIs(h))
	}
}

// Without one configured, the Home Agent's MAC comes from the host's
// neighbour table, which kgswitch has the host fill, by sending the Home
// Agent an echo request, when it is missing.
func TestHomeAgentMACLearnt(t *testing.T) {
	var known atomic.Bool
	h := newHarness(t, homeHostConfig, ovsctl.Interface{Name: "vnet3", OFPort: 3})
	h.sw.do(context.Background(), func() {
		h.sw.haMACs = nil
		h.sw.deps.NeighborMAC = func(a netip.Addr) net.HardwareAddr {
			if a == ha && known.Load() {
				return homeAgentMAC
			}
			return nil
		}
		h.sw.publish()
	})
	h.settle(t)
	// Not known yet: nothing is believed, not even from the right MAC.
	h.conn.Inject(dadProbeFrom(homeAgentMAC))
	h.settle(t)
	if got := whereIs(h); got != "home" {
		t.Fatalf("a probe believed before the Home Agent's MAC was known: the VM is %s", got)
	}
	s := h.nextSent(t)
	if ip := netpkt.IPv6(s.Pkt); s.Dst != ha || ip.NextHeader() != netpkt.ProtoICMPv6 || ip.Payload()[0] != 128 ||
		!netpkt.VerifyChecksum(ip.Src(), ip.Dst(), netpkt.ProtoICMPv6, ip.Payload()) {
		t.Fatalf("got %x to %v, want an echo request to the Home Agent", s.Pkt, s.Dst)
	}
	known.Store(true)
	h.advance(t, haLookupGap)
	h.conn.Inject(dadProbeFrom(stranger))
	h.settle(t)
	if got := whereIs(h); got != "home" {
		t.Fatalf("once the Home Agent's MAC is learnt, a stranger's probe moved the VM to %s", got)
	}
	h.conn.Inject(dadProbeFrom(homeAgentMAC))
	if !waitFor(t, h.settle, func() bool { return whereIs(h) == "departed" }) {
		t.Fatalf("got %s after the Home Agent's probe, want departed", whereIs(h))
	}
	if n := len(h.uplink.Out); n != 0 {
		t.Errorf("got %d more packets on the uplink, want none once the MAC is known", n)
	}
}
