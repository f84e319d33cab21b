package ovsctl

import (
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func intp(i int) *int       { return &i }
func strp(s string) *string { return &s }
func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestInterfaceFromRow(t *testing.T) {
	tests := []struct {
		name string
		row  ovsInterface
		want Interface
	}{
		{
			name: "fresh row, vswitchd has not filled in anything",
			row:  ovsInterface{Name: "kg0", Type: "internal"},
			want: Interface{UUID: "u1", Name: "kg0", Type: "internal"},
		},
		{
			name: "assigned",
			row: ovsInterface{Name: "vm1", OFPort: intp(7), MACInUse: strp("fe:54:00:12:34:56"),
				ExternalIDs: map[string]string{"iface-id": "x"}},
			want: Interface{UUID: "u1", Name: "vm1", OFPort: 7, MAC: mac("fe:54:00:12:34:56"),
				ExternalIDs: map[string]string{"iface-id": "x"}},
		},
		{
			name: "tap with link up",
			row:  ovsInterface{Name: "vnet3", IfIndex: intp(12), LinkState: strp("up")},
			want: Interface{UUID: "u1", Name: "vnet3", IfIndex: 12, LinkUp: true},
		},
		{
			name: "link down",
			row:  ovsInterface{Name: "vnet3", IfIndex: intp(12), LinkState: strp("down")},
			want: Interface{UUID: "u1", Name: "vnet3", IfIndex: 12},
		},
		{
			name: "failed port, garbage mac",
			row:  ovsInterface{Name: "bad", OFPort: intp(-1), MACInUse: strp("nonsense")},
			want: Interface{UUID: "u1", Name: "bad", OFPort: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := interfaceFromRow("u1", &tt.row)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("interfaceFromRow() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInterfaceFromRowCopiesExternalIDs(t *testing.T) {
	row := ovsInterface{Name: "a", ExternalIDs: map[string]string{"k": "v"}}
	got := interfaceFromRow("u", &row)
	row.ExternalIDs["k"] = "changed"
	if got.ExternalIDs["k"] != "v" {
		t.Errorf("got ExternalIDs[k] = %q after changing the row, want v (a copy)", got.ExternalIDs["k"])
	}
}

func TestTracker(t *testing.T) {
	p1 := &ovsInterface{Name: "p1", Type: "internal"}
	p1port := &ovsInterface{Name: "p1", Type: "internal", OFPort: intp(3)}
	p1ids := &ovsInterface{Name: "p1", Type: "internal", OFPort: intp(3), ExternalIDs: map[string]string{"a": "b"}}
	type step struct {
		uuid string
		row  *ovsInterface // nil: row is gone
		want *Event        // nil: no event
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "add, ofport assigned, external_ids, remove",
			steps: []step{
				{"u1", p1, &Event{Added, Interface{UUID: "u1", Name: "p1", Type: "internal"}}},
				{"u1", p1port, &Event{Updated, Interface{UUID: "u1", Name: "p1", Type: "internal", OFPort: 3}}},
				{"u1", p1ids, &Event{Updated, Interface{UUID: "u1", Name: "p1", Type: "internal", OFPort: 3, ExternalIDs: map[string]string{"a": "b"}}}},
				{"u1", nil, &Event{Removed, Interface{UUID: "u1", Name: "p1", Type: "internal", OFPort: 3, ExternalIDs: map[string]string{"a": "b"}}}},
			},
		},
		{
			name: "duplicate notifications collapse",
			steps: []step{
				{"u1", p1port, &Event{Added, Interface{UUID: "u1", Name: "p1", Type: "internal", OFPort: 3}}},
				{"u1", p1port, nil},
				{"u1", nil, &Event{Removed, Interface{UUID: "u1", Name: "p1", Type: "internal", OFPort: 3}}},
				{"u1", nil, nil},
			},
		},
		{
			name: "link and ifindex changes are updates",
			steps: []step{
				{"u1", &ovsInterface{Name: "t", LinkState: strp("down")}, &Event{Added, Interface{UUID: "u1", Name: "t"}}},
				{"u1", &ovsInterface{Name: "t", LinkState: strp("up")}, &Event{Updated, Interface{UUID: "u1", Name: "t", LinkUp: true}}},
				{"u1", &ovsInterface{Name: "t", LinkState: strp("up"), IfIndex: intp(9)}, &Event{Updated, Interface{UUID: "u1", Name: "t", LinkUp: true, IfIndex: 9}}},
				{"u1", &ovsInterface{Name: "t", LinkState: strp("up"), IfIndex: intp(9)}, nil},
				{"u1", &ovsInterface{Name: "t", IfIndex: intp(9)}, &Event{Updated, Interface{UUID: "u1", Name: "t", IfIndex: 9}}},
			},
		},
		{
			// A patch port's peer is how kgswitch finds the pair joining
			// the VM bridge and the uplink bridge.
			name: "patch peer is read and its change is an update",
			steps: []step{
				{"u1", &ovsInterface{Name: "patch-ex", Type: "patch", Options: map[string]string{"peer": "patch-int"}},
					&Event{Added, Interface{UUID: "u1", Name: "patch-ex", Type: "patch", Peer: "patch-int"}}},
				{"u1", &ovsInterface{Name: "patch-ex", Type: "patch", Options: map[string]string{"peer": "patch-int2"}},
					&Event{Updated, Interface{UUID: "u1", Name: "patch-ex", Type: "patch", Peer: "patch-int2"}}},
			},
		},
		{
			name: "delete of a row never seen",
			steps: []step{
				{"u9", nil, nil},
			},
		},
		{
			name: "same name, new row",
			steps: []step{
				{"u1", p1, &Event{Added, Interface{UUID: "u1", Name: "p1", Type: "internal"}}},
				{"u1", nil, &Event{Removed, Interface{UUID: "u1", Name: "p1", Type: "internal"}}},
				{"u2", p1, &Event{Added, Interface{UUID: "u2", Name: "p1", Type: "internal"}}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker()
			for i, s := range tt.steps {
				ev, ok := tr.reconcile(s.uuid, s.row)
				var got *Event
				if ok {
					got = &ev
				}
				if diff := cmp.Diff(s.want, got); diff != "" {
					t.Errorf("step %d: reconcile(%s) mismatch (-want +got):\n%s", i, s.uuid, diff)
				}
			}
		})
	}
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[EventKind]string{
		Added: "Added", Updated: "Updated", Removed: "Removed",
		Disconnected: "Disconnected", Reconnected: "Reconnected", 0: "EventKind(0)", 99: "EventKind(99)",
	} {
		if got := k.String(); got != want {
			t.Errorf("got EventKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func TestEventQueueOrderAndEnd(t *testing.T) {
	q := newQueue[Event]()
	// Far more than any channel buffer: push must never block.
	const n = 10000
	for i := range n {
		q.push(Event{Kind: Added, Iface: Interface{OFPort: i}})
	}
	q.end()
	q.push(Event{Kind: Removed}) // after end: dropped
	i := 0
	for ev := range q.out {
		if ev.Iface.OFPort != i || ev.Kind != Added {
			t.Fatalf("got event %d = %v, want Added with OFPort %d", i, ev, i)
		}
		i++
	}
	if i != n {
		t.Errorf("got %d events before close, want %d", i, n)
	}
}

func TestEventQueueAbort(t *testing.T) {
	q := newQueue[Event]()
	q.push(Event{Kind: Added})
	q.push(Event{Kind: Added})
	q.abort()
	q.abort() // idempotent
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-q.out:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("out not closed 5s after abort")
		}
	}
}

// FuzzInterfaceFromRow decodes arbitrary column values: it must not panic,
// and a valid mac_in_use must survive the conversion.
func FuzzInterfaceFromRow(f *testing.F) {
	f.Add("kg0", "internal", 5, "fe:54:00:12:34:56", "k", "v", 7, "up")
	f.Add("", "", -1, "", "", "", 0, "")
	f.Add("x", "tap", 0, "zz:zz", "a", "", -3, "down")
	f.Fuzz(func(t *testing.T, name, typ string, ofport int, macText, k, v string, ifindex int, link string) {
		row := ovsInterface{Name: name, Type: typ, OFPort: &ofport, MACInUse: &macText,
			ExternalIDs: map[string]string{k: v}, IfIndex: &ifindex, LinkState: &link}
		got := interfaceFromRow("u", &row)
		if got.Name != name || got.OFPort != ofport || got.ExternalIDs[k] != v || got.IfIndex != ifindex {
			t.Errorf("got %+v, want name %q ofport %d %q=%q ifindex %d", got, name, ofport, k, v, ifindex)
		}
		if got.LinkUp != (link == "up") {
			t.Errorf("got LinkUp %v for link_state %q", got.LinkUp, link)
		}
		if m, err := net.ParseMAC(macText); err == nil && got.MAC.String() != m.String() {
			t.Errorf("got MAC %v, want %v", got.MAC, m)
		}
		if !got.equal(interfaceFromRow("u", &row)) {
			t.Errorf("interfaceFromRow not deterministic for %+v", row)
		}
	})
}
