package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// fakeQEMU serves QMP on one end of a pipe: the greeting, then an answer to
// each command from answers (by command name), and the events on cue.
type fakeQEMU struct {
	conn     net.Conn
	answers  map[string]string // command -> JSON reply members without id
	events   chan string       // raw event JSON to send
	commands chan string       // commands received, in order
}

func startFake(t *testing.T, answers map[string]string) (*fakeQEMU, net.Conn) {
	t.Helper()
	server, client := net.Pipe()
	f := &fakeQEMU{conn: server, answers: answers, events: make(chan string, 8), commands: make(chan string, 32)}
	go f.serve()
	t.Cleanup(func() { server.Close(); client.Close() })
	return f, client
}

func (f *fakeQEMU) serve() {
	w := bufio.NewWriter(f.conn)
	send := func(s string) {
		w.WriteString(s + "\r\n")
		w.Flush()
	}
	send(`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`)
	reqs := make(chan map[string]json.RawMessage)
	go func() {
		dec := json.NewDecoder(f.conn)
		for {
			var req map[string]json.RawMessage
			if dec.Decode(&req) != nil {
				close(reqs)
				return
			}
			reqs <- req
		}
	}()
	for {
		select {
		case ev := <-f.events:
			send(ev)
		case req, ok := <-reqs:
			if !ok {
				return
			}
			var cmd string
			json.Unmarshal(req["execute"], &cmd)
			f.commands <- cmd
			ans, ok := f.answers[cmd]
			if !ok {
				ans = `"error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}`
			}
			send(fmt.Sprintf(`{%s, "id": %s}`, ans, req["id"]))
		}
	}
}

func TestQMPExecute(t *testing.T) {
	f, conn := startFake(t, map[string]string{
		"qmp_capabilities": `"return": {}`,
		"query-migrate":    `"return": {"status": "completed", "downtime": 7, "ram": {"transferred": 1024}}`,
		"bad":              `"error": {"class": "GenericError", "desc": "nope"}`,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := NewQMP(ctx, conn)
	if err != nil {
		t.Fatalf("NewQMP: %v", err)
	}
	defer q.Close()
	if got := <-f.commands; got != "qmp_capabilities" {
		t.Errorf("got first command = %q, want qmp_capabilities", got)
	}

	var info struct {
		Status   string `json:"status"`
		Downtime int    `json:"downtime"`
	}
	if err := q.Execute(ctx, "query-migrate", nil, &info); err != nil {
		t.Fatalf("Execute(query-migrate): %v", err)
	}
	if info.Status != "completed" || info.Downtime != 7 {
		t.Errorf("got query-migrate = %+v, want completed with downtime 7", info)
	}

	err = q.Execute(ctx, "bad", map[string]any{"x": 1}, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "nope" || qe.Command != "bad" {
		t.Errorf("got Execute(bad) error = %v, want a *QMPError GenericError 'nope'", err)
	}
}

func TestQMPEvents(t *testing.T) {
	f, conn := startFake(t, map[string]string{"qmp_capabilities": `"return": {}`})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := NewQMP(ctx, conn)
	if err != nil {
		t.Fatalf("NewQMP: %v", err)
	}
	defer q.Close()
	since := time.Now()
	f.events <- `{"timestamp": {"seconds": 1700000000, "microseconds": 250}, "event": "MIGRATION", "data": {"status": "active"}}`
	f.events <- `{"timestamp": {"seconds": 1700000001, "microseconds": 500000}, "event": "STOP"}`
	f.events <- `{"timestamp": {"seconds": 1700000002, "microseconds": 0}, "event": "MIGRATION", "data": {"status": "completed"}}`

	ev, err := q.WaitEvent(ctx, since, func(e Event) bool { return e.Name == "MIGRATION" && e.Status() == "completed" })
	if err != nil {
		t.Fatalf("WaitEvent: %v", err)
	}
	if want := time.Unix(1700000002, 0); !ev.Time.Equal(want) {
		t.Errorf("got completed event time = %v, want %v", ev.Time, want)
	}
	stop, err := q.WaitEvent(ctx, since, func(e Event) bool { return e.Name == "STOP" })
	if err != nil {
		t.Fatalf("WaitEvent(STOP): %v", err)
	}
	if want := time.Unix(1700000001, 500000000); !stop.Time.Equal(want) || stop.Received.Before(since) {
		t.Errorf("got STOP at %v (received %v), want %v, received after %v", stop.Time, stop.Received, want, since)
	}
	if n := len(q.Events()); n != 3 {
		t.Errorf("got %d events, want 3", n)
	}

	// Events received before since do not count.
	short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if _, err := q.WaitEvent(short, time.Now(), func(e Event) bool { return e.Name == "STOP" }); err == nil {
		t.Error("got a STOP event received before since, want a timeout")
	}
}

func TestQMPConnectionLost(t *testing.T) {
	f, conn := startFake(t, map[string]string{"qmp_capabilities": `"return": {}`})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := NewQMP(ctx, conn)
	if err != nil {
		t.Fatalf("NewQMP: %v", err)
	}
	f.conn.Close()
	select {
	case <-q.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after the connection closed")
	}
	if err := q.Execute(ctx, "query-status", nil, nil); err == nil {
		t.Error("got Execute after the connection closed = nil, want an error")
	}
	if _, err := q.WaitEvent(ctx, time.Time{}, func(Event) bool { return true }); err == nil {
		t.Error("got WaitEvent after the connection closed = nil, want an error")
	}
}

func TestDecodeMessage(t *testing.T) {
	now := time.Unix(5, 0)
	tests := []struct {
		in      string
		want    string // "greeting", "event NAME", "return ID", "error ID CLASS"
		wantErr bool
	}{
		{in: `{"QMP": {"version": {}}}`, want: "greeting"},
		{in: `{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}`, want: "event RESUME"},
		{in: `{"return": {}, "id": 4}`, want: "return 4"},
		{in: `{"error": {"class": "GenericError", "desc": "x"}, "id": 9}`, want: "error 9 GenericError"},
		{in: `{"return": []}`, want: "return -"},
		{in: `{"something": 1}`, wantErr: true},
		{in: `[1, 2]`, wantErr: true},
		{in: `{"id": "text", "return": {}}`, wantErr: true},
	}
	for _, tt := range tests {
		m, err := decodeMessage([]byte(tt.in), now)
		if (err != nil) != tt.wantErr {
			t.Errorf("decodeMessage(%s): got err = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if got := describe(m); got != tt.want {
			t.Errorf("decodeMessage(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func describe(m message) string {
	id := "-"
	if m.hasID {
		id = fmt.Sprint(m.id)
	}
	switch {
	case m.greeting:
		return "greeting"
	case m.event != nil:
		return "event " + m.event.Name
	case m.err != nil:
		return "error " + id + " " + m.err.Class
	}
	return "return " + id
}

// FuzzDecodeMessage: any input either fails or classifies as exactly one
// kind of message, and never panics.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {}}`, `{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}, "data": {"status": "x"}}`,
		`{"return": {}, "id": 1}`, `{"error": {"class": "a", "desc": "b"}}`, `{}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b, time.Unix(0, 0))
		if err != nil {
			return
		}
		kinds := 0
		if m.greeting {
			kinds++
		}
		if m.event != nil {
			kinds++
			_ = m.event.Status()
		}
		if !m.greeting && m.event == nil {
			kinds++ // a reply
		}
		if kinds != 1 {
			t.Errorf("decodeMessage(%q) = %+v: not exactly one kind", b, m)
		}
	})
}
