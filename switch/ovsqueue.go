package vswitch

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// ovsQueue applies what the control loop wants of OVS (flow sets by cookie,
// ports' no-flood bits, the external_ids mirror) on a goroutine of its own:
// an ovs-ofctl run takes 10-60 ms and OVSDB may not answer at all, and
// neither may hold up a Binding Update or a timer. Wishes are coalesced:
// only the latest flow set of a cookie and the latest keys of an interface
// are applied, so what OVS ends up with is always the control loop's latest
// view, in one bundle per round.
//
// Every wish gets a generation number; once a round has applied everything
// up to a generation, the control loop hears of it on applied, and waiters
// (wait) are woken.
type ovsQueue struct {
	// tables are the bridges' flow tables, by side; the uplink bridge's is
	// nil unless the uplink is on a bridge of its own (host layout 2).
	tables [numBridges]*tableState
	db     OVSDB
	log    *slog.Logger
	// applied delivers the newest generation applied; an older one not yet
	// received is replaced.
	applied chan uint64
	kick    chan struct{}

	mu        sync.Mutex
	sets      [numBridges]flowSets
	noFlood   map[string]bool
	ids       map[string]map[string]string // interface -> key -> value ("" deletes)
	idsFailed map[string]int               // interface -> failed rounds of its write in ids
	reconcile bool
	forgetAll bool // OVS lost its flows, or may have: apply every set again
	queued    uint64
	done      uint64
	doneCh    chan struct{} // closed and replaced when done moves
}

// bridgeSide names a bridge kgswitch keeps flows on. Cookies are per
// bridge: the same cookie on both names two different sets.
type bridgeSide int

const (
	// vmBridge is the bridge of the VM ports and kgs0: every VM's flows.
	vmBridge bridgeSide = iota
	// uplinkBridge is the uplink's bridge when it is not vmBridge (host
	// layout 2): what the care-of address receives that must reach kgs0
	// crosses to vmBridge there instead of going to the host.
	uplinkBridge
	numBridges
)

// tableState is, for the worker alone, what it knows of one bridge's flows.
type tableState struct {
	ft FlowTable
	// installed is every cookie the worker gave flows to: a flow of
	// kgswitch's cookie prefix outside it is a previous run's.
	installed map[uint64]bool
	// appliedSets are a cookie's flows as last applied (their text), so
	// that a wish for the same flows costs OVS nothing. A reload of
	// thousands of VMs mostly repeats what is there.
	appliedSets map[uint64]string
}

func newTableState(ft FlowTable) *tableState {
	return &tableState{ft: ft, installed: map[uint64]bool{}, appliedSets: map[uint64]string{}}
}

// maxBundle is the most cookies one bundle replaces: a round of thousands
// of changed VMs goes to OVS in several bundles, so no single ovs-ofctl run
// grows without bound and each failure costs one batch.
const maxBundle = 500

// newOVSQueue returns a queue for the VM bridge's flows and, when uplink
// is not nil, the uplink bridge's.
func newOVSQueue(flows, uplink FlowTable, db OVSDB, log *slog.Logger) *ovsQueue {
	q := &ovsQueue{db: db, log: log, applied: make(chan uint64, 1), kick: make(chan struct{}, 1),
		noFlood: map[string]bool{}, ids: map[string]map[string]string{},
		idsFailed: map[string]int{}, doneCh: make(chan struct{})}
	q.tables[vmBridge] = newTableState(flows)
	if uplink != nil {
		q.tables[uplinkBridge] = newTableState(uplink)
	}
	for b := range q.sets {
		q.sets[b] = flowSets{}
	}
	return q
}

// replace asks for the flows of each cookie in sets to be exactly those on
// the VM bridge.
func (q *ovsQueue) replace(sets flowSets) { q.replaceOn(vmBridge, sets) }

// replaceOn asks for the flows of each cookie in sets to be exactly those
// on bridge b; a bridge without a table takes no flows.
func (q *ovsQueue) replaceOn(b bridgeSide, sets flowSets) {
	q.mu.Lock()
	if q.tables[b] == nil {
		q.mu.Unlock()
		return
	}
	maps.Copy(q.sets[b], sets)
	q.wishLocked()
}

// forget asks for the next round to apply every flow set again, changed or
// not: ovs-vswitchd restarted, or the internal port was replaced.
func (q *ovsQueue) forget() {
	q.mu.Lock()
	q.forgetAll = true
	q.wishLocked()
}

// setNoFlood asks for a port's no-flood bit.
func (q *ovsQueue) setNoFlood(port string, on bool) {
	q.mu.Lock()
	q.noFlood[port] = on
	q.wishLocked()
}

// mirror asks for keys on an interface's external_ids; an empty value
// deletes the key.
func (q *ovsQueue) mirror(iface string, kv map[string]string) {
	q.mu.Lock()
	m := q.ids[iface]
	if m == nil {
		m = map[string]string{}
		q.ids[iface] = m
	}
	maps.Copy(m, kv)
	q.wishLocked()
}

// reconcileStale asks for the removal of kgswitch's flows that no VM asked
// for since this daemon started (a VM dropped while kgswitch was down).
func (q *ovsQueue) reconcileStale() {
	q.mu.Lock()
	q.reconcile = true
	q.wishLocked()
}

// wishLocked numbers a wish and wakes the worker; it unlocks q.mu.
func (q *ovsQueue) wishLocked() {
	q.queued++
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *ovsQueue) queuedGen() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued
}

func (q *ovsQueue) appliedGen() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.done
}

// wait returns once everything asked before it was called has been applied
// (or has failed, and was logged).
func (q *ovsQueue) wait(ctx context.Context) error {
	q.mu.Lock()
	gen := q.queued
	for q.done < gen {
		ch := q.doneCh
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
	}
	q.mu.Unlock()
	return nil
}

// run applies wishes until ctx ends.
func (q *ovsQueue) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.kick:
		}
		q.mu.Lock()
		sets, noFlood, ids, reconcile, gen := q.sets, q.noFlood, q.ids, q.reconcile, q.queued
		for _, t := range q.tables {
			if t != nil && q.forgetAll {
				clear(t.appliedSets)
			}
		}
		for b := range q.sets {
			q.sets[b] = flowSets{}
		}
		q.noFlood, q.ids, q.reconcile, q.forgetAll = map[string]bool{}, map[string]map[string]string{}, false, false
		q.mu.Unlock()

		q.apply(ctx, sets, noFlood, ids, reconcile)

		// The control loop hears of the round before any waiter wakes: a
		// waiter that then asks the loop something (a request) finds the
		// report taken, since the loop takes reports first.
		select {
		case <-q.applied:
		default:
		}
		q.applied <- gen
		q.mu.Lock()
		q.done = gen
		close(q.doneCh)
		q.doneCh = make(chan struct{})
		q.mu.Unlock()
	}
}

func (q *ovsQueue) apply(ctx context.Context, sets [numBridges]flowSets, noFlood map[string]bool, ids map[string]map[string]string, reconcile bool) {
	for b, t := range q.tables {
		if t != nil {
			q.applySets(t, sets[b])
		}
	}
	for port, on := range noFlood {
		// OpenFlow port state, not flows: ovs-vswitchd forgets it when it
		// restarts, so it is set again with the flows every time. Only
		// the VM bridge's ports have it.
		if err := q.tables[vmBridge].ft.SetNoFlood(port, on); err != nil {
			q.log.Error("keep LAN floods off a guest's port", "port", port, "err", err)
		}
	}
	if reconcile {
		for _, t := range q.tables {
			if t != nil {
				q.removeStale(t)
			}
		}
	}
	for iface, kv := range ids {
		set, del := map[string]string{}, []string{}
		for k, v := range kv {
			if v == "" {
				del = append(del, k)
			} else {
				set[k] = v
			}
		}
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := q.db.SetExternalIDs(c, iface, set, del)
		cancel()
		if err != nil {
			q.log.Debug("mirror state into external_ids", "port", iface, "err", err)
			q.retryMirror(iface, kv)
			continue
		}
		q.mu.Lock()
		delete(q.idsFailed, iface)
		q.mu.Unlock()
	}
}

// applySets gives OVS the flow sets that differ from what it was last given,
// at most maxBundle cookies per bundle.
func (q *ovsQueue) applySets(t *tableState, sets flowSets) {
	changed := make([]uint64, 0, len(sets))
	texts := make(map[uint64]string, len(sets))
	for c, fl := range sets {
		if len(fl) == 0 && !t.installed[c] {
			// Nothing of it in OVS (what a previous run left is
			// removeStale's): most VMs of a large host have no spoof
			// flows, and deleting them would double the bundles.
			continue
		}
		text := flowsText(fl)
		if prev, ok := t.appliedSets[c]; ok && prev == text {
			continue
		}
		changed = append(changed, c)
		texts[c] = text
	}
	slices.Sort(changed)
	for start := 0; start < len(changed); start += maxBundle {
		batch := flowSets{}
		for _, c := range changed[start:min(start+maxBundle, len(changed))] {
			batch[c] = sets[c]
		}
		if err := t.ft.ReplaceSets(batch); err != nil {
			q.log.Error("install flows", "cookies", len(batch), "err", err)
			for c := range batch {
				delete(t.appliedSets, c) // unknown now: given again next time
			}
			continue
		}
		for c, fl := range batch {
			t.installed[c] = len(fl) > 0
			t.appliedSets[c] = texts[c]
		}
	}
}

// mirrorRetries is how many more rounds a failed external_ids write is tried
// in: the interface may appear late in the database, or the write time out.
const mirrorRetries = 3

// retryMirror keeps a failed write for the next round, under any newer wish
// for the interface (whose keys win), unless it failed too often.
func (q *ovsQueue) retryMirror(iface string, kv map[string]string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.idsFailed[iface] >= mirrorRetries {
		delete(q.idsFailed, iface)
		return
	}
	q.idsFailed[iface]++
	merged := maps.Clone(kv)
	maps.Copy(merged, q.ids[iface])
	q.ids[iface] = merged
}

// removeStale removes flows a previous run installed that no VM needs any
// more. Flows without kgswitch's cookie prefix are never touched.
func (q *ovsQueue) removeStale(t *tableState) {
	stale, err := staleCookies(t.ft, t.installed)
	if err != nil {
		q.log.Warn("list kgswitch's flows", "err", err)
		return
	}
	if len(stale) == 0 {
		return
	}
	if err := t.ft.ReplaceSets(stale); err != nil {
		q.log.Warn("remove stale flows", "err", err)
		return
	}
	q.log.Info("removed flows left by a previous run", "cookies", len(stale))
}
