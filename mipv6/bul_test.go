package mipv6

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

var (
	tHoA = netip.MustParseAddr("2001:db8:2000::10")
	tHA  = netip.MustParseAddr("2001:db8:2000::1")
	tCoA = netip.MustParseAddr("2001:db8:3000::3")
	t0   = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
)

func ack(bu BUPacket, status uint8, lifetime uint16) BAPacket {
	return BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Status: status, Sequence: bu.Sequence, Lifetime: lifetime}
}

func TestFirstRegistration(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, ok := b.Register(t0)
	if !ok {
		t.Fatal("Register sent nothing")
	}
	want := BUPacket{Src: tCoA, Dst: tHA, HomeAddress: tHoA, Sequence: ClockSequence(t0), Flags: FlagA | FlagH, Lifetime: 150}
	if bu != want {
		t.Fatalf("got BU %+v, want %+v", bu, want)
	}
	if got := b.Due().Sub(t0); got != InitialBindackTimeoutFirstReg {
		t.Errorf("got first retransmission after %v, want %v", got, InitialBindackTimeoutFirstReg)
	}
	if b.Tunnelling(t0) {
		t.Error("tunnelling before any BA")
	}
	if _, _, err := b.HandleBA(t0.Add(time.Second), ack(bu, StatusAccepted, 150)); err != nil {
		t.Fatal(err)
	}
	if s := b.Snapshot(t0.Add(time.Second)); s.State != StateBound || s.Reason != "accepted" || s.Granted != 600*time.Second {
		t.Fatalf("got %+v, want bound/accepted/600s", s)
	}
	if !b.Tunnelling(t0.Add(time.Second)) {
		t.Error("not tunnelling after status 0")
	}
}

func TestStatusOneIsSuccess(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	if _, _, err := b.HandleBA(t0, ack(bu, StatusAcceptedPrefixDiscovery, 10)); err != nil {
		t.Fatal(err)
	}
	if !b.Tunnelling(t0) {
		t.Fatal("status 1 did not bind")
	}
}

func TestRetransmissionBackoff(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	now := t0
	var gaps []time.Duration
	last := now
	if bu.Sequence != ClockSequence(now) {
		t.Errorf("got sequence %d, want the clock's %d", bu.Sequence, ClockSequence(now))
	}
	for i := 0; i < 8; i++ {
		now = b.Due()
		bu2, ok := b.Tick(now)
		if !ok {
			t.Fatalf("retransmission %d not sent at %v", i, now)
		}
		gaps = append(gaps, now.Sub(last))
		last = now
		if bu2.Sequence != ClockSequence(now) {
			t.Errorf("retransmission %d: got sequence %d, want the clock's %d", i, bu2.Sequence, ClockSequence(now))
		}
	}
	want := []time.Duration{1500 * time.Millisecond, 3 * time.Second, 6 * time.Second, 12 * time.Second, 24 * time.Second, 32 * time.Second, 32 * time.Second, 32 * time.Second}
	for i := range want {
		if gaps[i] != want[i] {
			t.Errorf("retransmission %d: got gap %v, want %v", i, gaps[i], want[i])
		}
	}
}

func TestRateLimit(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	sent := 0
	for i := 0; i < 10; i++ {
		now := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		bu, ok := b.Register(now)
		if ok {
			sent++
			// 135 asks for an immediate resend: the limit must hold there too.
			ba := ack(bu, StatusSequenceOutOfWindow, 0)
			if _, ok2, _ := b.HandleBA(now, ba); ok2 {
				sent++
			}
		}
	}
	if sent > MaxUpdateRate {
		t.Fatalf("got %d BUs within 100 ms, want at most %d", sent, MaxUpdateRate)
	}
	if due := b.Due(); due.Sub(t0) != time.Second {
		t.Errorf("got deferred send at %v, want one second after the first", due.Sub(t0))
	}
}

func TestSequenceOutOfWindow(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	// The Home Agent holds a number ahead of the clock's (a host whose
	// clock runs ahead, or one that continued after an old number): it
	// refuses the clock's.
	held := bu.Sequence + 20000
	ba := BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Status: StatusSequenceOutOfWindow, Sequence: held}
	bu2, ok, err := b.HandleBA(t0.Add(time.Millisecond), ba)
	if err != nil || !ok {
		t.Fatalf("got ok %v err %v, want an immediate resend", ok, err)
	}
	if bu2.Sequence != held+1 {
		t.Fatalf("got sequence %d, want %d (the BA's plus one)", bu2.Sequence, held+1)
	}
	if _, _, err := b.HandleBA(t0.Add(2*time.Millisecond), ack(bu2, StatusAccepted, 150)); err != nil || !b.Tunnelling(t0.Add(2*time.Millisecond)) {
		t.Fatalf("binding not established after resend: %v", err)
	}
	// Later numbers follow the Home Agent's until the clock passes them.
	if bu3, _ := b.RefreshNow(t0.Add(time.Minute), tHA); bu3.Sequence != held+2 {
		t.Errorf("got refresh sequence %d, want %d", bu3.Sequence, held+2)
	}
}

// A 135 naming a number behind the one kgswitch sent (a forger's, or a
// stale answer) never takes the numbering back.
func TestSequenceOutOfWindowOnlyForward(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	first, _ := b.Register(t0)
	ba := BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Status: StatusSequenceOutOfWindow, Sequence: first.Sequence - 100}
	bu, ok, err := b.HandleBA(t0.Add(time.Millisecond), ba)
	if err != nil || !ok || bu.Sequence != first.Sequence+1 {
		t.Fatalf("got %d (ok %v, err %v), want %d: on from what was sent", bu.Sequence, ok, err, first.Sequence+1)
	}
}

// An Ack to any Binding Update of the current series is the Home Agent's
// answer: one busy with DAD answers the first after its retransmission left.
// Its lifetime counts from that first Binding Update, and never exceeds
// what was asked.
func TestAckToEarlierBindingUpdateOfSeries(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	first, _ := b.Register(t0)
	second, ok := b.Tick(b.Due())
	if !ok || second.Sequence == first.Sequence {
		t.Fatalf("no retransmission: %+v", second)
	}
	at := t0.Add(2 * time.Second)
	if _, _, err := b.HandleBA(at, ack(first, StatusAccepted, 0xffff)); err != nil {
		t.Fatalf("Ack to the series' first Binding Update refused: %v", err)
	}
	snap := b.Snapshot(at)
	if snap.State != StateBound || snap.Granted != 600*time.Second {
		t.Errorf("got %v granted %v, want bound for the 600 s asked (not the 65535 units claimed)", snap.State, snap.Granted)
	}
	if want := t0.Add(600 * time.Second).Sub(at); snap.LifetimeLeft != want {
		t.Errorf("got %v left, want %v: counted from the first Binding Update", snap.LifetimeLeft, want)
	}
	// An Ack to a number never sent in this series is not an answer.
	b.RefreshNow(at, tHA)
	if _, _, err := b.HandleBA(at, ack(first, StatusAccepted, 150)); !errors.Is(err, ErrBAWrongSequence) {
		t.Errorf("Ack to the previous series: got %v, want ErrBAWrongSequence", err)
	}
}

// Once one Binding Update of a series is answered, the Home Agent's answers
// to the others are expected, not errors; an Ack to a number never sent
// still is one.
func TestLateAnswersToSettledSeries(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 150))
	// The Home Agent accepts the de-registration; its Ack comes after the
	// retransmission left, and the retransmission meets no binding (133).
	d1, _ := b.Deregister(t0.Add(time.Minute), tHoA)
	d2, _ := b.Tick(b.Due())
	at := b.Due()
	if _, _, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: d1.Sequence}); err != nil {
		t.Fatalf("accepted de-registration refused: %v", err)
	}
	if _, _, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Status: StatusNotHomeAgent, Sequence: d2.Sequence}); err != nil {
		t.Errorf("answer to the retransmission %d: got %v, want none", d2.Sequence, err)
	}
	if s := b.Snapshot(at); s.State != StateDeregistered || s.Status != StatusAccepted {
		t.Errorf("got %v status %d, want deregistered as accepted", s.State, s.Status)
	}
	if _, _, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: d2.Sequence + 9}); !errors.Is(err, ErrBANotExpected) {
		t.Errorf("Ack to a number never sent: got %v, want ErrBANotExpected", err)
	}
}

func TestSequenceWraps(t *testing.T) {
	// The clock's last number before it wraps.
	tw := time.UnixMilli(0xffff * SequenceTick.Milliseconds())
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(tw)
	bu2, _ := b.Tick(b.Due())
	if want := uint16(InitialBindackTimeoutFirstReg/SequenceTick) - 1; bu.Sequence != 0xffff || bu2.Sequence != want {
		t.Fatalf("got sequences %d, %d, want 65535, %d", bu.Sequence, bu2.Sequence, want)
	}
	// A binding ahead of the clock wraps by one.
	r := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	r.Restore(tw.Add(-time.Second), 0xffff, 0, time.Time{})
	if bu3, _ := r.Register(tw.Add(-time.Second)); bu3.Sequence != 0 {
		t.Fatalf("got sequence %d after 65535, want 0", bu3.Sequence)
	}
}

func TestFailureStatuses(t *testing.T) {
	for _, tt := range []struct {
		status uint8
		reason string
		retry  time.Duration
	}{
		{StatusNotHomeSubnet, "not home subnet", failedRetry},
		{StatusNotHomeAgent, "not home agent for this mobile node", failedRetry},
		{StatusDADFailed, "duplicate address detection failed", InitialBindackTimeoutFirstReg},
		{StatusProhibited, "administratively prohibited", failedRetry},
		{StatusUnspecified, "reason unspecified", 4 * time.Second},
		{StatusInsufficientResources, "insufficient resources", 4 * time.Second},
		{StatusRegistrationTypeChange, "registration type change disallowed", failedRetry},
	} {
		t.Run(tt.reason, func(t *testing.T) {
			b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
			bu, _ := b.Register(t0)
			if _, _, err := b.HandleBA(t0, ack(bu, tt.status, 0)); err != nil {
				t.Fatal(err)
			}
			s := b.Snapshot(t0)
			if s.State != StateFailed || s.Status != tt.status {
				t.Fatalf("got %v status %d, want failed %d", s.State, s.Status, tt.status)
			}
			if s.Reason != StatusString(tt.status) || s.Reason == "" {
				t.Errorf("got reason %q, want %q", s.Reason, StatusString(tt.status))
			}
			if got := b.Due().Sub(t0); got != tt.retry {
				t.Errorf("got retry after %v, want %v", got, tt.retry)
			}
			if b.Tunnelling(t0) {
				t.Error("tunnelling after a refusal")
			}
			if _, ok := b.Tick(b.Due()); !ok {
				t.Error("no retry BU when the retry timer fired")
			}
		})
	}
}

func TestRefreshBeforeGrantedLifetime(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	// The Home Agent grants 40 s, not the 600 s asked for.
	b.HandleBA(t0.Add(time.Second), ack(bu, StatusAccepted, 10))
	due := b.Due()
	if got := due.Sub(t0); got != 30*time.Second {
		t.Fatalf("got refresh at %v, want 30s (3/4 of the granted 40s)", got)
	}
	if _, ok := b.Tick(due.Add(-time.Millisecond)); ok {
		t.Fatal("refresh sent early")
	}
	bu2, ok := b.Tick(due)
	if !ok || bu2.Lifetime != 150 || bu2.Sequence != ClockSequence(due) {
		t.Fatalf("got refresh %+v ok %v", bu2, ok)
	}
	if got := b.Snapshot(due).State; got != StateRefreshing {
		t.Fatalf("got state %v, want refreshing", got)
	}
	if !b.Tunnelling(due) {
		t.Error("stopped tunnelling while the old binding is still alive")
	}
	if _, _, err := b.HandleBA(due, ack(bu2, StatusAccepted, 10)); err != nil {
		t.Fatal(err)
	}
	if got := b.Due().Sub(due); got != 30*time.Second {
		t.Errorf("got next refresh after %v, want 30s", got)
	}
}

func TestRefreshLapses(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 8*time.Second)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 2)) // 8 s granted
	now := t0
	for i := 0; i < 5 && now.Before(t0.Add(9*time.Second)); i++ {
		now = b.Due()
		b.Tick(now)
	}
	if b.Tunnelling(t0.Add(8 * time.Second)) {
		t.Error("still tunnelling at the end of the granted lifetime")
	}
}

// A refusal of a refresh while the grant runs keeps the tunnel: otherwise a
// forger who asks for a refresh (Binding Refresh Request), names the number
// kgswitch resends after (status 135) and refuses that resend stops the
// tunnel for a minute. Only a refusal after the grant ended fails.
func TestRefusedRefreshKeepsTunnel(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 40*time.Second)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 10)) // 40 s granted
	at := t0.Add(10 * time.Second)
	if _, ok := b.RefreshNow(at, tHA); !ok {
		t.Fatal("no refresh for the Binding Refresh Request")
	}
	ahead := ClockSequence(at) + 1000 // what a forger names
	resend, ok, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Status: StatusSequenceOutOfWindow, Sequence: ahead})
	if err != nil || !ok || resend.Sequence != ahead+1 {
		t.Fatalf("got %+v %v %v, want a Binding Update numbered %d after the 135", resend, ok, err, ahead+1)
	}
	due := b.Due()
	if _, _, err := b.HandleBA(at, ack(resend, StatusNotHomeSubnet, 0)); err != nil {
		t.Fatal(err)
	}
	if s := b.Snapshot(at); s.State != StateRefreshing || !b.Tunnelling(at) || b.Due() != due {
		t.Fatalf("after a refused refresh: got %v tunnelling %v due %v, want refreshing, tunnel up, retransmission still at %v",
			s.State, b.Tunnelling(at), b.Due(), due)
	}
	// The Home Agent's own answer to the same Binding Update decides.
	if _, _, err := b.HandleBA(at, ack(resend, StatusAccepted, 10)); err != nil || b.Snapshot(at).State != StateBound {
		t.Fatalf("got %v (%v) after the Home Agent's Ack, want bound", b.Snapshot(at).State, err)
	}

	// Refused until the grant ends: the binding fails then, not before.
	end := at.Add(40 * time.Second)
	for now := b.Due(); now.Before(end); now = b.Due() {
		bu, ok := b.Tick(now)
		if !ok {
			continue
		}
		if _, _, err := b.HandleBA(now, ack(bu, StatusProhibited, 0)); err != nil {
			t.Fatal(err)
		}
		if !b.Tunnelling(now) {
			t.Fatalf("tunnel down at %v, before the grant ended at %v", now.Sub(t0), end.Sub(t0))
		}
	}
	now := b.Due()
	bu, ok = b.Tick(now)
	if !ok {
		t.Fatal("no Binding Update after the grant ended")
	}
	b.HandleBA(now, ack(bu, StatusProhibited, 0))
	if s := b.Snapshot(now); s.State != StateFailed || b.Tunnelling(now) {
		t.Errorf("refused after the grant ended: got %v tunnelling %v, want failed", s.State, b.Tunnelling(now))
	}
}

func TestRefreshNow(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	if _, ok := b.RefreshNow(t0, tHA); ok {
		t.Fatal("refresh of an unbound binding")
	}
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 150))
	if _, ok := b.RefreshNow(t0.Add(5*time.Second), netip.MustParseAddr("2001:db8:9::1")); ok {
		t.Fatal("refresh requested by someone other than the Home Agent")
	}
	bu2, ok := b.RefreshNow(t0.Add(5*time.Second), tHA)
	if !ok || bu2.Sequence != ClockSequence(t0.Add(5*time.Second)) {
		t.Fatalf("got %+v %v, want an immediate refresh", bu2, ok)
	}
	// A stream of (perhaps forged) requests starts nothing more until hintGap
	// has passed; an Ack nobody asked for is still refused.
	if _, ok := b.RefreshNow(t0.Add(5*time.Second+hintGap/2), tHA); ok {
		t.Error("a second refresh request within the gap sent a Binding Update")
	}
	if _, _, err := b.HandleBA(t0.Add(6*time.Second), BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Sequence: bu2.Sequence + 5, Lifetime: 150}); !errors.Is(err, ErrBAWrongSequence) {
		t.Errorf("Ack to a number never sent: got %v, want ErrBAWrongSequence", err)
	}
	if _, ok := b.RefreshNow(t0.Add(5*time.Second+hintGap), tHA); !ok {
		t.Error("no refresh for a request a gap after the last")
	}
}

func TestBAValidation(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	good := BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Sequence: 1}
	if _, _, err := b.HandleBA(t0, good); !errors.Is(err, ErrBANotExpected) {
		t.Errorf("BA before any BU: got %v, want ErrBANotExpected", err)
	}
	b.Register(t0)
	for _, tt := range []struct {
		name string
		mod  func(*BAPacket)
		want error
	}{
		{"wrong sender", func(p *BAPacket) { p.Src = netip.MustParseAddr("2001:db8:2000::66") }, ErrBAWrongSender},
		{"wrong home", func(p *BAPacket) { p.HomeAddress = netip.MustParseAddr("2001:db8:2000::11") }, ErrBAWrongHome},
		{"wrong sequence", func(p *BAPacket) { p.Sequence = 2 }, ErrBAWrongSequence},
	} {
		ba := good
		tt.mod(&ba)
		if _, _, err := b.HandleBA(t0, ba); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	if s := b.Snapshot(t0); s.State != StateRegistering {
		t.Fatalf("dropped BAs changed state to %v", s.State)
	}
}

func TestBindingRefreshAdvice(t *testing.T) {
	for _, tt := range []struct {
		name   string
		advice uint16 // 4 s units
		want   time.Duration
	}{
		{"no advice", 0, 450 * time.Second},
		{"sooner", 15, 60 * time.Second},
		{"later than our own refresh", 140, 450 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
			bu, _ := b.Register(t0)
			ba := ack(bu, StatusAccepted, 150)
			ba.RefreshInterval = tt.advice
			if _, _, err := b.HandleBA(t0, ba); err != nil {
				t.Fatal(err)
			}
			if got := b.Due().Sub(t0); got != tt.want {
				t.Errorf("got refresh after %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBindingError(t *testing.T) {
	bound := func() (*Binding, BUPacket) {
		b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
		bu, _ := b.Register(t0)
		b.HandleBA(t0, ack(bu, StatusAccepted, 150))
		return b, bu
	}
	t.Run("unknown binding re-registers, tunnel kept", func(t *testing.T) {
		b, _ := bound()
		at := t0.Add(time.Minute)
		bu2, ok, err := b.HandleBE(at, BEPacket{Src: tHA, Dst: tCoA, Status: BEStatusUnknownBinding, HomeAddress: tHoA})
		if err != nil || !ok || bu2.Sequence != ClockSequence(at) || bu2.Lifetime == 0 {
			t.Fatalf("got %+v ok %v err %v, want an immediate registration", bu2, ok, err)
		}
		if s := b.Snapshot(at); s.State != StateRefreshing || s.Reason != "home agent lost the binding" || !b.Tunnelling(at) {
			t.Errorf("got %v %q tunnelling %v, want refreshing with the tunnel up", s.State, s.Reason, b.Tunnelling(at))
		}
		if got := b.Due().Sub(at); got != InitialBindackTimeoutFirstReg {
			t.Errorf("got retransmission after %v, want %v (the Home Agent runs DAD again)", got, InitialBindackTimeoutFirstReg)
		}
		// More hints within the gap start nothing: a forger sets no pace.
		for i := range 40 {
			if _, ok, _ := b.HandleBE(at.Add(time.Duration(i)*25*time.Millisecond), BEPacket{Src: tHA, Status: BEStatusUnknownBinding, HomeAddress: tHoA}); ok {
				t.Fatalf("hint %d within %v sent a Binding Update", i, hintGap)
			}
		}
		if _, ok, _ := b.HandleBE(at.Add(hintGap), BEPacket{Src: tHA, Status: BEStatusUnknownBinding, HomeAddress: tHoA}); !ok {
			t.Errorf("no Binding Update for a hint %v after the last", hintGap)
		}
	})
	t.Run("unrecognized MH type is a hint, not a failure", func(t *testing.T) {
		b, bu := bound()
		bu2, ok, err := b.HandleBE(t0, BEPacket{Src: tHA, Dst: tCoA, Status: BEStatusUnrecognizedMHType, HomeAddress: tHoA})
		if err != nil || !ok || bu2.Sequence != bu.Sequence+1 {
			t.Fatalf("got %+v ok %v err %v, want a Binding Update asking again", bu2, ok, err)
		}
		if s := b.Snapshot(t0); s.State == StateFailed || !b.Tunnelling(t0) {
			t.Errorf("got %v tunnelling %v, want the tunnel kept until the Home Agent answers", s.State, b.Tunnelling(t0))
		}
		// Only the Home Agent's Ack decides.
		b.HandleBA(t0, ack(bu2, StatusAccepted, 150))
		if s := b.Snapshot(t0); s.State != StateBound {
			t.Errorf("got %v after the Ack, want bound", s.State)
		}
	})
	t.Run("dropped", func(t *testing.T) {
		b, _ := bound()
		for _, tt := range []struct {
			be   BEPacket
			want error
		}{
			{BEPacket{Src: netip.MustParseAddr("2001:db8:9::1"), Status: 1, HomeAddress: tHoA}, ErrBEWrongSender},
			{BEPacket{Src: tHA, Status: 1, HomeAddress: netip.MustParseAddr("2001:db8:2000::11")}, ErrBEWrongHome},
			{BEPacket{Src: tHA, Status: 9, HomeAddress: tHoA}, ErrBEStatus},
		} {
			if _, ok, err := b.HandleBE(t0, tt.be); !errors.Is(err, tt.want) || ok {
				t.Errorf("got ok %v err %v, want %v", ok, err, tt.want)
			}
		}
		if !b.Tunnelling(t0) {
			t.Error("a dropped Binding Error changed the binding")
		}
	})
	t.Run("after de-registration ignored", func(t *testing.T) {
		b, _ := bound()
		d, _ := b.Deregister(t0, tHoA)
		b.HandleBA(t0, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: d.Sequence})
		if _, ok, err := b.HandleBE(t0, BEPacket{Src: tHA, Status: 1, HomeAddress: tHoA}); ok || err != nil {
			t.Errorf("got ok %v err %v, want nothing sent", ok, err)
		}
	})
}

func TestDeregistrationWithoutBinding(t *testing.T) {
	b := NewBinding(tHoA, tHA, tHoA, 600*time.Second)
	d, ok := b.Deregister(t0, tHoA)
	if !ok {
		t.Fatal("no de-registration sent")
	}
	ba := BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Status: StatusNotHomeAgent, Sequence: d.Sequence}
	if _, _, err := b.HandleBA(t0, ba); err != nil {
		t.Fatal(err)
	}
	if s := b.Snapshot(t0); s.State != StateDeregistered || s.Reason != "no binding to remove" || !b.Due().IsZero() {
		t.Fatalf("got %v %q due %v, want deregistered with no timer", s.State, s.Reason, b.Due())
	}
}

func TestRestore(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 150))
	rec := b.Record()
	if rec.Sequence != bu.Sequence || rec.Granted != 600*time.Second || !rec.Expires.Equal(t0.Add(600*time.Second)) {
		t.Fatalf("got record %+v", rec)
	}
	// A new run, 100 s later: still bound, nothing to send, refresh where it was.
	now := t0.Add(100 * time.Second)
	r := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	if !r.Restore(now, rec.Sequence, rec.Granted, rec.Expires) {
		t.Fatal("live binding not restored")
	}
	if !r.Tunnelling(now) || r.Due() != b.Due() {
		t.Fatalf("got tunnelling %v due %v, want true and %v", r.Tunnelling(now), r.Due(), b.Due())
	}
	due := r.Due()
	if bu2, ok := r.Tick(due); !ok || bu2.Sequence != ClockSequence(due) {
		t.Fatalf("got refresh %+v, want the clock's sequence %d", bu2, ClockSequence(due))
	}
	// After the grant ran out: not restored, but numbering continues
	// where it ran ahead of the clock.
	x := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	later := t0.Add(700 * time.Second)
	ahead := ClockSequence(later) + 500
	if x.Restore(later, ahead, rec.Granted, rec.Expires) {
		t.Fatal("expired binding restored")
	}
	if bu3, _ := x.Register(later); bu3.Sequence != ahead+1 {
		t.Errorf("got sequence %d after restart, want %d", bu3.Sequence, ahead+1)
	}
}

func TestClockSequence(t *testing.T) {
	// The clock's number is 0 at tw, and 65535 a tick before.
	tw := time.UnixMilli(1 << 16 * 1000 * SequenceTick.Milliseconds())
	halfWindow := (1 << 15) * SequenceTick
	for _, tt := range []struct {
		name string
		at   time.Time
		want uint16
	}{
		{"epoch", time.Unix(0, 0), 0},
		{"one tick", time.Unix(0, 0).Add(SequenceTick), 1},
		{"within a tick", time.Unix(0, 0).Add(SequenceTick - time.Nanosecond), 0},
		{"before the wrap", tw.Add(-SequenceTick), 0xffff},
		{"wrap", tw, 0},
		{"after the wrap", tw.Add(3 * SequenceTick), 3},
	} {
		if got := ClockSequence(tt.at); got != tt.want {
			t.Errorf("%s: got ClockSequence = %d, want %d", tt.name, got, tt.want)
		}
	}
	// Later is ahead in serial arithmetic for up to half the window,
	// across the wrap too; a lapped half window is behind.
	for _, tt := range []struct {
		name      string
		from      time.Time
		later     time.Duration
		wantAhead bool
	}{
		{"same tick", t0, SequenceTick / 2, false},
		{"next tick", t0, SequenceTick, true},
		{"a refresh later", t0, 450 * time.Second, true},
		{"across the wrap", tw.Add(-time.Second), 2 * time.Second, true},
		{"last tick of the window", t0, halfWindow - SequenceTick, true},
		{"half the window", t0, halfWindow, false},
		{"lapped", t0, halfWindow + time.Minute, false},
	} {
		a, b := ClockSequence(tt.from.Add(tt.later)), ClockSequence(tt.from)
		if got := seqAhead(a, b); got != tt.wantAhead {
			t.Errorf("%s: got %d ahead of %d = %v, want %v", tt.name, a, b, got, tt.wantAhead)
		}
	}
	// A binding sending at its fastest never leads the clock by more than
	// a burst: the clock must count faster than MaxUpdateRate.
	if SequenceTick*MaxUpdateRate >= time.Second {
		t.Errorf("got %v a tick, want faster than %d Binding Updates a second", SequenceTick, MaxUpdateRate)
	}
}

func TestNextSequence(t *testing.T) {
	c := ClockSequence(t0)
	for _, tt := range []struct {
		name     string
		last     uint16
		numbered bool
		want     uint16
	}{
		{"first", c + 5, false, c},
		{"clock ahead", c - 40, true, c},
		{"clock equal to last+1", c - 1, true, c},
		{"last sent in this tick", c, true, c + 1},
		{"ahead after a 135", c + 20000, true, c + 20001},
		{"lapped by the clock: behind it in serial arithmetic", c + 1<<15 + 10, true, c},
	} {
		b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
		b.seq, b.numbered = tt.last, tt.numbered
		if got := b.nextSeq(t0); got != tt.want {
			t.Errorf("%s: got %d after %d (clock %d), want %d", tt.name, got, tt.last, c, tt.want)
		}
	}
}

// haModel is a Home Agent's sequence number check (RFC 6275 §9.5.1), as
// docs/home-agents.md describes it: any number without a binding, then only
// numbers ahead; a de-registration forgets.
type haModel struct {
	bound bool
	last  uint16
}

func (h *haModel) handle(bu BUPacket) uint8 {
	if h.bound && !seqAhead(bu.Sequence, h.last) {
		return StatusSequenceOutOfWindow
	}
	if !h.bound && bu.Lifetime == 0 {
		return StatusNotHomeAgent
	}
	h.bound, h.last = bu.Lifetime != 0, bu.Sequence
	return StatusAccepted
}

// A host that takes a binding over continues after the host it came from
// with no shared state and no 135: to another foreign host, or home.
func TestSecondHostContinuesWithoutStatus135(t *testing.T) {
	coa2 := netip.MustParseAddr("2001:db8:4000::3")
	for _, tt := range []struct {
		name string
		// burst is how many Binding Updates the first host sends at once
		// (a refresh answered, then hints) just before the move.
		burst int
		// after is how long after the first host's last Binding Update the
		// second host sends its first.
		after  time.Duration
		toHome bool
	}{
		{"foreign to foreign, a second later", 1, time.Second, false},
		{"foreign to foreign after a burst", MaxUpdateRate, 400 * time.Millisecond, false},
		{"foreign to foreign, a refresh interval later", 1, 449 * time.Second, false},
		{"return home right after a refresh", 1, 250 * time.Millisecond, true},
		{"return home after a burst", MaxUpdateRate, 400 * time.Millisecond, true},
		{"return home much later", 1, 40 * time.Minute, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ha haModel
			at := t0.Add(123 * time.Millisecond)
			a := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
			bu, _ := a.Register(at)
			if st := ha.handle(bu); st != StatusAccepted {
				t.Fatalf("first registration: got status %d", st)
			}
			a.HandleBA(at, ack(bu, StatusAccepted, 150))
			at = at.Add(10 * time.Second)
			for i := 0; i < tt.burst; i++ {
				var bu BUPacket
				var ok bool
				if i == 0 {
					bu, ok = a.RefreshNow(at, tHA)
				} else {
					// As fast as the rate limit allows: a 135 asks at once.
					bu, ok, _ = a.HandleBA(at, BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Status: StatusSequenceOutOfWindow, Sequence: ha.last})
				}
				if !ok {
					t.Fatalf("Binding Update %d of the burst not sent", i)
				}
				if st := ha.handle(bu); st != StatusAccepted {
					t.Fatalf("first host's Binding Update %d: got status %d", bu.Sequence, st)
				}
			}
			at = at.Add(tt.after)
			var next BUPacket
			if tt.toHome {
				next, _ = NewBinding(tHoA, tHA, tHoA, 600*time.Second).Deregister(at, tHoA)
			} else {
				next, _ = NewBinding(tHoA, tHA, coa2, 600*time.Second).Register(at)
			}
			if st := ha.handle(next); st != StatusAccepted {
				t.Errorf("second host's %d after the first's %d: got status %d, want accepted", next.Sequence, ha.last, st)
			}
		})
	}
}

func TestDeregistration(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 150))
	at := t0.Add(time.Minute)
	d, ok := b.Deregister(at, tHoA)
	if !ok || d.Lifetime != 0 || d.Src != tHoA || d.HomeAddress != tHoA || d.Sequence != ClockSequence(at) {
		t.Fatalf("got %+v, want lifetime 0 from the home address numbered %d", d, ClockSequence(at))
	}
	// One at a time: the next only when the Ack is overdue.
	if _, ok := b.Tick(at); ok {
		t.Fatal("a second de-registration at once")
	}
	if got := b.Due().Sub(at); got != InitialBindackTimeout {
		t.Errorf("got retransmission after %v, want %v", got, InitialBindackTimeout)
	}
	if _, _, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: d.Sequence}); err != nil {
		t.Fatal(err)
	}
	if s := b.Snapshot(at); s.State != StateDeregistered || !b.Due().IsZero() {
		t.Fatalf("got %v due %v, want deregistered with no timer", s.State, b.Due())
	}
}

// An unanswered de-registration is retransmitted as any Binding Update, from
// the clock; when the Ack to the accepted one is lost, the retransmission
// meets no binding (133), which ends the de-registration too.
func TestDeregistrationRetransmission(t *testing.T) {
	b := NewBinding(tHoA, tHA, tHoA, 600*time.Second)
	first, _ := b.Deregister(t0, tHoA)
	at := b.Due()
	second, ok := b.Tick(at)
	if !ok || second.Lifetime != 0 || second.Sequence != ClockSequence(at) || !seqAhead(second.Sequence, first.Sequence) {
		t.Fatalf("got %+v (%v), want a de-registration numbered %d", second, ok, ClockSequence(at))
	}
	if got := b.Due().Sub(at); got != 2*InitialBindackTimeout {
		t.Errorf("got next try after %v, want %v", got, 2*InitialBindackTimeout)
	}
	ba := BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Status: StatusNotHomeAgent, Sequence: second.Sequence}
	if _, _, err := b.HandleBA(at, ba); err != nil {
		t.Fatal(err)
	}
	if s := b.Snapshot(at); s.State != StateDeregistered || s.Status != StatusNotHomeAgent {
		t.Fatalf("got %v status %d, want deregistered, no binding left", s.State, s.Status)
	}
	// The lost Ack, late after all: expected, nothing changes.
	if _, _, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: first.Sequence}); err != nil {
		t.Errorf("late Ack to the first try: got %v, want none", err)
	}
}

// When the clock's numbers go unanswered (the Home Agent holds a number they
// are behind, and answers its 135 to the old care-of address), the next
// tries jump half the sequence space: whatever the Home Agent holds, one of
// three consecutive tries is ahead of it, within seconds.
func TestDeregistrationFallbackCoversTheSequenceSpace(t *testing.T) {
	for _, at := range []time.Time{t0, time.UnixMilli(0xfff0 * SequenceTick.Milliseconds()), time.UnixMilli(0x7ff8 * SequenceTick.Milliseconds())} {
		b := NewBinding(tHoA, tHA, tHoA, 600*time.Second)
		bu, _ := b.Deregister(at, tHoA)
		seqs := []uint16{bu.Sequence}
		var last time.Time
		for len(seqs) < 5 {
			last = b.Due()
			next, ok := b.Tick(last)
			if !ok {
				t.Fatalf("no retry at %v", last)
			}
			seqs = append(seqs, next.Sequence)
		}
		if got := last.Sub(at); got > 16*time.Second {
			t.Errorf("fifth try after %v, want within 16 s", got)
		}
		for i := 1; i+3 <= len(seqs); i++ {
			tries := seqs[i : i+3]
			for last := 0; last < 1<<16; last++ {
				ahead := false
				for _, s := range tries {
					ahead = ahead || seqAhead(s, uint16(last))
				}
				if !ahead {
					t.Fatalf("from %v: tries %v are none ahead of %d", at, tries, last)
				}
			}
		}
	}
}

// A Home Agent that refuses the tunnel (it restarted) gets a Binding Update at
// once, with the first-registration timeout; the tunnel stays up, refusals
// within hintGap start nothing, and a later one adds to the outstanding series
// so the Ack to the first Binding Update, late after the Home Agent's DAD, is
// still taken.
func TestTunnelRefused(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	if _, _, err := b.HandleBA(t0, ack(bu, StatusAccepted, 150)); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Minute)
	first, ok := b.HandleTunnelRefused(at)
	if !ok || !seqAhead(first.Sequence, bu.Sequence) || first.Lifetime == 0 {
		t.Fatalf("got %+v ok %v, want an immediate registration", first, ok)
	}
	if s := b.Snapshot(at); s.State != StateRefreshing || s.Reason != "home agent refused the tunnel" || !b.Tunnelling(at) {
		t.Errorf("got %v %q tunnelling %v, want refreshing with the tunnel up", s.State, s.Reason, b.Tunnelling(at))
	}
	if got := b.Due().Sub(at); got != InitialBindackTimeoutFirstReg {
		t.Errorf("got retransmission after %v, want %v (the Home Agent runs DAD again)", got, InitialBindackTimeoutFirstReg)
	}
	if _, ok := b.HandleTunnelRefused(at.Add(hintGap - time.Millisecond)); ok {
		t.Error("a refusal within hintGap sent a Binding Update")
	}
	second, ok := b.HandleTunnelRefused(at.Add(hintGap))
	if !ok || !seqAhead(second.Sequence, first.Sequence) {
		t.Fatalf("got %+v ok %v, want the next Binding Update after hintGap", second, ok)
	}
	// The Home Agent ignored the second (DAD for the first ran) and answers the first.
	done := at.Add(hintGap + 100*time.Millisecond)
	if _, _, err := b.HandleBA(done, ack(first, StatusAccepted, 150)); err != nil {
		t.Fatalf("Ack to the first Binding Update of the series: %v", err)
	}
	if s := b.Snapshot(done); s.State != StateBound || s.LifetimeLeft != 600*time.Second-hintGap-100*time.Millisecond {
		t.Errorf("got %v with %v left, want bound for 600 s from the first Binding Update", s.State, s.LifetimeLeft)
	}
}

// Refusals mean nothing to a binding that is not in use.
func TestTunnelRefusedIgnored(t *testing.T) {
	idle := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	if _, ok := idle.HandleTunnelRefused(t0); ok {
		t.Error("idle binding sent a Binding Update")
	}
	dereg := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := dereg.Register(t0)
	dereg.HandleBA(t0, ack(bu, StatusAccepted, 150))
	dereg.Deregister(t0.Add(time.Minute), tHoA)
	if _, ok := dereg.HandleTunnelRefused(t0.Add(time.Minute)); ok {
		t.Error("de-registering binding sent a registration")
	}
	if s := dereg.Snapshot(t0.Add(time.Minute)); s.State != StateDeregistering {
		t.Errorf("got %v, want deregistering", s.State)
	}
}
