package datapath

import (
	"encoding/binary"

	"github.com/kgswitch/kgswitch/netpkt"
)

// protoTCP is TCP's IPv6 next header and IPv4 protocol value.
const protoTCP = 6

// TCP flags that belong to one segment of a split one only (RFC 9293 §3.1):
// FIN and PSH to the last, CWR to the first (RFC 3168 §6.1.2, as TSO does).
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// segScratch bounds the segments of one oversized frame: a 64 KiB payload in
// segments of at least 536 bytes (RFC 9293 §3.7.1), with their headers.
const segScratch = 65536 + (65536/536+1)*(2*netpkt.IPv6Len+60)

// segmentTCP tunnels a TCP packet from guest g that is bigger than any link
// would carry: a guest with TCP segmentation offload hands its NIC such
// "super-frames" and the NIC cuts them up. kgswitch's own port has its
// offloads switched off, but a hypervisor switch with userspace TSO can still
// deliver one. It is cut into segments that fit the tunnel (the guest's MSS
// is unknown here; any smaller size is valid TCP), each with its TCP checksum
// computed in full, so a partial checksum left for the offload does not
// matter. It reports false for what it cannot split (extension headers, a
// broken TCP header), which then gets a Packet Too Big.
func (d *Datapath) segmentTCP(f *FIB, g *Guest, ip netpkt.IPv6) bool {
	tcp := ip.Payload()
	if ip.NextHeader() != protoTCP || len(tcp) < 20 {
		return false
	}
	thl := int(tcp[12]>>4) * 4
	mss := f.mtu - netpkt.IPv6Len - thl
	if thl < 20 || thl > len(tcp) || mss <= 0 {
		return false
	}
	if d.seg == nil {
		d.seg = make([]byte, segScratch)
	}
	payload := tcp[thl:]
	seq := binary.BigEndian.Uint32(tcp[4:8])
	flags := tcp[13]
	src, dst := ip.Src(), ip.Dst()
	// What is queued goes first, and the scratch space is free.
	d.flushUplink()
	off := 0
	for p := 0; p < len(payload); p += mss {
		chunk := payload[p:min(p+mss, len(payload))]
		size := 2*netpkt.IPv6Len + thl + len(chunk)
		if off+size > len(d.seg) || d.toUplink.full() {
			d.flushUplink()
			off = 0
		}
		pkt := d.seg[off : off+size]
		off += size
		inner := pkt[netpkt.IPv6Len:]
		// The guest's header as it is (traffic class, flow label, hop limit).
		copy(inner, ip[:netpkt.IPv6Len])
		binary.BigEndian.PutUint16(inner[4:6], uint16(thl+len(chunk)))
		seg := fillSegment(inner[netpkt.IPv6Len:], tcp[:thl], chunk, seq, p, flags, p+len(chunk) == len(payload))
		binary.BigEndian.PutUint16(seg[16:18], netpkt.Checksum(src, dst, protoTCP, seg))
		netpkt.PutIPv6(pkt, len(inner), netpkt.ProtoIPv6, tunnelHopLimit, f.coa, g.HomeAgent)
		d.queueUplink(pkt, g.HomeAgent, &g.Link.Counters, len(inner))
	}
	d.flushUplink()
	return true
}

// segmentTCP4 is segmentTCP for IPv4: a TCP packet from guest g bigger than
// any link is cut into segments that fit the tunnel, each with the guest's
// header (options included), an Identification one more than the last's, as
// TSO numbers them, and its header and TCP checksums computed in full. The
// TTL is decremented first when routed. It reports false, having changed
// nothing, for what it cannot split: a fragment, a broken TCP header.
func (d *Datapath) segmentTCP4(f *FIB, g *Guest, ip netpkt.IPv4, routed bool) bool {
	tcp := ip.Payload()
	if ip.Protocol() != protoTCP || ip.FragmentOffset() != 0 || ip.MoreFragments() || len(tcp) < 20 {
		return false
	}
	hl, thl := ip.HeaderLen(), int(tcp[12]>>4)*4
	mss := f.mtu - hl - thl
	if thl < 20 || thl > len(tcp) || mss <= 0 {
		return false
	}
	if routed {
		ip.DecrementTTL()
	}
	if d.seg == nil {
		d.seg = make([]byte, segScratch)
	}
	payload := tcp[thl:]
	seq := binary.BigEndian.Uint32(tcp[4:8])
	id := ip.ID()
	flags := tcp[13]
	src, dst := ip.Src(), ip.Dst()
	d.flushUplink()
	off := 0
	for p := 0; p < len(payload); p += mss {
		chunk := payload[p:min(p+mss, len(payload))]
		size := netpkt.IPv6Len + hl + thl + len(chunk)
		if off+size > len(d.seg) || d.toUplink.full() {
			d.flushUplink()
			off = 0
		}
		pkt := d.seg[off : off+size]
		off += size
		inner := netpkt.IPv4(pkt[netpkt.IPv6Len:])
		copy(inner, ip[:hl])
		binary.BigEndian.PutUint16(inner[2:4], uint16(len(inner)))
		binary.BigEndian.PutUint16(inner[4:6], id)
		id++
		inner.SetChecksum()
		seg := fillSegment(inner[hl:], tcp[:thl], chunk, seq, p, flags, p+len(chunk) == len(payload))
		binary.BigEndian.PutUint16(seg[16:18], netpkt.Checksum4(src, dst, protoTCP, seg))
		encapsulate(pkt, netpkt.IPv6Len, len(inner), f.coa, g.HomeAgent)
		d.queueUplink(pkt, g.HomeAgent, &g.Link.Counters, len(inner))
	}
	d.flushUplink()
	return true
}

// fillSegment writes into seg the TCP segment that carries chunk, the bytes
// at offset off of the payload of a segment with header hdr, sequence
// number seq and flags: FIN and PSH stay with the last segment, CWR with the
// first. It returns the segment with its checksum zeroed for the caller's
// pseudo-header.
func fillSegment(seg, hdr, chunk []byte, seq uint32, off int, flags byte, last bool) []byte {
	thl := len(hdr)
	copy(seg, hdr)
	copy(seg[thl:], chunk)
	seg = seg[:thl+len(chunk)]
	binary.BigEndian.PutUint32(seg[4:8], seq+uint32(off))
	fl := flags
	if !last {
		fl &^= tcpFIN | tcpPSH
	}
	if off > 0 {
		fl &^= tcpCWR
	}
	seg[13] = fl
	seg[16], seg[17] = 0, 0
	return seg
}
