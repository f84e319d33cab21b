package ovsctl

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/google/go-cmp/cmp"
)

// fakeOfctl records ovs-ofctl invocations instead of running them.
type fakeOfctl struct {
	mu    sync.Mutex
	calls []string // "cmd arg arg ..." per call
	stdin []string // what each piped call read, "" for exec
	out   []byte   // what every call prints
	err   error    // what every call returns
}

func (f *fakeOfctl) exec(cmd string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, cmd+" "+strings.Join(args, " "))
	f.stdin = append(f.stdin, "")
	return f.out, f.err
}

func (f *fakeOfctl) pipe(stdin io.Reader, cmd string, args ...string) ([]byte, error) {
	b, err := io.ReadAll(stdin)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, cmd+" "+strings.Join(args, " "))
	f.stdin = append(f.stdin, string(b))
	return f.out, f.err
}

func newFakeFlows() (*Flows, *fakeOfctl) {
	// Real ovs-ofctl prints a reply header even for an empty dump; the
	// other commands ignore the output.
	fake := &fakeOfctl{out: []byte("OFPST_FLOW reply (OF1.4) (xid=0x2):")}
	return newFlows("unix:/run/x/br0.mgmt", nil, ovs.Exec(fake.exec), ovs.Pipe(fake.pipe)), fake
}

func TestReplaceIsOneBundle(t *testing.T) {
	f, fake := newFakeFlows()
	flows := []*ovs.Flow{
		{Priority: 100, InPort: 3, Actions: []ovs.Action{ovs.Normal()}},
		{Priority: 50, Protocol: ovs.ProtocolIPv6, Table: 1, Actions: []ovs.Action{ovs.Drop()}},
	}
	if err := f.Replace(Cookie|0x2a, flows); err != nil {
		t.Fatalf("Replace() = %v", err)
	}
	wantCalls := []string{"ovs-ofctl --bundle add-flow --protocols=OpenFlow14 unix:/run/x/br0.mgmt -"}
	if diff := cmp.Diff(wantCalls, fake.calls); diff != "" {
		t.Errorf("calls mismatch (-want +got):\n%s", diff)
	}
	wantStdin := []string{"delete cookie=0x6b6700000000002a/-1\n" +
		"add priority=100,in_port=3,table=0,idle_timeout=0,cookie=0x6b6700000000002a,actions=normal\n" +
		"add priority=50,ipv6,table=1,idle_timeout=0,cookie=0x6b6700000000002a,actions=drop\n"}
	if diff := cmp.Diff(wantStdin, fake.stdin); diff != "" {
		t.Errorf("bundle mismatch (-want +got):\n%s", diff)
	}
	if flows[0].Cookie != 0 {
		t.Errorf("got caller's Cookie = %#x, want 0 (unmodified)", flows[0].Cookie)
	}
}

func TestReplaceEmptyOnlyDeletes(t *testing.T) {
	f, fake := newFakeFlows()
	if err := f.Replace(Cookie, nil); err != nil {
		t.Fatalf("Replace(Cookie, nil) = %v", err)
	}
	if want := []string{"delete cookie=0x6b67000000000000/-1\n"}; !cmp.Equal(want, fake.stdin) {
		t.Errorf("got bundle %q, want %q", fake.stdin, want)
	}
}

func TestForeignCookieRefused(t *testing.T) {
	f, fake := newFakeFlows()
	for _, c := range []uint64{0, 0x1234, 0x6b66ffffffffffff, 0xffff000000000000} {
		if err := f.Replace(c, nil); !errors.Is(err, ErrForeignCookie) {
			t.Errorf("got Replace(%#x) = %v, want ErrForeignCookie", c, err)
		}
		if err := f.deleteCookie(c); !errors.Is(err, ErrForeignCookie) {
			t.Errorf("got Delete(%#x) = %v, want ErrForeignCookie", c, err)
		}
	}
	if len(fake.calls) != 0 {
		t.Errorf("got ovs-ofctl calls %q for foreign cookies, want none", fake.calls)
	}
}

func TestReplaceRejectsBadFlow(t *testing.T) {
	f, fake := newFakeFlows()
	err := f.Replace(Cookie|1, []*ovs.Flow{{Priority: 1}}) // no actions
	if err == nil {
		t.Errorf("got Replace(flow without actions) = nil, want error")
	}
	if err := f.Replace(Cookie|1, []*ovs.Flow{nil}); err == nil {
		t.Errorf("got Replace(nil flow) = nil, want error")
	}
	if len(fake.calls) != 0 {
		t.Errorf("got ovs-ofctl calls %q for invalid flows, want none", fake.calls)
	}
}

func TestFlowsCommands(t *testing.T) {
	tests := []struct {
		name string
		do   func(*Flows) error
		want string
	}{
		{"Delete", func(f *Flows) error { return f.deleteCookie(Cookie | 7) },
			"ovs-ofctl del-flows --protocols=OpenFlow14 unix:/run/x/br0.mgmt cookie=0x6b67000000000007/-1"},
		{"Dump masked", func(f *Flows) error { _, err := f.Dump(Cookie|5, CookieMask); return err },
			"ovs-ofctl dump-flows unix:/run/x/br0.mgmt --protocols=OpenFlow14 cookie=0x6b67000000000000/0xffff000000000000"},
		{"Dump all", func(f *Flows) error { _, err := f.Dump(0, 0); return err },
			"ovs-ofctl dump-flows unix:/run/x/br0.mgmt --protocols=OpenFlow14"},
		{"SetNoFlood on", func(f *Flows) error { return f.SetNoFlood("vm1", true) },
			"ovs-ofctl mod-port --protocols=OpenFlow10 unix:/run/x/br0.mgmt vm1 no-flood"},
		{"SetNoFlood off", func(f *Flows) error { return f.SetNoFlood("vm1", false) },
			"ovs-ofctl mod-port --protocols=OpenFlow10 unix:/run/x/br0.mgmt vm1 flood"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, fake := newFakeFlows()
			if err := tt.do(f); err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if len(fake.calls) != 1 || fake.calls[0] != tt.want {
				t.Errorf("got calls %q, want [%q]", fake.calls, tt.want)
			}
		})
	}
}

func TestDumpParses(t *testing.T) {
	f, fake := newFakeFlows()
	fake.out = []byte("OFPST_FLOW reply (OF1.4) (xid=0x2):\n" +
		" cookie=0x6b67000000000001, duration=1.5s, table=0, n_packets=0, n_bytes=0, idle_age=1, priority=100,in_port=3 actions=NORMAL\n" +
		" cookie=0x6b67000000000002, duration=1.5s, table=1, n_packets=4, n_bytes=400, idle_age=1, priority=5 actions=drop\n")
	got, err := f.Dump(Cookie, CookieMask)
	if err != nil {
		t.Fatalf("Dump() = %v", err)
	}
	if len(got) != 2 || got[0].Cookie != Cookie|1 || got[0].InPort != 3 || got[1].Table != 1 {
		t.Errorf("got %d flows %+v, want cookies 1 (in_port 3) and 2 (table 1)", len(got), got)
	}
}

func TestFlowsErrorsWrapped(t *testing.T) {
	f, fake := newFakeFlows()
	fake.err = errors.New("exit status 1")
	fake.out = []byte("ovs-ofctl: unix:/run/x/br0.mgmt: failed to connect to socket")
	for name, err := range map[string]error{
		"Replace":    f.Replace(Cookie, nil),
		"Delete":     f.deleteCookie(Cookie),
		"SetNoFlood": f.SetNoFlood("p", true),
	} {
		if err == nil || !strings.Contains(err.Error(), "br0.mgmt") {
			t.Errorf("got %s error %v, want one naming the target", name, err)
		}
	}
	if _, err := f.Dump(0, 0); err == nil {
		t.Errorf("got Dump error nil, want error")
	}
}

// newRawFakeFlows is newFakeFlows whose raw ovs-ofctl runs are recorded
// too.
func newRawFakeFlows() (*Flows, *fakeOfctl) {
	f, fake := newFakeFlows()
	f.ofctl = func(args ...string) ([]byte, error) { return fake.exec("ovs-ofctl", args...) }
	return f, fake
}

func TestCount(t *testing.T) {
	tests := []struct {
		name         string
		cookie, mask uint64
		out          string
		wantCall     string
		want         int
		wantErr      bool
	}{
		{
			name: "own cookies", cookie: Cookie | 5, mask: CookieMask,
			out:      "OFPST_AGGREGATE reply (OF1.4) (xid=0x2): packet_count=10 byte_count=600 flow_count=7\n",
			wantCall: "ovs-ofctl dump-aggregate --protocols=OpenFlow14 unix:/run/x/br0.mgmt cookie=0x6b67000000000000/0xffff000000000000",
			want:     7,
		},
		{
			name: "exact cookie", cookie: Cookie | 5, mask: ^uint64(0),
			out:      "OFPST_AGGREGATE reply (OF1.4) (xid=0x2): packet_count=0 byte_count=0 flow_count=0\n",
			wantCall: "ovs-ofctl dump-aggregate --protocols=OpenFlow14 unix:/run/x/br0.mgmt cookie=0x6b67000000000005/0xffffffffffffffff",
			want:     0,
		},
		{
			name: "every flow", mask: 0,
			out:      "OFPST_AGGREGATE reply (OF1.4) (xid=0x2): packet_count=0 byte_count=0 flow_count=1",
			wantCall: "ovs-ofctl dump-aggregate --protocols=OpenFlow14 unix:/run/x/br0.mgmt",
			want:     1,
		},
		{
			name: "no flow_count", mask: 0, out: "OFPST_AGGREGATE reply: packet_count=0",
			wantCall: "ovs-ofctl dump-aggregate --protocols=OpenFlow14 unix:/run/x/br0.mgmt", wantErr: true,
		},
		{
			name: "bad flow_count", mask: 0, out: "flow_count=-1",
			wantCall: "ovs-ofctl dump-aggregate --protocols=OpenFlow14 unix:/run/x/br0.mgmt", wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, fake := newRawFakeFlows()
			fake.out = []byte(tt.out)
			got, err := f.Count(tt.cookie, tt.mask)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got Count() = %d, %v, want %d, error %v", got, err, tt.want, tt.wantErr)
			}
			if len(fake.calls) != 1 || fake.calls[0] != tt.wantCall {
				t.Errorf("got calls %q, want [%q]", fake.calls, tt.wantCall)
			}
		})
	}
}

func TestCookies(t *testing.T) {
	f, fake := newRawFakeFlows()
	fake.out = []byte("OFPST_FLOW reply (OF1.4) (xid=0x2):\n" +
		" cookie=0x6b67000000000001, duration=1.5s, table=0, n_packets=0, n_bytes=0, idle_age=1, priority=100,in_port=3 actions=NORMAL\n" +
		" cookie=0x6b67000000000001, duration=1.5s, table=0, n_packets=0, n_bytes=0, priority=90,in_port=4 actions=output:3\n" +
		" cookie=0x6b67000000000002, duration=1.5s, table=1, n_packets=4, n_bytes=400, idle_age=1, priority=5 actions=learn(table=2,NXM_OF_ETH_DST[])\n" +
		" cookie=0x1234, duration=1s, table=0, n_packets=0, n_bytes=0, priority=5,arp actions=NORMAL\n")
	got, err := f.Cookies()
	if err != nil {
		t.Fatalf("Cookies() = %v", err)
	}
	want := map[uint64]int{Cookie | 1: 2, Cookie | 2: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Cookies() mismatch (-want +got):\n%s", diff)
	}
	wantCall := "ovs-ofctl dump-flows --protocols=OpenFlow14 unix:/run/x/br0.mgmt cookie=0x6b67000000000000/0xffff000000000000"
	if len(fake.calls) != 1 || fake.calls[0] != wantCall {
		t.Errorf("got calls %q, want [%q]", fake.calls, wantCall)
	}

	fake.out = []byte(" cookie=0xzz, priority=1 actions=drop\n")
	if _, err := f.Cookies(); err == nil {
		t.Errorf("got Cookies() error nil for a malformed cookie, want error")
	}
	fake.out, fake.err = []byte(""), errors.New("exit status 1: failed to connect")
	if _, err := f.Cookies(); err == nil || !strings.Contains(err.Error(), "br0.mgmt") {
		t.Errorf("got Cookies() error %v, want one naming the target", err)
	}
	if _, err := f.Count(Cookie, CookieMask); err == nil || !strings.Contains(err.Error(), "br0.mgmt") {
		t.Errorf("got Count() error %v, want one naming the target", err)
	}
}

// FuzzParseCookies: any dump-flows output must parse without panicking,
// and the counts of flow lines built from a parse must parse back equal.
func FuzzParseCookies(f *testing.F) {
	f.Add([]byte("OFPST_FLOW reply (OF1.4) (xid=0x2):\n cookie=0x6b67000000000001, duration=1.5s, table=0, priority=1 actions=drop\n"))
	f.Add([]byte("cookie=0x1 cookie=0x2\ncookie=18446744073709551615,"))
	f.Add([]byte("cookie=\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		got, err := parseCookies(out)
		if err != nil {
			return
		}
		var b strings.Builder
		for c, n := range got {
			if n <= 0 {
				t.Fatalf("got count %d for cookie %#x, want > 0", n, c)
			}
			for range n {
				fmt.Fprintf(&b, " cookie=%#x, duration=1s, table=0, priority=1 actions=drop\n", c)
			}
		}
		again, err := parseCookies([]byte(b.String()))
		if err != nil || !cmp.Equal(got, again) {
			t.Errorf("round trip: got %v, %v, want %v", again, err, got)
		}
	})
}

// FuzzParseFlowCount: any dump-aggregate output must parse without
// panicking, and a count printed back must parse equal.
func FuzzParseFlowCount(f *testing.F) {
	f.Add([]byte("OFPST_AGGREGATE reply (OF1.4) (xid=0x2): packet_count=0 byte_count=0 flow_count=3"))
	f.Add([]byte("flow_count="))
	f.Add([]byte("flow_count=99999999999999999999"))
	f.Fuzz(func(t *testing.T, out []byte) {
		n, err := parseFlowCount(out)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("got negative count %d", n)
		}
		again, err := parseFlowCount([]byte(fmt.Sprintf("packet_count=0 flow_count=%d", n)))
		if err != nil || again != n {
			t.Errorf("round trip: got %d, %v, want %d", again, err, n)
		}
	})
}
