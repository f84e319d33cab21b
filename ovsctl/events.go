package ovsctl

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"sync"
)

// Interface is kgswitch's view of one row of the OVSDB Interface table.
type Interface struct {
	// UUID is the row's _uuid; a port deleted and re-added under the same
	// name gets a new one.
	UUID string
	// Name is the interface name, unique per database.
	Name string
	// Type is the OVS interface type: "" for a system device, "internal",
	// "patch", "tap" and so on.
	Type string
	// OFPort is the OpenFlow port number; 0 while ovs-vswitchd has not
	// assigned one yet and -1 if it failed to.
	OFPort int
	// MAC is mac_in_use, the Ethernet address the port actually uses; nil
	// until ovs-vswitchd reports one.
	MAC net.HardwareAddr
	// ExternalIDs is a copy of the external_ids column.
	ExternalIDs map[string]string
	// IfIndex is the Linux interface index of the device behind the
	// port (the ifindex column); 0 when unknown or not a Linux device.
	IfIndex int
	// LinkUp reports whether link_state is "up". A persistent tap (as
	// libvirt makes them) stays on the bridge when QEMU quits; only its
	// link goes down.
	LinkUp bool
	// Peer is options:peer, the other end of a patch port (Type "patch");
	// "" for other types.
	Peer string
}

// equal reports whether a and b describe the same row contents.
func (a Interface) equal(b Interface) bool {
	return a.UUID == b.UUID && a.Name == b.Name && a.Type == b.Type &&
		a.OFPort == b.OFPort && bytes.Equal(a.MAC, b.MAC) &&
		maps.Equal(a.ExternalIDs, b.ExternalIDs) &&
		a.IfIndex == b.IfIndex && a.LinkUp == b.LinkUp && a.Peer == b.Peer
}

// interfaceFromRow converts a cached row into an Interface that shares no
// memory with the cache.
func interfaceFromRow(uuid string, r *ovsInterface) Interface {
	ifc := Interface{UUID: uuid, Name: r.Name, Type: r.Type}
	if r.OFPort != nil {
		ifc.OFPort = *r.OFPort
	}
	if r.MACInUse != nil {
		// A malformed mac_in_use is treated like a missing one: the
		// column is informational and ovs-vswitchd rewrites it.
		if mac, err := net.ParseMAC(*r.MACInUse); err == nil {
			ifc.MAC = mac
		}
	}
	if len(r.ExternalIDs) > 0 {
		ifc.ExternalIDs = maps.Clone(r.ExternalIDs)
	}
	if r.IfIndex != nil {
		ifc.IfIndex = *r.IfIndex
	}
	ifc.LinkUp = r.LinkState != nil && *r.LinkState == "up"
	ifc.Peer = r.Options["peer"]
	return ifc
}

// EventKind says what happened to an Interface row, or to the connection
// that reports them. More kinds may be added: consumers must ignore kinds
// they do not know.
type EventKind int

// The kinds of Event.
const (
	// Added means the row appeared, or was present when DB connected.
	Added EventKind = iota + 1
	// Updated means a column kgswitch reads changed, e.g. ofport being
	// assigned or external_ids edited.
	Updated
	// Removed means the row is gone; Event.Iface holds its last contents.
	Removed
	// Disconnected means the connection to ovsdb-server was lost. DB
	// keeps reconnecting with backoff; meanwhile Interface and BridgeOf
	// answer from the last known contents and writes fail with
	// ErrNotConnected. Event.Iface is empty.
	Disconnected
	// Reconnected means the connection is back and the database was
	// monitored again. The Added, Updated and Removed events queued
	// before it brought the consumer's view up to date with whatever
	// changed while disconnected, so this is the moment to redo writes
	// that failed. Event.Iface is empty.
	Reconnected
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case Added:
		return "Added"
	case Updated:
		return "Updated"
	case Removed:
		return "Removed"
	case Disconnected:
		return "Disconnected"
	case Reconnected:
		return "Reconnected"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change to the Interface table, as seen after it happened,
// or a change of the connection (Disconnected, Reconnected).
type Event struct {
	Kind  EventKind
	Iface Interface
}

// tracker turns "row uuid may have changed, here is its current contents"
// into Events. Working from current contents rather than from the old/new
// pair of an update means that duplicated or reordered notifications (the
// initial dump racing with the first updates, or a cache repopulated after
// a reconnect) still yield exactly one Added, then Updated only for real
// changes, then one Removed.
type tracker struct {
	known map[string]Interface
}

func newTracker() *tracker {
	return &tracker{known: make(map[string]Interface)}
}

// reconcile records the current contents of the Interface row uuid (nil if
// the row no longer exists) and returns the Event this implies, if any.
func (t *tracker) reconcile(uuid string, row *ovsInterface) (Event, bool) {
	old, had := t.known[uuid]
	if row == nil {
		if !had {
			return Event{}, false
		}
		delete(t.known, uuid)
		return Event{Kind: Removed, Iface: old}, true
	}
	cur := interfaceFromRow(uuid, row)
	t.known[uuid] = cur
	switch {
	case !had:
		return Event{Kind: Added, Iface: cur}, true
	case !old.equal(cur):
		return Event{Kind: Updated, Iface: cur}, true
	}
	return Event{}, false
}

// queue is an unbounded FIFO between a producer that must never block
// (libovsdb's event goroutine drops events when its own buffer is full)
// and a consumer that may be slow.
type queue[T any] struct {
	out chan T

	mu      sync.Mutex
	items   []T
	ended   bool // no more pushes; close out once drained
	wake    chan struct{}
	stop    chan struct{}
	stopped sync.Once
}

func newQueue[T any]() *queue[T] {
	q := &queue[T]{
		out:  make(chan T),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}
	go q.run()
	return q
}

// push appends e without blocking.
func (q *queue[T]) push(e T) {
	q.mu.Lock()
	if !q.ended {
		q.items = append(q.items, e)
	}
	q.mu.Unlock()
	q.signal()
}

// end lets the consumer drain what is queued, then closes out.
func (q *queue[T]) end() {
	q.mu.Lock()
	q.ended = true
	q.mu.Unlock()
	q.signal()
}

// abort closes out promptly, discarding anything still queued.
func (q *queue[T]) abort() {
	q.end()
	q.stopped.Do(func() { close(q.stop) })
}

func (q *queue[T]) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue[T]) run() {
	defer close(q.out)
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			ended := q.ended
			q.mu.Unlock()
			if ended {
				return
			}
			select {
			case <-q.wake:
				continue
			case <-q.stop:
				return
			}
		}
		e := q.items[0]
		var zero T
		q.items[0] = zero
		q.items = q.items[1:]
		q.mu.Unlock()
		select {
		case q.out <- e:
		case <-q.stop:
			return
		}
	}
}
