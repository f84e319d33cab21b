package main

import (
	"bytes"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// fakeDaemon serves the control API's two read endpoints on a unix socket.
func fakeDaemon(t *testing.T, status, datapath string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kgswitch.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for path, body := range map[string]string{"/v1/status": status, "/v1/datapath": datapath} {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(body)) })
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// The table shows each VM's held and released frames and its drops sorted by
// reason, and a last line the drops of no VM, which an operator would
// otherwise never see.
func TestStatusShowsDrops(t *testing.T) {
	sock := fakeDaemon(t,
		`[{"port":"vnet3","home_address":"2001:db8:2000::10","location":"foreign","home_agent":"2001:db8:2000::1","held":7,"released":6,"drops":{"too-big":2,"bad-source":5}}]`,
		`{"drops":{"socket-overflow":3,"malformed":1}}`)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"status", "--control", sock}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"HELD/RELEASED", " 7/6 ", "bad-source=5,too-big=2", "datapath drops (no VM's): malformed=1,socket-overflow=3\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	// No drops of no VM: no line for them.
	sock = fakeDaemon(t, `[]`, `{"drops":{}}`)
	stdout.Reset()
	if code := run([]string{"status", "--control", sock}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d: %s", code, stderr.String())
	}
	if strings.Contains(stdout.String(), "datapath drops") {
		t.Errorf("status printed a datapath line with no drops:\n%s", stdout.String())
	}
}

// A dual-stack VM gets a line saying, in words, what became of its IPv4
// home address; a VM without one gets none.
func TestStatusShowsIPv4(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want, not    []string
	}{
		{name: "refused",
			status: `[{"port":"vnet3","home_address":"2001:db8:2000::10","location":"foreign","binding_state":"bound","home_agent":"2001:db8:2000::1",` +
				`"ipv4":"192.0.2.10: refused (administratively prohibited, status 129)","ipv4_address":"192.0.2.10","ipv4_state":"refused","ipv4_status":129,"ipv4_refused":1}]`,
			want: []string{"vnet3: ipv4 192.0.2.10: refused (administratively prohibited, status 129); refused 1 times\n", " bound "}},
		{name: "accepted",
			status: `[{"port":"vnet3","home_address":"2001:db8:2000::10","location":"foreign","home_agent":"2001:db8:2000::1",` +
				`"ipv4":"192.0.2.10: accepted","ipv4_address":"192.0.2.10","ipv4_state":"accepted","v4_answered":4}]`,
			want: []string{"vnet3: ipv4 192.0.2.10: accepted; 4 ARP/DHCP answered\n"}},
		{name: "IPv6 only", status: `[{"port":"vnet3","home_address":"2001:db8:2000::10","location":"foreign","home_agent":"2001:db8:2000::1"}]`,
			not: []string{"ipv4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := fakeDaemon(t, tc.status, `{"drops":{}}`)
			var stdout, stderr bytes.Buffer
			if code := run([]string{"status", "--control", sock}, &stdout, &stderr); code != 0 {
				t.Fatalf("exit status %d: %s", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("status output lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, n := range tc.not {
				if strings.Contains(stdout.String(), n) {
					t.Errorf("status output has %q:\n%s", n, stdout.String())
				}
			}
		})
	}
}
