package gnttab

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changes map[int]byte
		want    []Run // Data as expected bytes
	}{
		{"none", nil, nil},
		{"first byte", map[int]byte{0: 1}, []Run{{0, []byte{1}}}},
		{"last byte", map[int]byte{4095: 1}, []Run{{4095, []byte{1}}}},
		{"gap of 4 merges", map[int]byte{10: 1, 15: 2}, []Run{{10, []byte{1, 0, 0, 0, 0, 2}}}},
		{"gap of 5 splits", map[int]byte{10: 1, 16: 2}, []Run{{10, []byte{1}}, {16, []byte{2}}}},
		{"adjacent", map[int]byte{7: 1, 8: 2, 9: 3}, []Run{{7, []byte{1, 2, 3}}}},
		{"far apart", map[int]byte{100: 1, 3000: 2}, []Run{{100, []byte{1}}, {3000, []byte{2}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			twin := make([]byte, 4096)
			page := Twin(twin)
			for off, v := range tc.changes {
				page[off] = v
			}
			got := Diff(twin, page)
			if diff := cmp.Diff(Runs(tc.want), got, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })); diff != "" {
				t.Fatalf("Diff (-want +got):\n%s", diff)
			}
			dec, err := DecodeRuns(got.Encode(nil), len(page))
			if err != nil {
				t.Fatal(err)
			}
			if err := Apply(twin, dec); err != nil || !bytes.Equal(twin, page) {
				t.Fatalf("apply: %v, equal %v", err, bytes.Equal(twin, page))
			}
		})
	}
}

// TestDiffAgainstModel: for random edits, applying the decoded diff to the
// twin reproduces the page, and the diff covers exactly the changed bytes
// plus merged gaps.
func TestDiffAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		twin := make([]byte, 1+r.IntN(4096))
		for j := range twin {
			twin[j] = byte(r.IntN(4))
		}
		page := Twin(twin)
		for range r.IntN(40) {
			off := r.IntN(len(page))
			n := min(1+r.IntN(32), len(page)-off)
			for k := off; k < off+n; k++ {
				page[k] = byte(r.IntN(4))
			}
		}
		runs := Diff(twin, page)
		covered := make([]bool, len(page))
		for _, run := range runs {
			for k := run.Off; k < run.Off+len(run.Data); k++ {
				covered[k] = true
			}
			if twin[run.Off] == page[run.Off] || twin[run.Off+len(run.Data)-1] == page[run.Off+len(run.Data)-1] {
				t.Fatalf("case %d: run %d+%d does not start and end on a change", i, run.Off, len(run.Data))
			}
		}
		for k := range page {
			if page[k] != twin[k] && !covered[k] {
				t.Fatalf("case %d: byte %d changed but not in the diff", i, k)
			}
		}
		enc := runs.Encode(nil)
		dec, err := DecodeRuns(enc, len(page))
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if err := Apply(twin, dec); err != nil || !bytes.Equal(twin, page) {
			t.Fatalf("case %d: apply %v", i, err)
		}
	}
}

func TestDecodeRunsRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"truncated gap", []byte{0x80}},
		{"missing length", []byte{0}},
		{"truncated data", []byte{0, 3, 1, 2}},
		{"zero length", []byte{0, 0}},
		{"past the page", []byte{0x7f, 0x7f, 0x7f, 1, 1}},
		{"run ends past the page", []byte{0xff, 0x1f, 2, 1, 2}}, // gap 4095, len 2
		{"adjacent runs", []byte{0, 1, 9, 0, 1, 9}},
		{"huge gap", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 0}},
		{"huge length", []byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeRuns(tc.b, 4096); !errors.Is(err, ErrBadDiff) {
				t.Fatalf("DecodeRuns(%x) err = %v", tc.b, err)
			}
		})
	}
	if r, err := DecodeRuns(nil, 4096); err != nil || len(r) != 0 {
		t.Fatalf("empty diff: %v %v", r, err)
	}
}

func TestApplyRejects(t *testing.T) {
	page := make([]byte, 16)
	for _, r := range []Runs{
		{{Off: 15, Data: []byte{1, 2}}},
		{{Off: 0, Data: nil}},
		{{Off: 4, Data: []byte{1}}, {Off: 2, Data: []byte{1}}},
		{{Off: -1, Data: []byte{1}}},
	} {
		if err := Apply(page, r); !errors.Is(err, ErrBadDiff) {
			t.Errorf("Apply(%v) = %v", r, err)
		}
	}
	if !bytes.Equal(page, make([]byte, 16)) {
		t.Error("rejected diff wrote bytes")
	}
}

func BenchmarkDiffSparse(b *testing.B) {
	twin := make([]byte, 4096)
	page := Twin(twin)
	page[100], page[2000], page[4000] = 1, 2, 3
	b.SetBytes(4096)
	for b.Loop() {
		Diff(twin, page)
	}
}

func FuzzDecodeRuns(f *testing.F) {
	f.Add([]byte{}, uint16(4096))
	f.Add([]byte{0, 1, 9, 5, 2, 1, 2}, uint16(4096))
	f.Add([]byte{0xff, 0x1f, 1, 7}, uint16(4096))
	f.Fuzz(func(t *testing.T, b []byte, size uint16) {
		runs, err := DecodeRuns(b, int(size))
		if err != nil {
			return
		}
		page := make([]byte, size)
		if err := Apply(page, runs); err != nil {
			t.Fatalf("decoded diff does not apply: %v", err)
		}
		again, err := DecodeRuns(runs.Encode(nil), int(size))
		if err != nil || len(again) != len(runs) {
			t.Fatalf("re-decode: %v (%d runs, want %d)", err, len(again), len(runs))
		}
		for i := range runs {
			if again[i].Off != runs[i].Off || !bytes.Equal(again[i].Data, runs[i].Data) {
				t.Fatalf("run %d changed in a round trip", i)
			}
		}
	})
}

func FuzzDiff(f *testing.F) {
	f.Add([]byte{1, 2, 3}, []byte{1, 9, 3})
	f.Fuzz(func(t *testing.T, twin, page []byte) {
		n := min(len(twin), len(page))
		twin, page = twin[:n], page[:n]
		runs, err := DecodeRuns(Diff(twin, page).Encode(nil), n)
		if err != nil {
			t.Fatal(err)
		}
		if err := Apply(twin, runs); err != nil || !bytes.Equal(twin, page) {
			t.Fatalf("apply: %v", err)
		}
	})
}
