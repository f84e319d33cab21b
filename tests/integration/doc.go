// Package integration holds kgswitch's end-to-end tests. They run the real
// programs in the network-namespace lab of package lab (a correspondent node,
// a router, home and foreign links, a Home Agent, two hosts with Open vSwitch
// in userspace-datapath mode and a guest VM), so they need root, iproute2,
// ethtool, ping and Open vSwitch; lab.Preflight names what is missing.
//
// Each test fails with the reason when the machine cannot run the lab, unless
// KGSWITCH_SKIP_INTEGRATION=1 is set, in which case it skips. Run them with
//
//	go test ./tests/integration/...
package integration
