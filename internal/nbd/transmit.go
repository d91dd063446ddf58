package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
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

// transmit serves requests in order until NBD_CMD_DISC (nil) or a broken
// stream (an error).
func (c *conn) transmit() error {
	b := c.exp.Backend
	size := uint64(b.Size())
	ro := b.ReadOnly()
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
		var payload []byte
		if req.Type == NBD_CMD_WRITE {
			// The payload follows whatever we think of it; consume it to stay in step.
			if req.Length > MaxPayload {
				if _, err := io.CopyN(io.Discard, c.r, int64(req.Length)); err != nil {
					return err
				}
			} else if payload, err = c.readFull(int(req.Length)); err != nil {
				return err
			}
		}
		if req.Type == NBD_CMD_DISC {
			return c.w.Flush()
		}
		if rerr := c.check(req, size, ro); rerr != nil {
			err = c.replyError(req, rerr)
		} else {
			err = c.do(req, payload)
		}
		if err != nil {
			return err
		}
		// Batch replies while more requests are already waiting.
		if c.r.Buffered() == 0 {
			if err := c.w.Flush(); err != nil {
				return err
			}
		}
	}
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
	c.w.Write(appendSimpleReply(nil, 0, req.Cookie))
	return nil
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
		_, err := c.w.Write(append(h, msg...))
		return err
	}
	_, err := c.w.Write(appendSimpleReply(nil, e.errno, req.Cookie))
	return err
}

func (c *conn) read(req Request) error {
	b := c.exp.Backend
	off, n := int64(req.Offset), int64(req.Length)
	if c.structured && n == 0 {
		// READ never gets a simple reply once structured replies are on.
		_, err := c.w.Write(appendChunkHeader(nil, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, req.Cookie, 0))
		return err
	}
	if !c.structured {
		buf := c.scratch(int(n))
		if _, err := b.ReadAt(buf, off); err != nil {
			return c.replyError(req, errf(NBD_EIO, "%v", err))
		}
		c.w.Write(appendSimpleReply(nil, 0, req.Cookie))
		_, err := c.w.Write(buf)
		return err
	}
	exts := []Extent{{Length: n}}
	if x, ok := b.(Extenter); ok && n >= holeChunkMin && req.Flags&NBD_CMD_FLAG_DF == 0 {
		if e, err := x.Extents(off, n); err == nil {
			exts = clampExtents(e, n)
		}
	}
	// Read all data first so an I/O error can still be the only chunk.
	buf := c.scratch(int(n))
	for i, o := 0, int64(0); i < len(exts); i++ {
		if !exts[i].Zero {
			if _, err := b.ReadAt(buf[o:o+exts[i].Length], off+o); err != nil {
				return c.replyError(req, errf(NBD_EIO, "%v", err))
			}
		}
		o += exts[i].Length
	}
	for i, o := 0, int64(0); i < len(exts); i++ {
		var flags uint16
		if i == len(exts)-1 {
			flags = NBD_REPLY_FLAG_DONE
		}
		l := exts[i].Length
		if exts[i].Zero {
			h := appendChunkHeader(nil, flags, NBD_REPLY_TYPE_OFFSET_HOLE, req.Cookie, 12)
			h = binary.BigEndian.AppendUint64(h, uint64(off+o))
			c.w.Write(binary.BigEndian.AppendUint32(h, uint32(l)))
		} else {
			h := appendChunkHeader(nil, flags, NBD_REPLY_TYPE_OFFSET_DATA, req.Cookie, uint32(8+l))
			c.w.Write(binary.BigEndian.AppendUint64(h, uint64(off+o)))
			if _, err := c.w.Write(buf[o : o+l]); err != nil {
				return err
			}
		}
		o += l
	}
	return nil
}

func (c *conn) scratch(n int) []byte {
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	return c.buf[:n]
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
	_, err := c.w.Write(h)
	return err
}
