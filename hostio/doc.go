// Package hostio is kgswitch's Linux I/O behind the datapath's interfaces:
// the OVS internal port opened with AF_PACKET (batched with recvmmsg and
// sendmmsg), the raw IPv6 socket tunnel packets and Binding Updates leave by,
// the ethtool calls that switch the port's offloads off, and the host's
// neighbour table read over netlink.
package hostio
