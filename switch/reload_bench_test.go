package vswitch

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/config"
)

// manyVMs is n VMs of the lab's home network, none on this host's bridge
// (they run elsewhere, as most of a cloud's do).
func manyVMs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[[vm]]\nport = \"tap%d\"\nhome_address = \"2001:db8:2000::1:%x\"\nmac = \"52:54:01:%02x:%02x:%02x\"\n",
			i, i, i>>16&0xff, i>>8&0xff, i&0xff)
	}
	return b.String()
}

// BenchmarkReload measures a SIGHUP that adds n VMs to a running foreign
// host, up to OVS having what they need (here an in-memory flow table, so
// the figure is kgswitch's own work), and reports the longest a status
// request waited meanwhile (status-wait-ms).
func BenchmarkReload(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cfg, err := config.Parse(noVMConfig + manyVMs(n))
			if err != nil {
				b.Fatal(err)
			}
			var worst time.Duration
			for range b.N {
				b.StopTimer()
				h := newHarnessAll(b, noVMConfig, nil, nil)
				fresh := *cfg
				fresh.VMs = append([]config.VM(nil), cfg.VMs...)
				var done atomic.Bool
				probe := make(chan time.Duration)
				go func() {
					var w time.Duration
					for !done.Load() {
						start := time.Now()
						if _, err := h.sw.Status(context.Background()); err != nil {
							b.Error(err)
						}
						w = max(w, time.Since(start))
						time.Sleep(time.Millisecond)
					}
					probe <- w
				}()
				b.StartTimer()
				if err := h.sw.Reload(context.Background(), &fresh); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				done.Store(true)
				worst = max(worst, <-probe)
				h.cancel()
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "status-wait-ms")
		})
	}
}
