package blkback

import (
	"encoding/binary"
	"testing"

	"shi/internal/abi"
)

// FuzzParse feeds Parse any ring entry and disk geometry: it must never
// panic, and what it accepts must lie on the disk with valid segments.
func FuzzParse(f *testing.F) {
	f.Add(rw(abi.BLKIF_OP_READ, 0, seg(1, 0, 7)), uint64(1000), uint8(0), []byte{})
	f.Add(rw(abi.BLKIF_OP_WRITE, 992, seg(1, 0, 7), seg(2, 1, 1)), uint64(1000), uint8(1), []byte{})
	f.Add(rw(abi.BLKIF_OP_FLUSH_DISKCACHE, 0), uint64(8), uint8(2), []byte{})
	ind := make([]byte, abi.BlkifRequestSize)
	(&abi.BlkifRequestIndirect{Operation: abi.BLKIF_OP_INDIRECT, IndirectOp: abi.BLKIF_OP_READ, NrSegments: 3}).Encode(ind)
	f.Add(ind, uint64(1000), uint8(2), []byte{1, 0, 0, 0, 0, 7, 0, 0, 2, 0, 0, 0, 3, 3, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0})
	disc := make([]byte, abi.BlkifRequestSize)
	(&abi.BlkifRequestDiscard{Operation: abi.BLKIF_OP_DISCARD, SectorNumber: 5, NrSectors: 9}).Encode(disc)
	f.Add(disc, uint64(100), uint8(2), []byte{})
	f.Fuzz(func(t *testing.T, b []byte, sectors uint64, flags uint8, pages []byte) {
		g := Geometry{Sectors: sectors, ReadOnly: flags&1 != 0, Discard: flags&2 != 0}
		if flags&4 == 0 {
			g.MaxIndirect = 256
		}
		r, err := Parse(b, g)
		if len(b) >= abi.BlkifRequestSize && r.ID != binary.LittleEndian.Uint64(b[8:]) {
			t.Fatalf("id %d not echoed", r.ID)
		}
		if err != nil {
			return
		}
		if len(r.IndirectGrefs) > 0 {
			if err := r.ReadIndirect(pages, g); err != nil {
				return
			}
		}
		var n uint64
		for _, s := range r.Segs {
			if s.Bytes() == 0 {
				t.Fatalf("accepted segment %+v", s)
			}
			n += uint64(s.Bytes() / abi.BlkifSectorSize)
		}
		if r.Kind != KindDiscard && n != r.NrSectors {
			t.Fatalf("sectors %d, segments say %d", r.NrSectors, n)
		}
		// A flush without segments has no place on the disk.
		if (len(r.Segs) > 0 || r.Kind == KindDiscard) && (r.Sector > g.Sectors || r.NrSectors > g.Sectors-r.Sector) {
			t.Fatalf("accepted %d+%d of %d", r.Sector, r.NrSectors, g.Sectors)
		}
		if g.ReadOnly && (r.Kind == KindWrite || r.Kind == KindDiscard || r.Kind == KindFlush && len(r.Segs) > 0) {
			t.Fatalf("accepted a write to a read-only disk: %+v", r)
		}
		if (r.Kind == KindRead || r.Kind == KindWrite) && len(r.Segs) == 0 {
			t.Fatalf("accepted an empty %d", r.Kind)
		}
	})
}
