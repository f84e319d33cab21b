package qemu

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeGuestShell plays the guest's sh: it answers `echo @@"X"` and
// `echo @@"X" $?` the way sh would, "fail" exits with status 3, "silent"
// prints nothing, and any other line is printed back as "out: LINE". The
// first drop lines are ignored, as the guest loses input before its shell
// runs.
func fakeGuestShell(conn net.Conn, drop int) {
	r := bufio.NewReader(conn)
	status := 0
	marker := regexp.MustCompile(`^echo @@"([A-Z][0-9]+)"( \$\?)?$`)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if drop > 0 {
			drop--
			continue
		}
		var out string
		switch m := marker.FindStringSubmatch(line); {
		case m != nil && m[2] != "":
			out = fmt.Sprintf("@@%s %d\n", m[1], status)
		case m != nil:
			out = "@@" + m[1] + "\n"
		case line == "fail":
			status, out = 3, "failing\n"
		case line == "silent":
			status = 0
		default:
			status, out = 0, "out: "+line+"\n"
		}
		if _, err := conn.Write([]byte(out)); err != nil {
			return
		}
	}
}

func TestShell(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	go fakeGuestShell(server, 2)
	sh := newShell(client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		cmd        string
		wantOut    string
		wantStatus int
	}{
		{"hello", "out: hello\n", 0},
		{"fail", "failing\n", 3},
		{"silent", "", 0},
		{"again", "out: again\n", 0},
	}
	for _, tt := range tests {
		out, status, err := sh.run(ctx, tt.cmd)
		if err != nil {
			t.Fatalf("run(%q): %v", tt.cmd, err)
		}
		if out != tt.wantOut || status != tt.wantStatus {
			t.Errorf("run(%q) = %q, %d; want %q, %d", tt.cmd, out, status, tt.wantOut, tt.wantStatus)
		}
	}
}

func TestShellNoAnswer(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	go func() { // reads everything, answers nothing
		b := make([]byte, 512)
		for {
			if _, err := server.Read(b); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, _, err := newShell(client).run(ctx, "hello"); err == nil {
		t.Error("got run against a silent guest = nil error, want one")
	}
}

func TestConsole(t *testing.T) {
	c := newConsole()
	r, w := net.Pipe()
	done := make(chan struct{})
	go func() { c.run(r, nil); close(done) }()
	for _, l := range []string{"[    1.0] booting\r", "kgs-guest ready mac=x", "hb 0 1.50", "hb 1 1.60", "hb 2 1.70", "BUG: kernel NULL pointer dereference", "hb 3 1.80"} {
		fmt.Fprintln(w, l)
	}
	w.Close()
	<-done
	vm := &VM{con: c}
	var got []Heartbeat
	for _, hb := range vm.Heartbeats() {
		got = append(got, Heartbeat{N: hb.N, Uptime: hb.Uptime})
	}
	want := []Heartbeat{{N: 0, Uptime: 1.5}, {N: 1, Uptime: 1.6}, {N: 2, Uptime: 1.7}, {N: 3, Uptime: 1.8}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("heartbeats (-want +got):\n%s", diff)
	}
	if !c.wait(nil, func() bool { return !c.ready.IsZero() }) {
		t.Error("ready line not noticed")
	}
	lines := vm.Console()
	if lines[0].Text != "[    1.0] booting" {
		t.Errorf("got first line = %q, want the CR stripped", lines[0].Text)
	}
	s := vm.ConsoleSummary()
	for _, want := range []string{"booting", "hb 0 1.50 .. ", "hb 2 1.70 (3 heartbeat lines)", "BUG: kernel", "hb 3 1.80\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if got := vm.Crash(); !strings.HasPrefix(got, "BUG: kernel") {
		t.Errorf("got Crash() = %q, want the BUG line", got)
	}
}

func TestLoadOrder(t *testing.T) {
	deps := map[string][]string{
		"virtio_net":            {"net_failover", "virtio", "virtio_ring"},
		"net_failover":          {"failover"},
		"failover":              nil,
		"virtio":                nil,
		"virtio_ring":           nil,
		"virtio_pci":            {"virtio_pci_modern_dev", "virtio", "virtio_ring"},
		"virtio_pci_modern_dev": nil,
		"loop_a":                {"loop_b"},
		"loop_b":                {"loop_a"},
	}
	lookup := func(m string) ([]string, error) {
		d, ok := deps[m]
		if !ok {
			return nil, fmt.Errorf("unknown module %s", m)
		}
		return d, nil
	}
	got, err := loadOrder([]string{"virtio_pci", "virtio_net"}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"virtio_pci_modern_dev", "virtio", "virtio_ring", "virtio_pci", "failover", "net_failover", "virtio_net"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("load order (-want +got):\n%s", diff)
	}
	if _, err := loadOrder([]string{"loop_a"}, lookup); err == nil {
		t.Error("got loadOrder of a cycle = nil error, want one")
	}
	if _, err := loadOrder([]string{"missing"}, lookup); err == nil {
		t.Error("got loadOrder of an unknown module = nil error, want one")
	}
}

func TestParseModinfoDepends(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"license=GPL\x00depends=virtio,net_failover,virtio_ring\x00name=virtio_net\x00", []string{"virtio", "net_failover", "virtio_ring"}},
		{"depends=\x00name=failover\x00", nil},
		{"name=x\x00", nil},
		{"depends=snd-pcm\x00", []string{"snd_pcm"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, parseModinfoDepends([]byte(tt.in))); diff != "" {
			t.Errorf("parseModinfoDepends(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestLessKernel(t *testing.T) {
	names := []string{
		"linux-image-6.1.0-100-cloud-amd64",
		"linux-image-6.1.0-56-cloud-amd64-unsigned",
		"linux-image-6.1.0-9-cloud-amd64",
		"linux-image-6.1.0-56-cloud-amd64",
		"linux-image-6.12.0-1-cloud-amd64",
	}
	want := []string{
		"linux-image-6.1.0-9-cloud-amd64",
		"linux-image-6.1.0-56-cloud-amd64",
		"linux-image-6.1.0-56-cloud-amd64-unsigned",
		"linux-image-6.1.0-100-cloud-amd64",
		"linux-image-6.12.0-1-cloud-amd64",
	}
	got := append([]string(nil), names...)
	for i := range got { // insertion sort with lessKernel
		for j := i; j > 0 && lessKernel(got[j], got[j-1]); j-- {
			got[j], got[j-1] = got[j-1], got[j]
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	for _, n := range names {
		if !cloudKernelRe.MatchString(n) {
			t.Errorf("cloudKernelRe does not match %q", n)
		}
	}
	if cloudKernelRe.MatchString("linux-image-cloud-amd64") {
		t.Error("cloudKernelRe matches the meta-package")
	}
}

func TestKernelConfig(t *testing.T) {
	cfg := []byte("# comment\nCONFIG_VIRTIO=m\nCONFIG_VIRTIO_PCI=y\n# CONFIG_FOO is not set\nCONFIG_NAME=\"cloud\"\n")
	for sym, want := range map[string]string{"CONFIG_VIRTIO": "m", "CONFIG_VIRTIO_PCI": "y", "CONFIG_FOO": "", "CONFIG_NAME": "cloud", "CONFIG_VIRT": ""} {
		if got := kernelConfig(cfg, sym); got != want {
			t.Errorf("kernelConfig(%s) = %q, want %q", sym, got, want)
		}
	}
}

// TestFibRoutes keeps the routes of the routing table and drops the route
// exception busybox's ip lists with them (here a path MTU learnt from the
// tunnel abroad, for cn).
func TestFibRoutes(t *testing.T) {
	routes := []string{
		"192.0.2.0/24 dev eth0 scope link src 192.0.2.10",
		"198.51.100.100 via 192.0.2.1 dev eth0",
		"default via 192.0.2.1 dev eth0",
	}
	const proc = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
		"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	got, err := fibRoutes(routes, proc)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{routes[0], routes[2]}; !slices.Equal(got, want) {
		t.Errorf("got fibRoutes = %q, want %q", got, want)
	}
	if _, err := fibRoutes(routes, proc+"eth0\tnothex\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"); err == nil {
		t.Error("got fibRoutes = nil error for a line that is not hex, want an error")
	}
}
