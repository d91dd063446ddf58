package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"shi/internal/faultnet"
)

// The TCP baselines of scripts/bench-remote.sh ("shi benchtcp"): a server
// on one test host, and a client on the other that either ping-pongs
// small messages (against the remote event round trip) or streams in the
// ring producer's chunk size (against the granted ring).
//
// Without added delay both ends use blocking sockets with TCP_NODELAY and
// plain read(2) and write(2), as the domains use their link: the
// baseline must not pay for Go's netpoller when shi does not. The
// ping-pong's ends even make them as raw system calls (hotConn), as the
// event-channel library makes its epoll_wait, so that neither path pays
// for the scheduler's hand-off while it blocks. With a delay both ends
// wrap their connection in internal/faultnet's delay, the code the
// agents' fault hook delays shi's links with, so both paths are delayed
// the same way: every write held back that long before it enters the
// kernel, with the same timer granularity (the kernel's own ACKs are
// delayed on neither path).

// tcpMagic starts a client's hello.
const tcpMagic = "shibtcp1"

// Modes of a connection.
const (
	tcpPing   = 1 // the server echoes messages of Size bytes
	tcpStream = 2 // the server reads Runs runs of Bytes, acking each
)

// tcpHelloSize is the size of a client's hello:
//
//	offset size field
//	0      8    "shibtcp1"
//	8      1    mode
//	9      3    reserved (0)
//	12     4    delay the server adds to what it sends, µs
//	16     4    size: a ping's message, or a stream's read size
//	20     4    runs (stream)
//	24     8    bytes per run (stream)
const tcpHelloSize = 32

// tcpHello is what a client asks of the server.
type tcpHello struct {
	mode  uint8
	delay time.Duration
	size  int
	runs  int
	bytes int64
}

// maxTCPSize bounds a hello's message or read size.
const maxTCPSize = 16 << 20

func (h tcpHello) marshal() []byte {
	b := make([]byte, 0, tcpHelloSize)
	b = append(b, tcpMagic...)
	b = append(b, h.mode, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(h.delay/time.Microsecond))
	b = binary.LittleEndian.AppendUint32(b, uint32(h.size))
	b = binary.LittleEndian.AppendUint32(b, uint32(h.runs))
	return binary.LittleEndian.AppendUint64(b, uint64(h.bytes))
}

func parseTCPHello(b []byte) (tcpHello, error) {
	if len(b) != tcpHelloSize || string(b[:8]) != tcpMagic {
		return tcpHello{}, errors.New("benchtcp: not a benchtcp hello")
	}
	h := tcpHello{
		mode:  b[8],
		delay: time.Duration(binary.LittleEndian.Uint32(b[12:])) * time.Microsecond,
		size:  int(binary.LittleEndian.Uint32(b[16:])),
		runs:  int(binary.LittleEndian.Uint32(b[20:])),
		bytes: int64(binary.LittleEndian.Uint64(b[24:])),
	}
	switch {
	case h.mode != tcpPing && h.mode != tcpStream:
		return h, fmt.Errorf("benchtcp: unknown mode %d", h.mode)
	case h.size <= 0 || h.size > maxTCPSize:
		return h, fmt.Errorf("benchtcp: size %d out of range", h.size)
	case h.mode == tcpStream && (h.runs <= 0 || h.bytes <= 0):
		return h, fmt.Errorf("benchtcp: stream of %d runs of %d bytes", h.runs, h.bytes)
	}
	return h, nil
}

// rawConn is a blocking socket used with plain system calls.
type rawConn int

// Read implements io.Reader.Read.
func (c rawConn) Read(b []byte) (int, error) { return sysRead(unix.Read, int(c), b) }

// Write implements io.Writer.Write: all of b.
func (c rawConn) Write(b []byte) (int, error) { return sysWrite(unix.Write, int(c), b) }

// hotConn is a rawConn whose calls are raw system calls (readHot,
// writeHot): for the ping-pong, whose ends block in read(2) between
// messages. A thread blocked in one keeps its P, so only one goroutine
// of a program may use one at a time per spare P.
type hotConn int

// Read implements io.Reader.Read.
func (c hotConn) Read(b []byte) (int, error) { return sysRead(readHot, int(c), b) }

// Write implements io.Writer.Write: all of b.
func (c hotConn) Write(b []byte) (int, error) { return sysWrite(writeHot, int(c), b) }

// sysRead is io.Reader.Read over a read system call: EINTR retried, an
// empty read of a non-empty buffer io.EOF.
func sysRead(read func(int, []byte) (int, error), fd int, b []byte) (int, error) {
	for {
		n, err := read(fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// sysWrite writes all of b with a write system call, EINTR retried.
func sysWrite(write func(int, []byte) (int, error), fd int, b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := write(fd, b[done:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// tcpConn is one end of a baseline connection: the raw socket, or with a
// delay the socket in Go's netpoller wrapped in faultnet's.
type tcpConn struct {
	io.ReadWriter
	fd   int      // the socket as it was accepted or dialed
	file *os.File // with a delay: owns fd (netc is a duplicate)
	netc net.Conn // with a delay
}

// newTCPConn takes over fd, a connected blocking socket; hot makes its
// calls raw (hotConn) when there is no delay.
func newTCPConn(fd int, delay time.Duration, peer string, hot bool) (*tcpConn, error) {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setsockopt(TCP_NODELAY)", err)
	}
	switch {
	case delay <= 0 && hot:
		return &tcpConn{ReadWriter: hotConn(fd), fd: fd}, nil
	case delay <= 0:
		return &tcpConn{ReadWriter: rawConn(fd), fd: fd}, nil
	}
	f := os.NewFile(uintptr(fd), "benchtcp")
	nc, err := net.FileConn(f) // a duplicate, non-blocking, in the netpoller
	if err != nil {
		f.Close()
		return nil, err
	}
	faults := faultnet.New()
	faults.SetDelay(delay, 0)
	c := faults.Conn(nc, peer)
	return &tcpConn{ReadWriter: c, fd: fd, file: f, netc: c}, nil
}

// Close closes the connection; bytes a delay still holds go out first
// (the socket lives on in the netpoller's duplicate until then).
func (c *tcpConn) Close() error {
	if c.netc != nil {
		c.netc.Close()
		return c.file.Close()
	}
	return unix.Close(c.fd)
}

func sockaddr(addr string) (unix.Sockaddr, int, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		sa := &unix.SockaddrInet4{Port: ta.Port}
		copy(sa.Addr[:], ip4)
		return sa, unix.AF_INET, nil
	}
	sa := &unix.SockaddrInet6{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To16())
	return sa, unix.AF_INET6, nil
}

// TCPServer is the server end of the TCP baselines.
type TCPServer struct {
	fd   int
	addr string
	wg   sync.WaitGroup

	// mu guards conns and closed, and the closing of accepted sockets.
	mu     sync.Mutex
	conns  map[int]bool // accepted sockets, shut down by Close
	closed bool
}

// ListenTCP listens on addr ("IP:PORT"; port 0 picks one).
func ListenTCP(addr string) (*TCPServer, error) {
	sa, family, err := sockaddr(addr)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setsockopt(SO_REUSEADDR)", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("benchtcp: bind %s: %w", addr, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("listen", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("getsockname", err)
	}
	s := &TCPServer{fd: fd, conns: map[int]bool{}}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		s.addr = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		s.addr = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *TCPServer) Addr() string { return s.addr }

// Serve accepts connections until Close, serving each on a goroutine of
// its own (which blocks its thread in read(2), as a process would). A
// connection's error ends that connection only; it is reported on
// logw, if set.
func (s *TCPServer) Serve(logw io.Writer) error {
	for {
		fd, _, err := unix.Accept4(s.fd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return os.NewSyscallError("accept4", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			unix.Close(fd)
			return nil
		}
		s.conns[fd] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			if err := s.serveConn(fd); err != nil && logw != nil {
				fmt.Fprintf(logw, "benchtcp: connection: %v\n", err)
			}
		}()
	}
}

// Close stops Serve and ends every connection, and waits for them.
func (s *TCPServer) Close() error {
	s.mu.Lock()
	s.closed = true
	// shutdown(2) wakes a thread blocked in accept(2) or read(2); close(2)
	// would not.
	unix.Shutdown(s.fd, unix.SHUT_RDWR)
	for fd := range s.conns {
		unix.Shutdown(fd, unix.SHUT_RDWR)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return unix.Close(s.fd)
}

// serveConn serves one connection; it closes fd.
func (s *TCPServer) serveConn(fd int) (err error) {
	closeFD := func() error { return unix.Close(fd) }
	defer func() {
		// Under mu: Close must never shut down a number reused since.
		s.mu.Lock()
		delete(s.conns, fd)
		closeFD()
		s.mu.Unlock()
	}()
	var hb [tcpHelloSize]byte
	if _, err := io.ReadFull(rawConn(fd), hb[:]); err != nil {
		return err
	}
	h, err := parseTCPHello(hb[:])
	if err != nil {
		return err
	}
	c, err := newTCPConn(fd, h.delay, "client", h.mode == tcpPing)
	if err != nil {
		closeFD = func() error { return nil } // newTCPConn closed it
		return err
	}
	closeFD = c.Close
	buf := make([]byte, h.size)
	switch h.mode {
	case tcpPing:
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if _, err := c.Write(buf); err != nil {
				return err
			}
		}
	default: // tcpStream
		return serveStreamRuns(c, h, buf)
	}
}

// dialTCP connects to addr with a blocking socket and says hello.
func dialTCP(addr string, h tcpHello) (*tcpConn, error) {
	sa, family, err := sockaddr(addr)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("benchtcp: connect %s: %w", addr, err)
	}
	// The hello goes before the wrap: the server learns the delay from it.
	if _, err := rawConn(fd).Write(h.marshal()); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return newTCPConn(fd, h.delay, addr, h.mode == tcpPing)
}

// TCPPingPong measures runs × rounds round trips of size-byte messages
// to a TCPServer at addr, with delay added to what each end sends, after
// warm-up round trips, and returns the mean round trip of each run.
func TCPPingPong(addr string, size, rounds, runs int, delay time.Duration) ([]time.Duration, error) {
	if size <= 0 || size > maxTCPSize || rounds <= 0 || runs <= 0 {
		return nil, errors.New("benchtcp: bad ping-pong parameters")
	}
	c, err := dialTCP(addr, tcpHello{mode: tcpPing, delay: delay, size: size})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, size)
	roundTrip := func() error {
		if _, err := c.Write(buf); err != nil {
			return err
		}
		_, err := io.ReadFull(c, buf)
		return err
	}
	// Warm-up: the connection's first round trips (slow start, caches)
	// should not count against TCP.
	for range min(rounds, 100) {
		if err := roundTrip(); err != nil {
			return nil, fmt.Errorf("benchtcp: ping: %w", err)
		}
	}
	var out []time.Duration
	for range runs {
		t0 := time.Now()
		for range rounds {
			if err := roundTrip(); err != nil {
				return nil, fmt.Errorf("benchtcp: ping: %w", err)
			}
		}
		out = append(out, time.Since(t0)/time.Duration(rounds))
	}
	return out, nil
}

// TCPStream streams runs runs of total bytes, in writes of chunk bytes,
// to a TCPServer at addr, with delay added to what each end sends, and
// returns the throughput of each run (bytes per second), timed from the
// first write until the server acknowledges the last byte.
func TCPStream(addr string, total int64, chunk, runs int, delay time.Duration) ([]float64, error) {
	if total <= 0 || chunk <= 0 || chunk > maxTCPSize || runs <= 0 {
		return nil, errors.New("benchtcp: bad stream parameters")
	}
	c, err := dialTCP(addr, tcpHello{mode: tcpStream, delay: delay, size: chunk, runs: runs, bytes: total})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return streamRuns(c, total, chunk, runs, "stream")
}

// StartTCPServer runs a TCPServer on 127.0.0.1 in a child process (a
// re-execution of this program; see RunChild) and returns its address
// and a function that stops it. The ping-pong's raw reads keep their
// goroutine's P while they block, so the two ends must not share a
// process: a garbage collection would wait for a read that waits for the
// other end, which waits for the collection.
func StartTCPServer() (addr string, stop func() error, err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", nil, err
	}
	cmd, err := startChild("tcp-serve", nil, w)
	w.Close()
	if err != nil {
		r.Close()
		return "", nil, err
	}
	b, err := io.ReadAll(r) // the child closes its end once it listens
	r.Close()
	if err != nil || len(b) == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		return "", nil, fmt.Errorf("bench: tcp server child did not start: %v", err)
	}
	stop = func() error {
		cmd.Process.Signal(os.Interrupt)
		return cmd.Wait()
	}
	return string(b), stop, nil
}

// tcpServeChild serves on 127.0.0.1 until interrupted, after writing its
// address to fd 3.
func tcpServeChild() error {
	s, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		return err
	}
	f := os.NewFile(3, "addr")
	_, err = f.WriteString(s.Addr())
	f.Close()
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() {
		<-sig
		s.Close()
	}()
	return s.Serve(os.Stderr)
}
