package labha

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/mipv6"
)

func TestIPv4Attrs(t *testing.T) {
	tests := []struct {
		name string
		d    Decision
		want []any
	}{
		{name: "no IPv4", d: Decision{Action: Refresh}},
		{
			name: "acknowledged",
			d:    Decision{Action: Add, Ack: Ack{IPv4: ack4(0, 32, hoa4)}, Binding: Binding{IPv4HomeAddress: hoa4}},
			want: []any{"hoa4", "192.0.2.10", "ipv4_status", uint8(0)},
		},
		{
			name: "refused, releasing the one held",
			d:    Decision{Action: Refresh, Ack: Ack{IPv4: ack4(mipv6.IPv4StatusIncorrectHome, 32, netip.MustParseAddr("198.51.100.1"))}, OldIPv4HomeAddress: hoa4},
			want: []any{"hoa4", "198.51.100.1", "ipv4_status", uint8(130), "old_hoa4", "192.0.2.10"},
		},
		{
			name: "kept by a refresh without the option",
			d:    Decision{Action: Refresh, Binding: Binding{IPv4HomeAddress: hoa4}},
			want: []any{"hoa4", "192.0.2.10"},
		},
		{
			name: "removed",
			d:    Decision{Action: Remove, OldIPv4HomeAddress: hoa4},
			want: []any{"hoa4", "192.0.2.10"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ipv4Attrs(tt.d)); diff != "" {
				t.Errorf("got ipv4Attrs diff (-want +got):\n%s", diff)
			}
		})
	}
}
