package labha

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/kgswitch/kgswitch/netpkt"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

// ipv4Packet returns an IPv4 Echo Request from src to dst with a valid
// header checksum.
func ipv4Packet(src, dst netip.Addr) []byte {
	s, d := src.As4(), dst.As4()
	p := []byte{0x45, 0, 0, 28, 0, 1, 0x40, 0, 63, netpkt.ProtoICMPv4, 0, 0}
	p = append(p, s[:]...)
	p = append(p, d[:]...)
	p = append(p, 8, 0, 0xf7, 0xfe, 0, 1, 0, 0)
	netpkt.IPv4(p).SetChecksum()
	return p
}

func TestEncapsulateIPv4(t *testing.T) {
	inner := ipv4Packet(netip.MustParseAddr("198.51.100.7"), hoa4)
	pkt := EncapsulateIPv4(nil, lab.HAAddr, lab.CareOfAddr, inner)
	if err := checkIPv6(pkt); err != nil {
		t.Fatalf("got checkIPv6 error = %v, want nil", err)
	}
	src, dst := addrs(pkt)
	if src != lab.HAAddr || dst != lab.CareOfAddr || pkt[ipv6NextHdr] != 4 || pkt[ipv6HopLimit] != TunnelHopLimit {
		t.Errorf("got outer %v -> %v next header %d hop limit %d, want %v -> %v, 4, %d",
			src, dst, pkt[ipv6NextHdr], pkt[ipv6HopLimit], lab.HAAddr, lab.CareOfAddr, TunnelHopLimit)
	}
	if diff := cmp.Diff(inner, pkt[ipv6HeaderLen:]); diff != "" {
		t.Errorf("got inner packet diff (-want +got):\n%s", diff)
	}
}

func TestCheckReverseIPv4(t *testing.T) {
	c := NewCache(CacheConfig{Prefix: lab.HomePrefix, IPv4Prefix: ipv4Prefix})
	c.HandleBU(bu(1, 15, withIPv4(hoa4, 32)), t0)
	c.CompleteDAD(lab.HoA, false, t0.Add(time.Second))
	if b, ok := c.LookupIPv4(hoa4); !ok || b.HomeAddress != lab.HoA {
		t.Fatalf("got LookupIPv4(%v) = %+v, %v, want the binding of %v", hoa4, b, ok, lab.HoA)
	}
	good := ipv4Packet(hoa4, netip.MustParseAddr("198.51.100.7"))
	badSum := ipv4Packet(hoa4, netip.MustParseAddr("198.51.100.7"))
	badSum[10] ^= 0xff
	tests := []struct {
		name     string
		outerSrc netip.Addr
		outerDst netip.Addr
		inner    []byte
		wantErr  error
	}{
		{name: "from the binding's care-of address", outerSrc: lab.CareOfAddr, outerDst: lab.HAAddr, inner: good},
		{name: "from another care-of address", outerSrc: lab.CareOfAddrC, outerDst: lab.HAAddr, inner: good, wantErr: ErrNoTunnel},
		{name: "source bound to nobody", outerSrc: lab.CareOfAddr, outerDst: lab.HAAddr, inner: ipv4Packet(hoa4b, hoa4), wantErr: ErrNoTunnel},
		{name: "to another address than the home agent's", outerSrc: lab.CareOfAddr, outerDst: lab.HoA, inner: good, wantErr: ErrReverseTunnel},
		{name: "bad header checksum", outerSrc: lab.CareOfAddr, outerDst: lab.HAAddr, inner: badSum, wantErr: ErrReverseTunnel},
		{name: "octets after the total length", outerSrc: lab.CareOfAddr, outerDst: lab.HAAddr, inner: append(append([]byte(nil), good...), 0), wantErr: ErrReverseTunnel},
		{name: "IPv6 inside", outerSrc: lab.CareOfAddr, outerDst: lab.HAAddr, inner: appendIPv6Header(nil, 0, 59, 64, lab.HoA, lab.CNAddr), wantErr: ErrReverseTunnel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckReverseIPv4(tt.outerSrc, tt.outerDst, lab.HAAddr, tt.inner, c.LookupIPv4)
			if tt.wantErr == nil {
				if err != nil || got != hoa4 {
					t.Errorf("got CheckReverseIPv4 = %v, %v, want %v, nil", got, err, hoa4)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("got CheckReverseIPv4 error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	// De-registration releases the address for the tunnel too.
	c.HandleBU(bu(2, 0), t0.Add(2*time.Second))
	if _, ok := c.LookupIPv4(hoa4); ok {
		t.Errorf("got LookupIPv4(%v) ok after de-registration, want no binding", hoa4)
	}
}

func TestGratuitousARP(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	f, err := GratuitousARP(hoa4, mac)
	if err != nil {
		t.Fatalf("got GratuitousARP error = %v, want nil", err)
	}
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	arp, _ := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if eth == nil || arp == nil {
		t.Fatalf("gopacket decodes %x as %v, want Ethernet and ARP", f, p)
	}
	if eth.DstMAC.String() != "ff:ff:ff:ff:ff:ff" || eth.SrcMAC.String() != mac.String() {
		t.Errorf("got Ethernet %v -> %v, want %v -> broadcast", eth.SrcMAC, eth.DstMAC, mac)
	}
	ip := hoa4.AsSlice()
	if arp.Operation != layers.ARPRequest || arp.AddrType != layers.LinkTypeEthernet || arp.Protocol != layers.EthernetTypeIPv4 ||
		net.HardwareAddr(arp.SourceHwAddress).String() != mac.String() ||
		!net.IP(arp.SourceProtAddress).Equal(ip) || !net.IP(arp.DstProtAddress).Equal(ip) {
		t.Errorf("got ARP %+v, want a request from %v announcing %v as sender and target", arp, mac, hoa4)
	}
	if _, err := GratuitousARP(lab.HoA, mac); err == nil {
		t.Errorf("got GratuitousARP(%v) error = nil, want an error for an IPv6 address", lab.HoA)
	}
}
