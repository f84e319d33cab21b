package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	runpprof "runtime/pprof"
)

// profileFlags registers kgswitch run's opt-in profiling flags on fs. The
// returned start, called after fs is parsed, begins what the flags ask for;
// the stop it returns ends it (writes the CPU profile) and must run before
// the daemon exits. Both are no-ops when no flag is set.
//
//	--cpuprofile FILE   CPU profile of the whole run, written at exit
//	--pprof ADDR        net/http/pprof on ADDR (e.g. 127.0.0.1:6060), for
//	                    profiles of a daemon under load; debug only
func profileFlags(fs *flag.FlagSet) (start func() (stop func(), err error)) {
	cpu := fs.String("cpuprofile", "", "write a CPU profile of the run to `file` (for `go tool pprof`)")
	addr := fs.String("pprof", "", "serve net/http/pprof on `addr` (debugging only; never on a public address)")
	return func() (func(), error) {
		var stops []func()
		stop := func() {
			for i := len(stops) - 1; i >= 0; i-- {
				stops[i]()
			}
		}
		if *cpu != "" {
			f, err := os.Create(*cpu)
			if err != nil {
				return stop, fmt.Errorf("--cpuprofile: %w", err)
			}
			if err := runpprof.StartCPUProfile(f); err != nil {
				f.Close()
				return stop, fmt.Errorf("--cpuprofile: %w", err)
			}
			stops = append(stops, func() { runpprof.StopCPUProfile(); f.Close() })
		}
		if *addr != "" {
			ln, err := net.Listen("tcp", *addr)
			if err != nil {
				stop()
				return func() {}, fmt.Errorf("--pprof: %w", err)
			}
			mux := http.NewServeMux()
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			srv := &http.Server{Handler: mux}
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					fmt.Fprintf(os.Stderr, "kgswitch: pprof server: %v\n", err)
				}
			}()
			stops = append(stops, func() { srv.Close() })
		}
		return stop, nil
	}
}
