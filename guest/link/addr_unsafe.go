package link

import "unsafe"

// addr is the address of b's first byte: pages are known by where they
// are mapped.
func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
