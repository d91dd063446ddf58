package blkback

import (
	"context"
	"net"
	"sync"

	"golang.org/x/sys/unix"

	"os"

	"shi/internal/xenstore"
	"shi/internal/xenstore/server"
	"shi/internal/xenstore/wire"
)

// store is the real XenStore engine behind its socket shell, with a
// connection per domain, so the tests run under the permissions the
// agent enforces (not a fake that lets everyone do everything). It is
// internal/xenstore/server's Local test backend, spelled again here.
type store struct {
	srv *server.Server

	// mu guards e, next, out and doms.
	mu   sync.Mutex
	e    *xenstore.Engine
	next xenstore.ConnID
	out  map[xenstore.ConnID]*server.Outbox
	doms map[net.Conn]uint32
}

func newStore() *store {
	s := &store{e: xenstore.NewEngine(xenstore.NewState(xenstore.DefaultQuota())),
		out: map[xenstore.ConnID]*server.Outbox{}, doms: map[net.Conn]uint32{}}
	s.srv = server.New(server.Config{Backend: s, Quota: xenstore.DefaultQuota(),
		Identify: func(nc net.Conn) (uint32, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.doms[nc], nil
		}})
	return s
}

// Open implements server.Backend.Open.
func (s *store) Open(dom uint32, out *server.Outbox) xenstore.ConnID {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	s.e.Open(s.next, dom)
	s.out[s.next] = out
	return s.next
}

// Close implements server.Backend.Close.
func (s *store) Close(id xenstore.ConnID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.e.Close(id)
	delete(s.out, id)
}

// Handle implements server.Backend.Handle.
func (s *store) Handle(_ context.Context, id xenstore.ConnID, m wire.Msg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.e.Handle(id, m) {
		if o := s.out[d.Conn]; o != nil {
			o.Push(d.Msg, d.Event)
		}
	}
	return nil
}

// apply commits a command as the toolstack (domain 0), as the agent does.
func (s *store) apply(c *xenstore.Command) xenstore.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, res := s.e.State().Apply(c)
	for _, d := range s.e.Applied(st, res) {
		if o := s.out[d.Conn]; o != nil {
			o.Push(d.Msg, d.Event)
		}
	}
	return res
}

// conn returns the client end of a new connection acting for dom.
func (s *store) conn(ctx context.Context, dom uint32) (net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "xs")
		cs[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	s.doms[cs[1]] = dom
	s.mu.Unlock()
	go s.srv.ServeConn(ctx, cs[1])
	return cs[0], nil
}
