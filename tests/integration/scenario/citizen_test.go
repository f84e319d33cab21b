package scenario

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseFlows(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     []Flow
		dups     int
	}{
		{"empty", "NXST_FLOW reply (xid=0x4):\n", nil, 0},
		{"counters dropped, sorted", `NXST_FLOW reply (xid=0x4):
 cookie=0x6b6769c7a53c21e1, duration=3.1s, table=0, n_packets=7, n_bytes=600, idle_age=1, priority=200,in_port=vnet3,dl_src=52:54:00:00:00:10 actions=output:kgs0
 cookie=0x6b67000000000000, duration=3.2s, table=0, n_packets=0, n_bytes=0, priority=100,in_port=kgs0 actions=drop
`, []Flow{
			{Cookie: "0x6b67000000000000", Priority: 100, Match: "in_port=kgs0", Actions: "drop"},
			{Cookie: "0x6b6769c7a53c21e1", Priority: 200, Match: "in_port=vnet3,dl_src=52:54:00:00:00:10", Actions: "output:kgs0"},
		}, 0},
		{"default priority, duplicate", ` cookie=0x1, n_packets=0, in_port=1 actions=NORMAL
 cookie=0x2, n_packets=3, priority=32768,in_port=1 actions=drop
`, []Flow{
			{Cookie: "0x1", Priority: 32768, Match: "in_port=1", Actions: "NORMAL"},
			{Cookie: "0x2", Priority: 32768, Match: "in_port=1", Actions: "drop"},
		}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFlows(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseFlows (-want +got):\n%s", diff)
			}
			if n := len(Duplicates(got)); n != tt.dups {
				t.Errorf("got %d duplicates, want %d", n, tt.dups)
			}
		})
	}
	if _, err := ParseFlows(" cookie=0x1, priority=1,in_port=1\n"); err == nil {
		t.Error("got no error for a line without actions")
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP kgswitch_tunnel_packets_total Packets through the tunnel.
# TYPE kgswitch_tunnel_packets_total counter
kgswitch_tunnel_packets_total{direction="from_ha",home_address="2001:db8:2000::10"} 11
kgswitch_tunnel_packets_total{direction="to_ha",home_address="2001:db8:2000::10"} 12
kgswitch_vm_info{binding_state="bound",location="foreign",reason="say \"hi\""} 1
go_goroutines 14
`
	ms, err := ParseMetrics(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 {
		t.Fatalf("got %d samples, want 4", len(ms))
	}
	m, ok := FindMetric(ms, "kgswitch_tunnel_packets_total", map[string]string{"direction": "to_ha"})
	if !ok || m.Value != 12 || m.Labels["home_address"] != "2001:db8:2000::10" {
		t.Errorf("got to_ha sample %+v (found %v), want 12 for 2001:db8:2000::10", m, ok)
	}
	if m, ok := FindMetric(ms, "kgswitch_vm_info", map[string]string{"location": "foreign"}); !ok || m.Labels["reason"] != `say \"hi\"` {
		t.Errorf("got vm_info %+v (found %v)", m, ok)
	}
	if _, ok := FindMetric(ms, "kgswitch_tunnel_packets_total", map[string]string{"direction": "sideways"}); ok {
		t.Error("found a sample that is not there")
	}
	if _, err := ParseMetrics("not a metric\n"); err == nil {
		t.Error("got no error for a bad line")
	}
}
