package domain

import (
	"strconv"
	"sync"

	"shi/internal/directory"
)

// A domain's stdout and stderr go to the agent's log (ManagerConfig.Output)
// and, a bounded tail of them, to the manager, so that whoever started a
// domain can learn why it ended without reading the agent's log: a
// benchmark whose domain dies at start shows the domain's last lines.
const (
	tailLines   = 40   // lines kept per domain
	tailLineMax = 1024 // bytes kept of one line; the rest is cut
	endedKept   = 64   // ended domains whose output is kept
)

// Output is what a domain wrote last, and how it ended.
type Output struct {
	Dom     directory.Domain
	Running bool
	Exit    string   // how it ended (ExitStatus.String), if it has
	Lines   []string // its last lines of output, oldest first
}

// outputTail keeps the last lines written to it. It is the domain's
// output pipe's only writer besides the agent's log.
type outputTail struct {
	// mu guards the fields below.
	mu      sync.Mutex
	lines   []string // a ring of up to tailLines
	next    int      // where the next line goes once the ring is full
	partial []byte   // a line not ended yet
}

// Write implements io.Writer.
func (t *outputTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range p {
		if c == '\n' {
			t.addLocked(string(t.partial))
			t.partial = t.partial[:0]
			continue
		}
		if len(t.partial) < tailLineMax {
			t.partial = append(t.partial, c)
		}
	}
	return len(p), nil
}

// addLocked adds a finished line.
// Preconditions: t.mu held.
func (t *outputTail) addLocked(l string) {
	if len(t.lines) < tailLines {
		t.lines = append(t.lines, l)
		return
	}
	t.lines[t.next] = l
	t.next = (t.next + 1) % tailLines
}

// Lines returns the kept lines, oldest first, with an unfinished last
// line if there is one.
func (t *outputTail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines)+1)
	out = append(out, t.lines[t.next:]...)
	out = append(out, t.lines[:t.next]...)
	if len(t.partial) > 0 {
		out = append(out, string(t.partial))
	}
	return out
}

// ended is a domain of this host that has ended, kept for its output.
type ended struct {
	dom   directory.Domain
	exit  string
	lines []string
}

// recordEndLocked remembers how a domain ended, forgetting the oldest
// record past endedKept.
// Preconditions: m.mu held.
func (m *Manager) recordEndLocked(r *running, st ExitStatus) {
	m.ended = append(m.ended, ended{dom: r.dom, exit: st.String(), lines: r.out.Lines()})
	if len(m.ended) > endedKept {
		m.ended = append(m.ended[:0], m.ended[len(m.ended)-endedKept:]...)
	}
}

// Output returns the last output of a domain of this host, running or
// ended lately, by decimal id or name (the latest domain of that name).
// ok is false if this host has none: the domain runs elsewhere, or ended
// too long ago.
func (m *Manager) Output(ref string) (Output, bool) {
	id, err := strconv.ParseUint(ref, 10, 32)
	match := func(d directory.Domain) bool {
		if err == nil {
			return uint64(d.ID) == id
		}
		return d.Name == ref
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, r := range m.running {
		if match(r.dom) {
			return Output{Dom: r.dom, Running: true, Lines: r.out.Lines()}, true
		}
	}
	for i := len(m.ended) - 1; i >= 0; i-- {
		if e := m.ended[i]; match(e.dom) {
			return Output{Dom: e.dom, Exit: e.exit, Lines: e.lines}, true
		}
	}
	return Output{}, false
}
