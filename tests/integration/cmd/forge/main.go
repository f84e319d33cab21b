// Command forge sends Mobility Header signalling that claims to come from a
// Home Agent, from a node that is not one: the forger of the integration
// tests' forged-signalling cases. It builds the packets with kgswitch's own
// mipv6 encoders (so they parse exactly as the Home Agent's would) and sends
// them through a raw IPv6 socket with the header included, which lets the
// source be an address the node does not own.
//
//	forge -src HA -dst CoA -hoa HoA [-count N] [-rate R] SPEC...
//
// Each SPEC is one packet: "be:STATUS", "brr", or "ba:STATUS:SEQ:LIFETIME"
// (LIFETIME in 4-second units; SEQ "rand" for a random number each time).
// The list of SPECs is sent count times, at rate packets per second (0: as
// fast as the socket takes them). On exit forge prints one JSON line with
// how many packets it sent.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kgswitch/kgswitch/mipv6"
)

// spec is one packet to forge; a negative seq is drawn at random per send.
type spec struct {
	kind     string
	status   uint8
	seq      int
	lifetime uint16
}

func parseSpec(s string) (spec, error) {
	f := strings.Split(s, ":")
	num := func(i int, bits int) (uint64, error) {
		if i >= len(f) {
			return 0, fmt.Errorf("%q: field %d missing", s, i)
		}
		return strconv.ParseUint(f[i], 10, bits)
	}
	switch f[0] {
	case "brr":
		if len(f) != 1 {
			return spec{}, fmt.Errorf("%q: brr takes no fields", s)
		}
		return spec{kind: "brr"}, nil
	case "be":
		st, err := num(1, 8)
		if err != nil || len(f) != 2 {
			return spec{}, fmt.Errorf("%q: want be:STATUS (%v)", s, err)
		}
		return spec{kind: "be", status: uint8(st)}, nil
	case "ba":
		if len(f) != 4 {
			return spec{}, fmt.Errorf("%q: want ba:STATUS:SEQ:LIFETIME", s)
		}
		st, err := num(1, 8)
		if err != nil {
			return spec{}, err
		}
		sp := spec{kind: "ba", status: uint8(st), seq: -1}
		if f[2] != "rand" {
			q, err := num(2, 16)
			if err != nil {
				return spec{}, err
			}
			sp.seq = int(q)
		}
		lt, err := num(3, 16)
		if err != nil {
			return spec{}, err
		}
		sp.lifetime = uint16(lt)
		return sp, nil
	}
	return spec{}, fmt.Errorf("%q: unknown kind (be, brr, ba)", s)
}

func (sp spec) append(b []byte, src, dst, hoa netip.Addr) []byte {
	switch sp.kind {
	case "brr":
		return mipv6.AppendBRRPacket(b, mipv6.BRRPacket{Src: src, Dst: dst})
	case "be":
		return mipv6.AppendBindingErrorPacket(b, mipv6.BEPacket{Src: src, Dst: dst, Status: sp.status, HomeAddress: hoa})
	}
	seq := uint16(sp.seq)
	if sp.seq < 0 {
		seq = uint16(rand.UintN(1 << 16))
	}
	return mipv6.AppendBAPacket(b, mipv6.BAPacket{Src: src, Dst: dst, HomeAddress: hoa,
		Status: sp.status, Sequence: seq, Lifetime: sp.lifetime})
}

func main() {
	src := flag.String("src", "", "source address to claim (the Home Agent's)")
	dst := flag.String("dst", "", "destination (the care-of address)")
	hoa := flag.String("hoa", "", "home address the signalling is about")
	count := flag.Int("count", 1, "how many times to send the list of packets")
	rate := flag.Float64("rate", 0, "packets per second (0: as fast as possible)")
	flag.Parse()
	if err := run(*src, *dst, *hoa, *count, *rate, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "forge:", err)
		os.Exit(1)
	}
}

func run(srcS, dstS, hoaS string, count int, rate float64, args []string) error {
	var addrs [3]netip.Addr
	for i, s := range []string{srcS, dstS, hoaS} {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() {
			return fmt.Errorf("-src, -dst and -hoa must be IPv6 addresses: %q", s)
		}
		addrs[i] = a
	}
	src, dst, hoa := addrs[0], addrs[1], addrs[2]
	if len(args) == 0 {
		return fmt.Errorf("no packet to send (SPEC: be:STATUS, brr, ba:STATUS:SEQ:LIFETIME)")
	}
	var specs []spec
	for _, a := range args {
		sp, err := parseSpec(a)
		if err != nil {
			return err
		}
		specs = append(specs, sp)
	}
	// IPPROTO_RAW implies IPV6_HDRINCL: the kernel sends the header as
	// built, with a source this node does not own.
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet6{Addr: dst.As16()}
	var gap time.Duration
	if rate > 0 {
		gap = time.Duration(float64(time.Second) / rate)
	}
	start := time.Now()
	sent := 0
	buf := make([]byte, 0, 128)
	for range count {
		for _, sp := range specs {
			if gap > 0 {
				time.Sleep(time.Until(start.Add(time.Duration(sent) * gap)))
			}
			buf = sp.append(buf[:0], src, dst, hoa)
			for {
				err = unix.Sendto(fd, buf, 0, sa)
				if err != unix.ENOBUFS && err != unix.EAGAIN {
					break
				}
				// The qdisc is full: a flood waits for it rather than
				// count packets that never left.
				time.Sleep(100 * time.Microsecond)
			}
			if err != nil {
				return fmt.Errorf("send %s after %d packets: %w", sp.kind, sent, err)
			}
			sent++
		}
	}
	return json.NewEncoder(os.Stdout).Encode(struct {
		Sent    int     `json:"sent"`
		Seconds float64 `json:"seconds"`
	}{sent, time.Since(start).Seconds()})
}
