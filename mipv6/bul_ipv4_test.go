package mipv6

import (
	"net/netip"
	"testing"
	"time"
)

var tHoA4 = netip.MustParseAddr("192.0.2.10")

// ack4 is ack with an IPv4 Address Acknowledgement for tHoA4.
func ack4(bu BUPacket, status uint8, lifetime uint16, ipv4Status uint8) BAPacket {
	a := ack(bu, status, lifetime)
	a.IPv4Ack = IPv4AddressAck{Present: true, Status: ipv4Status, Address: tHoA4}
	if StatusSuccess(ipv4Status) {
		a.IPv4Ack.PrefixLen = 32
	}
	return a
}

// ipv4View is what a test checks of a binding's IPv4 side.
type ipv4View struct {
	State      IPv4State
	Status     uint8
	Reason     string
	Tunnelling bool
}

func viewIPv4(b *Binding, now time.Time) ipv4View {
	s := b.Snapshot(now)
	return ipv4View{s.IPv4State, s.IPv4Status, s.IPv4Reason, b.IPv4Tunnelling(now)}
}

func dualStackBinding() *Binding {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	b.SetIPv4HomeAddress(tHoA4)
	return b
}

// TestIPv4InBindingUpdates checks which Binding Updates carry the IPv4 Home
// Address option: the registration, its retransmissions and the refresh,
// never the de-registration, and none at all for an IPv6-only binding.
func TestIPv4InBindingUpdates(t *testing.T) {
	want := IPv4HomeAddress{Address: tHoA4, PrefixLen: 32}
	b := dualStackBinding()
	reg, _ := b.Register(t0)
	if reg.IPv4HomeAddress != want {
		t.Errorf("got registration IPv4 option %+v, want %+v", reg.IPv4HomeAddress, want)
	}
	if v := viewIPv4(b, t0); v.State != IPv4Registering || v.Tunnelling {
		t.Errorf("got %+v before any Ack, want registering, not tunnelling", v)
	}
	re, ok := b.Tick(b.Due())
	if !ok || re.IPv4HomeAddress != want {
		t.Errorf("got retransmission %+v (sent %v), want the IPv4 option %+v", re.IPv4HomeAddress, ok, want)
	}
	if _, _, err := b.HandleBA(t0.Add(2*time.Second), ack4(re, StatusAccepted, 150, IPv4StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	refresh, ok := b.Tick(b.Due())
	if !ok || refresh.IPv4HomeAddress != want {
		t.Errorf("got refresh %+v (sent %v), want the IPv4 option %+v", refresh.IPv4HomeAddress, ok, want)
	}
	dereg, ok := b.Deregister(b.Due().Add(time.Second), tHoA)
	if !ok || dereg.IPv4HomeAddress != (IPv4HomeAddress{}) {
		t.Errorf("got de-registration IPv4 option %+v (sent %v), want none", dereg.IPv4HomeAddress, ok)
	}

	v6 := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	v6.SetIPv4HomeAddress(netip.MustParseAddr("2001:db8::1"))
	if bu, _ := v6.Register(t0); bu.IPv4HomeAddress != (IPv4HomeAddress{}) {
		t.Errorf("got IPv4 option %+v for an IPv6-only binding, want none", bu.IPv4HomeAddress)
	}
	if s := v6.Snapshot(t0); s.IPv4HomeAddress.IsValid() || s.IPv4State != IPv4Unregistered {
		t.Errorf("got snapshot IPv4 %v %v, want none, unregistered", s.IPv4HomeAddress, s.IPv4State)
	}
}

// TestIPv4Acknowledgement walks the Home Agent's possible answers to a
// registration carrying the IPv4 home address (RFC 5555 §3.2.1). The IPv6
// binding is accepted in every case but the last two; an IPv4 refusal
// leaves it bound and tunnelling.
func TestIPv4Acknowledgement(t *testing.T) {
	other := netip.MustParseAddr("192.0.2.99")
	tests := []struct {
		name  string
		ba    func(BUPacket) BAPacket
		bound bool // IPv6
		want  ipv4View
	}{
		{"accepted", func(bu BUPacket) BAPacket { return ack4(bu, StatusAccepted, 150, IPv4StatusSuccess) },
			true, ipv4View{IPv4Accepted, 0, "success", true}},
		{"administratively prohibited", func(bu BUPacket) BAPacket { return ack4(bu, StatusAccepted, 150, IPv4StatusProhibited) },
			true, ipv4View{IPv4Refused, 129, "administratively prohibited", false}},
		{"incorrect IPv4 home address", func(bu BUPacket) BAPacket { return ack4(bu, StatusAccepted, 150, IPv4StatusIncorrectHome) },
			true, ipv4View{IPv4Refused, 130, "incorrect IPv4 home address", false}},
		{"prefix allocation unauthorized", func(bu BUPacket) BAPacket {
			return ack4(bu, StatusAcceptedPrefixDiscovery, 150, IPv4StatusPrefixUnauthorized)
		}, true, ipv4View{IPv4Refused, 133, "prefix allocation unauthorized", false}},
		{"no acknowledgement: a Home Agent without RFC 5555", func(bu BUPacket) BAPacket { return ack(bu, StatusAccepted, 150) },
			true, ipv4View{IPv4Refused, 128, "home agent did not acknowledge the IPv4 home address", false}},
		{"success for another address", func(bu BUPacket) BAPacket {
			a := ack4(bu, StatusAccepted, 150, IPv4StatusSuccess)
			a.IPv4Ack.Address = other
			return a
		}, true, ipv4View{IPv4Refused, 0, "home agent bound 192.0.2.99, not 192.0.2.10", false}},
		{"IPv6 refused, IPv4 not answered", func(bu BUPacket) BAPacket { return ack(bu, StatusNotHomeSubnet, 0) },
			false, ipv4View{IPv4Registering, 0, "waiting for the IPv6 binding", false}},
		{"IPv6 and IPv4 refused", func(bu BUPacket) BAPacket { return ack4(bu, StatusProhibited, 0, IPv4StatusProhibited) },
			false, ipv4View{IPv4Refused, 129, "administratively prohibited", false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := dualStackBinding()
			bu, _ := b.Register(t0)
			now := t0.Add(time.Second)
			if _, _, err := b.HandleBA(now, tt.ba(bu)); err != nil {
				t.Fatal(err)
			}
			if got := b.Tunnelling(now); got != tt.bound {
				t.Errorf("got IPv6 tunnelling = %v, want %v", got, tt.bound)
			}
			if got := viewIPv4(b, now); got != tt.want {
				t.Errorf("got IPv4 %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestIPv4RefusalThenAcceptance: a refused IPv4 home address is asked again
// with each refresh, and an acceptance there starts IPv4 tunnelling; a
// refused IPv4 on a refresh stops it while IPv6 goes on.
func TestIPv4RefusalThenAcceptance(t *testing.T) {
	b := dualStackBinding()
	bu, _ := b.Register(t0)
	if _, _, err := b.HandleBA(t0.Add(time.Second), ack4(bu, StatusAccepted, 150, IPv4StatusProhibited)); err != nil {
		t.Fatal(err)
	}
	now := b.Due()
	refresh, ok := b.Tick(now)
	if !ok || !refresh.IPv4HomeAddress.Address.IsValid() {
		t.Fatalf("got refresh %+v (sent %v), want one asking for IPv4", refresh, ok)
	}
	if v := viewIPv4(b, now); v.State != IPv4Refused {
		t.Errorf("got IPv4 %+v while the refresh is outstanding, want still refused", v)
	}
	if _, _, err := b.HandleBA(now, ack4(refresh, StatusAccepted, 150, IPv4StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	if v := viewIPv4(b, now); v != (ipv4View{IPv4Accepted, 0, "success", true}) {
		t.Errorf("got IPv4 %+v after the refresh's Ack, want accepted and tunnelling", v)
	}
	now = b.Due()
	refresh, _ = b.Tick(now)
	if !b.IPv4Tunnelling(now) {
		t.Error("got IPv4 not tunnelling while the refresh is outstanding, want tunnelling")
	}
	if _, _, err := b.HandleBA(now, ack4(refresh, StatusAccepted, 150, IPv4StatusUnspecified)); err != nil {
		t.Fatal(err)
	}
	if v := viewIPv4(b, now); v.State != IPv4Refused || v.Tunnelling || !b.Tunnelling(now) {
		t.Errorf("got IPv4 %+v, IPv6 tunnelling %v; want IPv4 refused, IPv6 tunnelling", v, b.Tunnelling(now))
	}
}

// TestIPv4FollowsIPv6Binding: IPv4 is tunnelled only within the IPv6
// binding's grant, a refused IPv6 refresh within it changes neither, and
// the Ack to a de-registration ends both.
func TestIPv4FollowsIPv6Binding(t *testing.T) {
	b := dualStackBinding()
	bu, _ := b.Register(t0)
	if _, _, err := b.HandleBA(t0, ack4(bu, StatusAccepted, 150, IPv4StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	now := b.Due()
	refresh, _ := b.Tick(now)
	if _, _, err := b.HandleBA(now, ack(refresh, StatusUnspecified, 0)); err != nil {
		t.Fatal(err)
	}
	if !b.IPv4Tunnelling(now) {
		t.Error("got IPv4 not tunnelling after a refused refresh within the grant, want tunnelling")
	}
	end := t0.Add(600 * time.Second)
	if b.IPv4Tunnelling(end) {
		t.Error("got IPv4 tunnelling at the end of the grant, want not")
	}
	for now = b.Due(); now.Before(end); now = b.Due() {
		b.Tick(now)
	}
	b.Tick(now)
	if v := viewIPv4(b, now); v.State != IPv4Registering || v.Tunnelling {
		t.Errorf("got IPv4 %+v after the binding lapsed, want registering, not tunnelling", v)
	}

	b = dualStackBinding()
	bu, _ = b.Register(t0)
	if _, _, err := b.HandleBA(t0, ack4(bu, StatusAccepted, 150, IPv4StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	dereg, _ := b.Deregister(t0.Add(10*time.Second), tHoA)
	if _, _, err := b.HandleBA(t0.Add(11*time.Second), ack(dereg, StatusAccepted, 0)); err != nil {
		t.Fatal(err)
	}
	if v := viewIPv4(b, t0.Add(11*time.Second)); v != (ipv4View{IPv4Unregistered, 0, "deregistered", false}) {
		t.Errorf("got IPv4 %+v after de-registration, want unregistered", v)
	}
	reg, _ := b.Register(t0.Add(20 * time.Second))
	if !reg.IPv4HomeAddress.Address.IsValid() || viewIPv4(b, t0.Add(20*time.Second)).State != IPv4Registering {
		t.Errorf("got registration after de-registration without IPv4 (%+v, %v), want registering it again",
			reg.IPv4HomeAddress, viewIPv4(b, t0.Add(20*time.Second)).State)
	}
}

// TestIPv4AddressChange: an Ack to a Binding Update that carried another
// IPv4 address than the one now set, or none, decides nothing about it.
func TestIPv4AddressChange(t *testing.T) {
	b := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	bu, _ := b.Register(t0)
	b.SetIPv4HomeAddress(tHoA4)
	if _, _, err := b.HandleBA(t0, ack(bu, StatusAccepted, 150)); err != nil {
		t.Fatal(err)
	}
	if v := viewIPv4(b, t0); v.State != IPv4Registering {
		t.Errorf("got IPv4 %+v after an Ack to a Binding Update without it, want registering", v)
	}
	now := b.Due()
	refresh, _ := b.Tick(now)
	b.SetIPv4HomeAddress(netip.MustParseAddr("192.0.2.11"))
	if _, _, err := b.HandleBA(now, ack4(refresh, StatusAccepted, 150, IPv4StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	if v := viewIPv4(b, now); v.State != IPv4Registering || v.Tunnelling {
		t.Errorf("got IPv4 %+v after an Ack for the previous address, want registering", v)
	}
	b.SetIPv4HomeAddress(netip.Addr{})
	if s := b.Snapshot(now); s.IPv4HomeAddress.IsValid() || s.IPv4State != IPv4Unregistered {
		t.Errorf("got IPv4 %v %v after removing it, want none, unregistered", s.IPv4HomeAddress, s.IPv4State)
	}
}

// TestIPv4Restore: the IPv4 acceptance survives a restart with the grant.
func TestIPv4Restore(t *testing.T) {
	b := dualStackBinding()
	bu, _ := b.Register(t0)
	if _, _, err := b.HandleBA(t0, ack4(bu, StatusAccepted, 150, IPv4StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	r := b.Record()
	if r.IPv4 != tHoA4 {
		t.Fatalf("got Record.IPv4 = %v, want %v", r.IPv4, tHoA4)
	}
	now := t0.Add(time.Minute)
	c := dualStackBinding()
	if !c.Restore(now, r.Sequence, r.Granted, r.Expires) {
		t.Fatal("got Restore false, want the binding alive")
	}
	c.RestoreIPv4(r.IPv4)
	if !c.IPv4Tunnelling(now) {
		t.Error("got restored binding not tunnelling IPv4, want tunnelling")
	}
	d := NewBinding(tHoA, tHA, tCoA, 600*time.Second)
	d.SetIPv4HomeAddress(netip.MustParseAddr("192.0.2.11"))
	d.Restore(now, r.Sequence, r.Granted, r.Expires)
	d.RestoreIPv4(r.IPv4)
	if d.IPv4Tunnelling(now) {
		t.Error("got IPv4 tunnelling for an address other than the one restored, want not")
	}
}

func TestIPv4StateString(t *testing.T) {
	for s, want := range map[IPv4State]string{IPv4Unregistered: "unregistered", IPv4Registering: "registering",
		IPv4Accepted: "accepted", IPv4Refused: "refused", 9: "ipv4state(9)"} {
		if got := s.String(); got != want {
			t.Errorf("got %d.String() = %q, want %q", int(s), got, want)
		}
	}
}
