package xenstore

import (
	"strings"
	"syscall"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// watch registers (path, token) for connection c. The payload is
// "<wpath>\0<token>\0"; a relative wpath reports relative event paths.
func (e *Engine) watch(c *conn, caller Caller, payload []byte) syscall.Errno {
	path, token, errno := watchArgs(payload)
	if errno != 0 {
		return errno
	}
	w := &watch{c: c, token: token}
	if path[0] == '@' {
		w.path = path
	} else {
		w.path = c.abs(path)
		if w.path != path {
			w.rel = len(c.home) + 1
		}
		if !validPath(w.path) || (!caller.Privileged && relLen(w.path) > e.state.meta.quota.MaxPathLen) {
			return syscall.EINVAL
		}
	}
	for _, o := range c.watches {
		if o.path == w.path && o.token == token {
			return syscall.EEXIST
		}
	}
	q := e.state.meta.quota
	if len(c.watches) >= q.MaxConnWatches || (!caller.Privileged && e.domW[c.dom] >= q.MaxWatches) {
		return syscall.E2BIG
	}
	e.seq++
	w.seq = e.seq
	c.watches = append(c.watches, w)
	e.watches[w.path] = append(e.watches[w.path], w)
	e.domW[c.dom]++
	return 0
}

func watchArgs(payload []byte) (path, token string, errno syscall.Errno) {
	ss, err := wire.Strings(payload)
	if err != nil || len(ss) != 2 || ss[0] == "" {
		return "", "", syscall.EINVAL
	}
	if len(ss[0]) > abi.XENSTORE_ABS_PATH_MAX || (ss[0][0] == '@' && len(ss[0]) > abi.XENSTORE_REL_PATH_MAX) {
		return "", "", syscall.EINVAL
	}
	return ss[0], ss[1], 0
}

// firstEvent is the event XS_WATCH fires at once, reporting the watched
// path as the client gave it.
func (e *Engine) firstEvent(c *conn, m wire.Msg) Delivery {
	path, token, _ := watchArgs(m.Payload)
	return Delivery{Conn: c.id, Msg: wire.WatchEvent(path, token), Event: true}
}

func (e *Engine) unwatch(c *conn, payload []byte) syscall.Errno {
	path, token, errno := watchArgs(payload)
	if errno != 0 {
		return errno
	}
	path = c.abs(path)
	for i, w := range c.watches {
		if w.path == path && w.token == token {
			c.watches = append(c.watches[:i:i], c.watches[i+1:]...)
			e.unindex(w)
			return 0
		}
	}
	return syscall.ENOENT
}

func (e *Engine) unindex(w *watch) {
	list := e.watches[w.path]
	for i, o := range list {
		if o == w {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(e.watches, w.path)
	} else {
		e.watches[w.path] = list
	}
	if e.domW[w.c.dom]--; e.domW[w.c.dom] <= 0 {
		delete(e.domW, w.c.dom)
	}
}

func (e *Engine) dropWatches(c *conn) {
	for _, w := range c.watches {
		e.unindex(w)
	}
	c.watches = nil
}

// match appends the watches an event fires to hits, in registration
// order: watches on the path itself and, unless the event is exact, on
// every ancestor. Special events match only watches on their exact name.
func (e *Engine) match(ev Event, hits []*watch) []*watch {
	hits = append(hits, e.watches[ev.Path]...)
	if !ev.Exact && ev.Path[0] == '/' {
		for p := ev.Path; p != "/"; {
			p = parentOf(p)
			hits = append(hits, e.watches[p]...)
		}
	}
	if len(hits) > 1 {
		sortWatches(hits)
	}
	return hits
}

// permitted is watch_permitted: an unprivileged watcher sees an event only
// if it could read the node (before or after a permission change) or its
// parent; special events need read access to the special node.
func (e *Engine) permitted(c *conn, ev Event) bool {
	caller := e.state.Caller(c.dom)
	if ev.Path[0] == '@' {
		return len(ev.Perms) > 0 && caller.can(ev.Perms, PermRead)
	}
	for _, ps := range []Perms{ev.OldPerms, ev.Perms, ev.ParentPerms} {
		if len(ps) > 0 && caller.can(ps, PermRead) {
			return true
		}
	}
	return false
}

// report is the event path as this watch reports it.
func (w *watch) report(path string) string {
	if w.rel > 0 && len(path) >= w.rel && strings.HasPrefix(path, w.c.home) {
		if len(path) == w.rel-1 {
			return "" // the home itself, relative to itself
		}
		return path[w.rel:]
	}
	return path
}
