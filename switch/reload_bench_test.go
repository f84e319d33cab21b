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
// (they run elsewhere, as most of a cloud's do); batch tells sets apart.
func manyVMs(n, batch int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[[vm]]\nport = \"tap%d-%d\"\nhome_address = \"2001:db8:2000::%x:1:%x\"\nmac = \"52:54:%02x:%02x:%02x:%02x\"\n",
			batch, i, batch, i, batch, i>>16&0xff, i>>8&0xff, i&0xff)
	}
	return b.String()
}

// BenchmarkReload measures a SIGHUP that adds n VMs to a running foreign
// host, up to OVS having what they need (here an in-memory flow table, so
// the figure is kgswitch's own work), and reports the longest a status
// request waited meanwhile (status-wait-ms). The replace cases reload n
// other VMs over n running ones: n removed, n added.
func BenchmarkReload(b *testing.B) {
	for _, c := range []struct {
		name    string
		n       int
		replace bool
	}{{"1000", 1000, false}, {"10000", 10000, false}, {"replace-1000", 1000, true}, {"replace-10000", 10000, true}} {
		b.Run(c.name, func(b *testing.B) {
			parse := func(batch int) *config.Config {
				cfg, err := config.Parse(noVMConfig + manyVMs(c.n, batch))
				if err != nil {
					b.Fatal(err)
				}
				return cfg
			}
			cfg, first := parse(1), (*config.Config)(nil)
			if c.replace {
				first, cfg = cfg, parse(2)
			}
			fresh := func(c *config.Config) *config.Config {
				f := *c
				f.VMs = append([]config.VM(nil), c.VMs...)
				return &f
			}
			var worst time.Duration
			for range b.N {
				b.StopTimer()
				h := newHarnessAll(b, noVMConfig, nil, nil)
				if first != nil {
					if err := h.sw.Reload(context.Background(), fresh(first)); err != nil {
						b.Fatal(err)
					}
				}
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
				if err := h.sw.Reload(context.Background(), fresh(cfg)); err != nil {
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
