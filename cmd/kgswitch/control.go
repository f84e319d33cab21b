package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	vswitch "github.com/kgswitch/kgswitch/switch"
)

// The control protocol is JSON over HTTP on a unix socket: easy to drive from
// curl --unix-socket as well as from the CLI.

type apiError struct {
	Error string `json:"error"`
	// Code is the exit status the CLI should use: 2 for rejected input.
	Code int `json:"code"`
}

// controlMode is the control socket's mode whatever the umask: whoever may
// connect may steer every VM's traffic, so root and the control group only.
const controlMode = 0o660

// listenControl creates the control socket at path with controlMode, owned by
// group when one is given (a name or a number).
func listenControl(path, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return nil, fmt.Errorf("control socket: group %q: no such group", group)
			}
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("control socket: group %q has gid %q", group, g.Gid)
		}
	}
	// A socket file left by a daemon that died is stale; one that answers is not.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("another kgswitch is already listening on %s", path)
	}
	os.Remove(path)
	// The socket is born with the umask's mode; a restrictive umask while it
	// is created leaves no moment in which anyone else may connect.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: give it to group %q: %w", group, err)
	}
	if err := os.Chmod(path, controlMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

func serveControl(ctx context.Context, path, group string, sw *vswitch.Switch, log *slog.Logger) (*http.Server, error) {
	ln, err := listenControl(path, group)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		var req vswitch.AddPortRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "bad request: " + err.Error(), Code: 2})
			return
		}
		if err := sw.AddPort(r.Context(), req); err != nil {
			writeError(w, err)
			return
		}
		log.Info("port bound by add-port", "port", req.Port, "hoa", req.HomeAddress)
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("DELETE /v1/ports/{port}", func(w http.ResponseWriter, r *http.Request) {
		port := r.PathValue("port")
		if err := sw.DeletePort(r.Context(), port); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	for verb, act := range map[string]func(context.Context, string) error{"activate": sw.Activate, "deactivate": sw.Deactivate} {
		mux.HandleFunc("POST /v1/ports/{port}/"+verb, func(w http.ResponseWriter, r *http.Request) {
			port := r.PathValue("port")
			if err := act(r.Context(), port); err != nil {
				writeError(w, err)
				return
			}
			log.Info("port "+verb+"d by command", "port", port)
			writeJSON(w, http.StatusOK, struct{}{})
		})
	}
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := sw.Status(r.Context())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error(), Code: 1})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/datapath", func(w http.ResponseWriter, r *http.Request) {
		drops, err := sw.DatapathDrops(r.Context())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error(), Code: 1})
			return
		}
		writeJSON(w, http.StatusOK, datapathStatus{Drops: drops})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go srv.Serve(ln)
	return srv, nil
}

// datapathStatus is what belongs to no VM.
type datapathStatus struct {
	Drops map[string]uint64 `json:"drops"`
}

// writeError answers a request the switch refused: rejected input (an
// unknown port, an invalid binding) is the client's to fix, exit status 2;
// anything else failed at run time, exit status 1.
func writeError(w http.ResponseWriter, err error) {
	if errors.Is(err, vswitch.ErrUnknownPort) || errors.Is(err, vswitch.ErrInvalid) {
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error(), Code: 2})
		return
	}
	writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error(), Code: 1})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// controlClient talks to a running daemon.
func controlClient(path string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}
