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
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 100)
	bu, ok := b.Register(t0)
	if !ok {
		t.Fatal("Register sent nothing")
	}
	want := BUPacket{Src: tCoA, Dst: tHA, HomeAddress: tHoA, Sequence: 100, Flags: FlagA | FlagH, Lifetime: 150}
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
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
	bu, _ := b.Register(t0)
	if _, _, err := b.HandleBA(t0, ack(bu, StatusAcceptedPrefixDiscovery, 10)); err != nil {
		t.Fatal(err)
	}
	if !b.Tunnelling(t0) {
		t.Fatal("status 1 did not bind")
	}
}

func TestRetransmissionBackoff(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 7)
	bu, _ := b.Register(t0)
	now := t0
	var gaps []time.Duration
	last := now
	seqs := []uint16{bu.Sequence}
	for i := 0; i < 8; i++ {
		now = b.Due()
		bu2, ok := b.Tick(now)
		if !ok {
			t.Fatalf("retransmission %d not sent at %v", i, now)
		}
		gaps = append(gaps, now.Sub(last))
		last = now
		seqs = append(seqs, bu2.Sequence)
	}
	want := []time.Duration{1500 * time.Millisecond, 3 * time.Second, 6 * time.Second, 12 * time.Second, 24 * time.Second, 32 * time.Second, 32 * time.Second, 32 * time.Second}
	for i := range want {
		if gaps[i] != want[i] {
			t.Errorf("retransmission %d: got gap %v, want %v", i, gaps[i], want[i])
		}
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Errorf("got sequence %d after %d, want +1", seqs[i], seqs[i-1])
		}
	}
}

func TestRateLimit(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
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
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 5)
	bu, _ := b.Register(t0)
	// The Home Agent holds 30000, ahead of 5: it refuses 5.
	ba := BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Status: StatusSequenceOutOfWindow, Sequence: 30000}
	bu2, ok, err := b.HandleBA(t0.Add(time.Millisecond), ba)
	if err != nil || !ok {
		t.Fatalf("got ok %v err %v, want an immediate resend", ok, err)
	}
	if bu2.Sequence != 30001 {
		t.Fatalf("got sequence %d, want 30001 (the BA's plus one)", bu2.Sequence)
	}
	_ = bu
	if _, _, err := b.HandleBA(t0.Add(2*time.Millisecond), ack(bu2, StatusAccepted, 150)); err != nil || !b.Tunnelling(t0.Add(2*time.Millisecond)) {
		t.Fatalf("binding not established after resend: %v", err)
	}
}

// A 135 naming a number behind the one kgswitch sent (a forger's, or a
// stale answer) never takes the numbering back.
func TestSequenceOutOfWindowOnlyForward(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 30000)
	b.Register(t0)
	ba := BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Status: StatusSequenceOutOfWindow, Sequence: 100}
	bu, ok, err := b.HandleBA(t0.Add(time.Millisecond), ba)
	if err != nil || !ok || bu.Sequence != 30001 {
		t.Fatalf("got %d (ok %v, err %v), want 30001: on from what was sent", bu.Sequence, ok, err)
	}
}

// An Ack to any Binding Update of the current series is the Home Agent's
// answer: one busy with DAD answers the first after its retransmission left.
// Its lifetime counts from that first Binding Update, and never exceeds
// what was asked.
func TestAckToEarlierBindingUpdateOfSeries(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 7)
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
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 150))
	d1, _ := b.Deregister(t0.Add(time.Minute), tHoA)
	d2, _ := b.Tick(b.Due())
	d3, _ := b.Tick(b.Due())
	at := t0.Add(time.Minute)
	if _, _, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: d2.Sequence}); err != nil {
		t.Fatalf("accepted de-registration refused: %v", err)
	}
	for _, d := range []BUPacket{d1, d3} {
		if _, _, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Status: StatusNotHomeAgent, Sequence: d.Sequence}); err != nil {
			t.Errorf("answer to burst member %d: got %v, want none", d.Sequence, err)
		}
	}
	if s := b.Snapshot(at); s.State != StateDeregistered || s.Status != StatusAccepted {
		t.Errorf("got %v status %d, want deregistered as accepted", s.State, s.Status)
	}
	if _, _, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: d3.Sequence + 9}); !errors.Is(err, ErrBANotExpected) {
		t.Errorf("Ack to a number never sent: got %v, want ErrBANotExpected", err)
	}
}

func TestSequenceWraps(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 0xffff)
	bu, _ := b.Register(t0)
	bu2, _ := b.Tick(b.Due())
	if bu.Sequence != 0xffff || bu2.Sequence != 0 {
		t.Fatalf("got sequences %d, %d, want 65535, 0", bu.Sequence, bu2.Sequence)
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
			b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
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
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
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
	if !ok || bu2.Lifetime != 150 || bu2.Sequence != bu.Sequence+1 {
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
	b := NewBinding(tHoA, tHA, tCoA, 8*time.Second, 1)
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
	b := NewBinding(tHoA, tHA, tCoA, 40*time.Second, 1)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 10)) // 40 s granted
	at := t0.Add(10 * time.Second)
	if _, ok := b.RefreshNow(at, tHA); !ok {
		t.Fatal("no refresh for the Binding Refresh Request")
	}
	resend, ok, err := b.HandleBA(at, BAPacket{Src: tHA, Dst: tCoA, HomeAddress: tHoA, Status: StatusSequenceOutOfWindow, Sequence: 20000})
	if err != nil || !ok || resend.Sequence != 20001 {
		t.Fatalf("got %+v %v %v, want a Binding Update numbered 20001 after the 135", resend, ok, err)
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
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
	if _, ok := b.RefreshNow(t0, tHA); ok {
		t.Fatal("refresh of an unbound binding")
	}
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 150))
	if _, ok := b.RefreshNow(t0.Add(5*time.Second), netip.MustParseAddr("2001:db8:9::1")); ok {
		t.Fatal("refresh requested by someone other than the Home Agent")
	}
	bu2, ok := b.RefreshNow(t0.Add(5*time.Second), tHA)
	if !ok || bu2.Sequence != bu.Sequence+1 {
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

func TestDeregistration(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 150))
	d, ok := b.Deregister(t0.Add(time.Minute), tHoA)
	if !ok || d.Lifetime != 0 || d.Src != tHoA || d.HomeAddress != tHoA {
		t.Fatalf("got %+v, want lifetime 0 from the home address", d)
	}
	if _, _, err := b.HandleBA(t0.Add(time.Minute), BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: d.Sequence}); err != nil {
		t.Fatal(err)
	}
	if s := b.Snapshot(t0.Add(time.Minute)); s.State != StateDeregistered || !b.Due().IsZero() {
		t.Fatalf("got %v due %v, want deregistered with no timer", s.State, b.Due())
	}
}

func TestBAValidation(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
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
			b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
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
		b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
		bu, _ := b.Register(t0)
		b.HandleBA(t0, ack(bu, StatusAccepted, 150))
		return b, bu
	}
	t.Run("unknown binding re-registers, tunnel kept", func(t *testing.T) {
		b, bu := bound()
		at := t0.Add(time.Minute)
		bu2, ok, err := b.HandleBE(at, BEPacket{Src: tHA, Dst: tCoA, Status: BEStatusUnknownBinding, HomeAddress: tHoA})
		if err != nil || !ok || bu2.Sequence != bu.Sequence+1 || bu2.Lifetime == 0 {
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
	b := NewBinding(tHoA, tHA, tHoA, 600*time.Second, 9)
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
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
	bu, _ := b.Register(t0)
	b.HandleBA(t0, ack(bu, StatusAccepted, 150))
	rec := b.Record()
	if rec.Sequence != bu.Sequence || rec.Granted != 600*time.Second || !rec.Expires.Equal(t0.Add(600*time.Second)) {
		t.Fatalf("got record %+v", rec)
	}
	// A new run, 100 s later: still bound, nothing to send, refresh where it was.
	now := t0.Add(100 * time.Second)
	r := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 999)
	if !r.Restore(now, rec.Sequence, rec.Granted, rec.Expires) {
		t.Fatal("live binding not restored")
	}
	if !r.Tunnelling(now) || r.Due() != b.Due() {
		t.Fatalf("got tunnelling %v due %v, want true and %v", r.Tunnelling(now), r.Due(), b.Due())
	}
	if bu2, ok := r.Tick(r.Due()); !ok || bu2.Sequence != bu.Sequence+1 {
		t.Fatalf("got refresh %+v, want sequence %d", bu2, bu.Sequence+1)
	}
	// After the grant ran out: not restored, but numbering continues.
	x := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 999)
	if x.Restore(t0.Add(700*time.Second), rec.Sequence, rec.Granted, rec.Expires) {
		t.Fatal("expired binding restored")
	}
	if bu3, _ := x.Register(t0.Add(700 * time.Second)); bu3.Sequence != bu.Sequence+1 {
		t.Errorf("got sequence %d after restart, want %d", bu3.Sequence, bu.Sequence+1)
	}
}

// Whatever sequence number the Home Agent last accepted, one of the first
// three tries of a de-registration is ahead of it in 16-bit serial arithmetic
// (RFC 1982), even if no Binding Acknowledgement ever reaches kgswitch.
func TestDeregistrationRetriesCoverTheSequenceSpace(t *testing.T) {
	for _, start := range []uint16{0, 1, 100, 32767, 32768, 40000, 65535} {
		b := NewBinding(tHoA, tHA, tHoA, 600*time.Second, start)
		bu, _ := b.Deregister(t0, tHoA)
		seqs := []uint16{bu.Sequence}
		for len(seqs) < 3 {
			now := b.Due()
			next, ok := b.Tick(now)
			if !ok {
				t.Fatalf("no retry at %v", now)
			}
			seqs = append(seqs, next.Sequence)
		}
		for last := 0; last < 1<<16; last++ {
			ahead := false
			for _, s := range seqs {
				d := uint16(s - uint16(last))
				ahead = ahead || (d != 0 && d < 1<<15)
			}
			if !ahead {
				t.Fatalf("start %d: tries %v are none ahead of %d", start, seqs, last)
			}
		}
	}
}

func TestDeregistrationBurst(t *testing.T) {
	b := NewBinding(tHoA, tHA, tHoA, 600*time.Second, 10)
	first, _ := b.Deregister(t0, tHoA)
	second, ok2 := b.Tick(t0)
	third, ok3 := b.Tick(t0)
	if !ok2 || !ok3 || second.Sequence != first.Sequence+1<<15-1 || third.Sequence != second.Sequence+1<<15-1 {
		t.Fatalf("got %d, %d (%v), %d (%v), want three at once, half the space apart", first.Sequence, second.Sequence, ok2, third.Sequence, ok3)
	}
	if _, ok := b.Tick(t0.Add(10 * time.Millisecond)); ok {
		t.Fatal("a fourth de-registration at once")
	}
	if got := b.Due().Sub(t0); got != InitialBindackTimeout {
		t.Errorf("got next try after %v, want %v", got, InitialBindackTimeout)
	}
	// The Home Agent accepted the second (the first was out of window).
	if _, _, err := b.HandleBA(t0, BAPacket{Src: tHA, Dst: tHoA, HomeAddress: tHoA, Sequence: second.Sequence}); err != nil {
		t.Fatal(err)
	}
	if b.Snapshot(t0).State != StateDeregistered {
		t.Errorf("got %v, want deregistered", b.Snapshot(t0).State)
	}
}

// A Home Agent that refuses the tunnel (it restarted) gets a Binding Update at
// once, with the first-registration timeout; the tunnel stays up, refusals
// within hintGap start nothing, and a later one adds to the outstanding series
// so the Ack to the first Binding Update, late after the Home Agent's DAD, is
// still taken.
func TestTunnelRefused(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
	bu, _ := b.Register(t0)
	if _, _, err := b.HandleBA(t0, ack(bu, StatusAccepted, 150)); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Minute)
	first, ok := b.HandleTunnelRefused(at)
	if !ok || first.Sequence != bu.Sequence+1 || first.Lifetime == 0 {
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
	if !ok || second.Sequence != first.Sequence+1 {
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
	idle := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
	if _, ok := idle.HandleTunnelRefused(t0); ok {
		t.Error("idle binding sent a Binding Update")
	}
	dereg := NewBinding(tHoA, tHA, tCoA, 600*time.Second, 1)
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
