package gnttab

import (
	"testing"

	"shi/internal/abi"
	"shi/internal/ring"
)

// FuzzGrantTable lets a hostile granter write anything into its grant
// table, before and between operations, while a mapper maps, unmaps and
// copies. The table's pin counts must always match its mappings, and no
// operation may panic or hand out a page that was not registered.
func FuzzGrantTable(f *testing.F) {
	f.Add([]byte{1, 0, 2, 0, 10, 0, 0, 0}, []byte{0, 0, 1, 0, 2, 0, 3})
	f.Add([]byte{5, 0, 2, 0, 11, 0, 0, 0, 1, 0, 2, 0, 10}, []byte{0, 1, 0, 1, 4, 0, 1, 5, 6})
	f.Fuzz(func(t *testing.T, entries, script []byte) {
		fr := pages{}
		fr.add(1, 10, 1)
		fr.add(1, 11, 2)
		fr.add(2, 20, 3)
		tab := New(fr)
		gt := ring.AlignedBytes(16 * abi.GrantEntryV1Size)
		copy(gt, entries)
		if err := tab.AddDomain(1, gt, Config{}); err != nil {
			t.Fatal(err)
		}
		if err := tab.AddDomain(2, ring.AlignedBytes(8), Config{MaxMaps: 8}); err != nil {
			t.Fatal(err)
		}
		var handles []Handle
		for i := 0; i+1 < len(script); i += 2 {
			op, arg := script[i], script[i+1]
			ref := Ref(arg % 20) // some past the table
			switch op % 7 {
			case 0, 1:
				m, st := tab.Map(2, 1, ref, op%2 == 0)
				if st == Okay {
					if fr.Frame(1, m.Frame) == nil {
						t.Fatalf("mapped unregistered frame %d", m.Frame)
					}
					handles = append(handles, m.Handle)
				}
			case 2:
				if len(handles) > 0 {
					h := handles[int(arg)%len(handles)]
					if _, st := tab.Unmap(2, h); st != Okay && st != BadHandle {
						t.Fatalf("unmap: %v", st)
					}
				}
			case 3:
				EndAccess(gt, ref)
			case 4: // the guest scribbles on an entry
				if int(ref) < 16 {
					gt[int(ref)*8+int(arg)%8] ^= arg
				}
			case 5:
				tab.Copy(2, CopyOp{
					Source: CopyPtr{Dom: 1, Ref: ref, Offset: uint16(arg) * 16},
					Dest:   CopyPtr{Dom: abi.DOMID_SELF, Frame: 20},
					Len:    uint16(arg), Flags: abi.GNTCOPY_source_gref,
				})
			case 6:
				tab.Copy(2, CopyOp{
					Source: CopyPtr{Dom: abi.DOMID_SELF, Frame: 20},
					Dest:   CopyPtr{Dom: 1, Ref: ref},
					Len:    uint16(arg), Flags: abi.GNTCOPY_dest_gref,
				})
			}
			// Pin counts match the mappings.
			pins := map[Ref][2]int{}
			for _, m := range tab.Mappings(2) {
				c := pins[m.Ref]
				if m.Readonly {
					c[0]++
				} else {
					c[1]++
				}
				pins[m.Ref] = c
			}
			g := tab.doms[1]
			if len(g.active) != len(pins) {
				t.Fatalf("%d active entries for %d mapped refs", len(g.active), len(pins))
			}
			for ref, act := range g.active {
				if c := pins[ref]; act.readers != c[0] || act.writers != c[1] {
					t.Fatalf("ref %d pins r%d w%d, mappings r%d w%d", ref, act.readers, act.writers, c[0], c[1])
				}
			}
		}
		for _, m := range tab.Mappings(2) {
			tab.Unmap(2, m.Handle)
		}
		if len(tab.doms[1].active) != 0 {
			t.Fatal("pins left after unmapping everything")
		}
	})
}
