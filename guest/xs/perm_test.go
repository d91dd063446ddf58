package xs_test

import (
	"testing"

	"shi/guest/xs"
)

func TestParsePerm(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want xs.Perm
		ok   bool
	}{
		{"n0", xs.Perm{0, xs.AccessNone}, true},
		{"r5", xs.Perm{5, xs.AccessRead}, true},
		{"w7", xs.Perm{7, xs.AccessWrite}, true},
		{"b32753", xs.Perm{32753, xs.AccessBoth}, true},
		{"b", xs.Perm{}, false},
		{"x1", xs.Perm{}, false},
		{"r-1", xs.Perm{}, false},
		{"r+1", xs.Perm{}, false},
		{"r1a", xs.Perm{}, false},
		{"r99999999999", xs.Perm{}, false},
		{"", xs.Perm{}, false},
	} {
		got, err := xs.ParsePerm(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePerm(%q) = %v, %v", tc.in, got, err)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
	if _, err := xs.ParsePerms("b0", "q1"); err == nil {
		t.Error("ParsePerms accepted q1")
	}
}

func FuzzParsePerm(f *testing.F) {
	for _, s := range []string{"n0", "b65535", "r", "w12x", "r4294967296"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := xs.ParsePerm(s)
		if err != nil {
			return
		}
		// What parses formats back to a string that parses to the same.
		q, err := xs.ParsePerm(p.String())
		if err != nil || q != p {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, p, p.String(), q, err)
		}
	})
}
