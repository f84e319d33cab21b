package integration

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/tests/integration/lab"
	"github.com/kgswitch/kgswitch/tests/integration/qemu"
	"github.com/kgswitch/kgswitch/tests/integration/scenario"
	"github.com/kgswitch/kgswitch/tests/integration/wait"
)

// TestQEMUDualStack live-migrates a dual-stack guest (IPv6 from its static
// home address, IPv4 from the home DHCPv4 server) from hostA (home) to hostB
// (foreign) and back with real QEMU migrations, kgswitch on both hosts with
// the IPv4 side declared and the home host's departure cover on (RFC 5555:
// the IPv4 home address rides the same binding). cn keeps a paced TCP echo
// stream to each of the guest's home addresses across both hops and probes
// both every 10 ms: both streams end with no reset and every byte intact,
// the first departure loses no more than 5 probes of either family, the
// guest's IPv4 configuration is the same at home, abroad and back, and
// kgswitch on hostB reports the IPv4 home address accepted by the Home
// Agent. It prints each hop's losses for both families.
func TestQEMUDualStack(t *testing.T) {
	oneQEMUAtATime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	route := []string{"hostA", "hostB", "hostA"}
	o := hopOpts{ipv4: true}
	migrateWithRetry(t, func(n int) *qemu.VM {
		e, img := newQEMUEnv(t, ctx)
		startKgswitchWith(t, ctx, e, route[:2], nil, true, true)
		vm := bootVMWith(t, ctx, e, qemu.Config{Lab: e.Lab, Host: route[0], Name: fmt.Sprintf("d%d-0A", n), Image: img, DHCP4: true})
		home := waitGuestIPv4(t, ctx, vm, guestHomeIPv4)
		if _, err := e.WaitReachable(ctx, "cn", lab.HoA4.String(), 10*time.Second); err != nil {
			t.Fatalf("guest at home over IPv4: %v", err)
		}

		// 1 MiB each at 48 KiB/s: about 21 s, through both hops (the
		// emulated guest echoes both streams at once).
		const total, rate = 1 << 20, 48 << 10
		streams := map[string]*qemu.GuestTCP{}
		for _, to := range []netip.AddrPort{netip.AddrPortFrom(lab.HoA, 5001), netip.AddrPortFrom(lab.HoA4, 5002)} {
			s, err := qemu.StartGuestTCPPort(ctx, e, vm, to, total, rate, 60*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			streams[family(to.Addr())] = s
		}

		var hops []qemu.Hop
		for i, to := range route[1:] {
			dst, h := hop(t, ctx, e, img, vm, to, fmt.Sprintf("d%d-%d%s", n, i+1, strings.TrimPrefix(to, "host")), o)
			if dst.Crash() != "" {
				dst.Close()
				return dst
			}
			hops = append(hops, h)
			vm = dst
			if to == lab.VM.StartHost {
				continue
			}
			// Abroad: the guest's IPv4 is what it was at home (kgswitch
			// answers for its gateway), and the Home Agent took the
			// IPv4 home address with the binding.
			if got, err := vm.IPv4(ctx); err != nil || !got.Equal(home) {
				t.Errorf("guest's IPv4 on %s: got %v (%v), want %v as at home", to, got, err, home)
			}
			st, err := e.Status(ctx, to, lab.GuestPort)
			if err != nil || st.Location != "foreign" || st.BindingState != "bound" || st.IPv4Address != lab.HoA4.String() || st.IPv4State != "accepted" {
				t.Errorf("%s status after the migration: %+v (%v), want foreign, bound, IPv4 home address %v accepted", to, st, err, lab.HoA4)
			} else {
				t.Logf("kgswitch on %s: %s", to, st.IPv4)
			}
		}
		if got, err := vm.IPv4(ctx); err != nil || !got.Equal(home) {
			t.Errorf("guest's IPv4 back on %s: got %v (%v), want %v as before", vm.Host, got, err, home)
		}

		last := hops[len(hops)-1]
		for _, fam := range []string{"IPv6", "IPv4"} {
			s := streams[fam]
			client, server := waitTCP(t, ctx, s, vm)
			checkStream(t, total, client, server)
			end := s.End(client)
			t.Logf("%s TCP stream: %d bytes each way in %.1f s, %s to %s; the last hop resumed at %s", fam, client.Sent, client.Seconds,
				s.Started.Format("15:04:05.000"), end.Format("15:04:05.000"), last.Migration.Resume.Format("15:04:05.000"))
			if !end.After(last.Migration.Resume) {
				t.Errorf("the %s TCP stream ended at %s, before the last hop resumed (%s): it proves nothing about that hop; make it longer",
					fam, end.Format("15:04:05.000"), last.Migration.Resume.Format("15:04:05.000"))
			}
		}

		logHops(t, "dual-stack guest A -> B -> A, departure cover on, IPv6 probes every 10 ms:", hops)
		var b strings.Builder
		b.WriteString("probes lost at 10 ms, per hop and family:\n")
		for _, h := range hops {
			fmt.Fprintf(&b, "  %-14s IPv6 %3d/%-5d (longest gap %6v)   IPv4 %3d/%-5d (longest gap %6v)\n", h.From+" -> "+h.To,
				h.Probes.Lost, h.Probes.Sent, h.Probes.LongestGap.Round(time.Millisecond), h.Probes4.Lost, h.Probes4.Sent, h.Probes4.LongestGap.Round(time.Millisecond))
		}
		t.Logf("%s", b.String())

		for i, h := range hops {
			// The first departure: the cover turns the Home Agent's DAD
			// and takeover into delay, for IPv4 (gratuitous ARP) as for
			// IPv6. The return: the bound of TestQEMUPingPong.
			most := 30
			if i == 0 {
				most = 5
			}
			for _, p := range []struct {
				fam string
				r   scenario.PingResult
			}{{"IPv6", h.Probes}, {"IPv4", h.Probes4}} {
				if p.r.Lost > most {
					t.Errorf("hop %s -> %s: %d of %d %s probes lost (longest gap %v), want at most %d",
						h.From, h.To, p.r.Lost, p.r.Sent, p.fam, p.r.LongestGap.Round(time.Millisecond), most)
				}
			}
			if r := h.Rejected(); len(r) != 0 {
				t.Errorf("hop %s -> %s: Acknowledgements with statuses %v, want none refused", h.From, h.To, r)
			}
		}
		return vm
	})
}

// family names addr's IP version.
func family(addr netip.Addr) string {
	if addr.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// waitGuestIPv4 waits until the QEMU guest's IPv4 configuration is want
// (DHCP at boot takes a moment) and returns it, or fails the test with its
// DHCP client's log.
func waitGuestIPv4(t *testing.T, ctx context.Context, vm *qemu.VM, want scenario.GuestIPv4) scenario.GuestIPv4 {
	t.Helper()
	var got scenario.GuestIPv4
	if err := wait.Until(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		var err error
		if got, err = vm.IPv4(ctx); err != nil {
			return wait.Fatal(err)
		}
		if !got.Equal(want) {
			return fmt.Errorf("guest %s's IPv4: got %v, want %v", vm.Name, got, want)
		}
		return nil
	}); err != nil {
		out, _ := vm.Shell(ctx, "cat /tmp/udhcpc.log")
		t.Fatalf("%v\nudhcpc:\n%s", err, out)
	}
	return got
}
