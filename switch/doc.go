// Package vswitch is kgswitch's per-port logic and datapath (the directory is
// named switch/ after the design card; switch is a Go keyword).
//
// A Switch owns the control state: which VM ports exist on this host, whether
// each is home or foreign, its Binding Update List entry and its OpenFlow rules.
// A Datapath moves frames between the OVS internal port and the tunnel to each
// VM's Home Agent; it reads the control state through an immutable snapshot, so
// the packet path takes no lock.
//
// I/O sits behind FrameConn (the internal port), Uplink (the host's IPv6 stack)
// and the OVS interfaces, so the logic is tested with in-memory fakes and the
// real sockets live in io_linux.go.
package vswitch
