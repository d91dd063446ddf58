package blkback

import (
	"errors"
	"testing"

	"shi/internal/abi"
)

func rw(op uint8, sector uint64, segs ...abi.BlkifSegment) []byte {
	r := abi.BlkifRequest{Operation: op, NrSegments: uint8(len(segs)), ID: 77, SectorNumber: sector}
	copy(r.Seg[:], segs)
	b := make([]byte, abi.BlkifRequestSize)
	r.Encode(b)
	return b
}

func seg(g uint32, first, last uint8) abi.BlkifSegment {
	return abi.BlkifSegment{Gref: abi.GrantRef(g), FirstSect: first, LastSect: last}
}

func TestParse(t *testing.T) {
	g := Geometry{Sectors: 1000, Discard: true, MaxIndirect: 256}
	ro := g
	ro.ReadOnly = true
	disc := func(sector, n uint64, flag uint8) []byte {
		d := abi.BlkifRequestDiscard{Operation: abi.BLKIF_OP_DISCARD, Flag: flag, ID: 77, SectorNumber: sector, NrSectors: n}
		b := make([]byte, abi.BlkifRequestSize)
		d.Encode(b)
		return b
	}
	ind := func(op uint8, n uint16, sector uint64) []byte {
		r := abi.BlkifRequestIndirect{Operation: abi.BLKIF_OP_INDIRECT, IndirectOp: op, NrSegments: n, ID: 77, SectorNumber: sector}
		for i := range r.IndirectGrefs {
			r.IndirectGrefs[i] = abi.GrantRef(100 + i)
		}
		b := make([]byte, abi.BlkifRequestSize)
		r.Encode(b)
		return b
	}
	elevenSegs := make([]abi.BlkifSegment, 12)
	for i := range elevenSegs {
		elevenSegs[i] = seg(uint32(i), 0, 7)
	}
	for _, c := range []struct {
		name    string
		b       []byte
		g       Geometry
		kind    Kind
		sectors uint64
		err     error
	}{
		{"read", rw(abi.BLKIF_OP_READ, 0, seg(1, 0, 7), seg(2, 2, 3)), g, KindRead, 10, nil},
		{"write at the end", rw(abi.BLKIF_OP_WRITE, 992, seg(1, 0, 7)), g, KindWrite, 8, nil},
		{"write past the end", rw(abi.BLKIF_OP_WRITE, 993, seg(1, 0, 7)), g, KindWrite, 8, ErrOutOfRange},
		{"sector overflow", rw(abi.BLKIF_OP_READ, ^uint64(0)-3, seg(1, 0, 7)), g, KindRead, 8, ErrOutOfRange},
		{"no segments", rw(abi.BLKIF_OP_READ, 0), g, KindRead, 0, ErrBadRequest},
		{"twelve segments", rw(abi.BLKIF_OP_READ, 0, elevenSegs...), g, KindRead, 0, ErrBadRequest},
		{"last before first", rw(abi.BLKIF_OP_READ, 0, seg(1, 4, 3)), g, KindRead, 0, ErrBadRequest},
		{"last past the page", rw(abi.BLKIF_OP_READ, 0, seg(1, 0, 8)), g, KindRead, 0, ErrBadRequest},
		{"write read-only", rw(abi.BLKIF_OP_WRITE, 0, seg(1, 0, 7)), ro, KindWrite, 8, ErrReadOnly},
		{"read read-only", rw(abi.BLKIF_OP_READ, 0, seg(1, 0, 7)), ro, KindRead, 8, nil},
		{"flush", rw(abi.BLKIF_OP_FLUSH_DISKCACHE, 0), g, KindFlush, 0, nil},
		{"flush read-only", rw(abi.BLKIF_OP_FLUSH_DISKCACHE, 0), ro, KindFlush, 0, nil},
		{"flush with data", rw(abi.BLKIF_OP_FLUSH_DISKCACHE, 8, seg(1, 0, 7)), g, KindFlush, 8, nil},
		{"flush with data read-only", rw(abi.BLKIF_OP_FLUSH_DISKCACHE, 8, seg(1, 0, 7)), ro, KindFlush, 0, ErrReadOnly},
		{"barrier", rw(abi.BLKIF_OP_WRITE_BARRIER, 0), g, 0, 0, ErrNotSupported},
		{"unknown", rw(9, 0), g, 0, 0, ErrBadRequest},
		{"discard", disc(10, 990, 0), g, KindDiscard, 990, nil},
		{"discard past the end", disc(10, 991, 0), g, KindDiscard, 991, ErrOutOfRange},
		{"secure discard", disc(10, 1, abi.BLKIF_DISCARD_SECURE), g, KindDiscard, 1, ErrNotSupported},
		{"discard read-only", disc(10, 1, 0), ro, KindDiscard, 1, ErrReadOnly},
		{"discard not offered", disc(10, 1, 0), Geometry{Sectors: 1000}, KindDiscard, 1, ErrNotSupported},
		{"indirect read", ind(abi.BLKIF_OP_READ, 256, 0), g, KindRead, 0, nil},
		{"indirect too many", ind(abi.BLKIF_OP_READ, 257, 0), g, KindRead, 0, ErrBadRequest},
		{"indirect none", ind(abi.BLKIF_OP_READ, 0, 0), g, KindRead, 0, ErrBadRequest},
		{"indirect flush", ind(abi.BLKIF_OP_FLUSH_DISKCACHE, 1, 0), g, 0, 0, ErrBadRequest},
		{"indirect not offered", ind(abi.BLKIF_OP_READ, 1, 0), Geometry{Sectors: 1000}, KindRead, 0, ErrNotSupported},
		{"indirect write read-only", ind(abi.BLKIF_OP_WRITE, 1, 0), ro, KindWrite, 0, ErrReadOnly},
		{"short", make([]byte, 50), g, 0, 0, ErrBadRequest},
	} {
		r, err := Parse(c.b, c.g)
		if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.err)
			continue
		}
		if len(c.b) >= abi.BlkifRequestSize && r.ID != 77 {
			t.Errorf("%s: id %d", c.name, r.ID)
		}
		if r.Kind != c.kind || (err == nil && r.NrSectors != c.sectors) {
			t.Errorf("%s: kind %d sectors %d, want %d %d", c.name, r.Kind, r.NrSectors, c.kind, c.sectors)
		}
	}
}

func TestReadIndirect(t *testing.T) {
	g := Geometry{Sectors: 1 << 20, MaxIndirect: 1024}
	r := abi.BlkifRequestIndirect{Operation: abi.BLKIF_OP_INDIRECT, IndirectOp: abi.BLKIF_OP_WRITE, NrSegments: 600, SectorNumber: 16}
	b := make([]byte, abi.BlkifRequestSize)
	r.Encode(b)
	req, err := Parse(b, g)
	if err != nil || len(req.IndirectGrefs) != 2 || req.Kind != KindWrite {
		t.Fatalf("parse: %+v %v", req, err)
	}
	pages := make([]byte, 2*abi.PAGE_SIZE)
	for i := range 600 {
		seg(uint32(i), 0, 7).Encode(pages[i*8:])
	}
	if err := req.ReadIndirect(pages[:599*8], g); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("short pages: %v", err)
	}
	if err := req.ReadIndirect(pages, g); err != nil || len(req.Segs) != 600 || req.NrSectors != 4800 || req.Segs[599].Gref != 599 {
		t.Fatalf("read indirect: %v %d %d", err, len(req.Segs), req.NrSectors)
	}
	if err := req.ReadIndirect(pages, g); err == nil {
		t.Fatal("decoded twice")
	}
	seg(1, 3, 2).Encode(pages[10*8:])
	req, _ = Parse(b, g)
	if err := req.ReadIndirect(pages, g); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad indirect segment: %v", err)
	}
	if Status(nil) != abi.BLKIF_RSP_OKAY || Status(ErrNotSupported) != abi.BLKIF_RSP_EOPNOTSUPP || Status(ErrReadOnly) != abi.BLKIF_RSP_ERROR {
		t.Fatal("status")
	}
}
