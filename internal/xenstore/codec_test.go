package xenstore

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range []Command{
		{Op: OpWrite, Dom: 3, Path: "/a/b", Value: []byte("v\x00w")},
		{Op: OpSetPerms, Path: "/a", Perms: Perms{{Dom: 1, Bits: PermRead}, {Dom: 2, Bits: 3}}},
		{Op: OpIntroduce, Target: 7},
		{Op: OpTx, Dom: 5,
			Obs: []Observation{{Path: "/x", Facets: obsExist | obsValue, Present: true, Created: 1, VGen: 2, PGen: 3, CGen: 4}, {Path: "/y"}},
			Ops: []Command{{Op: OpRm, Dom: 5, Path: "/x"}, {Op: OpMkdir, Dom: 5, Path: "/z"}}},
	} {
		b, _ := c.MarshalBinary()
		var got Command
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%v: %v", c.Op, err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Errorf("%v round trip (-want +got):\n%s", c.Op, diff)
		}
		for i := 0; i < len(b); i++ {
			var x Command
			if x.UnmarshalBinary(b[:i]) == nil {
				t.Errorf("%v: truncated at %d accepted", c.Op, i)
			}
		}
	}
}

// FuzzCommandDecode checks that no byte string panics the decoder and that
// whatever decodes re-encodes identically and applies without breaking
// the tree's invariants.
func FuzzCommandDecode(f *testing.F) {
	for _, c := range []Command{
		{Op: OpWrite, Path: "/a", Value: []byte("1")},
		{Op: OpTx, Obs: []Observation{{Path: "/"}}, Ops: []Command{{Op: OpMkdir, Path: "/q"}}},
	} {
		b, _ := c.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Command
		if c.UnmarshalBinary(b) != nil {
			return
		}
		b2, _ := c.MarshalBinary()
		var c2 Command
		if err := c2.UnmarshalBinary(b2); err != nil || !cmp.Equal(c, c2) {
			t.Fatalf("re-encode differs: %v", err)
		}
		s := NewState(DefaultQuota())
		s2, _ := s.Apply(&c)
		if err := s2.Check(); err != nil {
			t.Fatalf("apply broke the tree: %v", err)
		}
	})
}
