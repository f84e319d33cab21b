package datapath

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/netpkt"
)

// tcpSuperFrame is what a guest with TCP segmentation offload hands its NIC:
// one frame with payload bytes of TCP data, and in the checksum field only
// the pseudo-header sum the offload would finish (here: garbage).
func tcpSuperFrame(payload int, flags byte) ([]byte, []byte) {
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i * 7)
	}
	ip := make([]byte, netpkt.IPv6Len+32+payload)
	netpkt.PutIPv6(ip, 32+payload, protoTCP, 64, hoa, cn)
	ip[1] = 0x0a // flow label bits, kept in every segment
	tcp := ip[netpkt.IPv6Len:]
	binary.BigEndian.PutUint16(tcp[0:2], 40000)
	binary.BigEndian.PutUint16(tcp[2:4], 5001)
	binary.BigEndian.PutUint32(tcp[4:8], 0xfffff000) // wraps within the frame
	binary.BigEndian.PutUint32(tcp[8:12], 77)
	tcp[12] = 8 << 4 // 32-byte header: 12 bytes of options
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:16], 512)
	tcp[16], tcp[17] = 0xde, 0xad
	copy(tcp[20:32], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}) // NOP NOP timestamps
	copy(tcp[32:], data)
	return ethFrame(lanMAC, guestMAC, ip), data
}

func TestSegmentTCP(t *testing.T) {
	const ack, psh, fin, cwr = 0x10, tcpPSH, tcpFIN, tcpCWR
	frame, data := tcpSuperFrame(20000, ack|psh|fin|cwr)
	up := datapathtest.NewUplink(64)
	g := boundGuest(t)
	d, _ := newTestDatapath(datapathtest.NewConn(), up, g)
	buf := make([]byte, headroom+maxFrame)
	n := copy(buf[headroom:], frame)
	d.handle(buf, n, nil)
	d.flush()
	close(up.Out)

	var got []byte
	seq := uint32(0xfffff000)
	i := 0
	for s := range up.Out {
		outer, err := netpkt.ParseIPv6(s.Pkt)
		if err != nil || len(s.Pkt) > TunnelMTU+netpkt.IPv6Len || outer.Src() != coa || outer.Dst() != ha || s.Dst != ha || outer.NextHeader() != netpkt.ProtoIPv6 {
			t.Fatalf("segment %d: got %d-byte tunnel packet %v -> %v nh %d (err %v), want at most %d bytes %v -> %v nh 41",
				i, len(s.Pkt), outer.Src(), outer.Dst(), outer.NextHeader(), err, TunnelMTU+netpkt.IPv6Len, coa, ha)
		}
		inner, err := netpkt.ParseIPv6(outer.Payload())
		if err != nil || inner.Src() != hoa || inner.Dst() != cn || inner[1] != 0x0a || inner.HopLimit() != 64 {
			t.Fatalf("segment %d: inner header %x (err %v)", i, []byte(inner[:8]), err)
		}
		tcp := inner.Payload()
		if !netpkt.VerifyChecksum(hoa, cn, protoTCP, tcp) {
			t.Errorf("segment %d: TCP checksum wrong", i)
		}
		if got := binary.BigEndian.Uint32(tcp[4:8]); got != seq {
			t.Errorf("segment %d: got seq %#x, want %#x", i, got, seq)
		}
		if !bytes.Equal(tcp[20:32], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}) || binary.BigEndian.Uint32(tcp[8:12]) != 77 {
			t.Errorf("segment %d: header fields not copied", i)
		}
		last := len(got)+len(tcp)-32 == len(data)
		wantFlags := byte(ack)
		if i == 0 {
			wantFlags |= cwr
		}
		if last {
			wantFlags |= psh | fin
		}
		if tcp[13] != wantFlags {
			t.Errorf("segment %d: got flags %#x, want %#x", i, tcp[13], wantFlags)
		}
		got = append(got, tcp[32:]...)
		seq += uint32(len(tcp) - 32)
		i++
	}
	if !bytes.Equal(got, data) {
		t.Errorf("got %d bytes of data in %d segments, want the %d sent", len(got), i, len(data))
	}
	if c := g.Link.Counters.ToTunnelPackets.Load(); c != uint64(i) || i < 20000/TunnelMTU {
		t.Errorf("got %d segments, %d counted", i, c)
	}
}

// TestOversizedNonTCPGetsPacketTooBig: what cannot be segmented is refused
// as before, with a Packet Too Big to the guest.
func TestOversizedNonTCPGetsPacketTooBig(t *testing.T) {
	conn := datapathtest.NewConn()
	d, _ := newTestDatapath(conn, datapathtest.NewUplink(1), boundGuest(t))
	buf := make([]byte, headroom+maxFrame)
	n := copy(buf[headroom:], guestFrame(4000))
	d.handle(buf, n, nil)
	d.flush()
	f := <-conn.Out
	ip := netpkt.IPv6(netpkt.Ethernet(f).Payload())
	if ip.NextHeader() != netpkt.ProtoICMPv6 || ip.Payload()[0] != 2 {
		t.Errorf("got next header %d type %d, want a Packet Too Big", ip.NextHeader(), ip.Payload()[0])
	}
}

// BenchmarkSegmentTCP is the cost of cutting a 64 KiB TSO frame for the
// tunnel, per frame.
func BenchmarkSegmentTCP(b *testing.B) {
	frame, _ := tcpSuperFrame(65000, 0x10)
	d, _, up, _ := benchDatapath(b)
	buf := make([]byte, headroom+maxFrame)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		n := copy(buf[headroom:], frame)
		d.handle(buf, n, nil)
	}
	d.flush()
	if up.pkts == 0 {
		b.Fatal("nothing tunnelled")
	}
}
