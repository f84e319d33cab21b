package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	vswitch "github.com/kgswitch/kgswitch/switch"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// statusCollector exports the same per-VM state and counters as
// `kgswitch status`, read from the daemon at each scrape, so the two can
// never disagree.
type statusCollector struct {
	sw *vswitch.Switch

	info, lifetime, sequence, packets, bytes, drops, dpDrops, nd, ra, held, released, refused, v4Refused, v4Answered *prometheus.Desc
}

func newStatusCollector(sw *vswitch.Switch) *statusCollector {
	vm := []string{"home_address"}
	return &statusCollector{sw: sw,
		info: prometheus.NewDesc("kgswitch_vm_info", "A VM kgswitch knows, with its port, location and binding state.",
			[]string{"home_address", "port", "location", "binding_state", "reason", "care_of", "home_agent"}, nil),
		lifetime: prometheus.NewDesc("kgswitch_binding_lifetime_left_seconds", "Time left of the Home Agent's grant.", vm, nil),
		sequence: prometheus.NewDesc("kgswitch_binding_sequence", "Sequence number of the last Binding Update.", vm, nil),
		packets: prometheus.NewDesc("kgswitch_tunnel_packets_total", "Packets through the tunnel, by direction (to_ha, from_ha).",
			[]string{"home_address", "direction"}, nil),
		bytes: prometheus.NewDesc("kgswitch_tunnel_bytes_total", "Inner-packet bytes through the tunnel, by direction.",
			[]string{"home_address", "direction"}, nil),
		drops: prometheus.NewDesc("kgswitch_drops_total", "Frames dropped, by reason.", []string{"home_address", "reason"}, nil),
		dpDrops: prometheus.NewDesc("kgswitch_datapath_drops_total",
			"Frames of no VM the datapath dropped, and frames the kernel dropped on the internal port (socket-overflow), by reason.",
			[]string{"reason"}, nil),
		nd: prometheus.NewDesc("kgswitch_nd_answered_total", "Neighbor Solicitations answered on the pseudo home link.", vm, nil),
		ra: prometheus.NewDesc("kgswitch_ra_sent_total", "Router Advertisements sent to the guest.", vm, nil),
		// The names predate the arrival hold, which counts here too; they
		// stay so that existing dashboards and alerts keep working.
		held: prometheus.NewDesc("kgswitch_departure_held_total",
			"Frames held: for a VM that left its home host, or from a guest whose binding this foreign host was setting up.", vm, nil),
		released: prometheus.NewDesc("kgswitch_departure_released_total",
			"Held frames sent on: to the Home Agent after its takeover, or through the tunnel once the binding stood.", vm, nil),
		refused: prometheus.NewDesc("kgswitch_tunnel_refused_total",
			"ICMPv6 Destination Unreachable errors from the Home Agent about tunnelled packets: hints that it lost the binding.", vm, nil),
		v4Refused: prometheus.NewDesc("kgswitch_ipv4_refused_total",
			"Refusals of the VM's IPv4 home address by its Home Agent (RFC 5555); its IPv6 stays bound.", vm, nil),
		v4Answered: prometheus.NewDesc("kgswitch_v4_answered_total", "ARP and DHCP messages answered as the guest's IPv4 home link.", vm, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.lifetime, c.sequence, c.packets, c.bytes, c.drops, c.dpDrops, c.nd, c.ra, c.held, c.released, c.refused, c.v4Refused, c.v4Answered} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.sw.Status(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.info, err)
		return
	}
	for _, p := range st {
		h := p.HomeAddress
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, h, p.Port, p.Location, p.BindingState, p.Reason, p.CareOf, p.HomeAgent)
		ch <- prometheus.MustNewConstMetric(c.lifetime, prometheus.GaugeValue, p.LifetimeLeftSec, h)
		ch <- prometheus.MustNewConstMetric(c.sequence, prometheus.GaugeValue, float64(p.Sequence), h)
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(p.ToTunnelPackets), h, "to_ha")
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(p.FromTunnelPackets), h, "from_ha")
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(p.ToTunnelBytes), h, "to_ha")
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(p.FromTunnelBytes), h, "from_ha")
		for reason, n := range p.Drops {
			ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(n), h, reason)
		}
		ch <- prometheus.MustNewConstMetric(c.nd, prometheus.CounterValue, float64(p.NDAnswered), h)
		ch <- prometheus.MustNewConstMetric(c.ra, prometheus.CounterValue, float64(p.RASent), h)
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.CounterValue, float64(p.Held), h)
		ch <- prometheus.MustNewConstMetric(c.released, prometheus.CounterValue, float64(p.Released), h)
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(p.TunnelRefused), h)
		if p.IPv4Address != "" {
			ch <- prometheus.MustNewConstMetric(c.v4Refused, prometheus.CounterValue, float64(p.IPv4Refused), h)
			ch <- prometheus.MustNewConstMetric(c.v4Answered, prometheus.CounterValue, float64(p.V4Answered), h)
		}
	}
	drops, err := c.sw.DatapathDrops(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.dpDrops, err)
		return
	}
	for reason, n := range drops {
		ch <- prometheus.MustNewConstMetric(c.dpDrops, prometheus.CounterValue, float64(n), reason)
	}
}

// serveMetrics exposes Prometheus metrics on addr (host:port) at /metrics.
func serveMetrics(ctx context.Context, addr string, sw *vswitch.Switch, log *slog.Logger) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatusCollector(sw), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("Prometheus metrics", "address", ln.Addr().String())
	return srv, nil
}
