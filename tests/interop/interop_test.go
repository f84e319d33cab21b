package interop

import (
	"net/netip"

	"github.com/kgswitch/kgswitch/mipv6"
)

// Lab addresses from DESIGN.md, as mipv6's own tests use them.
var (
	coa    = netip.MustParseAddr("2001:db8:3000::3")
	haAddr = netip.MustParseAddr("2001:db8:2000::1")
	hoa    = netip.MustParseAddr("2001:db8:2000::10")
	altCoA = netip.MustParseAddr("2001:db8:3000::33")
)

func testBU() mipv6.BUPacket {
	return mipv6.BUPacket{Src: coa, Dst: haAddr, HomeAddress: hoa, Sequence: 0x1234, Flags: mipv6.FlagA | mipv6.FlagH, Lifetime: 150}
}

func testBA() mipv6.BAPacket {
	return mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Status: mipv6.StatusAccepted, Sequence: 0x1234, Lifetime: 150}
}
