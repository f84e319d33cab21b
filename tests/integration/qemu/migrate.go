package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// MigrateOptions tunes Migrate; the zero value is what the tests use.
type MigrateOptions struct {
	// DowntimeLimit is the longest pause QEMU aims for at the switchover
	// (migrate-set-parameters downtime-limit); 20 ms when zero.
	DowntimeLimit time.Duration
	// MaxBandwidth caps the transfer in bytes/s; 10 GiB/s (no cap, in
	// effect) when zero.
	MaxBandwidth int64
}

// Report is what one live migration took.
type Report struct {
	// Downtime, TotalTime and SetupTime are QEMU's own figures
	// (query-migrate on the source): how long the guest was paused at the
	// switchover, the whole migration, and its setup.
	Downtime, TotalTime, SetupTime time.Duration
	// TransferredBytes is the RAM QEMU sent.
	TransferredBytes int64
	// Start is when the migrate command was issued.
	Start time.Time
	// Stop is QEMU's timestamp of the source's STOP event (the guest stops
	// running there) and Resume that of the destination's RESUME event (it
	// runs again there); Resume - Stop is the pause as the two QEMUs saw it.
	Stop, Resume time.Time
	// Completed is when the source reported the migration completed.
	Completed time.Time
	// SourceEvents and DestEvents are the QMP events of both sides from the
	// migration's start.
	SourceEvents, DestEvents []Event
}

// Pause is Resume - Stop.
func (r Report) Pause() time.Duration { return r.Resume.Sub(r.Stop) }

func (r Report) String() string {
	return fmt.Sprintf("QEMU downtime %v, STOP->RESUME %v, total %v (setup %v), %d KiB sent",
		r.Downtime, r.Pause().Round(time.Microsecond), r.TotalTime, r.SetupTime, r.TransferredBytes>>10)
}

// Migrate live-migrates src's guest into dst (started with Incoming) over a
// unix socket in dst's directory (the two QEMUs are in different network
// namespaces but share the filesystem), waits until the guest runs on dst,
// then quits src and removes its tap (src.Close), as libvirt does after a
// successful migration. The events
// capability makes both QEMUs report each migration state; the report's
// times come from their STOP and RESUME events.
func Migrate(ctx context.Context, src, dst *VM, opt MigrateOptions) (Report, error) {
	if !dst.cfg.Incoming || dst.migratedIn.Load() || (src.cfg.Incoming && !src.migratedIn.Load()) {
		return Report{}, fmt.Errorf("qemu: migrate %s -> %s: want a running source (booted, or migrated into) and an Incoming destination not yet migrated into", src.Name, dst.Name)
	}
	if opt.DowntimeLimit == 0 {
		opt.DowntimeLimit = 20 * time.Millisecond
	}
	if opt.MaxBandwidth == 0 {
		opt.MaxBandwidth = 10 << 30
	}
	outer := ctx
	ctx, cancel := src.cancelOnExit(ctx)
	defer cancel()
	fail := func(err error) (Report, error) {
		return Report{}, fmt.Errorf("qemu: migrate %s (%s) -> %s (%s): %w", src.Name, src.Host, dst.Name, dst.Host, err)
	}
	events := map[string]any{"capabilities": []map[string]any{{"capability": "events", "state": true}}}
	uri := "unix:" + dst.migSock
	if err := dst.QMP.Execute(ctx, "migrate-set-capabilities", events, nil); err != nil {
		return fail(err)
	}
	if err := dst.QMP.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
		return fail(err)
	}
	if err := src.QMP.Execute(ctx, "migrate-set-capabilities", events, nil); err != nil {
		return fail(err)
	}
	params := map[string]any{"downtime-limit": opt.DowntimeLimit.Milliseconds(), "max-bandwidth": opt.MaxBandwidth}
	if err := src.QMP.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
		return fail(err)
	}
	r := Report{Start: time.Now()}
	if err := src.QMP.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		return fail(err)
	}
	done, err := src.QMP.WaitEvent(ctx, r.Start, func(e Event) bool {
		if e.Name != "MIGRATION" {
			return false
		}
		s := e.Status()
		return s == "completed" || s == "failed" || s == "cancelled"
	})
	if err != nil {
		return fail(err)
	}
	r.Completed = done.Time
	var info struct {
		Status    string `json:"status"`
		Downtime  int64  `json:"downtime"`
		TotalTime int64  `json:"total-time"`
		SetupTime int64  `json:"setup-time"`
		RAM       struct {
			Transferred int64 `json:"transferred"`
		} `json:"ram"`
		ErrorDesc string `json:"error-desc"`
	}
	if err := src.QMP.Execute(ctx, "query-migrate", nil, &info); err != nil {
		return fail(err)
	}
	if done.Status() != "completed" {
		return fail(fmt.Errorf("migration %s: %s", done.Status(), info.ErrorDesc))
	}
	r.Downtime = time.Duration(info.Downtime) * time.Millisecond
	r.TotalTime = time.Duration(info.TotalTime) * time.Millisecond
	r.SetupTime = time.Duration(info.SetupTime) * time.Millisecond
	r.TransferredBytes = info.RAM.Transferred

	resume, err := dst.QMP.WaitEvent(ctx, r.Start, func(e Event) bool { return e.Name == "RESUME" })
	if err != nil {
		return fail(fmt.Errorf("destination never resumed: %w", err))
	}
	r.Resume = resume.Time
	// The guest runs on dst now: it may be the source of the next hop.
	dst.migratedIn.Store(true)
	stop, err := src.QMP.WaitEvent(ctx, r.Start, func(e Event) bool { return e.Name == "STOP" })
	if err != nil {
		return fail(err)
	}
	r.Stop = stop.Time
	r.SourceEvents = eventsSince(src.QMP.Events(), r.Start)
	r.DestEvents = eventsSince(dst.QMP.Events(), r.Start)

	// The source's job is done: as libvirt does, quit it and remove its tap
	// and the tap's port on the source host. Its console stays readable.
	cancel()
	if err := src.quit(outer); err != nil {
		return r, err
	}
	return r, src.Close()
}

func eventsSince(evs []Event, since time.Time) []Event {
	var out []Event
	for _, e := range evs {
		if !e.Received.Before(since) {
			out = append(out, e)
		}
	}
	return out
}

// FormatEvents renders events one per line with QEMU's timestamps relative
// to t0, for test logs.
func FormatEvents(evs []Event, t0 time.Time) string {
	var s string
	for _, e := range evs {
		data := ""
		if len(e.Data) > 0 {
			var compact any
			if json.Unmarshal(e.Data, &compact) == nil {
				b, _ := json.Marshal(compact)
				data = " " + string(b)
			}
		}
		s += fmt.Sprintf("  %+9.3fms %s%s\n", float64(e.Time.Sub(t0).Microseconds())/1000, e.Name, data)
	}
	return s
}
