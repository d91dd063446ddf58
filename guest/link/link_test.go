package link

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// apply is what a receiver does with an update payload.
func applyPayload(t testing.TB, page, payload []byte) {
	t.Helper()
	if err := checkRuns(payload); err != nil {
		t.Fatal(err)
	}
	parseRuns(payload, func(r run) { copy(page[r.off:], r.data) })
}

// A diff carries exactly the changed bytes: applied to the twin it gives
// the page, no run holds an unchanged byte, and the twin is brought up to
// date.
func TestDiffExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 500 {
		twin := make([]byte, pageSize)
		for j := range twin {
			twin[j] = byte(rng.Uint32())
		}
		page := bytes.Clone(twin)
		for range rng.IntN(64) {
			off := rng.IntN(pageSize)
			n := 1 + rng.IntN(min(40, pageSize-off))
			for k := off; k < off+n; k++ {
				page[k] = byte(rng.Uint32())
			}
		}
		old := bytes.Clone(twin)
		payload := diff(nil, twin, page)
		if !bytes.Equal(twin, page) {
			t.Fatalf("case %d: twin not brought up to date", i)
		}
		got := bytes.Clone(old)
		applyPayload(t, got, payload)
		if !bytes.Equal(got, page) {
			t.Fatalf("case %d: twin + diff != page", i)
		}
		parseRuns(payload, func(r run) {
			for k, b := range r.data {
				if b == old[r.off+k] {
					t.Fatalf("case %d: run at %d ships unchanged byte %d", i, r.off, r.off+k)
				}
			}
		})
		if len(payload) > maxPayload {
			t.Fatalf("case %d: payload %d > %d", i, len(payload), maxPayload)
		}
	}
	// The worst case, every other byte, fits in one frame.
	twin := make([]byte, pageSize)
	page := make([]byte, pageSize)
	for i := 0; i < pageSize; i += 2 {
		page[i] = 1
	}
	if n := len(diff(nil, twin, page)); n > maxPayload {
		t.Fatalf("worst-case diff %d > %d", n, maxPayload)
	}
}

// Two sides change different bytes of one word between events; each
// ships only its own, so both survive on both sides.
func TestDiffMergesBytesOfOneWord(t *testing.T) {
	base := make([]byte, pageSize)
	a, b := bytes.Clone(base), bytes.Clone(base)
	twinA, twinB := bytes.Clone(base), bytes.Clone(base)
	a[8], b[9] = 'A', 'B' // one 8-byte word
	da, db := diff(nil, twinA, a), diff(nil, twinB, b)
	applyPayload(t, b, da)
	applyPayload(t, twinB, da) // as the receiver does: no echo
	applyPayload(t, a, db)
	applyPayload(t, twinA, db)
	if a[8] != 'A' || a[9] != 'B' || b[8] != 'A' || b[9] != 'B' {
		t.Fatalf("a %q b %q", a[8:10], b[8:10])
	}
	if len(diff(nil, twinA, a)) != 0 || len(diff(nil, twinB, b)) != 0 {
		t.Fatal("applied bytes would be echoed back")
	}
}

// The bitmap against a plain model.
func TestBitmap(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 300 {
		var m bitmap
		model := make([]bool, pageSize)
		for range rng.IntN(20) {
			off := rng.IntN(pageSize)
			n := 1 + rng.IntN(min(300, pageSize-off))
			if rng.IntN(10) == 0 {
				n = pageSize - off // to the end, across whole words
			}
			m.set(off, n)
			for k := off; k < off+n; k++ {
				model[k] = true
			}
		}
		got := make([]bool, pageSize)
		prevEnd := -1
		m.runs(func(off, n int) {
			if off <= prevEnd {
				t.Fatalf("case %d: runs touch or overlap at %d", i, off)
			}
			for k := off; k < off+n; k++ {
				got[k] = true
			}
			prevEnd = off + n
		})
		for k := range model {
			if got[k] != model[k] {
				t.Fatalf("case %d: byte %d marked %v, want %v", i, k, got[k], model[k])
			}
		}
		if m.empty() != !bytes.Contains(boolBytes(model), []byte{1}) {
			t.Fatalf("case %d: empty() wrong", i)
		}
	}
}

func boolBytes(b []bool) []byte {
	out := make([]byte, len(b))
	for i, v := range b {
		if v {
			out[i] = 1
		}
	}
	return out
}

// delta keeps later changes over earlier ones.
func TestDelta(t *testing.T) {
	var d, e delta
	d.put(appendRun(nil, 10, []byte("aaaa")))
	e.put(appendRun(appendRun(nil, 8, []byte("bbbb")), 20, []byte("c")))
	d.take(&e)
	page := make([]byte, pageSize)
	applyPayload(t, page, d.payload())
	if got := string(page[8:14]); got != "bbbbaa" || page[20] != 'c' {
		t.Fatalf("page %q %q", page[8:14], page[20])
	}
	if d.payload() != nil || e.payload() != nil {
		t.Fatal("deltas not emptied")
	}
}

// fuzzState is a State with one link (to dom 7) and three rels: a grant
// dom 7 maps read-only, one it maps writable, and a replica of its grant.
func fuzzState() (*State, *peerLink, map[string][]byte) {
	s := newState(nil, -1)
	l := &peerLink{peer: 7, fd: -1, rbuf: make([]byte, rbufSize), early: map[Port]bool{}}
	s.links[7] = l
	s.nlinks.Store(1)
	mem := map[string][]byte{"ro": make([]byte, pageSize), "rw": make([]byte, pageSize), "replica": make([]byte, pageSize)}
	for name, key := range map[string]relKey{"ro": {7, 8, true}, "rw": {7, 9, true}, "replica": {7, 10, false}} {
		r := &rel{s: s, key: key, gen: 1, pg: s.pageAt(mem[name]), readonly: name == "ro", ready: true, refs: 1}
		s.addRel(r)
		s.setTwin(r, bytes.Clone(mem[name]))
	}
	s.ports[3] = portBinding{peer: 7, peerPort: 4, kick: func() {}}
	return s, l, mem
}

// FuzzFrames feeds a link arbitrary bytes, as a hostile peer could: the
// library never panics, never writes a page the peer may only read, and
// the buffer indices stay sane.
func FuzzFrames(f *testing.F) {
	upd := func(dir uint8, ref uint32, payload []byte) []byte {
		return append(header{typ: frameUpdate, dir: dir, ref: ref, gen: 1, n: uint32(len(payload))}.append(nil), payload...)
	}
	commit := header{typ: frameCommit}.append(nil)
	f.Add(append(upd(toGranter, 9, appendRun(nil, 5, []byte("hi"))), commit...))
	f.Add(append(upd(toGranter, 8, appendRun(nil, 0, []byte("evil"))), commit...))
	f.Add(append(upd(toMapper, 10, appendRun(nil, 4090, []byte("edge"))), commit...))
	f.Add(header{typ: frameEvent, ref: 3}.append(nil))
	f.Add(header{typ: frameFence, ref: 9, gen: 1}.append(nil))
	f.Add(append(header{typ: framePage, ref: 10, gen: 1, n: pageSize}.append(nil), make([]byte, pageSize)...))
	f.Add([]byte{2, 1, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, apply := range []bool{true, false} {
			s, l, mem := fuzzState()
			n := copy(l.rbuf, in)
			l.r1 = n
			var box inbox
			s.mu.Lock()
			s.framesLocked(l, apply, &box)
			s.mu.Unlock()
			if !bytes.Equal(mem["ro"], make([]byte, pageSize)) {
				t.Fatal("a read-only grant's page changed")
			}
			if l.r0 < 0 || l.r0 > l.r1 || l.r1 > len(l.rbuf) {
				t.Fatalf("buffer indices %d %d", l.r0, l.r1)
			}
			// What is left is a frame not complete yet, or a release
			// waiting for its commit (at most half the buffer).
			if !l.dead && l.r1-l.r0 >= len(l.rbuf)/2+headerSize+maxPayload {
				t.Fatalf("%d bytes left unhandled on a live link", l.r1-l.r0)
			}
		}
	})
}

// releaseState is a State sharing pages pages with dom 7 (granted to
// it), in diff mode or with reported writes.
func releaseState(pages int, explicit bool) (*State, *peerLink, []byte) {
	s, l, _ := fuzzState()
	s = newState(nil, -1)
	s.links[7] = l
	s.nlinks.Store(1)
	mem := make([]byte, pages*pageSize)
	for i := range pages {
		pg := s.pageAt(mem[i*pageSize : (i+1)*pageSize])
		pg.explicit = explicit
		r := &rel{s: s, key: relKey{7, Ref(8 + i), true}, gen: 1, pg: pg, ready: true, refs: 1}
		s.addRel(r)
		if !explicit {
			s.setTwin(r, make([]byte, pageSize))
		}
	}
	return s, l, mem
}

// BenchmarkRelease is the cost of a release that ships a 64-byte message
// written into a 4 MiB ring shared with another host: diffing every page
// against its twin, against shipping the reported write. The cost of the
// first grows with what is shared, of the second with what changed.
func BenchmarkRelease(b *testing.B) {
	for _, mode := range []struct {
		name     string
		explicit bool
	}{{"diff", false}, {"reported", true}} {
		b.Run(mode.name, func(b *testing.B) {
			s, l, mem := releaseState(1024, mode.explicit)
			b.SetBytes(64)
			for i := range b.N {
				off := (i * 64) % len(mem)
				msg := mem[off : off+64]
				msg[0] = byte(i) + 1 // always a change
				msg[63] = byte(i>>8) + 1
				if mode.explicit {
					s.Wrote(msg)
				}
				s.mu.Lock()
				s.releaseLocked(l)
				if !l.queued() {
					b.Fatal("nothing shipped")
				}
				l.out, l.spans, l.extern = l.out[:0], l.spans[:0], 0
				s.mu.Unlock()
			}
		})
	}
}
