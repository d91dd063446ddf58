package shm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MapPages maps one-page memfds side by side into one contiguous range,
// page i from fds[i], MAP_SHARED: the way a ring of several granted pages
// is seen as one area (xengnttab_map_grant_refs). The descriptors stay
// owned by the caller and may be closed after the call.
func MapPages(fds []int, writable bool) (*Mapping, error) {
	if len(fds) == 0 {
		return nil, fmt.Errorf("shm: map no pages")
	}
	size := uintptr(len(fds)) * PageSize
	// Reserve the range first so that the pages land next to each other.
	base, err := unix.MmapPtr(-1, 0, nil, size, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("shm: reserve %d pages: %w", len(fds), err)
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	for i, fd := range fds {
		at := unsafe.Add(base, uintptr(i)*PageSize)
		if _, err := unix.MmapPtr(fd, 0, at, PageSize, prot, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
			unix.MunmapPtr(base, size)
			return nil, fmt.Errorf("shm: map page %d: %w", i, err)
		}
	}
	return &Mapping{b: unsafe.Slice((*byte)(base), size), raw: true}, nil
}

// munmapRaw unmaps a range MapPages made (x/sys's Munmap only knows its
// own Mmap's slices).
func munmapRaw(b []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}

// RemapPage maps the one-page memfd fd over the page at the start of b,
// which must be a page of a shared mapping (MapPages or Map): the page's
// address stays valid and now shows fd's memory. The descriptor stays
// owned by the caller.
func RemapPage(b []byte, fd int, writable bool) error {
	if len(b) < PageSize || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%PageSize != 0 {
		return fmt.Errorf("shm: remap: not a page")
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	if _, err := unix.MmapPtr(fd, 0, unsafe.Pointer(unsafe.SliceData(b)), PageSize, prot, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
		return fmt.Errorf("shm: remap page: %w", err)
	}
	return nil
}
