// Package netpkt holds byte-slice views of the Ethernet and IPv6 headers that the
// datapath, the ND responder and the tests share. Views never copy or allocate: a
// value of type IPv6 is the packet itself, so setters write into the frame in place
// (the style of gVisor's pkg/tcpip/header).
package netpkt

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// Header sizes and protocol numbers used across kgswitch.
const (
	EthernetLen   = 14
	IPv6Len       = 40
	EtherTypeIPv6 = 0x86dd
	ProtoICMPv6   = 58
	ProtoIPv6     = 41
)

// ErrShort reports a buffer too short for the header it should hold.
var ErrShort = errors.New("netpkt: truncated header")

// Ethernet is a view of an Ethernet II header (IEEE 802.3) and what follows it.
type Ethernet []byte

// Dst returns the destination MAC address (aliases the frame).
func (e Ethernet) Dst() net.HardwareAddr { return net.HardwareAddr(e[0:6]) }

// Src returns the source MAC address (aliases the frame).
func (e Ethernet) Src() net.HardwareAddr { return net.HardwareAddr(e[6:12]) }

// EtherType returns the EtherType field.
func (e Ethernet) EtherType() uint16 { return binary.BigEndian.Uint16(e[12:14]) }

// Payload returns what follows the Ethernet header.
func (e Ethernet) Payload() []byte { return e[EthernetLen:] }

// PutEthernet writes an Ethernet header into b, which must hold EthernetLen bytes.
func PutEthernet(b []byte, dst, src net.HardwareAddr, etherType uint16) {
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherType)
}

// IPv6 is a view of an IPv6 header (RFC 8200 §3) followed by its payload.
type IPv6 []byte

// ParseIPv6 checks that b holds an IPv6 header whose payload length fits in b, and
// returns the view trimmed to the length the header claims (Ethernet padding dropped).
func ParseIPv6(b []byte) (IPv6, error) {
	if len(b) < IPv6Len {
		return nil, ErrShort
	}
	if b[0]>>4 != 6 {
		return nil, errors.New("netpkt: not an IPv6 header")
	}
	n := IPv6Len + int(binary.BigEndian.Uint16(b[4:6]))
	if n > len(b) {
		return nil, errors.New("netpkt: IPv6 payload length overruns the packet")
	}
	return IPv6(b[:n]), nil
}

// PayloadLength returns the Payload Length field.
func (p IPv6) PayloadLength() int { return int(binary.BigEndian.Uint16(p[4:6])) }

// NextHeader returns the Next Header field.
func (p IPv6) NextHeader() uint8 { return p[6] }

// HopLimit returns the Hop Limit field.
func (p IPv6) HopLimit() uint8 { return p[7] }

// Src returns the source address.
func (p IPv6) Src() netip.Addr { return netip.AddrFrom16([16]byte(p[8:24])) }

// Dst returns the destination address.
func (p IPv6) Dst() netip.Addr { return netip.AddrFrom16([16]byte(p[24:40])) }

// Payload returns what follows the fixed header.
func (p IPv6) Payload() []byte { return p[IPv6Len:] }

// PutIPv6 writes a fixed IPv6 header (traffic class and flow label zero) into b.
func PutIPv6(b []byte, payloadLen int, nextHeader, hopLimit uint8, src, dst netip.Addr) {
	b[0], b[1], b[2], b[3] = 0x60, 0, 0, 0
	binary.BigEndian.PutUint16(b[4:6], uint16(payloadLen))
	b[6] = nextHeader
	b[7] = hopLimit
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
}

// Checksum computes the Internet checksum of an upper-layer payload with the IPv6
// pseudo-header (RFC 8200 §8.1). The payload's own checksum field must be zero.
func Checksum(src, dst netip.Addr, proto uint8, payload []byte) uint16 {
	c := ^pseudoSum(src, dst, proto, payload)
	if c == 0 {
		return 0xffff
	}
	return c
}

// VerifyChecksum reports whether payload, checksum field included, sums to the
// IPv6 pseudo-header complement (RFC 8200 §8.1), without modifying it.
func VerifyChecksum(src, dst netip.Addr, proto uint8, payload []byte) bool {
	return pseudoSum(src, dst, proto, payload) == 0xffff
}

// pseudoSum folds the one's-complement sum of the pseudo-header and payload.
func pseudoSum(src, dst netip.Addr, proto uint8, payload []byte) uint16 {
	s, d := src.As16(), dst.As16()
	var sum uint32
	sum = sumBytes(sum, s[:])
	sum = sumBytes(sum, d[:])
	sum += uint32(len(payload)>>16) + uint32(len(payload)&0xffff)
	sum += uint32(proto)
	sum = sumBytes(sum, payload)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

func sumBytes(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

// SolicitedNode returns the solicited-node multicast address of a (RFC 4291 §2.7.1).
func SolicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	m := [16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]}
	return netip.AddrFrom16(m)
}

// MulticastMAC returns the Ethernet address an IPv6 multicast group maps to (RFC 2464 §7).
func MulticastMAC(group netip.Addr) net.HardwareAddr {
	b := group.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}
