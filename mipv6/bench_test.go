package mipv6

import "testing"

func BenchmarkAppendBUPacket(b *testing.B) {
	p := testBU()
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBUPacket(buf[:0], p)
	}
}

func BenchmarkAppendBAPacket(b *testing.B) {
	p := testBA()
	p.RefreshInterval = 60
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBAPacket(buf[:0], p)
	}
}

func BenchmarkParseBUPacket(b *testing.B) {
	pkt := AppendBUPacket(nil, testBU())
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, err := ParseBUPacket(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseBAPacket(b *testing.B) {
	pkt := AppendBAPacket(nil, testBA())
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, err := ParseBAPacket(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseMobilityPacket(b *testing.B) {
	pkt := AppendBAPacket(nil, testBA())
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, err := ParseMobilityPacket(pkt); err != nil {
			b.Fatal(err)
		}
	}
}
