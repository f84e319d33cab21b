package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a client of the QEMU Machine Protocol (QEMU's
// docs/interop/qmp-spec.rst): JSON objects over a unix socket, commands
// answered in order, asynchronous events in between. Its methods are safe
// for concurrent use.
type QMP struct {
	conn net.Conn

	wmu sync.Mutex // serialises writes
	enc *json.Encoder

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan reply
	events  []Event
	notify  chan struct{} // closed and replaced when an event arrives
	err     error         // why the reader stopped
	done    chan struct{} // closed when the reader stops
}

// Event is one asynchronous QMP event.
type Event struct {
	// Name is the event's name: "STOP", "RESUME", "MIGRATION", ...
	Name string
	// Data is the event's "data" member, if any.
	Data json.RawMessage
	// Time is QEMU's own timestamp of the event. Two QEMUs on one machine
	// share its clock, so their event times can be compared directly.
	Time time.Time
	// Received is when the client read the event.
	Received time.Time
}

// Status returns the "status" member of the event's data (MIGRATION events
// carry the migration's new state there), or "".
func (e Event) Status() string {
	var d struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(e.Data, &d)
	return d.Status
}

// QMPError is an error a QMP command returned.
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

type reply struct {
	ret json.RawMessage
	err *QMPError
}

// message is one decoded QMP server message: a greeting, a command's reply
// (return or error, with the id the command carried) or an event.
type message struct {
	greeting bool
	event    *Event
	id       int64
	hasID    bool
	ret      json.RawMessage
	err      *QMPError
}

// decodeMessage classifies one JSON object received from QEMU.
func decodeMessage(raw []byte, received time.Time) (message, error) {
	var m struct {
		QMP       json.RawMessage `json:"QMP"`
		Event     string          `json:"event"`
		Data      json.RawMessage `json:"data"`
		Timestamp *struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		} `json:"timestamp"`
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		} `json:"error"`
		ID *int64 `json:"id"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return message{}, fmt.Errorf("qmp: bad message %.200q: %w", raw, err)
	}
	switch {
	case m.QMP != nil:
		return message{greeting: true}, nil
	case m.Event != "":
		ev := &Event{Name: m.Event, Data: m.Data, Received: received}
		if m.Timestamp != nil {
			ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
		}
		return message{event: ev}, nil
	case m.Return != nil || m.Error != nil:
		msg := message{ret: m.Return}
		if m.ID != nil {
			msg.id, msg.hasID = *m.ID, true
		}
		if m.Error != nil {
			msg.err = &QMPError{Class: m.Error.Class, Desc: m.Error.Desc}
		}
		return msg, nil
	}
	return message{}, fmt.Errorf("qmp: message is no greeting, reply or event: %.200q", raw)
}

// DialQMP connects to a QMP unix socket, retrying until it exists (QEMU
// creates it while starting) or ctx ends, and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	conn, err := dialUnix(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	q, err := NewQMP(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// dialUnix connects to a unix socket, retrying while it does not exist yet
// or nobody listens on it yet.
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// NewQMP speaks QMP over conn: it reads the greeting and enters command mode
// (qmp_capabilities). Close closes conn.
func NewQMP(ctx context.Context, conn net.Conn) (*QMP, error) {
	q := &QMP{
		conn:    conn,
		enc:     json.NewEncoder(conn),
		pending: make(map[int64]chan reply),
		notify:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	dec := json.NewDecoder(conn)
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("qmp: read greeting: %w", err)
	}
	if m, err := decodeMessage(raw, time.Now()); err != nil || !m.greeting {
		return nil, fmt.Errorf("qmp: got %.200q, want the greeting (err %v)", raw, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	go q.read(dec)
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// read dispatches replies to their commands and records events until the
// connection fails.
func (q *QMP) read(dec *json.Decoder) {
	var err error
	for {
		var raw json.RawMessage
		if err = dec.Decode(&raw); err != nil {
			break
		}
		var m message
		if m, err = decodeMessage(raw, time.Now()); err != nil {
			break
		}
		q.mu.Lock()
		switch {
		case m.event != nil:
			q.events = append(q.events, *m.event)
			close(q.notify)
			q.notify = make(chan struct{})
		case m.hasID && q.pending[m.id] != nil:
			q.pending[m.id] <- reply{ret: m.ret, err: m.err}
			delete(q.pending, m.id)
		}
		q.mu.Unlock()
	}
	q.mu.Lock()
	q.err = fmt.Errorf("qmp: connection lost: %w", err)
	q.mu.Unlock()
	close(q.done)
}

// Execute runs command with args (nil, or a value that marshals to a JSON
// object) and decodes its return value into result unless result is nil. An
// error the command returns is a *QMPError.
func (q *QMP) Execute(ctx context.Context, command string, args, result any) error {
	ch := make(chan reply, 1)
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	q.nextID++
	id := q.nextID
	q.pending[id] = ch
	q.mu.Unlock()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        int64  `json:"id"`
	}{command, args, id}
	q.wmu.Lock()
	err := q.enc.Encode(req)
	q.wmu.Unlock()
	if err != nil {
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			r.err.Command = command
			return r.err
		}
		if result != nil {
			if err := json.Unmarshal(r.ret, result); err != nil {
				return fmt.Errorf("qmp %s: decode %s: %w", command, r.ret, err)
			}
		}
		return nil
	case <-q.done:
		q.forget(id)
		// The reply may have been delivered just before the connection
		// closed (quit does exactly that).
		select {
		case r := <-ch:
			if r.err != nil {
				r.err.Command = command
				return r.err
			}
			return nil
		default:
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, q.err)
	case <-ctx.Done():
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

func (q *QMP) forget(id int64) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

// Events returns every event received so far, in order.
func (q *QMP) Events() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Event(nil), q.events...)
}

// WaitEvent returns the first event received at or after since for which
// match is true, waiting for it if need be.
func (q *QMP) WaitEvent(ctx context.Context, since time.Time, match func(Event) bool) (Event, error) {
	seen := 0
	for {
		q.mu.Lock()
		evs, notify, err := q.events[seen:], q.notify, q.err
		seen = len(q.events)
		q.mu.Unlock()
		for _, ev := range evs {
			if !ev.Received.Before(since) && match(ev) {
				return ev, nil
			}
		}
		if err != nil {
			return Event{}, err
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp: waiting for an event: %w", ctx.Err())
		}
	}
}

// Done is closed when the connection ends (QEMU exited, or Close).
func (q *QMP) Done() <-chan struct{} { return q.done }

// Close closes the connection.
func (q *QMP) Close() error {
	err := q.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
