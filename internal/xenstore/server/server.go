// Package server is the socket shell around the XenStore core: it accepts
// connections, reads xs_wire messages, hands them to a Backend and writes
// replies and watch events back. All tree semantics live in the Backend
// (the pure core, replicated or not); this package only does I/O.
package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"shi/internal/xenstore"
	"shi/internal/xenstore/wire"
)

// Backend executes requests. Handle returns once the request's reply has
// been pushed to the connection's Outbox (after replication, if any);
// deliveries to other connections go to their own outboxes.
type Backend interface {
	Open(dom uint32, out *Outbox) xenstore.ConnID
	Handle(ctx context.Context, id xenstore.ConnID, m wire.Msg) error
	Close(id xenstore.ConnID)
}

// Config configures a Server.
type Config struct {
	Backend Backend
	Logger  *slog.Logger
	Quota   xenstore.Quota // MaxOutstanding and MaxQueuedEvents bound each outbox

	// Identify names the domain a connection acts for; nil means every
	// connection is domain 0, as socket clients of C xenstored are.
	Identify func(net.Conn) (uint32, error)
}

// flushTimeout bounds the final flush to a client that stopped reading.
const flushTimeout = 5 * time.Second

// Server serves the XenStore wire protocol on listeners.
type Server struct {
	cfg   Config
	conns sync.WaitGroup
	stats Stats
}

// Stats are counters for /metrics.
type Stats struct {
	Conns, Requests, ProtocolErrors, DroppedEvents atomic.Uint64
}

// New returns a server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{cfg: cfg}
}

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Serve accepts connections until ctx ends or ln fails, then waits for the
// connections it started to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.conns.Wait()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.ServeConn(ctx, nc)
		}()
	}
}

// ServeConn serves one connection until it closes or ctx ends.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	dom := uint32(0)
	if s.cfg.Identify != nil {
		d, err := s.cfg.Identify(nc)
		if err != nil {
			s.cfg.Logger.Warn("xenstore: refusing connection", "err", err)
			return
		}
		dom = d
	}
	s.stats.Conns.Add(1)
	q := s.cfg.Quota
	out := NewOutbox(max(q.MaxOutstanding, 1), max(q.MaxQueuedEvents, 1))
	id := s.cfg.Backend.Open(dom, out)
	defer s.cfg.Backend.Close(id)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	room := make(chan struct{}, 1)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		defer cancel() // a dead writer ends the reader too
		s.writeLoop(ctx, nc, out, room)
	}()
	stopOnCancel := context.AfterFunc(ctx, func() { nc.Close() })
	defer stopOnCancel()

	br := bufio.NewReaderSize(nc, 8192)
	for {
		if err := out.waitRoom(ctx, room); err != nil {
			break
		}
		m, err := wire.Read(br)
		if err != nil {
			if err != io.EOF && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.stats.ProtocolErrors.Add(1)
				s.cfg.Logger.Warn("xenstore: dropping connection", "dom", dom, "err", err)
			}
			break
		}
		s.stats.Requests.Add(1)
		if err := s.cfg.Backend.Handle(ctx, id, m); err != nil {
			s.cfg.Logger.Warn("xenstore: request failed", "dom", dom, "req", m.String(), "err", err)
			break
		}
		// Write the reply from here unless more requests are already
		// buffered: then they are answered in one write.
		if br.Buffered() < wire.HeaderSize {
			if err := out.flush(nc); err != nil {
				break
			}
		}
	}
	// Let the writer flush what is queued (the client may have half-closed),
	// but not forever if it never reads.
	nc.SetWriteDeadline(time.Now().Add(flushTimeout))
	out.close()
	<-writerDone
	if n := out.Dropped(); n > 0 {
		s.stats.DroppedEvents.Add(n)
		s.cfg.Logger.Warn("xenstore: dropped watch events for a client that did not read them", "dom", dom, "dropped", n, "limit", q.MaxQueuedEvents)
	}
}

// writeLoop writes watch events queued by other connections' requests.
func (s *Server) writeLoop(ctx context.Context, nc net.Conn, out *Outbox, room chan<- struct{}) {
	for {
		select {
		case <-out.wake:
		case <-ctx.Done():
			return
		}
		if err := out.flush(nc); err != nil {
			return
		}
		select {
		case room <- struct{}{}:
		default:
		}
		if out.isClosed() {
			out.flush(nc)
			return
		}
	}
}
