package netpkt

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// ARP operation codes (RFC 826).
const (
	ARPRequest = 1
	ARPReply   = 2
)

// ARPLen is the length of an ARP packet for IPv4 over Ethernet (RFC 826:
// 8 octets of fixed header, then two 6-octet hardware and two 4-octet
// protocol addresses).
const ARPLen = 8 + 2*6 + 2*4

// ARP is a view of an ARP packet for IPv4 over Ethernet (RFC 826), the only
// shape the home link carries.
type ARP []byte

var errNotARP4 = errors.New("netpkt: not ARP for IPv4 over Ethernet")

// ParseARP checks that b starts with an ARP packet resolving IPv4 addresses
// to Ethernet addresses (hardware type 1, protocol 0x0800, lengths 6 and 4)
// and returns the view trimmed to it (Ethernet padding dropped). Other
// lengths are refused rather than followed: every field's offset depends on
// them.
func ParseARP(b []byte) (ARP, error) {
	if len(b) < ARPLen {
		return nil, ErrShort
	}
	if binary.BigEndian.Uint16(b[0:2]) != 1 || binary.BigEndian.Uint16(b[2:4]) != EtherTypeIPv4 || b[4] != 6 || b[5] != 4 {
		return nil, errNotARP4
	}
	return ARP(b[:ARPLen]), nil
}

// Op returns the operation: ARPRequest, ARPReply or another.
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[6:8]) }

// SenderMAC returns the sender hardware address.
func (a ARP) SenderMAC() net.HardwareAddr { return net.HardwareAddr(a[8:14]) }

// SenderAddr returns the sender protocol address; 0.0.0.0 in a probe
// (RFC 5227 §2.1.1).
func (a ARP) SenderAddr() netip.Addr { return netip.AddrFrom4([4]byte(a[14:18])) }

// TargetMAC returns the target hardware address.
func (a ARP) TargetMAC() net.HardwareAddr { return net.HardwareAddr(a[18:24]) }

// TargetAddr returns the target protocol address.
func (a ARP) TargetAddr() netip.Addr { return netip.AddrFrom4([4]byte(a[24:28])) }
