package ring

import (
	"sync/atomic"
	"unsafe"
)

func init() {
	x := uint32(1)
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		panic("ring: shared-memory layouts assume a little-endian host")
	}
}

// word returns the u32 at b[off:off+4]. It panics if the range is outside b
// or not 4-byte aligned in memory, both programming errors.
func word(b []byte, off int) *uint32 {
	if off < 0 || off > len(b)-4 {
		panic("ring: shared u32 out of range") // not b[off+3]: the race detector counts that as a plain read
	}
	p := unsafe.Pointer(&b[off])
	if uintptr(p)&3 != 0 {
		panic("ring: misaligned shared u32")
	}
	return (*uint32)(p)
}

// Aligned reports whether b starts on a 4-byte boundary, as every slice
// holding shared u32s must. mmap'ed memory always does; make([]byte, n)
// does not promise it (it may be placed on the stack): use AlignedBytes.
func Aligned(b []byte) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))&3 == 0
}

// AlignedBytes returns n zero bytes starting on an 8-byte boundary, for
// shared structures kept in ordinary memory (tests, in-process peers).
func AlignedBytes(n int) []byte {
	w := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), n)
}

// Load32 atomically loads the little-endian u32 at b[off:]. off must be a
// multiple of 4 from a 4-aligned b.
func Load32(b []byte, off int) uint32 { return atomic.LoadUint32(word(b, off)) }

// Store32 atomically stores v at b[off:].
func Store32(b []byte, off int, v uint32) { atomic.StoreUint32(word(b, off), v) }

// CompareAndSwap32 atomically replaces the u32 at b[off:] with new if it
// equals old.
func CompareAndSwap32(b []byte, off int, old, new uint32) bool {
	return atomic.CompareAndSwapUint32(word(b, off), old, new)
}

// Or32 atomically ORs bits into the u32 at b[off:] and returns the old value.
func Or32(b []byte, off int, bits uint32) uint32 { return atomic.OrUint32(word(b, off), bits) }

// And32 atomically ANDs mask into the u32 at b[off:] and returns the old value.
func And32(b []byte, off int, mask uint32) uint32 { return atomic.AndUint32(word(b, off), mask) }

// Or8 atomically ORs bits into the byte b[off] and returns its old value
// (vchan's notify bytes). It works on the aligned word holding the byte.
func Or8(b []byte, off int, bits uint8) uint8 {
	shift := uint(off&3) * 8
	return uint8(Or32(b, off&^3, uint32(bits)<<shift) >> shift)
}

// And8 atomically ANDs mask into the byte b[off] and returns its old value.
func And8(b []byte, off int, mask uint8) uint8 {
	shift := uint(off&3) * 8
	return uint8(And32(b, off&^3, ^(uint32(^mask)<<shift)) >> shift)
}
