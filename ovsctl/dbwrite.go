package ovsctl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/ovn-kubernetes/libovsdb/model"
	"github.com/ovn-kubernetes/libovsdb/ovsdb"
)

// EnsureInternalPort makes sure bridge has a port called name backed by an
// internal interface of the same name. If the port is missing it inserts
// the Interface (type=internal) and Port rows and adds the port to
// Bridge.ports in one transaction (RFC 7047 section 5.2.1 "insert" with
// "named-uuid" references, section 5.2.4 "mutate"), so no half-made port is
// ever visible. If a port called name is already on bridge it does nothing,
// whatever its type; if it is on another bridge it fails. ovs-vswitchd
// assigns the OpenFlow port number afterwards: watch Events for the Updated
// event that carries it.
//
// While disconnected it fails at once with an error wrapping
// ErrNotConnected; if the connection is lost during the transaction it
// fails the same way within about 100 ms, and whether the port was created
// is then unknown until Reconnected.
func (d *DB) EnsureInternalPort(ctx context.Context, bridge, name string) error {
	ports, bridges := d.cacheTable(tablePort), d.cacheTable(tableBridge)
	if !d.isConnected() || ports == nil || bridges == nil {
		return fmt.Errorf("ovsctl: add internal port %q to bridge %q: %w", name, bridge, ErrNotConnected)
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
// While disconnected it fails like EnsureInternalPort.
func (d *DB) SetExternalIDs(ctx context.Context, iface string, set map[string]string, del []string) error {
	if len(set) == 0 && len(del) == 0 {
		return nil
	}
	if !d.isConnected() || d.cacheTable(tableInterface) == nil {
		return fmt.Errorf("ovsctl: set external_ids on interface %q: %w", iface, ErrNotConnected)
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
// With reconnection enabled libovsdb would hold a transaction until the
// server is back; it is cut short when the connection is seen lost.
func (d *DB) transact(ctx context.Context, ops []ovsdb.Operation) error {
	d.mu.Lock()
	lost := d.lost
	d.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			cancel()
		case <-d.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	res, err := d.cli.Transact(ctx, ops...)
	if err != nil {
		if errors.Is(err, client.ErrNotConnected) || isClosed(lost) || isClosed(d.closing) {
			return fmt.Errorf("%w: %v", ErrNotConnected, err)
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
