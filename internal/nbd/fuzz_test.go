package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// FuzzDecoders checks the option and request decoders never panic, and that
// what they accept re-encodes to the same bytes.
func FuzzDecoders(f *testing.F) {
	f.Add(infoData("xvda", NBD_INFO_BLOCK_SIZE))
	f.Add(metaData("xvda", metaBaseAllocation, "base:"))
	f.Add(appendRequest(nil, Request{Type: NBD_CMD_READ, Cookie: 7, Offset: 4096, Length: 512}))
	f.Add([]byte{0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := parseInfoRequest(b); err == nil {
			if got := infoData(q.Name, q.Infos...); !bytes.Equal(got, b) {
				t.Fatalf("info %+v re-encodes to % x, was % x", q, got, b)
			}
		}
		if q, err := parseMetaRequest(b); err == nil {
			if got := metaData(q.Name, q.Queries...); !bytes.Equal(got, b) {
				t.Fatalf("meta %+v re-encodes to % x, was % x", q, got, b)
			}
		}
		if r, err := parseRequest(b); err == nil {
			if got := appendRequest(nil, r); !bytes.Equal(got, b) {
				t.Fatalf("request %+v re-encodes to % x, was % x", r, got, b)
			}
		}
	})
}

// fuzzSession builds a client byte stream: client flags, options, requests.
func fuzzSession(opts [][2]any, reqs ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	for _, o := range opts {
		d := o[1].([]byte)
		b = binary.BigEndian.AppendUint64(b, IHAVEOPT)
		b = binary.BigEndian.AppendUint32(b, o[0].(uint32))
		b = binary.BigEndian.AppendUint32(b, uint32(len(d)))
		b = append(b, d...)
	}
	for _, r := range reqs {
		b = append(b, r...)
	}
	return b
}

type rw struct {
	io.Reader
	io.Writer
}

// FuzzSession feeds arbitrary client bytes to a whole server connection over
// a small in-memory export: any input must end in a clean return.
func FuzzSession(f *testing.F) {
	opt := func(o uint32, d []byte) [2]any { return [2]any{o, d} }
	f.Add(fuzzSession([][2]any{opt(NBD_OPT_LIST, nil), opt(NBD_OPT_GO, infoData(""))},
		appendRequest(nil, Request{Type: NBD_CMD_READ, Length: 512})))
	f.Add(fuzzSession([][2]any{opt(NBD_OPT_STRUCTURED_REPLY, nil),
		opt(NBD_OPT_SET_META_CONTEXT, metaData("d", metaBaseAllocation)), opt(NBD_OPT_GO, infoData("d"))},
		append(appendRequest(nil, Request{Type: NBD_CMD_WRITE, Offset: 100, Length: 3}), 1, 2, 3),
		appendRequest(nil, Request{Type: NBD_CMD_BLOCK_STATUS, Length: 65536}),
		appendRequest(nil, Request{Type: NBD_CMD_READ, Length: 65536}),
		appendRequest(nil, Request{Type: NBD_CMD_WRITE_ZEROES, Flags: NBD_CMD_FLAG_FUA, Offset: 4096, Length: 8192}),
		appendRequest(nil, Request{Type: NBD_CMD_TRIM, Length: 4096}),
		appendRequest(nil, Request{Type: NBD_CMD_DISC})))
	f.Add(fuzzSession([][2]any{opt(NBD_OPT_INFO, infoData("d", 0, 1, 2, 3)),
		opt(NBD_OPT_LIST_META_CONTEXT, metaData("d")), opt(NBD_OPT_EXPORT_NAME, []byte("d"))},
		appendRequest(nil, Request{Type: NBD_CMD_FLUSH})))
	f.Add(fuzzSession([][2]any{opt(NBD_OPT_GO, infoData("a")), opt(NBD_OPT_GO, infoData("a", NBD_INFO_BLOCK_SIZE))},
		appendRequest(nil, Request{Type: NBD_CMD_READ, Offset: 100, Length: 512}),
		appendRequest(nil, Request{Type: NBD_CMD_READ, Offset: 512, Length: 512})))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := NewServer(Export{Name: "d", Backend: NewMem(1<<17, false)},
			Export{Name: "a", Backend: NewMem(1<<17, false), MinBlock: 512, MultiConn: true})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		s.ServeConn(rw{bytes.NewReader(in), &out})
		if out.Len() < 18 {
			t.Fatalf("no handshake written")
		}
	})
}
