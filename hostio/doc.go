// Package hostio is kgswitch's Linux I/O behind the datapath's interfaces:
// the OVS internal port opened with AF_PACKET (batched with recvmmsg and
// sendmmsg), the raw IPv6 socket tunnel packets and Binding Updates leave by,
// the ethtool calls that switch the port's offloads off, the host's
// neighbour table read over netlink, and in host layout 3 the care-of NIC
// read with AF_PACKET through coafilter's program and the nftables table
// that keeps the host kernel from answering what kgswitch reads there.
package hostio
