package ovsctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/ovn-kubernetes/libovsdb/cache"
	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/ovn-kubernetes/libovsdb/model"
)

// ErrNotConnected is returned (wrapped) by DB writes while the OVSDB
// connection is down, and after Close.
var ErrNotConnected = errors.New("ovsctl: not connected to ovsdb-server")

// Reconnection timing. The poll interval bounds how late a lost connection
// is noticed (libovsdb, once told to reconnect, no longer reports
// disconnections); the backoff bounds how often a dead server is retried.
const (
	connPollInterval   = 100 * time.Millisecond
	reconnectFirst     = 100 * time.Millisecond
	reconnectMax       = 2 * time.Second
	reconnectTimeout   = 5 * time.Second
	closedEndpointPath = "unix:/nonexistent/ovsctl-closed.sock"
)

// A server that keeps the connection open but stops answering (stopped,
// wedged, or behind a dead TCP path) is found by an echo (RFC 7047 section
// 4.1.11) every probeInterval; no answer within probeTimeout drops the
// connection, which then reconnects like any other. Variables so that
// tests can shorten them. libovsdb's own WithInactivityCheck is not used:
// in v0.8.1 it closes a channel that transactions may still send on.
var (
	probeInterval = 15 * time.Second
	probeTimeout  = 5 * time.Second
)

// DB is a connection to one ovsdb-server holding the Open_vSwitch database,
// with a live replica (RFC 7047 section 4.1.5 "monitor") of the rows
// kgswitch reads. A lost connection is re-established with backoff and the
// replica resynchronised (see Disconnected and Reconnected). All methods
// are safe for concurrent use.
type DB struct {
	log *slog.Logger
	cli client.Client
	q   *queue[Event]

	// mu serialises reconcile and the connection state changes so that
	// Events reflect one linear history.
	mu sync.Mutex
	tr *tracker

	// connected is what Connected reports; it is only changed by the
	// watchConnection goroutine, with mu held.
	connected atomic.Bool
	// lost is closed when the current connection is found lost; writes
	// in flight give up then instead of waiting for the reconnection.
	lost chan struct{}
	// gen is the Interface table replica the current connection filled:
	// libovsdb replaces it when it repopulates the cache after
	// reconnecting, which reveals a reconnection too quick to be seen
	// as a disconnection.
	gen *cache.RowCache
	// snap holds the last known rows while disconnected, nil otherwise.
	snap atomic.Pointer[snapshot]

	closing   chan struct{}
	closeOnce sync.Once
}

// snapshot is the replica's content frozen at disconnection: libovsdb
// empties its cache before repopulating it on reconnection.
type snapshot struct {
	ifaces   map[string]Interface // by name
	bridgeOf map[string]string    // interface name to bridge name
}

// Dial connects to the ovsdb-server at endpoint ("unix:/abs/path/db.sock"
// or "tcp:host:port"), starts monitoring the Open_vSwitch, Bridge, Port and
// Interface tables, and returns once the initial contents are replicated.
// Every Interface row present at that time is reported on Events as Added.
// The first connection must succeed; later losses are survived: DB
// reconnects with exponential backoff (100 ms up to 2 s, forever), a server
// that stops answering echo requests (sent every 15 s) for 5 s is
// disconnected from, and each reconnection is reported as Disconnected,
// the row differences, then Reconnected. A nil logger discards logs.
func Dial(ctx context.Context, endpoint string, logger *slog.Logger) (*DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dbm, err := clientDBModel()
	if err != nil {
		return nil, fmt.Errorf("ovsctl: build OVSDB model: %w", err)
	}
	// libovsdb logs through logr; V(n) maps to slog level -n, so its
	// chatty V(3+) messages stay below slog's Info.
	lg := logr.FromSlogHandler(logger.Handler()).WithName("libovsdb")
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = reconnectFirst
	bo.MaxInterval = reconnectMax
	// libovsdb panics if its reconnection loop ever gives up.
	bo.MaxElapsedTime = 0
	cli, err := client.NewOVSDBClient(dbm, client.WithEndpoint(endpoint), client.WithLogger(&lg),
		client.WithReconnect(reconnectTimeout, bo))
	if err != nil {
		return nil, fmt.Errorf("ovsctl: OVSDB client for %s: %w", endpoint, err)
	}
	if err := cli.Connect(ctx); err != nil {
		return nil, fmt.Errorf("ovsctl: connect to %s: %w", endpoint, err)
	}
	d := &DB{
		log:     logger,
		cli:     cli,
		q:       newQueue[Event](),
		tr:      newTracker(),
		lost:    make(chan struct{}),
		closing: make(chan struct{}),
	}

	// The handler must be registered before the monitor so that no
	// notification slips between the initial dump and the first update.
	// It only learns which row changed; reconcile reads the row itself.
	// libovsdb keeps handlers across reconnections.
	onChange := func(table string, m model.Model) {
		if r, ok := m.(*ovsInterface); ok && table == tableInterface {
			d.reconcile(r.UUID)
		}
	}
	cli.Cache().AddEventHandler(&cache.EventHandlerFuncs{
		AddFunc:    onChange,
		UpdateFunc: func(table string, _, m model.Model) { onChange(table, m) },
		DeleteFunc: onChange,
	})

	// Restricting the columns keeps ovs-vswitchd's periodic statistics
	// updates (Interface.statistics every 5 s) off the wire.
	var (
		o ovsOpenVSwitch
		b ovsBridge
		p ovsPort
		i ovsInterface
	)
	mon := cli.NewMonitor(
		client.WithTable(&o, &o.Bridges),
		client.WithTable(&b, &b.Name, &b.Ports),
		client.WithTable(&p, &p.Name, &p.Interfaces),
		client.WithTable(&i, &i.Name, &i.Type, &i.OFPort, &i.MACInUse, &i.ExternalIDs, &i.IfIndex, &i.LinkState, &i.Options),
	)
	if _, err := cli.Monitor(ctx, mon); err != nil {
		d.Close()
		return nil, fmt.Errorf("ovsctl: monitor %s: %w", endpoint, err)
	}
	d.gen = d.interfaceCache()
	d.connected.Store(true)
	// The monitor reply is already in the cache, but libovsdb delivers the
	// matching cache events asynchronously; resync makes Interface rows
	// visible to Events before Dial returns.
	d.resync()
	go d.watchConnection()
	go d.probe()
	logger.Debug("ovsdb connected", "endpoint", endpoint)
	return d, nil
}

// isConnected reports whether DB is connected to ovsdb-server and its
// replica is current. It turns false at most about 100 ms after the
// connection is lost, with a Disconnected event.
func (d *DB) isConnected() bool {
	return d.connected.Load()
}

// interfaceCache returns the Interface table replica, nil before the
// first connection.
func (d *DB) interfaceCache() *cache.RowCache {
	return d.cacheTable(tableInterface)
}

// watchConnection follows the state of libovsdb's connection, which with
// reconnection enabled is only visible as the current endpoint being
// empty while disconnected, and reports changes.
func (d *DB) watchConnection() {
	t := time.NewTicker(connPollInterval)
	defer t.Stop()
	for {
		select {
		case <-d.closing:
			return
		case <-t.C:
		}
		// CurrentEndpoint waits while libovsdb holds its connection
		// lock, i.e. until a reconnection attempt has finished
		// (including the re-monitor), so "" means disconnected and
		// anything else means connected with a repopulated cache.
		// libovsdb's Connected turns false only when the connection is
		// dropped on purpose (probe), but then at once.
		up := d.cli.CurrentEndpoint() != "" && d.cli.Connected()
		select {
		case <-d.closing:
			return
		default:
		}
		switch was := d.connected.Load(); {
		case was && !up:
			if !d.markDown(false) {
				// The cache was already being repopulated.
				d.markUp()
			}
		case !was && up:
			d.markUp()
		case was && up && d.interfaceCache() != d.gen:
			// Lost and regained between two polls.
			d.markDown(true)
			d.markUp()
		}
	}
}

// probe echoes the server while connected and drops a connection that
// does not answer, so that libovsdb reconnects.
func (d *DB) probe() {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-d.closing:
			return
		case <-t.C:
		}
		if !d.isConnected() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		err := d.cli.Echo(ctx)
		cancel()
		if err != nil && d.isConnected() && !isClosed(d.closing) {
			d.log.Warn("ovsdb-server does not answer echo; reconnecting", "err", err)
			// Reported here: the watcher cannot see it while a
			// reconnection attempt waits on the silent server.
			if d.markDown(false) {
				d.cli.Disconnect()
			}
		}
	}
}

// markDown freezes the replica, fails pending writes and reports
// Disconnected, unless already done. Unless reconnected is set (the caller
// knows and calls markUp next), it reports false, doing nothing, when the
// replica was already replaced by a reconnection: the frozen copy could be
// a half-filled one.
func (d *DB) markDown(reconnected bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.connected.Load() {
		return true
	}
	snap := d.snapshotRows()
	if d.interfaceCache() != d.gen && !reconnected {
		return false
	}
	d.snap.Store(snap)
	d.connected.Store(false)
	close(d.lost)
	d.q.push(Event{Kind: Disconnected})
	d.log.Warn("ovsdb connection lost; reconnecting")
	return true
}

// markUp reports what changed while disconnected, then Reconnected.
func (d *DB) markUp() {
	d.mu.Lock()
	if !d.connected.Load() {
		d.gen = d.interfaceCache()
		d.lost = make(chan struct{})
		d.snap.Store(nil)
		d.connected.Store(true)
	} else {
		d.gen = d.interfaceCache()
	}
	d.mu.Unlock()
	d.resync()
	d.q.push(Event{Kind: Reconnected})
	d.log.Info("ovsdb connection re-established")
}

// snapshotRows copies the replica into a snapshot.
func (d *DB) snapshotRows() *snapshot {
	s := &snapshot{
		ifaces:   make(map[string]Interface),
		bridgeOf: make(map[string]string),
	}
	it, pt, bt := d.cacheTable(tableInterface), d.cacheTable(tablePort), d.cacheTable(tableBridge)
	if it == nil || pt == nil || bt == nil {
		return s
	}
	ifaceName := make(map[string]string)
	for u, m := range it.RowsShallow() {
		r := m.(*ovsInterface)
		s.ifaces[r.Name] = interfaceFromRow(u, r)
		ifaceName[u] = r.Name
	}
	portBridge := make(map[string]string)
	for _, m := range bt.RowsShallow() {
		b := m.(*ovsBridge)
		for _, pu := range b.Ports {
			portBridge[pu] = b.Name
		}
	}
	for pu, m := range pt.RowsShallow() {
		p := m.(*ovsPort)
		br, ok := portBridge[pu]
		if !ok {
			continue
		}
		for _, iu := range p.Interfaces {
			if n, ok := ifaceName[iu]; ok {
				s.bridgeOf[n] = br
			}
		}
	}
	return s
}

// reconcile compares the cached Interface row uuid with what Events last
// reported and queues the difference.
// While disconnected it does nothing: the cache may be half repopulated,
// and markUp resyncs every row anyway.
func (d *DB) reconcile(uuid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.cli.Cache()
	if c == nil || !d.connected.Load() {
		return
	}
	var row *ovsInterface
	if m := c.Table(tableInterface).Row(uuid); m != nil {
		row = m.(*ovsInterface)
	}
	if ev, ok := d.tr.reconcile(uuid, row); ok {
		d.q.push(ev)
	}
}

// resync reconciles every Interface row that is cached or was reported.
func (d *DB) resync() {
	d.mu.Lock()
	c := d.cli.Cache()
	if c == nil {
		d.mu.Unlock()
		return
	}
	rows := c.Table(tableInterface).RowsShallow()
	uuids := slices.Collect(maps.Keys(rows))
	for u := range d.tr.known {
		if _, ok := rows[u]; !ok {
			uuids = append(uuids, u)
		}
	}
	d.mu.Unlock()
	// Sorting by name makes the initial Added burst deterministic.
	name := func(u string) string {
		if r, ok := rows[u].(*ovsInterface); ok {
			return r.Name
		}
		return ""
	}
	sort.Slice(uuids, func(a, b int) bool { return name(uuids[a]) < name(uuids[b]) })
	for _, u := range uuids {
		d.reconcile(u)
	}
}

// Events returns the channel of Interface changes and connection state
// changes (Disconnected, Reconnected; consumers must ignore kinds they do
// not know). It stays open across reconnections and is closed by Close.
// The channel is unbuffered but backed by an unbounded queue: a slow reader
// delays events, it never loses them.
func (d *DB) Events() <-chan Event {
	return d.q.out
}

// cacheTable returns the live replica of table, nil before the first
// connection. While reconnecting it may be momentarily empty: readers
// that answer callers use the snapshot instead.
func (d *DB) cacheTable(table string) *cache.RowCache {
	c := d.cli.Cache()
	if c == nil {
		return nil
	}
	return c.Table(table)
}

// findInterface returns the cached Interface row called name.
func (d *DB) findInterface(name string) (string, *ovsInterface, bool) {
	t := d.cacheTable(tableInterface)
	if t == nil {
		return "", nil, false
	}
	for u, m := range t.RowsShallow() {
		if r := m.(*ovsInterface); r.Name == name {
			return u, r, true
		}
	}
	return "", nil, false
}

// Interface returns the current contents of the Interface row called name.
// While disconnected it answers from the contents last known.
func (d *DB) Interface(name string) (Interface, bool) {
	if s := d.snap.Load(); s != nil {
		ifc, ok := s.ifaces[name]
		return cloneInterface(ifc), ok
	}
	u, r, ok := d.findInterface(name)
	if !ok {
		return Interface{}, false
	}
	return interfaceFromRow(u, r), true
}

// Interfaces returns every Interface row, sorted by name; while disconnected,
// as last known.
func (d *DB) Interfaces() []Interface {
	var out []Interface
	if s := d.snap.Load(); s != nil {
		for _, ifc := range s.ifaces {
			out = append(out, cloneInterface(ifc))
		}
	} else if t := d.cacheTable(tableInterface); t != nil {
		for u, m := range t.RowsShallow() {
			out = append(out, interfaceFromRow(u, m.(*ovsInterface)))
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// portBridge returns the name of the Bridge whose ports include portUUID.
func (d *DB) portBridge(portUUID string) (string, bool) {
	t := d.cacheTable(tableBridge)
	if t == nil {
		return "", false
	}
	for _, m := range t.RowsShallow() {
		if b := m.(*ovsBridge); slices.Contains(b.Ports, portUUID) {
			return b.Name, true
		}
	}
	return "", false
}

// BridgeOf returns the name of the bridge that holds the interface iface
// (through the Port that lists it). While disconnected it answers from the
// contents last known.
func (d *DB) BridgeOf(iface string) (string, bool) {
	if s := d.snap.Load(); s != nil {
		br, ok := s.bridgeOf[iface]
		return br, ok
	}
	iu, _, ok := d.findInterface(iface)
	if !ok {
		return "", false
	}
	t := d.cacheTable(tablePort)
	if t == nil {
		return "", false
	}
	for pu, m := range t.RowsShallow() {
		if p := m.(*ovsPort); slices.Contains(p.Interfaces, iu) {
			return d.portBridge(pu)
		}
	}
	return "", false
}

// Close ends the connection and closes the Events channel. It is safe to
// call more than once.
func (d *DB) Close() {
	d.closeOnce.Do(func() {
		close(d.closing)
		d.connected.Store(false)
		d.cli.Close()
		// libovsdb's Close does nothing while it is between
		// reconnection attempts, and its retry loop cannot be stopped;
		// an endpoint that never answers keeps that loop from bringing
		// a closed DB back to life.
		d.cli.UpdateEndpoints([]string{closedEndpointPath})
		d.q.abort()
	})
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// cloneInterface returns a copy of ifc that shares no memory with it.
func cloneInterface(ifc Interface) Interface {
	ifc.MAC = slices.Clone(ifc.MAC)
	ifc.ExternalIDs = maps.Clone(ifc.ExternalIDs)
	return ifc
}
