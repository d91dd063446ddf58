package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The TLS baseline of scripts/bench-remote.sh ring with TLS=1: the same
// stream as TCPStream, inside mutual TLS with the cluster's certificates,
// between the same two hosts, against shi's ring between agents that run
// the data plane over mutual TLS. Go's crypto/tls on both ends, as the
// agents use.

// FigTLSStream is the TLS stream's throughput.
const FigTLSStream = "tls throughput"

// TLSServer serves the stream baseline over TLS.
type TLSServer struct {
	ln  net.Listener
	cfg *tls.Config
	wg  sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
}

// ListenTLS listens on addr; cfg is the server's configuration (with its
// certificate, and the client CAs it requires).
func ListenTLS(addr string, cfg *tls.Config) (*TLSServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("benchtcp: %w", err)
	}
	return &TLSServer{ln: ln, cfg: cfg, conns: map[net.Conn]bool{}}, nil
}

// Addr is the address the server listens on.
func (s *TLSServer) Addr() string { return s.ln.Addr().String() }

// Serve accepts connections until Close; a connection's error goes to
// logw, if set.
func (s *TLSServer) Serve(logw io.Writer) error {
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			if c, ok := c.(*net.TCPConn); ok {
				c.SetNoDelay(true)
			}
			if err := serveTLSStream(tls.Server(c, s.cfg)); err != nil && logw != nil {
				fmt.Fprintf(logw, "benchtcp: tls connection: %v\n", err)
			}
		}()
	}
}

// Close stops Serve, ends every connection and waits for them.
func (s *TLSServer) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// serveTLSStream reads a stream hello and then runs of its bytes, acking
// each run with the count read.
func serveTLSStream(c *tls.Conn) error {
	var hb [tcpHelloSize]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		return err
	}
	h, err := parseTCPHello(hb[:])
	if err != nil {
		return err
	}
	if h.mode != tcpStream || h.delay != 0 {
		return errors.New("benchtcp: the TLS baseline serves undelayed streams only")
	}
	return serveStreamRuns(c, h, make([]byte, h.size))
}

// TLSStream is TCPStream inside TLS: runs runs of total bytes in writes
// of chunk bytes, each timed from its first write until the server
// acknowledges its last byte (the handshake is not timed).
func TLSStream(addr string, cfg *tls.Config, total int64, chunk, runs int) ([]float64, error) {
	if total <= 0 || chunk <= 0 || chunk > maxTCPSize || runs <= 0 {
		return nil, errors.New("benchtcp: bad stream parameters")
	}
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("benchtcp: %w", err)
	}
	raw.(*net.TCPConn).SetNoDelay(true)
	c := tls.Client(raw, cfg)
	defer c.Close()
	if err := c.Handshake(); err != nil {
		return nil, fmt.Errorf("benchtcp: tls handshake with %s: %w", addr, err)
	}
	if _, err := c.Write(tcpHello{mode: tcpStream, size: chunk, runs: runs, bytes: total}.marshal()); err != nil {
		return nil, err
	}
	return streamRuns(c, total, chunk, runs, "tls stream")
}
