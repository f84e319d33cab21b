package ovsctl

import (
	"errors"
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
		if err := f.Delete(c); !errors.Is(err, ErrForeignCookie) {
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
		{"Delete", func(f *Flows) error { return f.Delete(Cookie | 7) },
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
		"Delete":     f.Delete(Cookie),
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
