package hostio

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/kgswitch/kgswitch/coafilter"
	"github.com/kgswitch/kgswitch/datapath"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// OpenCareOfNIC opens the host's NIC that holds care-of address coa outside
// OVS (host layout 3) with AF_PACKET, for reading what arrives there for
// kgswitch: coafilter's program is attached before the socket is bound, so
// the host's own traffic is never copied to it. The NIC is the host's:
// unlike the internal port, nothing of its settings changes. kgswitch
// writes nothing to it (its packets leave through the host stack).
func OpenCareOfNIC(name string, coa netip.Addr) (datapath.FrameConn, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("care_of_interface %s: %w", name, err)
	}
	prog, err := coafilter.Program(coa)
	if err != nil {
		return nil, fmt.Errorf("care-of socket filter: %w", err)
	}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, &packet.Config{Filter: prog})
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET on %s: %w", name, err)
	}
	p, err := newPacketConn(c, ifi.HardwareAddr)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("AF_PACKET on %s: %w", name, err)
	}
	return p, nil
}

// NFTables applies nftables scripts (coafilter.Ruleset and Removal) with the
// nft command, each in one transaction. The command rather than a netlink
// library: no such library is a dependency, nft is how operators read the
// table kgswitch made (nft list table inet kgswitch), and a script is
// applied at start, at stop and when the Home Agents change, never per
// packet.
type NFTables struct {
	// Path is the nft command; empty finds it in PATH.
	Path string
}

// Apply runs script with nft -f -.
func (n NFTables) Apply(script string) error {
	path := n.Path
	if path == "" {
		var err error
		if path, err = exec.LookPath("nft"); err != nil {
			return fmt.Errorf("nftables: %w (kgswitch needs nft to keep the host kernel from answering the care-of NIC's tunnel packets)", err)
		}
	}
	cmd := exec.Command(path, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f -: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}
