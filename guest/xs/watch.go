package xs

import (
	"sync"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// Event is one XS_WATCH_EVENT: the path that changed (relative if the watch
// was set with a relative path) and the watch's token. Events are hints: the
// node may have changed again, or not at all, by the time it is read.
type Event struct {
	Path  string
	Token string
}

// maxQueued bounds the events a Watch holds for a reader that does not keep
// up. Past it the queue collapses into one event for the watched path, which
// tells the reader to re-read everything below it: XenStore allows spurious
// events but never lost ones, and this keeps a flood from a daemon (or a busy
// tree) from growing our memory without bound.
const maxQueued = 4096

// Watch is a registered watch. Its events arrive, in the order the daemon
// sent them, on Events; the first is the one the daemon fires when the watch
// is set.
type Watch struct {
	Path  string
	Token string

	c    *Client
	ch   chan Event
	wake chan struct{} // capacity 1: "the queue is not empty"
	quit chan struct{}
	once sync.Once

	// mu guards q.
	mu sync.Mutex
	q  []Event
}

// Watch registers a watch on path (and everything below it) with token
// (XS_WATCH). Every event carrying token is delivered to the returned Watch,
// so give distinct watches distinct tokens.
func (c *Client) Watch(path, token string) (*Watch, error) {
	w := &Watch{
		Path:  path,
		Token: token,
		c:     c,
		ch:    make(chan Event),
		wake:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
	}
	// Register before asking: the daemon's first event follows its reply
	// immediately and must find the watch.
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.watches[token] = append(c.watches[token], w)
	c.mu.Unlock()
	go w.pump()
	if _, err := c.request(abi.XS_WATCH, 0, wire.JoinStrings(path, token)); err != nil {
		c.forget(w)
		return nil, err
	}
	return w, nil
}

// Unwatch removes w (XS_UNWATCH) and closes its channel.
func (c *Client) Unwatch(w *Watch) error {
	c.forget(w)
	_, err := c.request(abi.XS_UNWATCH, 0, wire.JoinStrings(w.Path, w.Token))
	return err
}

// Events returns the channel of w's events. It is closed after Unwatch,
// ResetWatches or the end of the connection.
func (w *Watch) Events() <-chan Event { return w.ch }

func (c *Client) forget(w *Watch) {
	c.mu.Lock()
	l := c.watches[w.Token]
	for i, x := range l {
		if x == w {
			l = append(l[:i:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(c.watches, w.Token)
	} else {
		c.watches[w.Token] = l
	}
	c.mu.Unlock()
	w.stop()
}

// deliver routes one XS_WATCH_EVENT payload. A malformed one is dropped:
// it names no watch, and events are only hints anyway.
func (c *Client) deliver(payload []byte) {
	ss, err := wire.Strings(payload)
	if err != nil || len(ss) < 2 {
		return
	}
	ev := Event{Path: ss[0], Token: ss[1]}
	c.mu.Lock()
	for _, w := range c.watches[ev.Token] {
		w.push(ev)
	}
	c.mu.Unlock()
}

func (w *Watch) push(ev Event) {
	w.mu.Lock()
	if len(w.q) >= maxQueued {
		w.q = append(w.q[:0], Event{Path: w.Path, Token: w.Token})
	} else {
		w.q = append(w.q, ev)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Watch) stop() { w.once.Do(func() { close(w.quit) }) }

// pump moves queued events to the channel, so that the client's reader
// never waits for a watcher.
func (w *Watch) pump() {
	defer close(w.ch)
	for {
		w.mu.Lock()
		if len(w.q) == 0 {
			w.mu.Unlock()
			select {
			case <-w.wake:
				continue
			case <-w.quit:
				return
			}
		}
		ev := w.q[0]
		w.q = w.q[1:]
		w.mu.Unlock()
		select {
		case w.ch <- ev:
		case <-w.quit:
			return
		}
	}
}
