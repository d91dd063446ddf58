package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

var errShortOption = errors.New("nbd: option data too short")

// optReader walks an option's data, failing on any overrun.
type optReader struct {
	b   []byte
	err error
}

func (r *optReader) u16() uint16 {
	if r.err != nil || len(r.b) < 2 {
		r.err = errShortOption
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *optReader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = errShortOption
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

// str reads a 32-bit length and that many bytes of a valid, NUL-free string.
func (r *optReader) str() string {
	n := r.u32()
	if r.err != nil {
		return ""
	}
	if n > maxString {
		r.err = fmt.Errorf("nbd: string of %d bytes exceeds %d", n, maxString)
		return ""
	}
	if uint32(len(r.b)) < n {
		r.err = errShortOption
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		r.err = errors.New("nbd: string is not NUL-free UTF-8")
	}
	return s
}

func (r *optReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("nbd: %d trailing bytes in option", len(r.b))
	}
	return r.err
}

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	Name  string
	Infos []uint16
}

func parseInfoRequest(b []byte) (infoRequest, error) {
	r := optReader{b: b}
	var q infoRequest
	q.Name = r.str()
	n := r.u16()
	for i := 0; i < int(n) && r.err == nil; i++ {
		q.Infos = append(q.Infos, r.u16())
	}
	return q, r.end()
}

// metaRequest is the data of NBD_OPT_{LIST,SET}_META_CONTEXT.
type metaRequest struct {
	Name    string
	Queries []string
}

func parseMetaRequest(b []byte) (metaRequest, error) {
	r := optReader{b: b}
	var q metaRequest
	q.Name = r.str()
	n := r.u32()
	if r.err == nil && n > maxQueries {
		return q, fmt.Errorf("nbd: %d meta context queries exceed %d", n, maxQueries)
	}
	for i := 0; i < int(n) && r.err == nil; i++ {
		q.Queries = append(q.Queries, r.str())
	}
	return q, r.end()
}

// metaMatches says whether base:allocation answers a query. For LIST, the
// namespace alone ("base:") matches all of it; SET needs the full name.
func metaMatches(query string, list bool) bool {
	if query == metaBaseAllocation {
		return true
	}
	return list && query == "base:"
}

func appendString32(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
