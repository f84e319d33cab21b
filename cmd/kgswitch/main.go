// Command kgswitch keeps live-migrated VMs reachable at their IPv6 home address:
// on a foreign Open vSwitch host it registers each VM's care-of address with the
// VM's Home Agent (Mobile IPv6, RFC 6275) and tunnels its traffic, while the
// guest goes on believing it is on its home link.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

const usage = `kgswitch: host-side Mobile IPv6 for VMs on Open vSwitch (Kagemusha)

Usage:
  kgswitch run --config FILE [--log-format text|json] [--log-level LEVEL]
        run the daemon for this host
  kgswitch add-port PORT --hoa ADDR [--mac MAC] [--home-agent ADDR --home-prefix PREFIX --router LLADDR]
                    [--hoa4 ADDR/LEN [--gateway4 ADDR]]
        bind an OVS port of the running daemon's bridge to a VM's home address
        (and its IPv4 home address, for a dual-stack VM);
        kept across restarts when state_dir is set
  kgswitch del-port PORT
        unbind a port bound with add-port: kgswitch stops serving the VM there
  kgswitch activate PORT
        the guest on PORT runs on this host now (e.g. from a libvirt hook or
        QEMU's pause-before-switchover): register with its Home Agent at once
        instead of waiting for the guest's first frame
  kgswitch deactivate PORT
        on the VM's home host: the guest on PORT stopped here (migrating away);
        hold its frames until its Home Agent takes over (see [departure])
  kgswitch status [--json]
        show every VM the daemon knows: where it runs, its binding, its counters

Run "kgswitch COMMAND --help" for a command's flags.
Exit status: 0 success, 1 failure at run time, 2 bad usage or rejected input.
`

// exitError carries an exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func usageErr(format string, a ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, a...)}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "add-port":
		err = cmdAddPort(args[1:], stdout, stderr)
	case "del-port":
		err = cmdDelPort(args[1:], stdout, stderr)
	case "activate", "deactivate":
		err = cmdPortVerb(args[0], args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "kgswitch: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != errHelp {
			fmt.Fprintf(stderr, "kgswitch %s: %v\n", args[0], ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "kgswitch %s: %v\n", args[0], err)
	return 1
}

var errHelp = errors.New("help requested")
