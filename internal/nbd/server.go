package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Export is one named block device a server offers.
type Export struct {
	Name        string
	Description string
	Backend     Backend
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN, which lets a client
	// spread its requests over several connections and flush on any one.
	// Set it only when a Flush through one connection makes every write
	// completed on any connection durable: true of a Backend whose Flush
	// covers all writes it has completed (Mem, File), since every
	// connection to an export shares its one Backend; false of one that
	// buffers per caller. Off by default, the safe answer.
	MultiConn bool
	// MinBlock is the smallest aligned unit the Backend accepts (a power
	// of two up to 64 KiB; 0 means 1, any byte). Above 1 it is advertised
	// in NBD_INFO_BLOCK_SIZE, a client that did not ask for block sizes
	// is refused at GO (NBD_REP_ERR_BLOCK_SIZE_REQD), and a request not
	// aligned to it fails with EINVAL before reaching the Backend. The
	// export's size must be a multiple of it.
	MinBlock uint32
}

// minBlock is the export's minimum block size, at least 1.
func (e *Export) minBlock() uint32 { return max(e.MinBlock, 1) }

// Server answers NBD clients for a fixed set of exports. The first export is
// also the default one (the empty name).
type Server struct {
	exports []Export
	// Logf, if set, is told why each connection ended badly.
	Logf func(format string, args ...any)
}

// NewServer returns a server for exports, which must not be empty.
func NewServer(exports ...Export) (*Server, error) {
	if len(exports) == 0 {
		return nil, errors.New("nbd: no exports")
	}
	seen := map[string]bool{}
	for _, e := range exports {
		if e.Backend == nil {
			return nil, fmt.Errorf("nbd: export %q has no backend", e.Name)
		}
		if seen[e.Name] || len(e.Name) > maxString {
			return nil, fmt.Errorf("nbd: bad or duplicate export name %q", e.Name)
		}
		if m := e.minBlock(); m&(m-1) != 0 || m > 64<<10 || e.Backend.Size()%int64(m) != 0 {
			return nil, fmt.Errorf("nbd: export %q: minimum block %d is not a power of two up to 64 KiB dividing its size %d",
				e.Name, e.MinBlock, e.Backend.Size())
		}
		seen[e.Name] = true
	}
	return &Server{exports: exports}, nil
}

func (s *Server) lookup(name string) (*Export, bool) {
	if name == "" {
		return &s.exports[0], true
	}
	for i := range s.exports {
		if s.exports[i].Name == name {
			return &s.exports[i], true
		}
	}
	return nil, false
}

// Serve accepts connections on ln until ctx ends or ln fails, serving each
// on its own goroutine. When ctx ends it closes ln and every connection, and
// returns once their goroutines are gone.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var (
		wg sync.WaitGroup
		// mu guards conns and done.
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		done  bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		done = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		ln.Close()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		mu.Lock()
		if done {
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.ServeConn(c)
			if err != nil && s.Logf != nil && ctx.Err() == nil {
				s.Logf("nbd: %s: %v", c.RemoteAddr(), err)
			}
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
}

// conn is one client's session.
type conn struct {
	s          *Server
	r          *bufio.Reader
	w          *bufio.Writer
	noZeroes   bool
	structured bool
	meta       bool   // base:allocation selected
	metaExport string // for the export named in SET_META_CONTEXT
	exp        *Export
	buf        []byte // option data (negotiation only)

	// During transmission requests run concurrently; wmu serialises
	// their replies on w, werr is the first error writing one, and
	// senders counts the replies waiting for or holding wmu.
	wmu     sync.Mutex
	werr    error
	senders atomic.Int32
}

// ServeConn runs negotiation and transmission on rw until the client
// disconnects (nil) or breaks the protocol (an error). It does not close rw.
func (s *Server) ServeConn(rw io.ReadWriter) error {
	c := &conn{s: s, r: bufio.NewReaderSize(rw, 64<<10), w: bufio.NewWriterSize(rw, 64<<10)}
	ok, err := c.negotiate()
	if err != nil || !ok {
		return err
	}
	return c.transmit()
}

func (c *conn) readFull(n int) ([]byte, error) {
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	b := c.buf[:n]
	_, err := io.ReadFull(c.r, b)
	return b, err
}

// negotiate runs the fixed newstyle handshake and option haggling. It
// returns true when an export was chosen and transmission starts.
func (c *conn) negotiate() (bool, error) {
	var hs []byte
	hs = binary.BigEndian.AppendUint64(hs, NBDMAGIC)
	hs = binary.BigEndian.AppendUint64(hs, IHAVEOPT)
	hs = binary.BigEndian.AppendUint16(hs, NBD_FLAG_FIXED_NEWSTYLE|NBD_FLAG_NO_ZEROES)
	c.w.Write(hs)
	if err := c.w.Flush(); err != nil {
		return false, err
	}
	b, err := c.readFull(4)
	if err != nil {
		return false, err
	}
	cf := binary.BigEndian.Uint32(b)
	if cf&^(NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES) != 0 {
		return false, fmt.Errorf("nbd: unknown client flags %#x", cf)
	}
	c.noZeroes = cf&NBD_FLAG_C_NO_ZEROES != 0
	for {
		b, err := c.readFull(16)
		if err != nil {
			return false, err
		}
		if m := binary.BigEndian.Uint64(b); m != IHAVEOPT {
			return false, fmt.Errorf("nbd: bad option magic %#x", m)
		}
		opt, n := binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])
		if n > maxOptionLen {
			if n > 16*maxOptionLen {
				return false, fmt.Errorf("nbd: option %d of %d bytes", opt, n)
			}
			if _, err := io.CopyN(io.Discard, c.r, int64(n)); err != nil {
				return false, err
			}
			if err := c.optReply(opt, NBD_REP_ERR_TOO_BIG, []byte("option too long")); err != nil {
				return false, err
			}
			continue
		}
		data, err := c.readFull(int(n))
		if err != nil {
			return false, err
		}
		data = append([]byte(nil), data...) // c.buf is reused below
		done, err := c.option(opt, data)
		if err != nil || done {
			return done && err == nil && c.exp != nil, err
		}
	}
}

func (c *conn) optReply(opt, typ uint32, data []byte) error {
	c.w.Write(appendOptReply(nil, opt, typ, data))
	return c.w.Flush()
}

// option answers one option. done means negotiation is over: with c.exp set
// transmission follows, otherwise the client aborted.
func (c *conn) option(opt uint32, data []byte) (done bool, err error) {
	switch opt {
	case NBD_OPT_EXPORT_NAME:
		e, ok := c.s.lookup(string(data))
		if !ok {
			// This option has no error reply: the spec says close.
			return true, fmt.Errorf("nbd: unknown export %q", data)
		}
		c.exp = e
		var b []byte
		b = binary.BigEndian.AppendUint64(b, uint64(e.Backend.Size()))
		b = binary.BigEndian.AppendUint16(b, c.transmissionFlags())
		if !c.noZeroes {
			b = append(b, make([]byte, 124)...)
		}
		c.w.Write(b)
		return true, c.w.Flush()
	case NBD_OPT_ABORT:
		// The client may already be gone; an error writing the ACK is moot.
		c.optReply(opt, NBD_REP_ACK, nil)
		return true, nil
	case NBD_OPT_LIST:
		if len(data) != 0 {
			return false, c.optReply(opt, NBD_REP_ERR_INVALID, []byte("LIST takes no data"))
		}
		for _, e := range c.s.exports {
			b := append(appendString32(nil, e.Name), e.Description...)
			c.w.Write(appendOptReply(nil, opt, NBD_REP_SERVER, b))
		}
		return false, c.optReply(opt, NBD_REP_ACK, nil)
	case NBD_OPT_INFO, NBD_OPT_GO:
		return c.optInfo(opt, data)
	case NBD_OPT_STRUCTURED_REPLY:
		if len(data) != 0 {
			return false, c.optReply(opt, NBD_REP_ERR_INVALID, []byte("STRUCTURED_REPLY takes no data"))
		}
		c.structured = true
		return false, c.optReply(opt, NBD_REP_ACK, nil)
	case NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT:
		return false, c.optMeta(opt, data)
	default:
		return false, c.optReply(opt, NBD_REP_ERR_UNSUP, []byte("option not supported"))
	}
}

func (c *conn) optInfo(opt uint32, data []byte) (bool, error) {
	q, err := parseInfoRequest(data)
	if err != nil {
		return false, c.optReply(opt, NBD_REP_ERR_INVALID, []byte(err.Error()))
	}
	e, ok := c.s.lookup(q.Name)
	if !ok {
		return false, c.optReply(opt, NBD_REP_ERR_UNKNOWN, []byte("no such export"))
	}
	info := func(b []byte) { c.w.Write(appendOptReply(nil, opt, NBD_REP_INFO, b)) }
	b := binary.BigEndian.AppendUint16(nil, NBD_INFO_EXPORT)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Backend.Size()))
	info(binary.BigEndian.AppendUint16(b, c.transmissionFlagsFor(e)))
	// Block sizes are always sent: 4 KiB (or the minimum, if larger) is best.
	minb := e.minBlock()
	b = binary.BigEndian.AppendUint16(nil, NBD_INFO_BLOCK_SIZE)
	b = binary.BigEndian.AppendUint32(b, minb)
	b = binary.BigEndian.AppendUint32(b, max(minb, 4096))
	info(binary.BigEndian.AppendUint32(b, MaxPayload))
	askedSizes := false
	for _, t := range q.Infos {
		switch t {
		case NBD_INFO_BLOCK_SIZE:
			askedSizes = true
		case NBD_INFO_NAME:
			info(append(binary.BigEndian.AppendUint16(nil, NBD_INFO_NAME), e.Name...))
		case NBD_INFO_DESCRIPTION:
			if e.Description != "" {
				info(append(binary.BigEndian.AppendUint16(nil, NBD_INFO_DESCRIPTION), e.Description...))
			}
		}
	}
	if opt == NBD_OPT_GO && minb > 1 && !askedSizes {
		// A client that does not know the alignment would send requests
		// the backend must refuse; proto.md lets us refuse it instead.
		return false, c.optReply(opt, NBD_REP_ERR_BLOCK_SIZE_REQD,
			[]byte(fmt.Sprintf("export %q needs requests aligned to %d bytes: ask for NBD_INFO_BLOCK_SIZE", e.Name, minb)))
	}
	if err := c.optReply(opt, NBD_REP_ACK, nil); err != nil {
		return false, err
	}
	if opt == NBD_OPT_GO {
		c.exp = e
		// Contexts chosen for another export do not carry over.
		if m, ok := c.s.lookup(c.metaExport); !ok || m != e {
			c.meta = false
		}
		return true, nil
	}
	return false, nil
}

func (c *conn) optMeta(opt uint32, data []byte) error {
	list := opt == NBD_OPT_LIST_META_CONTEXT
	if !list && !c.structured {
		return c.optReply(opt, NBD_REP_ERR_INVALID, []byte("structured replies not negotiated"))
	}
	q, err := parseMetaRequest(data)
	if err != nil {
		return c.optReply(opt, NBD_REP_ERR_INVALID, []byte(err.Error()))
	}
	if _, ok := c.s.lookup(q.Name); !ok {
		return c.optReply(opt, NBD_REP_ERR_UNKNOWN, []byte("no such export"))
	}
	match := list && len(q.Queries) == 0 // an empty LIST asks for everything
	for _, s := range q.Queries {
		match = match || metaMatches(s, list)
	}
	if !list {
		c.meta, c.metaExport = match, q.Name
	}
	if match {
		b := binary.BigEndian.AppendUint32(nil, metaBaseAllocationID)
		c.w.Write(appendOptReply(nil, opt, NBD_REP_META_CONTEXT, append(b, metaBaseAllocation...)))
	}
	return c.optReply(opt, NBD_REP_ACK, nil)
}

func (c *conn) transmissionFlags() uint16 { return c.transmissionFlagsFor(c.exp) }

func (c *conn) transmissionFlagsFor(e *Export) uint16 {
	f := uint16(NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA)
	if e.Backend.ReadOnly() {
		f |= NBD_FLAG_READ_ONLY
	} else {
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES
	}
	if c.structured {
		f |= NBD_FLAG_SEND_DF
	}
	if e.MultiConn {
		f |= NBD_FLAG_CAN_MULTI_CONN
	}
	return f
}
