package blkif

import (
	"fmt"
	"strconv"
	"strings"
)

// Xen's encodings of a virtual-device number (xen/include/public/io/blkif.h,
// "Virtual device numbers"): the "xvd" major 202 for disks 0..15 with
// partitions 0..15, and the extended form for the rest.
const (
	xvdMajor    = 202
	extendedBit = 1 << 28
	maxDisk     = 1 << 20 // extended form: 20 bits of disk
	maxPart     = 1 << 8  // extended form: 8 bits of partition
)

// DevID is Xen's virtual-device number of an xvd name: "xvda" = 51712
// (202<<8 | disk<<4 | part), "xvdb" = 51728, ... "xvdp" = 51952; disks
// past the 16th ("xvdq", "xvdaa") or partitions past 15 use the extended
// form 1<<28 | disk<<8 | part. A name is "xvd", disk letters (a..z, then
// aa..zz, as Linux names them) and an optional partition number.
func DevID(name string) (uint32, error) {
	rest, ok := strings.CutPrefix(name, "xvd")
	if !ok {
		return 0, fmt.Errorf("blkif: device %q: not an xvd name (xvda, xvdb, ...)", name)
	}
	i := 0
	for i < len(rest) && rest[i] >= 'a' && rest[i] <= 'z' {
		i++
	}
	letters, digits := rest[:i], rest[i:]
	if letters == "" || len(letters) > 4 {
		return 0, fmt.Errorf("blkif: device %q: no disk letters after xvd", name)
	}
	// Bijective base 26: a=0 .. z=25, aa=26, ab=27 ...
	disk := 0
	for _, c := range []byte(letters) {
		disk = disk*26 + int(c-'a') + 1
	}
	disk--
	part := 0
	if digits != "" {
		n, err := strconv.ParseUint(digits, 10, 16)
		if err != nil || digits[0] == '0' {
			return 0, fmt.Errorf("blkif: device %q: bad partition %q", name, digits)
		}
		part = int(n)
	}
	switch {
	case disk < 16 && part < 16:
		return uint32(xvdMajor<<8 | disk<<4 | part), nil
	case disk < maxDisk && part < maxPart:
		return uint32(extendedBit | disk<<8 | part), nil
	}
	return 0, fmt.Errorf("blkif: device %q: disk or partition out of range", name)
}

// DevName is the xvd name of a virtual-device number, the inverse of DevID.
func DevName(devid uint32) (string, error) {
	var disk, part int
	switch {
	case devid&extendedBit != 0:
		if devid>>28 != 1 {
			return "", fmt.Errorf("blkif: virtual-device %d: not an xvd number", devid)
		}
		disk, part = int(devid>>8&(maxDisk-1)), int(devid&(maxPart-1))
	case devid>>8 == xvdMajor:
		disk, part = int(devid>>4&15), int(devid&15)
	default:
		return "", fmt.Errorf("blkif: virtual-device %d: not an xvd number", devid)
	}
	var letters []byte
	for n := disk + 1; n > 0; n = (n - 1) / 26 {
		letters = append([]byte{byte('a' + (n-1)%26)}, letters...)
	}
	name := "xvd" + string(letters)
	if part > 0 {
		name += strconv.Itoa(part)
	}
	return name, nil
}
