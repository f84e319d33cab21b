package qemu

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
)

func TestParseMobility(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []MobilityMessage
		wantErr   bool
	}{
		{name: "empty", out: "\n"},
		{
			name: "bu and ba",
			// tshark's lines for the lab's care-of address, Home Agent
			// and home address. A BA with a type 2 routing header: tshark
			// lists the routing header's address after the IPv6 header's.
			out: "1700000000.123456789\t2001:db8:3000::3\t2001:db8:2000::1\t5\t38414\t150\t\t\t\n" +
				"1700000001.5\t2001:db8:2000::1\t2001:db8:3000::3,2001:db8:2000::10\t6\t\t\t0\t38414\t150\n",
			want: []MobilityMessage{
				{At: time.Unix(1700000000, 123456789), Type: MHBindingUpdate, Src: lab.CareOfAddr, Dst: lab.HAAddr, Seq: 38414, Lifetime: 150},
				{At: time.Unix(1700000001, 500000000), Type: MHBindingAck, Src: lab.HAAddr, Dst: lab.CareOfAddr, Seq: 38414, Status: 0, Lifetime: 150},
			},
		},
		{
			name: "rejection and other types",
			out: "1700000002.000001\t2001:db8:2000::1\t2001:db8:3000::3\t6\t\t\t135\t1410\t0\n" +
				"1700000003\t2001:db8:2000::1\t2001:db8:3000::3\t7\t\t\t\t\t\n",
			want: []MobilityMessage{
				{At: time.Unix(1700000002, 1000), Type: MHBindingAck, Src: lab.HAAddr, Dst: lab.CareOfAddr, Seq: 1410, Status: 135},
			},
		},
		{name: "too few fields", out: "1700000000.1\t2001:db8:3000::3\t5\n", wantErr: true},
		{name: "bad address", out: "1700000000.1\tnope\t2001:db8:2000::1\t5\t1\t150\t\t\t\n", wantErr: true},
		{name: "bad sequence", out: "1700000000.1\t2001:db8:3000::3\t2001:db8:2000::1\t5\t70000\t150\t\t\t\n", wantErr: true},
		{name: "bad time", out: "x.1\t2001:db8:3000::3\t2001:db8:2000::1\t5\t1\t150\t\t\t\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMobility(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got ParseMobility(%q) error = %v, want error %v", tc.out, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ParseMobility(%q) mismatch (-want +got):\n%s", tc.out, diff)
			}
		})
	}
}

// FuzzParseMobility: any tshark output parses without panicking, and what
// parses renders back (as ParseMobility's input) to the same messages.
func FuzzParseMobility(f *testing.F) {
	f.Add("1700000000.123456789\t2001:db8:3000::3\t2001:db8:2000::1\t5\t38414\t150\t\t\t\n")
	f.Add("1700000001.5\t2001:db8:2000::1\t2001:db8:3000::3,2001:db8:2000::10\t6\t\t\t135\t1\t0\n")
	f.Add("\t\t\t\t\t\t\t\t")
	f.Fuzz(func(t *testing.T, out string) {
		msgs, err := ParseMobility(out)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, m := range msgs {
			bu, ba := [2]string{}, [3]string{}
			if m.Type == MHBindingUpdate {
				bu = [2]string{fmt.Sprint(m.Seq), fmt.Sprint(m.Lifetime)}
			} else {
				ba = [3]string{fmt.Sprint(m.Status), fmt.Sprint(m.Seq), fmt.Sprint(m.Lifetime)}
			}
			fmt.Fprintf(&b, "%d.%09d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", m.At.Unix(), m.At.Nanosecond(), m.Src, m.Dst, m.Type, bu[0], bu[1], ba[0], ba[1], ba[2])
		}
		again, err := ParseMobility(b.String())
		if err != nil {
			t.Fatalf("got ParseMobility(rendered %q) error = %v, want none", b.String(), err)
		}
		if diff := cmp.Diff(msgs, again, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}

func TestHopFigures(t *testing.T) {
	stop := time.Unix(1700000000, 0)
	at := func(ms int) time.Time { return stop.Add(time.Duration(ms) * time.Millisecond) }
	bu := func(ms int, seq uint16) MobilityMessage {
		return MobilityMessage{At: at(ms), Type: MHBindingUpdate, Src: lab.CareOfAddr, Dst: lab.HAAddr, Seq: seq, Lifetime: 150}
	}
	ba := func(ms int, seq uint16, status int) MobilityMessage {
		return MobilityMessage{At: at(ms), Type: MHBindingAck, Src: lab.HAAddr, Dst: lab.CareOfAddr, Seq: seq, Status: status, Lifetime: 150}
	}
	h := Hop{
		From: "hostB", To: "hostC",
		Migration: Report{Stop: at(0), Resume: at(5), Downtime: 4 * time.Millisecond},
		Updates:   []MobilityMessage{bu(9, 100), bu(10, 1411)},
		Acks:      []MobilityMessage{ba(10, 1410, 135), ba(11, 1411, 0)},
		Probes:    scenario.PingResult{Sent: 200, Received: 198, Lost: 2, LongestGap: 40 * time.Millisecond, FirstAfter: at(30)},
	}
	if d, ok := h.ResumeToUpdate(); !ok || d != 4*time.Millisecond {
		t.Errorf("got ResumeToUpdate = %v, %v, want 4ms, true", d, ok)
	}
	if d, ok := h.UpdateToAck(); !ok || d != 2*time.Millisecond {
		t.Errorf("got UpdateToAck = %v, %v, want 2ms (to the accepting ack), true", d, ok)
	}
	if d, ok := h.ResumeToReply(); !ok || d != 25*time.Millisecond {
		t.Errorf("got ResumeToReply = %v, %v, want 25ms, true", d, ok)
	}
	if got := h.Rejected(); !cmp.Equal(got, []int{135}) {
		t.Errorf("got Rejected = %v, want [135]", got)
	}
	if got := h.Early(); len(got) != 0 {
		t.Errorf("got Early = %+v, want none", got)
	}
	row := h.Row()
	for _, want := range []string{"hostB -> hostC", "4.0ms", "5.0ms", "2.0ms", "25ms", "2/200", "40ms", "135"} {
		if !strings.Contains(row, want) {
			t.Errorf("got Row = %q, want it to contain %q", row, want)
		}
	}

	// A de-registration from home sent before STOP is early, and shows as
	// a negative RESUME -> BU.
	home := Hop{From: "hostB", To: "hostA", Migration: Report{Stop: at(0), Resume: at(5)},
		Updates: []MobilityMessage{{At: at(-300), Type: MHBindingUpdate, Src: lab.HoA, Dst: lab.HAAddr, Seq: 7}}}
	if got := home.Early(); len(got) != 1 || got[0].Seq != 7 {
		t.Errorf("got Early = %+v, want the update of seq 7", got)
	}
	if d, ok := home.ResumeToUpdate(); !ok || d != -305*time.Millisecond {
		t.Errorf("got ResumeToUpdate = %v, %v, want -305ms, true", d, ok)
	}
	if _, ok := home.UpdateToAck(); ok {
		t.Error("got UpdateToAck ok without an ack, want !ok")
	}
	if !strings.Contains(home.Row(), "none") {
		t.Errorf("got Row = %q, want \"none\" for the missing ack", home.Row())
	}
}

func TestLostRanges(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		lost []time.Time
		want string
	}{
		{nil, "none"},
		{[]time.Time{at(-82)}, "-82ms"},
		{[]time.Time{at(8), at(24), at(40), at(500)}, "+8ms..+40ms (3), +500ms"},
	} {
		if got := LostRanges(tc.lost, t0, 50*time.Millisecond); got != tc.want {
			t.Errorf("got LostRanges(%v) = %q, want %q", tc.lost, got, tc.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		ok   bool
		want string
	}{
		{0, false, "none"},
		{1500 * time.Microsecond, true, "1.5ms"},
		{-3 * time.Millisecond, true, "-3.0ms"},
		{1002600 * time.Microsecond, true, "1.003s"},
		{-395 * time.Millisecond, true, "-395ms"},
	} {
		if got := FormatDuration(tc.d, tc.ok); got != tc.want {
			t.Errorf("got FormatDuration(%v, %v) = %q, want %q", tc.d, tc.ok, got, tc.want)
		}
	}
}

// TestLostEchoes reads both families' tshark lines alike: only the stream's
// identifier (the one with the most requests) counts, and requests after its
// last answered one were still in flight, not lost.
func TestLostEchoes(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(1700000000, 0).Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name, request, reply string
	}{
		{"ICMPv6", "128", "129"},
		{"ICMPv4", "8", "0"},
	} {
		line := func(ms int, typ, id string, seq int) string {
			return fmt.Sprintf("%d.%09d\t%s\t%s\t%d\n", at(ms).Unix(), at(ms).Nanosecond(), typ, id, seq)
		}
		var out strings.Builder
		for i := 1; i <= 6; i++ {
			out.WriteString(line(i*10, tc.request, "0x0011", i))
			if i != 3 && i != 4 && i != 6 { // 3 and 4 lost, 6 in flight
				out.WriteString(line(i*10+1, tc.reply, "0x0011", i))
			}
		}
		// WaitReachable's single ping, unanswered, another identifier.
		out.WriteString(line(35, tc.request, "0x0022", 1))
		out.WriteString("garbage\n")
		got, err := lostEchoes(out.String(), tc.request, tc.reply)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if diff := cmp.Diff([]time.Time{at(30), at(40)}, got); diff != "" {
			t.Errorf("%s: lostEchoes mismatch (-want +got):\n%s", tc.name, diff)
		}
	}
}
