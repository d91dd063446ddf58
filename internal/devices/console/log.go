package console

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Viewer modes.
const (
	ModeRW    = "rw"
	ModeRO    = "ro"
	ModeForce = "force"
)

// Sink is where a console's input goes: the back end's ring writer.
type Sink interface {
	// Input queues keystrokes for the domain; it may drop them when the
	// domain does not read its console (as a full keyboard buffer does).
	Input(p []byte) error
	// Resize tells the domain's terminal its window size.
	Resize(cols, rows int) error
}

// Log is one console as the back end keeps it: the scrollback, an
// optional transcript, and its viewers, of which at most one is the
// writer. Output comes from the back end (Append); viewers read it from
// any offset still kept.
type Log struct {
	// mu guards the fields below.
	mu         sync.Mutex
	sink       Sink // nil until the back end connects
	transcript io.WriteCloser
	sb         *Scrollback
	changed    chan struct{} // closed and replaced on every change
	ended      string        // why the console ended, once it has
	writer     *Viewer
	nextID     int
}

// NewLog returns a console log keeping limit bytes of scrollback, whose
// input goes to sink. transcript, if not nil, receives every output byte
// (Log closes it when the console ends); start is the offset of the next
// byte.
func NewLog(limit int, start int64, sink Sink, transcript io.WriteCloser) *Log {
	return &Log{sink: sink, transcript: transcript, sb: NewScrollback(limit, start), changed: make(chan struct{})}
}

// SetSink says where input goes from now on (nil: dropped).
func (l *Log) SetSink(s Sink) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sink = s
}

// changedLocked wakes every viewer.
// Preconditions: l.mu held.
func (l *Log) changedLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Append adds output. A transcript that fails is dropped, not retried:
// the console goes on.
func (l *Log) Append(p []byte) {
	if len(p) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sb.Append(p)
	if l.transcript != nil {
		if _, err := l.transcript.Write(p); err != nil {
			l.transcript.Close()
			l.transcript = nil
		}
	}
	l.changedLocked()
}

// End marks the console ended, for reason (a sentence for a person).
func (l *Log) End(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended != "" {
		return
	}
	l.ended = reason
	if l.transcript != nil {
		l.transcript.Close()
		l.transcript = nil
	}
	l.changedLocked()
}

// Ended returns why the console ended, or "".
func (l *Log) Ended() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended
}

// Range returns the offsets of the oldest byte kept and just past the
// newest.
func (l *Log) Range() (start, end int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sb.Start(), l.sb.End()
}

// Viewer is one client of a console.
type Viewer struct {
	l     *Log
	id    int
	since time.Time

	// Guarded by Log.mu.
	off      int64
	writer   bool
	demoted  string // why it lost the writer's place, not yet told
	detached bool
}

// Hello is what a viewer is told first.
type Hello struct {
	Offset int64  // where its stream starts
	Mode   string // ModeRW or ModeRO
	Reason string // why read-only, if it is
}

// Attach adds a viewer that reads from offset off (negative: the oldest
// byte kept) in mode (ModeRW, ModeRO or ModeForce).
func (l *Log) Attach(off int64, mode string) (*Viewer, Hello) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	v := &Viewer{l: l, id: l.nextID, since: time.Now()}
	if off < 0 || off < l.sb.Start() {
		off = l.sb.Start()
	}
	v.off = min(off, l.sb.End())
	h := Hello{Offset: v.off, Mode: ModeRO}
	switch {
	case l.ended != "":
		h.Reason = "the console has ended: " + l.ended
	case mode == ModeRO:
		h.Reason = "read-only, as asked"
	case mode == ModeForce || l.writer == nil:
		if w := l.writer; w != nil {
			w.writer = false
			w.demoted = "another viewer took the console (force)"
		}
		l.writer, v.writer = v, true
		h.Mode = ModeRW
		l.changedLocked()
	default:
		h.Reason = fmt.Sprintf("another viewer has been writing since %s; read-only (force takes its place)",
			l.writer.since.UTC().Format(time.TimeOnly))
	}
	return v, h
}

// Update is what a viewer's Next returns: output bytes, a loss of the
// writer's place, or the end.
type Update struct {
	N       int    // bytes of output put in the buffer
	Demoted string // the viewer is read-only from now on, for this reason
	Ended   string // the console has ended, for this reason (after all output)
}

// Next waits for output past the viewer's offset, a demotion or the end,
// and returns one of them. Output that fell out of the scrollback while
// the viewer lagged is skipped.
func (v *Viewer) Next(ctx context.Context, p []byte) (Update, error) {
	l := v.l
	for {
		l.mu.Lock()
		if v.demoted != "" {
			u := Update{Demoted: v.demoted}
			v.demoted = ""
			l.mu.Unlock()
			return u, nil
		}
		n, at := l.sb.ReadAt(p, v.off)
		if n > 0 {
			v.off = at + int64(n)
			l.mu.Unlock()
			return Update{N: n}, nil
		}
		if l.ended != "" {
			u := Update{Ended: l.ended}
			l.mu.Unlock()
			return u, nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Update{}, ctx.Err()
		}
	}
}

// Writer reports whether the viewer has the writer's place.
func (v *Viewer) Writer() bool {
	_, ok := v.sinkIfWriter()
	return ok
}

// sinkIfWriter returns the sink if the viewer is the writer.
func (v *Viewer) sinkIfWriter() (Sink, bool) {
	v.l.mu.Lock()
	defer v.l.mu.Unlock()
	return v.l.sink, v.writer
}

// Input sends keystrokes to the domain if the viewer is the writer;
// a read-only viewer's are dropped.
func (v *Viewer) Input(p []byte) error {
	s, ok := v.sinkIfWriter()
	if !ok || s == nil {
		return nil
	}
	return s.Input(p)
}

// Resize passes the writer's window size to the domain.
func (v *Viewer) Resize(cols, rows int) error {
	s, ok := v.sinkIfWriter()
	if !ok || s == nil {
		return nil
	}
	return s.Resize(cols, rows)
}

// Detach removes the viewer; a writer frees its place.
func (v *Viewer) Detach() {
	l := v.l
	l.mu.Lock()
	defer l.mu.Unlock()
	v.detached = true
	if l.writer == v {
		l.writer = nil
	}
	v.writer = false
}
