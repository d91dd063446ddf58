package abi

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// withoutPadding returns a copy of b[:n] with the listed [start,end) byte
// ranges zeroed: what Encode(Decode(b)) must give back.
func withoutPadding(b []byte, n int, pads ...[2]int) []byte {
	out := bytes.Clone(b[:n])
	for _, p := range pads {
		clear(out[p[0]:p[1]])
	}
	return out
}

func blkifRequestPads() [][2]int {
	pads := [][2]int{{4, 8}}
	for i := 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++ {
		o := 24 + i*BlkifSegmentSize
		pads = append(pads, [2]int{o + 6, o + 8})
	}
	return pads
}

func TestBlkifRequestLayout(t *testing.T) {
	r := BlkifRequest{
		Operation: BLKIF_OP_WRITE, NrSegments: 2, Handle: 0x1234,
		ID: 0x0102030405060708, SectorNumber: 0x1112131415161718,
	}
	r.Seg[0] = BlkifSegment{Gref: 0xaabbccdd, FirstSect: 1, LastSect: 7}
	r.Seg[10] = BlkifSegment{Gref: 9, FirstSect: 2, LastSect: 3}
	b := make([]byte, BlkifRequestSize)
	r.Encode(b)
	want := "01023412" + "00000000" + "0807060504030201" + "1817161514131211" +
		"ddccbbaa01070000"
	if got := hex.EncodeToString(b[:32]); got != want {
		t.Errorf("head = %s, want %s", got, want)
	}
	if got := hex.EncodeToString(b[104:112]); got != "0900000002030000" {
		t.Errorf("seg[10] = %s", got)
	}
	back, err := DecodeBlkifRequest(b)
	if err != nil || back != r {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if _, err := DecodeBlkifRequest(b[:111]); err == nil {
		t.Error("short request decoded")
	}
}

func TestBlkifSegments(t *testing.T) {
	for _, tc := range []struct {
		name string
		nr   uint8
		seg  BlkifSegment
		ok   bool
	}{
		{"one full page", 1, BlkifSegment{1, 0, 7}, true},
		{"one sector", 1, BlkifSegment{1, 3, 3}, true},
		{"no segments", 0, BlkifSegment{1, 0, 7}, false},
		{"too many", 12, BlkifSegment{1, 0, 7}, false},
		{"last before first", 1, BlkifSegment{1, 4, 3}, false},
		{"past the page", 1, BlkifSegment{1, 0, 8}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := BlkifRequest{NrSegments: tc.nr}
			for i := range r.Seg {
				r.Seg[i] = tc.seg
			}
			segs, err := r.Segments()
			if (err == nil) != tc.ok {
				t.Fatalf("Segments() err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && len(segs) != int(tc.nr) {
				t.Errorf("got %d segments, want %d", len(segs), tc.nr)
			}
		})
	}
	if got := (BlkifSegment{FirstSect: 0, LastSect: 7}).Bytes(); got != 4096 {
		t.Errorf("full segment = %d bytes", got)
	}
}

func TestBlkifResponseLayout(t *testing.T) {
	r := BlkifResponse{ID: 7, Operation: BLKIF_OP_READ, Status: BLKIF_RSP_EOPNOTSUPP}
	b := make([]byte, BlkifResponseSize)
	r.Encode(b)
	if got := hex.EncodeToString(b); got != "07000000000000000000feff00000000" {
		t.Errorf("response = %s", got)
	}
	back, err := DecodeBlkifResponse(b)
	if err != nil || back != r {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

func TestBlkifIndirectLayout(t *testing.T) {
	r := BlkifRequestIndirect{
		Operation: BLKIF_OP_INDIRECT, IndirectOp: BLKIF_OP_READ, NrSegments: 513,
		ID: 1, SectorNumber: 2, Handle: 51712,
	}
	r.IndirectGrefs[0], r.IndirectGrefs[7] = 100, 107
	b := make([]byte, BlkifRequestIndirectSize)
	r.Encode(b)
	if b[24] != 0x00 || b[25] != 0xca || b[28] != 100 || b[56] != 107 {
		t.Errorf("indirect = %x", b)
	}
	if r.IndirectPages() != 2 {
		t.Errorf("IndirectPages = %d, want 2", r.IndirectPages())
	}
	back, err := DecodeBlkifRequestIndirect(b)
	if err != nil || back != r {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

func FuzzDecodeBlkifRequest(f *testing.F) {
	f.Add(make([]byte, BlkifRequestSize))
	f.Add(bytes.Repeat([]byte{0xff}, BlkifRequestSize+3))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeBlkifRequest(b)
		if err != nil {
			if len(b) >= BlkifRequestSize {
				t.Fatalf("rejected %d bytes: %v", len(b), err)
			}
			return
		}
		out := make([]byte, BlkifRequestSize)
		r.Encode(out)
		if want := withoutPadding(b, BlkifRequestSize, blkifRequestPads()...); !bytes.Equal(out, want) {
			t.Fatalf("re-encode:\n got %x\nwant %x", out, want)
		}
		if segs, err := r.Segments(); err == nil {
			for _, s := range segs {
				if n := s.Bytes(); n < 512 || n > 4096 {
					t.Fatalf("validated segment moves %d bytes", n)
				}
			}
		}
	})
}

func FuzzDecodeBlkifOthers(f *testing.F) {
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := DecodeBlkifRequestDiscard(b); err == nil {
			out := make([]byte, BlkifRequestDiscardSize)
			d.Encode(out)
			if want := withoutPadding(b, BlkifRequestDiscardSize, [2]int{4, 8}); !bytes.Equal(out, want) {
				t.Fatalf("discard re-encode %x != %x", out, want)
			}
		}
		if r, err := DecodeBlkifRequestIndirect(b); err == nil {
			out := make([]byte, BlkifRequestIndirectSize)
			r.Encode(out)
			if want := withoutPadding(b, BlkifRequestIndirectSize, [2]int{4, 8}, [2]int{26, 28}, [2]int{60, 64}); !bytes.Equal(out, want) {
				t.Fatalf("indirect re-encode %x != %x", out, want)
			}
			if p := r.IndirectPages(); p < 0 || p > 128 {
				t.Fatalf("IndirectPages = %d", p)
			}
		}
		if r, err := DecodeBlkifResponse(b); err == nil {
			out := make([]byte, BlkifResponseSize)
			r.Encode(out)
			if want := withoutPadding(b, BlkifResponseSize, [2]int{9, 10}, [2]int{12, 16}); !bytes.Equal(out, want) {
				t.Fatalf("response re-encode %x != %x", out, want)
			}
		}
		if s, err := DecodeBlkifSegment(b); err == nil {
			out := make([]byte, BlkifSegmentSize)
			s.Encode(out)
			if want := withoutPadding(b, BlkifSegmentSize, [2]int{6, 8}); !bytes.Equal(out, want) {
				t.Fatalf("segment re-encode %x != %x", out, want)
			}
		}
	})
}
