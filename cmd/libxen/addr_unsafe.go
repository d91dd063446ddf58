package main

import "unsafe"

// addrOf is the address of mapped memory, for C.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
