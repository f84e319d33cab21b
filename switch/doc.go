// Package vswitch is kgswitch's control (the directory is named switch/
// after the design card; switch is a Go keyword).
//
// A Switch owns the control state in one goroutine: which VMs this host
// knows, each one's phase (state.go), its Binding Update List entry and its
// OpenFlow rules (flows.go). What it wants of OVS is applied off that
// goroutine (ovsqueue.go); the frames themselves are moved by package
// datapath, which reads the Switch's immutable snapshot.
package vswitch
