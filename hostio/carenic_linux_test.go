package hostio

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/coafilter"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// TestCareOfNICFilters: the care-of NIC's conn reads the tunnel packet sent
// to the care-of address, and not the host's own traffic sent before it.
func TestCareOfNICFilters(t *testing.T) {
	coa := netip.MustParseAddr("2001:db8:3000::3")
	ha := netip.MustParseAddr("2001:db8:1::1")
	var (
		nic  interface{ ReadFrame([]byte) (int, error) }
		peer *packet.Conn
		mac  net.HardwareAddr
	)
	inPrivateNetns(t, func() error {
		if err := vethPair(); err != nil {
			return err
		}
		c, err := OpenCareOfNIC("a", coa)
		if err != nil {
			return err
		}
		nic = c
		ia, err := net.InterfaceByName("a")
		if err != nil {
			return err
		}
		mac = ia.HardwareAddr
		ib, err := net.InterfaceByName("b")
		if err != nil {
			return err
		}
		peer, err = packet.Listen(ib, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	defer nic.(interface{ Close() error }).Close()
	defer peer.Close()
	ipv6 := func(dst netip.Addr, nh uint8, payload []byte) []byte {
		f := make([]byte, 54, 54+len(payload))
		copy(f, mac)
		binary.BigEndian.PutUint16(f[12:], unix.ETH_P_IPV6)
		f[14], f[20], f[21] = 0x60, nh, 64
		binary.BigEndian.PutUint16(f[18:], uint16(len(payload)))
		s, d := ha.As16(), dst.As16()
		copy(f[22:], s[:])
		copy(f[38:], d[:])
		return append(f, payload...)
	}
	tunnel := ipv6(coa, 41, bytes.Repeat([]byte{0x60}, 40))
	for _, f := range [][]byte{
		ipv6(coa, 58, []byte{128, 0, 0, 0, 0, 1, 0, 1}), // echo request: the host's
		ipv6(netip.MustParseAddr("2001:db8:3000::4"), 41, make([]byte, 40)),
		tunnel,
	} {
		if _, err := peer.WriteTo(f, &packet.Addr{HardwareAddr: mac}); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 2048)
	done := make(chan struct{})
	var n int
	var err error
	go func() { n, err = nic.ReadFrame(got); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no frame read within 5s")
	}
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:n], tunnel) {
		t.Errorf("read %x, want the tunnel packet %x", got[:n], tunnel)
	}
}

// TestNFTablesApplies: the ruleset makes kgswitch's table, applying it again
// replaces it, and the removal leaves no table, also when there is none.
func TestNFTablesApplies(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	coa := netip.MustParseAddr("2001:db8:3000::3")
	var list func() string
	inPrivateNetns(t, func() error {
		// iifname matches a name: eth1 need not exist.
		n := NFTables{}
		for _, s := range []string{coafilter.Ruleset("eth1", coa, nil), coafilter.Ruleset("eth1", coa, []netip.Addr{netip.MustParseAddr("2001:db8:1::1")})} {
			if err := n.Apply(s); err != nil {
				return err
			}
		}
		out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			return err
		}
		first := string(out)
		for range 2 {
			if err := n.Apply(coafilter.Removal()); err != nil {
				return err
			}
		}
		out, err = exec.Command("nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			return err
		}
		list = func() string { return first + "\n--- after removal:\n" + string(out) }
		return nil
	})
	all := list()
	applied, removed, _ := strings.Cut(all, "\n--- after removal:\n")
	if strings.Count(applied, "table inet kgswitch") != 1 || strings.Count(applied, "chain prerouting") != 1 {
		t.Errorf("after applying twice, want one table with one chain:\n%s", applied)
	}
	if !strings.Contains(applied, "esp") {
		t.Errorf("the second ruleset did not replace the first:\n%s", applied)
	}
	if strings.Contains(removed, "kgswitch") {
		t.Errorf("table left after removal:\n%s", removed)
	}
}
