package esp

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kgswitch/kgswitch/mipv6"
)

func testBU() mipv6.BUPacket {
	return mipv6.BUPacket{Src: coa, Dst: haAddr, HomeAddress: hoa, Sequence: 0x1234, Flags: mipv6.FlagA | mipv6.FlagH, Lifetime: 150}
}

func testBA() mipv6.BAPacket {
	return mipv6.BAPacket{Src: haAddr, Dst: coa, HomeAddress: hoa, Status: mipv6.StatusAccepted, Sequence: 0x1234, Lifetime: 150, RefreshInterval: 75}
}

// TestPacketRoundTrip builds and parses a Binding Update and an
// Acknowledgement with each algorithm and checks the layout RFC 3776 §3
// and Linux agree on: the Home Address option and the type 2 routing
// header in clear before ESP.
func TestPacketRoundTrip(t *testing.T) {
	for _, alg := range allAlgorithms {
		t.Run(alg.String(), func(t *testing.T) {
			buSA := testSA(t, alg, 0x1000, hoa, haAddr, 0x10)
			baSA := testSA(t, alg, 0x2000, haAddr, hoa, 0x50)

			bu, err := AppendBUPacket(nil, &buSA, 3, testBU(), rand.Reader)
			if err != nil {
				t.Fatalf("got AppendBUPacket error = %v, want nil", err)
			}
			if got := bu[6]; got != mipv6.IPProtoDstOpts {
				t.Errorf("got BU next header %d, want Destination Options", got)
			}
			if got := bu[40]; got != IPProtoESP {
				t.Errorf("got Destination Options next header %d, want ESP", got)
			}
			if a := hoa.As16(); bu[46] != mipv6.OptHomeAddress || !bytes.Equal(bu[48:64], a[:]) {
				t.Errorf("got Destination Options %x, want the home address in clear", bu[40:64])
			}
			if got := int(binary.BigEndian.Uint16(bu[4:])); got != len(bu)-40 {
				t.Errorf("got payload length %d, want %d", got, len(bu)-40)
			}
			seq, gotBU, err := ParseBUPacket(bu, &buSA)
			if err != nil || seq != 3 {
				t.Fatalf("got ParseBUPacket sequence %d, error = %v; want 3, nil", seq, err)
			}
			if diff := cmp.Diff(testBU(), gotBU, addrCmp); diff != "" {
				t.Errorf("got ParseBUPacket diff (-sent +got):\n%s", diff)
			}
			// Inside ESP, the Mobility Header's checksum has the home
			// address as pseudo-header source (RFC 6275 §6.1.1).
			_, nh, mh, err := buSA.Open(bu[64:])
			if err != nil || nh != mipv6.IPProtoMH {
				t.Fatalf("got Open next header %d, error = %v; want 135, nil", nh, err)
			}
			if c := mipv6.MHChecksum(hoa, haAddr, mh); c != mipv6.MobilityHeader(mh).Checksum() {
				t.Errorf("got MH checksum %#04x, want %#04x (home address as source)", mipv6.MobilityHeader(mh).Checksum(), c)
			}

			ba, err := AppendBAPacket(nil, &baSA, 0xffffffff, testBA(), rand.Reader)
			if err != nil {
				t.Fatalf("got AppendBAPacket error = %v, want nil", err)
			}
			if got := ba[6]; got != mipv6.IPProtoRouting {
				t.Errorf("got BA next header %d, want Routing", got)
			}
			if a := hoa.As16(); ba[40] != IPProtoESP || ba[42] != mipv6.RoutingType2 || !bytes.Equal(ba[48:64], a[:]) {
				t.Errorf("got routing header %x, want type 2 to the home address, next header ESP", ba[40:64])
			}
			seq, gotBA, err := ParseBAPacket(ba, &baSA)
			if err != nil || seq != 0xffffffff {
				t.Fatalf("got ParseBAPacket sequence %d, error = %v; want 4294967295, nil", seq, err)
			}
			if diff := cmp.Diff(testBA(), gotBA, addrCmp); diff != "" {
				t.Errorf("got ParseBAPacket diff (-sent +got):\n%s", diff)
			}
			if spi, err := PacketSPI(ba); err != nil || spi != 0x2000 {
				t.Errorf("got PacketSPI = %#x, %v; want 0x2000, nil", spi, err)
			}
		})
	}
}

// TestPacketAtHome covers the Acknowledgement of a de-registration from the
// home link (RFC 6275 §11.5.4), which has no routing header: ESP follows
// the IPv6 header.
func TestPacketAtHome(t *testing.T) {
	sa := testSA(t, AESGCM16, 0x2000, haAddr, hoa, 1)
	p := mipv6.BAPacket{Src: haAddr, Dst: hoa, HomeAddress: hoa, Sequence: 9}
	b, err := AppendBAPacket(nil, &sa, 1, p, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if b[6] != IPProtoESP {
		t.Errorf("got next header %d, want ESP", b[6])
	}
	_, got, err := ParseBAPacket(b, &sa)
	if err != nil || got != p {
		t.Errorf("got ParseBAPacket = %+v, %v; want %+v, nil", got, err, p)
	}
}

func TestPacketErrors(t *testing.T) {
	buSA := testSA(t, AESCBCHMACSHA256, 0x1000, hoa, haAddr, 0x10)
	baSA := testSA(t, AESCBCHMACSHA256, 0x2000, haAddr, hoa, 0x50)
	// Same keys, bound to another home address: it must not vouch for
	// hoa's signalling.
	otherBA := testSA(t, AESCBCHMACSHA256, 0x2000, haAddr, hoa2, 0x50)
	otherBU := testSA(t, AESCBCHMACSHA256, 0x1000, hoa2, haAddr, 0x10)

	if _, err := AppendBUPacket(nil, &otherBU, 1, testBU(), rand.Reader); !errors.Is(err, ErrSelector) {
		t.Errorf("got AppendBUPacket error = %v with another home address's SA, want ErrSelector", err)
	}
	if _, err := AppendBAPacket(nil, &otherBA, 1, testBA(), rand.Reader); !errors.Is(err, ErrSelector) {
		t.Errorf("got AppendBAPacket error = %v with another home address's SA, want ErrSelector", err)
	}
	bu, err := AppendBUPacket(nil, &buSA, 1, testBU(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ba, err := AppendBAPacket(nil, &baSA, 1, testBA(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ParseBUPacket(bu, &otherBU); !errors.Is(err, ErrSelector) {
		t.Errorf("got ParseBUPacket error = %v with another home address's SA, want ErrSelector", err)
	}
	if _, _, err := ParseBAPacket(ba, &otherBA); !errors.Is(err, ErrSelector) {
		t.Errorf("got ParseBAPacket error = %v with another home address's SA, want ErrSelector", err)
	}
	// The routing header is outside ESP: pointing it at another home
	// address changes the checksum's pseudo-header, and the checksum is
	// inside ESP.
	moved := bytes.Clone(ba)
	a := hoa2.As16()
	copy(moved[48:64], a[:])
	if _, _, err := ParseBAPacket(moved, &otherBA); !errors.Is(err, mipv6.ErrChecksum) {
		t.Errorf("got ParseBAPacket error = %v for a rerouted BA, want mipv6.ErrChecksum", err)
	}
	// Likewise the Home Address option of a Binding Update.
	movedBU := bytes.Clone(bu)
	copy(movedBU[48:64], a[:])
	if _, _, err := ParseBUPacket(movedBU, &buSA); !errors.Is(err, mipv6.ErrChecksum) {
		t.Errorf("got ParseBUPacket error = %v for a BU with another home address, want mipv6.ErrChecksum", err)
	}
	// A BU is no BA.
	if _, _, err := ParseBAPacket(bu, &buSA); !errors.Is(err, mipv6.ErrWrongType) {
		t.Errorf("got ParseBAPacket error = %v for a BU, want mipv6.ErrWrongType", err)
	}
	clearBA := mipv6.AppendBAPacket(nil, testBA())
	for _, c := range []struct {
		name string
		pkt  []byte
		want error
	}{
		{"clear BA", clearBA, ErrNotESP},
		{"not IPv6", append([]byte{0x45}, ba[1:]...), ErrNotESP},
		{"short", ba[:39], ErrNotESP},
		{"payload length beyond the packet", ba[:len(ba)-1], ErrShort},
		{"routing header cut", setPayloadLen(ba[:41]), ErrShort},
		{"routing header overruns", setPayloadLen(ba[:50]), ErrShort},
		{"ESP cut", setPayloadLen(ba[:70]), ErrShort},
		{"flipped bit", flip(ba, 80), ErrAuth},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := ParseBAPacket(c.pkt, &baSA); !errors.Is(err, c.want) {
				t.Errorf("got ParseBAPacket error = %v, want %v", err, c.want)
			}
		})
	}
	if _, err := PacketSPI(setPayloadLen(ba[:66])); !errors.Is(err, ErrShort) {
		t.Errorf("got PacketSPI error = %v for a cut ESP header, want ErrShort", err)
	}
	// Link-layer padding after the IPv6 payload is no part of ESP.
	if _, _, err := ParseBAPacket(append(bytes.Clone(ba), 0, 0, 0, 0), &baSA); err != nil {
		t.Errorf("got ParseBAPacket error = %v with trailing link-layer padding, want nil", err)
	}
}

func setPayloadLen(p []byte) []byte {
	p = bytes.Clone(p)
	binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
	return p
}

func flip(p []byte, i int) []byte {
	p = bytes.Clone(p)
	p[i] ^= 1
	return p
}
