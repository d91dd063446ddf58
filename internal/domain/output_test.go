package domain

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOutputTail(t *testing.T) {
	var tl outputTail
	if got := tl.Lines(); len(got) != 0 {
		t.Fatalf("empty tail: %q", got)
	}
	// Lines split across writes, and a last line without its newline.
	fmt.Fprint(&tl, "one\ntw")
	fmt.Fprint(&tl, "o\nthr")
	if diff := cmp.Diff([]string{"one", "two", "thr"}, tl.Lines()); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
	// Only the last tailLines are kept, oldest first; long lines are cut.
	for i := range 2 * tailLines {
		fmt.Fprintf(&tl, "ee\nline %d\n", i)
	}
	fmt.Fprint(&tl, strings.Repeat("x", 3*tailLineMax)+"\n")
	got := tl.Lines()
	if len(got) != tailLines || got[0] != fmt.Sprintf("line %d", 2*tailLines-tailLines/2) ||
		got[len(got)-2] != fmt.Sprintf("line %d", 2*tailLines-1) || len(got[len(got)-1]) != tailLineMax {
		t.Fatalf("tail of %d lines: first %q, last %.20q (%d bytes)", len(got), got[0], got[len(got)-1], len(got[len(got)-1]))
	}
}
