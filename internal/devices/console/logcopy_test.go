package console

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestLogCopy(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(0, 0)
	l := newLogCopy(&out, 100, func() time.Time { return now })
	l.Write([]byte("hello\n"))
	for range 1000 { // a flood within one second
		l.Write([]byte("0123456789"))
	}
	if out.Len() > 100 {
		t.Fatalf("wrote %d bytes in a second at 100 a second", out.Len())
	}
	now = now.Add(2 * time.Second)
	l.Write([]byte("later\n"))
	if s := out.String(); !strings.Contains(s, "bytes not logged") || !strings.HasSuffix(s, "later\n") {
		t.Fatalf("after the flood: %q", s)
	}
	for range 20 {
		l.Write([]byte("last line\n"))
	}
	l.Close()
	if s := out.String(); !strings.HasSuffix(s, "last line\n") || strings.Count(s, "bytes not logged") != 2 {
		t.Fatalf("the end: %q", s)
	}
	if n := out.Len(); n > 1000 {
		t.Fatalf("logged %d bytes", n)
	}
}
