// Package ovsctl is kgswitch's only contact with Open vSwitch.
//
// It has two halves. DB speaks OVSDB (RFC 7047) to ovsdb-server through
// libovsdb: it monitors the Open_vSwitch, Bridge, Port and Interface tables,
// turns Interface row changes into Events, and writes the few rows kgswitch
// owns (its internal port, its external_ids keys) with single transactions.
// Flows drives ovs-ofctl through go-openvswitch to install, replace and dump
// the OpenFlow flows that carry kgswitch's cookie, always naming the switch
// by its management socket so that several OVS instances can run side by
// side.
//
// Both survive OVS restarts. DB reconnects to ovsdb-server with backoff,
// keeps answering reads from the last known rows meanwhile, and reports the
// outage on Events (Disconnected, the rows that changed, Reconnected).
// ovs-vswitchd restarting loses every OpenFlow flow but changes nothing in
// OVSDB, so Flows.WatchSwitch holds an OpenFlow connection to the bridge and
// reports SwitchDown and SwitchUp; on SwitchUp the caller reinstalls its
// flows (Count and Cookies show what is installed).
package ovsctl
