package v4responder

import (
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestAppendUnsolicitedARP(t *testing.T) {
	var (
		hoa4    = netip.MustParseAddr("192.0.2.10")
		gateway = netip.MustParseAddr("192.0.2.1")
		haMAC   = net.HardwareAddr{0x02, 0x48, 0x41, 0, 0, 1}
		kgMAC   = net.HardwareAddr{0x02, 0x6b, 0x67, 0, 0, 1}
		vmMAC   = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x10}
		gwMAC   = net.HardwareAddr{0x42, 0x0d, 0x24, 0x0b, 0xaf, 0x8c}
	)
	for _, tt := range []struct {
		name string
		u    UnsolicitedARP
		// want is the frame in hex: Ethernet header, then the ARP packet's
		// fixed part, sender, target; the padding to Ethernet's 60-octet
		// minimum follows.
		want    string
		wantErr bool
	}{
		{"the Home Agent takes a departed VM's address over",
			UnsolicitedARP{Addr: hoa4, LLAddr: haMAC, From: kgMAC},
			"ffffffffffff" + "026b67000001" + "0806" + "0001080006040001" + "024841000001" + "c000020a" + "000000000000" + "c000020a", false},
		{"the VM is back",
			UnsolicitedARP{Addr: hoa4, LLAddr: vmMAC, From: vmMAC},
			"ffffffffffff" + "525400000010" + "0806" + "0001080006040001" + "525400000010" + "c000020a" + "000000000000" + "c000020a", false},
		{"the gateway's real MAC, to the guest alone",
			UnsolicitedARP{Addr: gateway, LLAddr: gwMAC, From: gwMAC, To: vmMAC, ToAddr: hoa4},
			"525400000010" + "420d240baf8c" + "0806" + "0001080006040002" + "420d240baf8c" + "c0000201" + "525400000010" + "c000020a", false},
		{"IPv6 address", UnsolicitedARP{Addr: netip.MustParseAddr("2001:db8::1"), LLAddr: haMAC, From: kgMAC}, "", true},
		{"no MAC", UnsolicitedARP{Addr: hoa4, From: kgMAC}, "", true},
		{"reply without the guest's address", UnsolicitedARP{Addr: gateway, LLAddr: gwMAC, From: gwMAC, To: vmMAC}, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte{0xaa}
			got, err := AppendUnsolicitedARP(prefix, tt.u)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error = %v", err, tt.wantErr)
			}
			if err != nil {
				if len(got) != 1 {
					t.Errorf("got %d bytes after an error, want = the 1 byte given", len(got))
				}
				return
			}
			if got[0] != 0xaa {
				t.Fatal("what was in out is gone")
			}
			if h := hex.EncodeToString(got[1:]); h != tt.want+strings.Repeat("00", 18) {
				t.Errorf("got frame = %s\nwant =      %s", h, tt.want)
			}
		})
	}
}
