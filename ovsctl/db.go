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

	"github.com/go-logr/logr"
	"github.com/ovn-kubernetes/libovsdb/cache"
	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/ovn-kubernetes/libovsdb/model"
	"github.com/ovn-kubernetes/libovsdb/ovsdb"
)

// ErrNotConnected is returned by DB methods once the OVSDB connection is
// gone (closed, or lost: DB does not reconnect yet).
var ErrNotConnected = errors.New("ovsctl: not connected to ovsdb-server")

// DB is a connection to one ovsdb-server holding the Open_vSwitch database,
// with a live replica (RFC 7047 section 4.1.5 "monitor") of the rows
// kgswitch reads. All methods are safe for concurrent use.
type DB struct {
	log *slog.Logger
	cli client.Client
	q   *eventQueue

	// mu serialises reconcile so that Events reflect one linear history.
	mu sync.Mutex
	tr *tracker

	closing   chan struct{}
	closeOnce sync.Once
}

// Dial connects to the ovsdb-server at endpoint ("unix:/abs/path/db.sock"
// or "tcp:host:port"), starts monitoring the Open_vSwitch, Bridge, Port and
// Interface tables, and returns once the initial contents are replicated.
// Every Interface row present at that time is reported on Events as Added.
// A nil logger discards logs.
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
	cli, err := client.NewOVSDBClient(dbm, client.WithEndpoint(endpoint), client.WithLogger(&lg))
	if err != nil {
		return nil, fmt.Errorf("ovsctl: OVSDB client for %s: %w", endpoint, err)
	}
	if err := cli.Connect(ctx); err != nil {
		return nil, fmt.Errorf("ovsctl: connect to %s: %w", endpoint, err)
	}
	d := &DB{
		log:     logger,
		cli:     cli,
		q:       newEventQueue(),
		tr:      newTracker(),
		closing: make(chan struct{}),
	}
	go d.watchDisconnect(cli.DisconnectNotify())

	// The handler must be registered before the monitor so that no
	// notification slips between the initial dump and the first update.
	// It only learns which row changed; reconcile reads the row itself.
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
		client.WithTable(&i, &i.Name, &i.Type, &i.OFPort, &i.MACInUse, &i.ExternalIDs),
	)
	if _, err := cli.Monitor(ctx, mon); err != nil {
		d.Close()
		return nil, fmt.Errorf("ovsctl: monitor %s: %w", endpoint, err)
	}
	// The monitor reply is already in the cache, but libovsdb delivers the
	// matching cache events asynchronously; resync makes Interface rows
	// visible to Events before Dial returns.
	d.resync()
	logger.Debug("ovsdb connected", "endpoint", endpoint)
	return d, nil
}

// watchDisconnect ends Events when the connection drops without Close.
func (d *DB) watchDisconnect(disc <-chan struct{}) {
	select {
	case <-disc:
	case <-d.closing:
		return
	}
	select {
	case <-d.closing:
		return
	default:
	}
	d.log.Error("ovsdb connection lost; events end")
	d.q.end()
}

// reconcile compares the cached Interface row uuid with what Events last
// reported and queues the difference.
func (d *DB) reconcile(uuid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.cli.Cache()
	if c == nil {
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

// Events returns the channel of Interface changes. It is closed after Close,
// or once the connection is lost and the queued events were received. The
// channel is unbuffered but backed by an unbounded queue: a slow reader
// delays events, it never loses them.
func (d *DB) Events() <-chan Event {
	return d.q.out
}

// cacheTable returns the replica of table, or nil when disconnected.
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
func (d *DB) Interface(name string) (Interface, bool) {
	u, r, ok := d.findInterface(name)
	if !ok {
		return Interface{}, false
	}
	return interfaceFromRow(u, r), true
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
// (through the Port that lists it).
func (d *DB) BridgeOf(iface string) (string, bool) {
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

// EnsureInternalPort makes sure bridge has a port called name backed by an
// internal interface of the same name. If the port is missing it inserts
// the Interface (type=internal) and Port rows and adds the port to
// Bridge.ports in one transaction (RFC 7047 section 5.2.1 "insert" with
// "named-uuid" references, section 5.2.4 "mutate"), so no half-made port is
// ever visible. If a port called name is already on bridge it does nothing,
// whatever its type; if it is on another bridge it fails. ovs-vswitchd
// assigns the OpenFlow port number afterwards: watch Events for the Updated
// event that carries it.
func (d *DB) EnsureInternalPort(ctx context.Context, bridge, name string) error {
	ports, bridges := d.cacheTable(tablePort), d.cacheTable(tableBridge)
	if ports == nil || bridges == nil {
		return ErrNotConnected
	}
	for pu, m := range ports.RowsShallow() {
		if m.(*ovsPort).Name != name {
			continue
		}
		switch owner, ok := d.portBridge(pu); {
		case ok && owner == bridge:
			return nil
		case ok:
			return fmt.Errorf("ovsctl: port %q exists on bridge %q, not %q", name, owner, bridge)
		default:
			return fmt.Errorf("ovsctl: port %q exists but belongs to no bridge", name)
		}
	}
	var brUUID string
	for bu, m := range bridges.RowsShallow() {
		if m.(*ovsBridge).Name == bridge {
			brUUID = bu
			break
		}
	}
	if brUUID == "" {
		return fmt.Errorf("ovsctl: no bridge %q", bridge)
	}

	iface := &ovsInterface{UUID: namedUUIDInterface, Name: name, Type: interfaceInternal}
	port := &ovsPort{UUID: namedUUIDPort, Name: name, Interfaces: []string{namedUUIDInterface}}
	ops, err := d.cli.Create(iface)
	if err != nil {
		return fmt.Errorf("ovsctl: build insert of interface %q: %w", name, err)
	}
	portOps, err := d.cli.Create(port)
	if err != nil {
		return fmt.Errorf("ovsctl: build insert of port %q: %w", name, err)
	}
	ops = append(ops, portOps...)
	br := &ovsBridge{UUID: brUUID}
	mut, err := d.cli.Where(br).Mutate(br, model.Mutation{
		Field:   &br.Ports,
		Mutator: ovsdb.MutateOperationInsert,
		Value:   []string{namedUUIDPort},
	})
	if err != nil {
		return fmt.Errorf("ovsctl: build mutate of bridge %q: %w", bridge, err)
	}
	ops = append(ops, mut...)
	// A concurrent creator of the same name loses on the server's unique
	// index on Port.name and Interface.name; the whole transaction aborts.
	if err := d.transact(ctx, ops); err != nil {
		return fmt.Errorf("ovsctl: add internal port %q to bridge %q: %w", name, bridge, err)
	}
	d.log.Info("created internal port", "bridge", bridge, "port", name)
	return nil
}

// SetExternalIDs sets the keys in set and removes the keys in del from the
// external_ids column of the Interface row iface. It mutates the column
// (RFC 7047 section 5.1: "delete" by key set, then "insert" of the new
// pairs) in one transaction instead of rewriting it, so keys written by
// others (OpenStack, libvirt, ovn) survive even if they change concurrently.
func (d *DB) SetExternalIDs(ctx context.Context, iface string, set map[string]string, del []string) error {
	if len(set) == 0 && len(del) == 0 {
		return nil
	}
	if d.cacheTable(tableInterface) == nil {
		return ErrNotConnected
	}
	// "insert" into a map leaves existing keys alone, so keys being set are
	// deleted first.
	drop := slices.Concat(slices.Collect(maps.Keys(set)), del)
	slices.Sort(drop)
	drop = slices.Compact(drop)
	var row ovsInterface
	muts := []model.Mutation{{
		Field:   &row.ExternalIDs,
		Mutator: ovsdb.MutateOperationDelete,
		Value:   drop,
	}}
	if len(set) > 0 {
		muts = append(muts, model.Mutation{
			Field:   &row.ExternalIDs,
			Mutator: ovsdb.MutateOperationInsert,
			Value:   maps.Clone(set),
		})
	}
	ops, err := d.cli.WhereAll(&row, model.Condition{
		Field:    &row.Name,
		Function: ovsdb.ConditionEqual,
		Value:    iface,
	}).Mutate(&row, muts...)
	if err != nil {
		return fmt.Errorf("ovsctl: build external_ids mutation for %q: %w", iface, err)
	}
	if err := d.transact(ctx, ops); err != nil {
		return fmt.Errorf("ovsctl: set external_ids on interface %q: %w", iface, err)
	}
	return nil
}

// transact runs ops as one transaction and checks every result. Each
// mutate must have matched a row: OVSDB reports a mutate of zero rows as
// success, which for kgswitch means the target row is missing.
func (d *DB) transact(ctx context.Context, ops []ovsdb.Operation) error {
	res, err := d.cli.Transact(ctx, ops...)
	if err != nil {
		if errors.Is(err, client.ErrNotConnected) {
			return ErrNotConnected
		}
		return err
	}
	if _, err := ovsdb.CheckOperationResults(res, ops); err != nil {
		return err
	}
	for i, op := range ops {
		if op.Op == ovsdb.OperationMutate && res[i].Count == 0 {
			return fmt.Errorf("no %s row matched %v", op.Table, op.Where)
		}
	}
	return nil
}

// Close ends the connection and closes the Events channel. It is safe to
// call more than once.
func (d *DB) Close() {
	d.closeOnce.Do(func() {
		close(d.closing)
		d.cli.Close()
		d.q.abort()
	})
}
