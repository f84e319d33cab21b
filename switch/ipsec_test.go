package vswitch

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kgswitch/kgswitch/datapath/datapathtest"
	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/mipv6"
	"github.com/kgswitch/kgswitch/ovsctl"
)

// ipsecHarness is a foreign host expecting vnet3, whose signalling is under
// ESP with SAs from a key file (AES-CBC with HMAC-SHA-256); it returns the
// SAs for Binding Updates and Acks as the Home Agent has them.
func ipsecHarness(t *testing.T) (*harness, *esp.SA, *esp.SA) {
	return ipsecHarnessOf(t, testConfig)
}

// ipsecHarnessOf is ipsecHarness with configuration cfg.
func ipsecHarnessOf(t *testing.T, cfg string) (*harness, *esp.SA, *esp.SA) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ipsec.keys")
	lines := fmt.Sprintf(`ip xfrm state add src %[1]v dst %[2]v proto esp spi 0x1000 mode transport enc "cbc(aes)" 0x%[3]x auth-trunc "hmac(sha256)" 0x%[4]x 128
ip xfrm state add src %[2]v dst %[1]v proto esp spi 0x2000 mode transport enc "cbc(aes)" 0x%[5]x auth-trunc "hmac(sha256)" 0x%[6]x 128
`, hoa, ha, randomKey(t, 16), randomKey(t, 32), randomKey(t, 16), randomKey(t, 32))
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	sas, err := esp.ParseKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, fmt.Sprintf("ipsec_keys = %q\n", path)+cfg)
	return h, &sas[0], &sas[1]
}

func randomKey(t *testing.T, n int) []byte {
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// A VM with SAs registers under ESP and takes only an Ack under ESP from
// its SA: a clear one, one with an unknown SPI and a tampered one are
// dropped and counted.
func TestSignallingUnderESP(t *testing.T) {
	h, buSA, baSA := ipsecHarness(t)
	h.arrive(t, "vnet3", 3, guestMAC)
	sent := h.nextSent(t)
	if _, err := mipv6.ParseBUPacket(sent.Pkt); err == nil {
		t.Fatal("a Binding Update in clear for a VM under ESP")
	}
	seq, bu, err := esp.ParseBUPacket(sent.Pkt, buSA)
	if err != nil || bu.HomeAddress != hoa || bu.Lifetime == 0 {
		t.Fatalf("Binding Update under ESP: got %+v, %v", bu, err)
	}
	if want := espClock(h.clk.Now()); seq < want {
		t.Errorf("got ESP sequence number %d, want at least the clock's %d", seq, want)
	}
	ack := mipv6.BAPacket{Src: ha, Dst: coa, HomeAddress: hoa, Sequence: bu.Sequence, Lifetime: bu.Lifetime}
	inject := func(pkt []byte) {
		h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, pkt))
		h.settle(t)
	}
	inject(mipv6.AppendBAPacket(nil, ack))
	other, err := esp.NewSA(0x3000, ha, hoa, esp.AESCBCHMACSHA256, randomKey(t, 16), randomKey(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := esp.AppendBAPacket(nil, &other, 1, ack, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	inject(forged)
	good, err := esp.AppendBAPacket(nil, baSA, 1, ack, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-20] ^= 1
	inject(tampered)
	st := h.status(t, "vnet3")
	if st.BindingState != "registering" || st.Drops["signal-clear"] != 1 || st.Drops["esp-invalid"] != 1 {
		t.Fatalf("got %+v, want still registering with a clear and a tampered Ack counted", st)
	}
	if got := h.sw.dpCounters.DropMap()["esp-unknown-spi"]; got != 1 {
		t.Errorf("got %d counted esp-unknown-spi, want 1", got)
	}
	inject(good)
	if st := h.status(t, "vnet3"); st.BindingState != "bound" {
		t.Fatalf("got %+v after the Ack under ESP, want bound", st)
	}
	// The Home Agent's Acks under ESP reach kgswitch: OpenFlow diverts ESP
	// from it.
	if flows := strings.Join(h.flows.text(), "\n"); !strings.Contains(flows, "ipv6_src=2001:db8:2000::1,ipv6_dst=2001:db8:3000::3,nw_proto=50") {
		t.Errorf("no flow for ESP from the Home Agent:\n%s", flows)
	}
}

// ESP sequence numbers never go back: each Binding Update's is above the
// last one's, and above what the clock gives (another host, or this one
// before a restart, sent below it).
func TestESPSequenceRises(t *testing.T) {
	h, buSA, _ := ipsecHarness(t)
	h.arrive(t, "vnet3", 3, guestMAC)
	var last uint32
	for i := range 3 {
		seq, _, err := esp.ParseBUPacket(h.nextSent(t).Pkt, buSA)
		if err != nil {
			t.Fatal(err)
		}
		if seq <= last || seq < espClock(h.clk.Now()) {
			t.Fatalf("Binding Update %d: ESP sequence number %d after %d (clock %d)", i, seq, last, espClock(h.clk.Now()))
		}
		last = seq
		h.advance(t, untilRetransmission(h))
	}
}

// untilRetransmission is how long until vnet3's binding sends again.
func untilRetransmission(h *harness) time.Duration {
	var d time.Duration
	h.sw.do(context.Background(), func() { d = h.sw.byKey[hoa.String()].binding.Due().Sub(h.clk.Now()) })
	return d
}

// When the Home Agent stays silent under ESP (a wrong key, an SA bound to
// the care-of address), status says in words what to check.
func TestSilentHomeAgentUnderESPExplained(t *testing.T) {
	h, _, _ := ipsecHarness(t)
	h.arrive(t, "vnet3", 3, guestMAC)
	for i := 1; ; i++ {
		h.nextSent(t)
		if i == silentESPTries {
			break
		}
		if st := h.status(t, "vnet3"); strings.Contains(st.Reason, "under IPsec") {
			t.Fatalf("after %d Binding Updates: got reason %q too soon", i, st.Reason)
		}
		h.advance(t, untilRetransmission(h))
	}
	st := h.status(t, "vnet3")
	if !strings.Contains(st.Reason, "under IPsec") || !strings.Contains(st.Reason, "bound to the home address") {
		t.Errorf("got reason %q, want what to check under IPsec", st.Reason)
	}
}

// Back on its home link, the VM is de-registered under ESP from its home
// address, and the Home Agent's Ack under ESP, sent to the home address
// without a routing header, completes the return.
func TestReturnHomeUnderESP(t *testing.T) {
	h, buSA, baSA := ipsecHarnessOf(t, homeHostConfig)
	h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
	waitStatus(t, h, "waiting", func(st []PortStatus) bool { return st[0].BindingState == "waiting-for-guest" })
	h.conn.Inject(datapathtest.RARP(guestMAC))
	_, bu, err := esp.ParseBUPacket(h.nextSent(t).Pkt, buSA)
	if err != nil || bu.Lifetime != 0 || bu.Src != hoa {
		t.Fatalf("got %+v (%v), want a de-registration under ESP from the home address", bu, err)
	}
	if flows := strings.Join(h.flows.text(), "\n"); !strings.Contains(flows, "ipv6_src=2001:db8:2000::1,ipv6_dst=2001:db8:2000::10,nw_proto=50") {
		t.Errorf("no flow for ESP from the Home Agent to the home address:\n%s", flows)
	}
	checkRouterNA(t, h.nextFrame(t))
	ba, err := esp.AppendBAPacket(nil, baSA, 7, mipv6.BAPacket{Src: ha, Dst: hoa, HomeAddress: hoa, Sequence: bu.Sequence}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h.conn.Inject(datapathtest.EthFrame(kgMAC, lanMAC, ba))
	checkHomeNA(t, h.nextFrame(t))
	if st := h.status(t, "vnet3"); st.BindingState != "deregistered" || len(st.Drops) != 0 {
		t.Errorf("got %+v, want deregistered with nothing dropped", st)
	}
}

// The last ESP sequence number sent survives a restart: numbering goes on
// above it even when the clock is behind it (stepped back by NTP, say).
func TestESPSequenceSurvivesRestart(t *testing.T) {
	store := &memStore{}
	path := filepath.Join(t.TempDir(), "ipsec.keys")
	lines := fmt.Sprintf(`ip xfrm state add src %[1]v dst %[2]v proto esp spi 0x1000 mode transport aead "rfc4106(gcm(aes))" 0x%[3]x 128
ip xfrm state add src %[2]v dst %[1]v proto esp spi 0x2000 mode transport aead "rfc4106(gcm(aes))" 0x%[4]x 128
`, hoa, ha, randomKey(t, 20), randomKey(t, 20))
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	sas, err := esp.ParseKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("ipsec_keys = %q\n", path) + testConfig
	// A previous run sent far above what the clock gives now.
	ahead := espClock(testEpoch) + 1_000_000
	store.m = map[string]StoredBinding{hoa.String(): {HomeAgent: ha.String(), CareOf: coa.String(), Sequence: 7, ESPSequence: ahead}}
	h := newHarnessWith(t, cfg, store)
	h.arrive(t, "vnet3", 3, guestMAC)
	seq, _, err := esp.ParseBUPacket(h.nextSent(t).Pkt, &sas[0])
	if err != nil {
		t.Fatal(err)
	}
	if seq <= ahead {
		t.Fatalf("got ESP sequence number %d after a restart, want above the %d sent before", seq, ahead)
	}
	h.settle(t)
	if got, _ := store.get(hoa.String()); got.ESPSequence != seq {
		t.Errorf("saved ESP sequence number %d, want %d", got.ESPSequence, seq)
	}
}
