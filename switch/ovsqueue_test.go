package vswitch

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"

	"github.com/digitalocean/go-openvswitch/ovs"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// countingFlows is a FlowTable that counts bundles and can fail them.
type countingFlows struct {
	fakeFlows
	bundles []int // cookies per bundle
	fail    bool
}

func (f *countingFlows) ReplaceSets(sets map[uint64][]*ovs.Flow) error {
	f.mu.Lock()
	f.bundles = append(f.bundles, len(sets))
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return errors.New("ovs-ofctl failed")
	}
	return f.fakeFlows.ReplaceSets(sets)
}

// round hands q sets and waits until they are applied.
func round(t *testing.T, q *ovsQueue, sets flowSets) {
	t.Helper()
	q.replace(sets)
	if err := q.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// OVS is given only the flow sets that changed, in bundles of at most
// maxBundle cookies; after a failure or a forget, everything again.
func TestOVSQueueAppliesChangesOnly(t *testing.T) {
	ft := &countingFlows{fakeFlows: fakeFlows{flows: map[uint64][]*ovs.Flow{}, noFlood: map[string]bool{}}}
	q := newOVSQueue(ft, nil, &fakeDB{ifaces: map[string]ovsctl.Interface{}}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.run(ctx)

	const n = 1200
	sets := flowSets{}
	for i := range uint64(n) {
		sets[0x6b67000000000000|i+1] = []*ovs.Flow{{Priority: 100, InPort: int(i + 1), Actions: []ovs.Action{ovs.Drop()}}}
	}
	round(t, q, sets)
	if want := []int{500, 500, 200}; !slices.Equal(ft.bundles, want) {
		t.Fatalf("got bundles of %v cookies, want %v", ft.bundles, want)
	}
	// The same again: nothing to do.
	round(t, q, sets)
	if len(ft.bundles) != 3 {
		t.Fatalf("got %d more bundles for unchanged flows, want none", len(ft.bundles)-3)
	}
	// One changed: one bundle of one.
	one := flowSets{0x6b67000000000001: []*ovs.Flow{{Priority: 100, InPort: 7, Actions: []ovs.Action{ovs.Drop()}}}}
	round(t, q, one)
	if got := ft.bundles[len(ft.bundles)-1]; len(ft.bundles) != 4 || got != 1 {
		t.Fatalf("got bundles %v, want one more of 1 cookie", ft.bundles)
	}
	// A failed bundle is given again next time, though unchanged.
	ft.fail = true
	changed := flowSets{0x6b67000000000002: nil}
	round(t, q, changed)
	ft.fail = false
	round(t, q, changed)
	if got := ft.bundles[len(ft.bundles)-1]; len(ft.bundles) != 6 || got != 1 {
		t.Fatalf("got bundles %v, want the failed one again", ft.bundles)
	}
	// After forget (ovs-vswitchd restarted), everything asked for is given.
	q.forget()
	round(t, q, sets)
	if got := ft.bundles[len(ft.bundles)-3:]; !slices.Equal(got, []int{500, 500, 200}) {
		t.Fatalf("got bundles %v after forget, want all %d cookies again", ft.bundles, n)
	}
}

// An empty flow set for a cookie that has no flows in OVS (most VMs' spoof
// cookies) costs no bundle; one that had flows is emptied once.
func TestOVSQueueSkipsEmptyingWhatIsEmpty(t *testing.T) {
	ft := &countingFlows{fakeFlows: fakeFlows{flows: map[uint64][]*ovs.Flow{}, noFlood: map[string]bool{}}}
	q := newOVSQueue(ft, nil, &fakeDB{ifaces: map[string]ovsctl.Interface{}}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.run(ctx)

	const c = 0x6b67000000000001
	round(t, q, flowSets{c: nil, c + 1: nil})
	if len(ft.bundles) != 0 {
		t.Fatalf("got bundles %v for cookies that never had flows, want none", ft.bundles)
	}
	round(t, q, flowSets{c: []*ovs.Flow{{Priority: 100, InPort: 1, Actions: []ovs.Action{ovs.Drop()}}}, c + 1: nil})
	round(t, q, flowSets{c: nil, c + 1: nil})
	if !slices.Equal(ft.bundles, []int{1, 1}) {
		t.Fatalf("got bundles %v, want one to install cookie %#x and one to empty it", ft.bundles, uint64(c))
	}
	if fl := ft.flows[c]; len(fl) != 0 {
		t.Fatalf("cookie %#x still has %d flows", uint64(c), len(fl))
	}
	round(t, q, flowSets{c: nil})
	if len(ft.bundles) != 2 {
		t.Fatalf("got bundles %v, want none to empty cookie %#x again", ft.bundles, uint64(c))
	}
}
