package console

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

type recSink struct {
	mu    sync.Mutex
	in    []string
	sizes []string
}

func (s *recSink) Input(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.in = append(s.in, string(p))
	return nil
}

func (s *recSink) Resize(c, r int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sizes = append(s.sizes, FormatSize(c, r))
	return nil
}

func next(t *testing.T, v *Viewer) (Update, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	buf := make([]byte, 64)
	u, err := v.Next(ctx, buf)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return u, string(buf[:u.N])
}

func TestLogViewers(t *testing.T) {
	sink := &recSink{}
	l := NewLog(8, 0, nil, nil)
	l.SetSink(sink)
	l.Append([]byte("0123456789")) // 10 bytes: 2..9 kept

	a, ha := l.Attach(-1, ModeRW)
	if ha.Mode != ModeRW || ha.Offset != 2 {
		t.Fatalf("first viewer: %+v, want rw at 2", ha)
	}
	if _, got := next(t, a); got != "23456789" {
		t.Fatalf("scrollback: %q", got)
	}
	b, hb := l.Attach(5, ModeRW)
	if hb.Mode != ModeRO || !strings.Contains(hb.Reason, "another viewer") || hb.Offset != 5 {
		t.Fatalf("second viewer: %+v, want read-only at 5 with a reason", hb)
	}
	a.Input([]byte("ls\r"))
	b.Input([]byte("rm\r")) // read-only: dropped
	b.Resize(1, 1)
	a.Resize(80, 24)
	if strings.Join(sink.in, "|") != "ls\r" || strings.Join(sink.sizes, "|") != "80x24" {
		t.Fatalf("sink got input %q sizes %q", sink.in, sink.sizes)
	}

	c, hc := l.Attach(100, ModeForce)
	if hc.Mode != ModeRW || hc.Offset != 10 {
		t.Fatalf("forcing viewer: %+v", hc)
	}
	if u, _ := next(t, a); !strings.Contains(u.Demoted, "took") {
		t.Fatalf("old writer: %+v, want demoted", u)
	}
	if a.Writer() || !c.Writer() {
		t.Fatal("writer did not move")
	}
	l.Append([]byte("ab"))
	for _, v := range []*Viewer{a, c} {
		if _, got := next(t, v); got != "ab" {
			t.Fatalf("new output: %q", got)
		}
	}
	c.Detach()
	if d, hd := l.Attach(-1, ModeRW); hd.Mode != ModeRW || !d.Writer() {
		t.Fatalf("after the writer left: %+v", hd)
	}
	l.End("domain x (3) ended: exit code 0")
	if u, _ := next(t, c); u.Ended == "" {
		// c detached but still reads: it sees the end too
		t.Fatalf("end: %+v", u)
	}
	if _, got := next(t, b); got != "56789ab" {
		t.Fatalf("read-only viewer from 5: %q", got)
	}
	if u, _ := next(t, b); u.Ended != "domain x (3) ended: exit code 0" {
		t.Fatalf("end after the output: %+v", u)
	}
	if _, he := l.Attach(-1, ModeRW); he.Mode != ModeRO || !strings.Contains(he.Reason, "ended") {
		t.Fatalf("attach to an ended console: %+v", he)
	}
}

// TestLogSlowViewer: a viewer that does not read never holds up output,
// and memory stays at the scrollback's size.
func TestLogSlowViewer(t *testing.T) {
	l := NewLog(16, 0, nil, nil)
	v, _ := l.Attach(-1, ModeRO)
	for range 1000 {
		l.Append([]byte("0123456789"))
	}
	_, got := next(t, v)
	if got != "456789"+"0123456789" {
		t.Fatalf("slow viewer resumes at the oldest kept byte: %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := v.Next(ctx, make([]byte, 4)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with nothing new: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, ok := range map[string]bool{"80x24": true, "1x1": true, "0x24": false, "80x": false, "x": false, "80x24x": false, "-1x5": false, "99999x5": false, "": false} {
		c, r, err := ParseSize([]byte(in))
		if (err == nil) != ok {
			t.Errorf("ParseSize(%q) = %d,%d,%v", in, c, r, err)
		}
		if ok && FormatSize(c, r) != in {
			t.Errorf("round trip of %q: %q", in, FormatSize(c, r))
		}
	}
}
