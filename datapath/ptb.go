package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/kgswitch/kgswitch/netpkt"
)

// minMTU is the IPv6 minimum link MTU; an ICMPv6 error must fit in it (RFC 4443 §2.4 (c)).
const minMTU = 1280

// appendPacketTooBig appends to out an Ethernet frame carrying an ICMPv6 Packet
// Too Big (RFC 4443 §3.2) for the IPv6 packet in frame (from the guest), as the
// home router would send it, so that the guest's path-MTU discovery (RFC 8201)
// shrinks its packets to what the tunnel carries.
func appendPacketTooBig(out, frame []byte, ipLen, mtu int, routerMAC net.HardwareAddr, from netip.Addr) []byte {
	eth := netpkt.Ethernet(frame)
	invoking := eth.Payload()[:ipLen]
	to := netpkt.IPv6(invoking).Src()
	quote := len(invoking)
	if max := minMTU - netpkt.IPv6Len - 8; quote > max {
		quote = max
	}
	n := len(out)
	out = append(out, make([]byte, netpkt.EthernetLen+netpkt.IPv6Len+8)...)
	netpkt.PutEthernet(out[n:], eth.Src(), routerMAC, netpkt.EtherTypeIPv6)
	netpkt.PutIPv6(out[n+netpkt.EthernetLen:], 8+quote, netpkt.ProtoICMPv6, 255, from, to)
	icmp := out[n+netpkt.EthernetLen+netpkt.IPv6Len:]
	icmp[0], icmp[1], icmp[2], icmp[3] = 2, 0, 0, 0
	binary.BigEndian.PutUint32(icmp[4:8], uint32(mtu))
	out = append(out, invoking[:quote]...)
	icmp = out[n+netpkt.EthernetLen+netpkt.IPv6Len:]
	binary.BigEndian.PutUint16(icmp[2:4], netpkt.Checksum(from, to, netpkt.ProtoICMPv6, icmp))
	return out
}
