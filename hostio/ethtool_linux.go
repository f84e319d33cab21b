package hostio

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value (linux/ethtool.h).
type ethtoolValue struct{ cmd, data uint32 }

// ifreqData is struct ifreq with the ifr_data member.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

// Legacy ethtool commands that set one offload each (linux/ethtool.h); x/sys
// names only some of them.
const (
	ethtoolSTXCSUM = 0x17
	ethtoolSSG     = 0x19
	ethtoolSTSO    = 0x1f
	ethtoolSGSO    = 0x24
	ethtoolSGRO    = 0x2c
)

// disableOffloads switches segmentation and checksum offloads off on dev, so
// the kernel hands kgswitch's port whole frames with finished checksums and
// never glues received frames together (GRO): what kgswitch reads it can
// tunnel as it is. Whatever still arrives bigger than the link (a hypervisor
// with userspace TSO) is segmented by the datapath (segmentTCP). A device that
// lacks an offload answers EOPNOTSUPP, which is what we want anyway.
func disableOffloads(dev string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// GSO and TSO first: the kernel refuses to drop the checksum offload
	// that they depend on while they are on.
	for _, cmd := range []uint32{ethtoolSGRO, ethtoolSGSO, ethtoolSTSO, ethtoolSSG, ethtoolSTXCSUM} {
		v := ethtoolValue{cmd: cmd}
		var ifr ifreqData
		copy(ifr.name[:], dev)
		ifr.data = uintptr(unsafe.Pointer(&v))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		if errno != 0 && errno != unix.EOPNOTSUPP && errno != unix.EINVAL {
			return fmt.Errorf("ethtool command %#x: %w", cmd, errno)
		}
	}
	return nil
}
