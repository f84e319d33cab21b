package qemu

import (
	"context"
	"fmt"
	"os"
	"time"
)

// AttachConfig names the sockets of a guest of this package's image that
// another program runs (libvirt, for example): the guest's serial console
// (ttyS0, where init.sh writes its ready line and heartbeat) and its
// command shell (the virtio console hvc0).
type AttachConfig struct {
	// Host and Name say where the guest runs and name it in errors and logs.
	Host, Name string
	// ConsoleSocket and ShellSocket are unix sockets on which QEMU listens
	// (chardev socket,server=on) for the serial console and the virtio
	// console.
	ConsoleSocket, ShellSocket string
	// ConsoleLog receives the console's lines, timestamped.
	ConsoleLog string
	// Started is when the guest started, for WaitReady's boot time; the time
	// of Attach when zero.
	Started time.Time
}

// Attach connects to a running guest's console and shell and returns a VM
// whose Shell, WaitReady, Heartbeats, Console and Crash work as for one that
// Start ran. Lines the guest wrote before Attach connected are not seen:
// QEMU drops console output while no client is connected, so a guest to be
// watched from its boot is attached while still paused. The VM has no QMP
// and no process of its own: Close only hangs up, and Exited is closed when
// QEMU closes the console (it exited). Stopping the guest is the job of the
// program that runs it.
func Attach(ctx context.Context, cfg AttachConfig) (*VM, error) {
	vm := &VM{
		Host:       cfg.Host,
		Name:       cfg.Name,
		Started:    cfg.Started,
		ConsoleLog: cfg.ConsoleLog,
		exited:     make(chan struct{}),
		con:        newConsole(),
		attached:   true,
	}
	if vm.Started.IsZero() {
		vm.Started = time.Now()
	}
	err := vm.attach(ctx, cfg)
	if err != nil {
		vm.Close()
		return nil, fmt.Errorf("qemu: attach to %s on %s: %w", cfg.Name, cfg.Host, err)
	}
	return vm, nil
}

func (vm *VM) attach(ctx context.Context, cfg AttachConfig) error {
	var err error
	if vm.conConn, err = dialUnix(ctx, cfg.ConsoleSocket); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	if vm.conFile, err = os.OpenFile(cfg.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return err
	}
	go func() {
		vm.con.run(vm.conConn, vm.conFile)
		close(vm.exited)
	}()
	shConn, err := dialUnix(ctx, cfg.ShellSocket)
	if err != nil {
		return fmt.Errorf("shell: %w", err)
	}
	vm.sh = newShell(shConn)
	return nil
}
