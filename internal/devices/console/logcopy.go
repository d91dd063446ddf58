package console

import (
	"fmt"
	"io"
	"time"
)

// LogRate is how many bytes a second of a domain's console output the
// helper passes on to its agent's log.
const LogRate = 64 << 10

// logTailMax is how much of the skipped output is kept for the end.
const logTailMax = 4096

// logCopy passes console output on to the agent's log (the helper's
// stdout) at most rate bytes a second, so that a domain flooding its
// console does not flood the log. Skipped output is counted, and its
// last bytes are written at the end (Close), so that the log and the
// domain's output tail keep its last lines however it ended.
type logCopy struct {
	w    io.Writer
	rate int
	now  func() time.Time

	budget  int // bytes that may be written now
	last    time.Time
	skipped int64
	tail    []byte // the last skipped bytes, up to logTailMax
}

func newLogCopy(w io.Writer, rate int, now func() time.Time) *logCopy {
	return &logCopy{w: w, rate: rate, now: now, budget: rate, last: now()}
}

// Write implements io.Writer; it never fails (the console goes on).
func (l *logCopy) Write(p []byte) (int, error) {
	t := l.now()
	if d := t.Sub(l.last); d > 0 {
		l.budget = min(l.rate, l.budget+int(d.Seconds()*float64(l.rate)))
		l.last = t
	}
	if len(p) > l.budget {
		l.skipped += int64(len(p))
		l.tail = append(l.tail, p...)
		if len(l.tail) > logTailMax {
			l.tail = append(l.tail[:0], l.tail[len(l.tail)-logTailMax:]...)
		}
		return len(p), nil
	}
	l.flushSkipped(false)
	l.budget -= len(p)
	l.w.Write(p)
	return len(p), nil
}

// flushSkipped says how much was skipped, with the tail of it at the end.
func (l *logCopy) flushSkipped(withTail bool) {
	if l.skipped == 0 {
		return
	}
	fmt.Fprintf(l.w, "\n[console: %d bytes not logged (more than %d a second)]\n", l.skipped, l.rate)
	if withTail {
		l.w.Write(l.tail)
	}
	l.skipped, l.tail = 0, nil
}

// Close writes what was skipped last.
func (l *logCopy) Close() error {
	l.flushSkipped(true)
	return nil
}
