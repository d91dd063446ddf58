package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// knownCmdFlags are the command flags this server understands.
const knownCmdFlags = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF | NBD_CMD_FLAG_REQ_ONE

// holeChunkMin is the read size from which a structured READ asks the
// backend for holes; smaller reads are not worth the extra calls.
const holeChunkMin = 64 << 10

// reqError is an NBD error answer with a reason for the error chunk.
type reqError struct {
	errno uint32
	msg   string
}

func errf(errno uint32, format string, args ...any) *reqError {
	return &reqError{errno, fmt.Sprintf(format, args...)}
}

// Requests of one connection are served concurrently (replies go out as
// they complete, which NBD allows): a front end whose requests cross hosts
// needs many in flight to be fast. These bound what one client can make
// the server hold at once.
const (
	maxInFlight      = 64
	maxInFlightBytes = 64 << 20 // read and write buffers
)

// budget counts the requests and buffer bytes in flight.
type budget struct {
	mu    sync.Mutex
	cond  sync.Cond
	reqs  int
	bytes int64
}

func (b *budget) acquire(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.reqs >= maxInFlight || (b.reqs > 0 && b.bytes+n > maxInFlightBytes) {
		b.cond.Wait()
	}
	b.reqs++
	b.bytes += n
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.reqs--
	b.bytes -= n
	b.mu.Unlock()
	b.cond.Signal()
}

// ordering keeps overlapping requests in the order they came, when either
// writes: proto.md leaves the result of such a pair undefined, but a client
// that pipelines a write and a read-back of it is not told a surprise.
type ordering struct {
	mu       sync.Mutex
	inflight map[*span]struct{}
}

type span struct {
	off, end uint64
	write    bool
	done     chan struct{}
}

func writes(typ uint16) bool {
	return typ == NBD_CMD_WRITE || typ == NBD_CMD_TRIM || typ == NBD_CMD_WRITE_ZEROES
}

// start registers a request and returns what it must wait for first.
func (o *ordering) start(req Request) (*span, []chan struct{}) {
	sp := &span{off: req.Offset, end: req.Offset + uint64(req.Length), write: writes(req.Type), done: make(chan struct{})}
	o.mu.Lock()
	defer o.mu.Unlock()
	var deps []chan struct{}
	for x := range o.inflight {
		if (x.write || sp.write) && x.off < sp.end && sp.off < x.end {
			deps = append(deps, x.done)
		}
	}
	o.inflight[sp] = struct{}{}
	return sp, deps
}

func (o *ordering) finish(sp *span) {
	o.mu.Lock()
	delete(o.inflight, sp)
	o.mu.Unlock()
	close(sp.done)
}

// bufPools hold request buffers by power-of-two size, 4 KiB to MaxPayload.
var bufPools [bufClasses]sync.Pool

const (
	bufMinShift = 12
	bufClasses  = 26 - bufMinShift // 1<<25 = MaxPayload
)

func bufClass(n int) int {
	c := 0
	for n > 1<<(bufMinShift+c) {
		c++
	}
	return c
}

func getBuf(n int) []byte {
	c := bufClass(n)
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(bufMinShift+c))
}

func putBuf(b []byte) {
	if b == nil {
		return
	}
	c := bufClass(cap(b))
	if c < bufClasses && cap(b) == 1<<(bufMinShift+c) {
		bufPools[c].Put(&b)
	}
}

// transmit serves requests until NBD_CMD_DISC (nil) or a broken stream (an
// error), then waits for the requests in flight and their replies.
func (c *conn) transmit() error {
	b := c.exp.Backend
	size := uint64(b.Size())
	ro := b.ReadOnly()
	var (
		wg    sync.WaitGroup
		bud   budget
		order = ordering{inflight: map[*span]struct{}{}}
		// Workers live as long as the connection: a goroutine per request
		// would grow a fresh stack for each.
		jobs    = make(chan func())
		workers int
	)
	bud.cond.L = &bud.mu
	dispatch := func(j func()) {
		select {
		case jobs <- j: // an idle worker took it
			return
		default:
		}
		if workers >= maxInFlight {
			jobs <- j
			return
		}
		workers++
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ; j != nil; j = <-jobs {
				j()
			}
		}()
	}
	err := func() error {
		var hdr [requestLen]byte
		for {
			if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
				if err == io.EOF {
					return nil // a client going away without DISC is common
				}
				return err
			}
			req, err := parseRequest(hdr[:])
			if err != nil {
				return err
			}
			var cost int64
			if req.Type == NBD_CMD_READ || req.Type == NBD_CMD_WRITE {
				cost = int64(min(req.Length, MaxPayload))
			}
			var payload []byte
			if req.Type == NBD_CMD_WRITE {
				// The payload follows whatever we think of it; consume it to stay in step.
				if req.Length > MaxPayload {
					if _, err := io.CopyN(io.Discard, c.r, int64(req.Length)); err != nil {
						return err
					}
				} else {
					bud.acquire(cost)
					payload = getBuf(int(req.Length))
					if _, err := io.ReadFull(c.r, payload); err != nil {
						putBuf(payload)
						bud.release(cost)
						return err
					}
				}
			}
			if req.Type == NBD_CMD_DISC {
				if payload != nil {
					putBuf(payload)
					bud.release(cost)
				}
				return nil
			}
			if rerr := c.check(req, size, ro); rerr != nil {
				if payload != nil {
					putBuf(payload)
					bud.release(cost)
				}
				if err := c.replyError(req, rerr); err != nil {
					return err
				}
				continue
			}
			if payload == nil {
				bud.acquire(cost)
			}
			sp, deps := order.start(req)
			dispatch(func() {
				for _, d := range deps {
					<-d
				}
				c.do(req, payload)
				order.finish(sp)
				putBuf(payload)
				bud.release(cost)
			})
		}
	}()
	close(jobs)
	wg.Wait()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if ferr := c.w.Flush(); err == nil {
		err = ferr
	}
	return err
}

// send writes one whole reply. Replies completing together share a flush:
// the last sender in line flushes.
func (c *conn) send(parts ...[]byte) error {
	c.senders.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, p := range parts {
		if c.werr == nil {
			_, c.werr = c.w.Write(p)
		}
	}
	if c.senders.Add(-1) == 0 && c.werr == nil {
		c.werr = c.w.Flush()
	}
	return c.werr
}

// check validates a request against the export before any backend call.
func (c *conn) check(req Request, size uint64, ro bool) *reqError {
	if req.Flags&^knownCmdFlags != 0 {
		return errf(NBD_EINVAL, "unknown command flags %#x", req.Flags)
	}
	off, n := req.Offset, uint64(req.Length)
	inRange := off <= size && n <= size-off
	switch req.Type {
	case NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES:
		if m := uint64(c.exp.minBlock()); off%m != 0 || n%m != 0 {
			return errf(NBD_EINVAL, "%d+%d is not aligned to the export's %d-byte blocks", off, n, m)
		}
	}
	switch req.Type {
	case NBD_CMD_READ:
		if n > MaxPayload {
			return errf(NBD_EINVAL, "read of %d bytes exceeds %d", n, MaxPayload)
		}
		if !inRange {
			return errf(NBD_EINVAL, "read %d+%d past end %d", off, n, size)
		}
	case NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES:
		if ro {
			return errf(NBD_EPERM, "export is read-only")
		}
		if req.Type == NBD_CMD_WRITE && n > MaxPayload {
			return errf(NBD_EINVAL, "write of %d bytes exceeds %d", n, MaxPayload)
		}
		if !inRange {
			return errf(NBD_ENOSPC, "%d+%d past end %d", off, n, size)
		}
	case NBD_CMD_FLUSH:
		if off != 0 || n != 0 {
			return errf(NBD_EINVAL, "flush with offset or length")
		}
	case NBD_CMD_BLOCK_STATUS:
		if !c.meta {
			return errf(NBD_EINVAL, "no metadata context negotiated")
		}
		if n == 0 || !inRange {
			return errf(NBD_EINVAL, "block status %d+%d outside %d", off, n, size)
		}
	default:
		return errf(NBD_EINVAL, "unknown command %d", req.Type)
	}
	return nil
}

func (c *conn) do(req Request, payload []byte) error {
	b := c.exp.Backend
	off, n := int64(req.Offset), int64(req.Length)
	fua := req.Flags&NBD_CMD_FLAG_FUA != 0
	var err error
	switch req.Type {
	case NBD_CMD_READ:
		return c.read(req)
	case NBD_CMD_BLOCK_STATUS:
		return c.blockStatus(req)
	case NBD_CMD_WRITE:
		_, err = b.WriteAt(payload, off)
	case NBD_CMD_TRIM:
		err = b.Trim(off, n)
	case NBD_CMD_WRITE_ZEROES:
		err = b.Zero(off, n, req.Flags&NBD_CMD_FLAG_NO_HOLE == 0)
	case NBD_CMD_FLUSH:
		err = b.Flush()
	}
	if err == nil && fua {
		err = b.Flush()
	}
	if err != nil {
		return c.replyError(req, errf(NBD_EIO, "%v", err))
	}
	return c.send(appendSimpleReply(nil, 0, req.Cookie))
}

// replyError answers a failed request: with structured replies on, an error
// chunk carrying the reason (READ must never get a simple reply then).
func (c *conn) replyError(req Request, e *reqError) error {
	if c.structured {
		msg := e.msg
		if len(msg) > maxString {
			msg = msg[:maxString]
		}
		h := appendChunkHeader(nil, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, req.Cookie, uint32(6+len(msg)))
		h = binary.BigEndian.AppendUint32(h, e.errno)
		h = binary.BigEndian.AppendUint16(h, uint16(len(msg)))
		return c.send(append(h, msg...))
	}
	return c.send(appendSimpleReply(nil, e.errno, req.Cookie))
}

func (c *conn) read(req Request) error {
	b := c.exp.Backend
	off, n := int64(req.Offset), int64(req.Length)
	if c.structured && n == 0 {
		// READ never gets a simple reply once structured replies are on.
		return c.send(appendChunkHeader(nil, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, req.Cookie, 0))
	}
	buf := getBuf(int(n))
	defer putBuf(buf)
	if !c.structured {
		if _, err := b.ReadAt(buf, off); err != nil {
			return c.replyError(req, errf(NBD_EIO, "%v", err))
		}
		return c.send(appendSimpleReply(nil, 0, req.Cookie), buf)
	}
	exts := []Extent{{Length: n}}
	if x, ok := b.(Extenter); ok && n >= holeChunkMin && req.Flags&NBD_CMD_FLAG_DF == 0 {
		if e, err := x.Extents(off, n); err == nil {
			exts = clampExtents(e, n)
		}
	}
	// Read all data first so an I/O error can still be the only chunk.
	for i, o := 0, int64(0); i < len(exts); i++ {
		if !exts[i].Zero {
			if _, err := b.ReadAt(buf[o:o+exts[i].Length], off+o); err != nil {
				return c.replyError(req, errf(NBD_EIO, "%v", err))
			}
		}
		o += exts[i].Length
	}
	parts := make([][]byte, 0, 2*len(exts))
	for i, o := 0, int64(0); i < len(exts); i++ {
		var flags uint16
		if i == len(exts)-1 {
			flags = NBD_REPLY_FLAG_DONE
		}
		l := exts[i].Length
		if exts[i].Zero {
			h := appendChunkHeader(nil, flags, NBD_REPLY_TYPE_OFFSET_HOLE, req.Cookie, 12)
			h = binary.BigEndian.AppendUint64(h, uint64(off+o))
			parts = append(parts, binary.BigEndian.AppendUint32(h, uint32(l)))
		} else {
			h := appendChunkHeader(nil, flags, NBD_REPLY_TYPE_OFFSET_DATA, req.Cookie, uint32(8+l))
			parts = append(parts, binary.BigEndian.AppendUint64(h, uint64(off+o)), buf[o:o+l])
		}
		o += l
	}
	return c.send(parts...)
}

// clampExtents trims a backend's extents to exactly n bytes, merging runs
// of the same status and dropping empty ones; a short list is padded with
// data, which is always a safe answer.
func clampExtents(in []Extent, n int64) []Extent {
	var out []Extent
	var total int64
	for _, e := range in {
		if total >= n {
			break
		}
		if e.Length <= 0 {
			continue
		}
		e.Length = min(e.Length, n-total)
		if k := len(out) - 1; k >= 0 && out[k].Hole == e.Hole && out[k].Zero == e.Zero {
			out[k].Length += e.Length
		} else {
			out = append(out, e)
		}
		total += e.Length
	}
	if total < n {
		if k := len(out) - 1; k >= 0 && !out[k].Hole && !out[k].Zero {
			out[k].Length += n - total
		} else {
			out = append(out, Extent{Length: n - total})
		}
	}
	return out
}

func (c *conn) blockStatus(req Request) error {
	off, n := int64(req.Offset), int64(req.Length)
	exts := []Extent{{Length: n}}
	if x, ok := c.exp.Backend.(Extenter); ok {
		e, err := x.Extents(off, n)
		if err != nil {
			return c.replyError(req, errf(NBD_EIO, "%v", err))
		}
		exts = clampExtents(e, n)
	}
	if len(exts) > maxExtents {
		exts = exts[:maxExtents]
	}
	if req.Flags&NBD_CMD_FLAG_REQ_ONE != 0 {
		exts = exts[:1]
	}
	h := appendChunkHeader(nil, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, req.Cookie, uint32(4+8*len(exts)))
	h = binary.BigEndian.AppendUint32(h, metaBaseAllocationID)
	for _, e := range exts {
		var st uint32
		if e.Hole {
			st |= NBD_STATE_HOLE
		}
		if e.Zero {
			st |= NBD_STATE_ZERO
		}
		h = binary.BigEndian.AppendUint32(h, uint32(e.Length))
		h = binary.BigEndian.AppendUint32(h, st)
	}
	return c.send(h)
}
