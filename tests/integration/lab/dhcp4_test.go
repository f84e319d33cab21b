package lab

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseDHCP4Events(t *testing.T) {
	log := "1796598724.007877509 deconfig ip= mask= router= serverid= lease= dns= domain=\n" +
		"1796598724.1 bound ip=192.0.2.10 mask=24 router=192.0.2.1 serverid=192.0.2.1 lease=30 dns=192.0.2.53,192.0.2.54 domain=home.example\n" +
		"1796598739 renew ip=192.0.2.10 mask=24 router=192.0.2.1 serverid=192.0.2.1 lease=30 dns=192.0.2.53 domain=home.example\n" +
		"1796598740 renew ip=192.0.2.10 mask=2" // being written
	evs, err := ParseDHCP4Events(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 {
		t.Fatalf("got %d events, want 3 (the unfinished line left out): %+v", len(evs), evs)
	}
	if ev := evs[0]; ev.Event != "deconfig" || ev.Addr.IsValid() || ev.Lease != 0 || ev.Time != time.Unix(1796598724, 7877509) {
		t.Errorf("got deconfig event %+v, want one without a lease at 1796598724.007877509", ev)
	}
	b := evs[1]
	if b.Event != "bound" || b.Addr != netip.MustParsePrefix("192.0.2.10/24") || b.Router != RouterHomeAddr4 ||
		b.ServerID != DHCP4ServerID || len(b.DNS) != 2 || b.DNS[1] != netip.MustParseAddr("192.0.2.54") ||
		b.Domain != DHCP4Domain || b.Lease != 30*time.Second || b.Time != time.Unix(1796598724, 100000000) {
		t.Errorf("got bound event %+v", b)
	}
	if n := CountDHCP4(evs, "renew", time.Unix(1796598739, 0)); n != 1 {
		t.Errorf("got CountDHCP4(renew) = %d, want 1", n)
	}
	if n := CountDHCP4(evs, "renew", time.Unix(1796598739, 1)); n != 0 {
		t.Errorf("got CountDHCP4(renew, after it) = %d, want 0", n)
	}
	if _, err := ParseDHCP4Events("x bound\n"); err == nil {
		t.Error("got nil error for a line without a time, want one")
	}
}

func TestUdhcpdConf(t *testing.T) {
	l := &Lab{Dir: "/lab", topo: newTopology(true), dhcp4Lease: 30 * time.Second}
	conf := l.udhcpdConf()
	for _, want := range []string{
		"interface home0\n", "static_lease 52:54:00:00:00:10 192.0.2.10\n", "opt router 192.0.2.1\n",
		"opt subnet 255.255.255.0\n", "opt dns 192.0.2.53\n", "opt domain home.example\n", "opt lease 30\n",
		"lease_file /lab/udhcpd.leases\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("udhcpd.conf lacks %q:\n%s", want, conf)
		}
	}
	// vm2 has no IPv4 home address and vm3 another home link.
	if n := strings.Count(conf, "static_lease"); n != 1 {
		t.Errorf("udhcpd.conf has %d static leases, want 1 (vm's):\n%s", n, conf)
	}
	if got := (&Lab{}).DHCP4Lease(); got != DefaultDHCP4Lease {
		t.Errorf("got DHCP4Lease() = %v without the option, want %v", got, DefaultDHCP4Lease)
	}
}
