package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"testing"
	"testing/iotest"
)

// encodeAll encodes msgs back to back.
func encodeAll(msgs ...Msg) []byte {
	var b []byte
	for i := range msgs {
		b = AppendFrame(b, &msgs[i])
	}
	return b
}

// readAll reads messages until an error, copying each message's Data.
func readAll(r *Reader) ([]Msg, error) {
	var out []Msg
	for {
		m, err := r.Next()
		if err != nil {
			return out, err
		}
		m.Data = bytes.Clone(m.Data)
		out = append(out, m)
	}
}

func testMsgs() []Msg {
	var msgs []Msg
	for i := range 300 {
		m := sample()
		m.ID = uint64(i)
		// Sizes from empty to MaxData, so frames straddle buffer ends.
		m.Data = bytes.Repeat([]byte{byte(i)}, (i*997)%(MaxData+1))
		if i%7 == 0 {
			m.Data = nil
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func TestReaderFrames(t *testing.T) {
	msgs := testMsgs()
	b := encodeAll(msgs...)
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(b),
		"one byte": iotest.OneByteReader(bytes.NewReader(b)),
		"half":     iotest.HalfReader(bytes.NewReader(b)),
		"data+EOF": iotest.DataErrReader(bytes.NewReader(b)),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := readAll(NewReader(r))
			if err != io.EOF {
				t.Fatalf("ended with %v, want io.EOF", err)
			}
			if !reflect.DeepEqual(got, msgs) {
				t.Fatalf("read %d messages, differing from the %d written", len(got), len(msgs))
			}
		})
	}
}

// TestReaderTruncated: a stream that ends inside a frame, at any byte, is
// malformed; one that ends between frames is a clean EOF.
func TestReaderTruncated(t *testing.T) {
	m := sample()
	b := encodeAll(m, m)
	one := FrameSize(&m)
	for n := 1; n < len(b); n++ {
		_, err := readAll(NewReader(bytes.NewReader(b[:n])))
		if n == one {
			if err != io.EOF {
				t.Errorf("cut at the frame boundary: %v, want io.EOF", err)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v, want ErrMalformed wrapping io.ErrUnexpectedEOF", n, err)
		}
	}
}

// oneShot returns its bytes once and then fails the test if read again:
// a Reader that wanted more than the prefix of a bad frame would trip it.
type oneShot struct {
	t    *testing.T
	b    []byte
	done bool
}

func (o *oneShot) Read(p []byte) (int, error) {
	if o.done {
		o.t.Fatal("Reader read past a bad length")
	}
	o.done = true
	return copy(p, o.b), nil
}

// TestReaderBadLength: a length out of bounds fails at once, without
// reading (or waiting for) the body, and without allocating.
func TestReaderBadLength(t *testing.T) {
	for _, n := range []uint32{0, HeaderSize - 1, HeaderSize + MaxData + 1, 1 << 31, ^uint32(0)} {
		var p [4]byte
		binary.LittleEndian.PutUint32(p[:], n)
		r := NewReader(&oneShot{t: t, b: p[:]})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := r.Next()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("length %d: %v, want ErrMalformed", n, err)
		}
		// The error value is all that may be allocated.
		if got := after.TotalAlloc - before.TotalAlloc; got > 1024 {
			t.Errorf("length %d: allocated %d bytes", n, got)
		}
		if _, err := r.Next(); !errors.Is(err, ErrMalformed) {
			t.Errorf("length %d: error not sticky: %v", n, err)
		}
	}
}

func TestReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	m := sample()
	r := NewReader(io.MultiReader(bytes.NewReader(encodeAll(m)), iotest.ErrReader(boom)))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != boom {
		t.Fatalf("got %v, want the reader's own error", err)
	}
}

// FuzzReader: arbitrary byte streams never panic the Reader, and the
// frames it returns re-encode to exactly the bytes at the front of the
// stream, read whole or a byte at a time.
func FuzzReader(f *testing.F) {
	f.Add(encodeAll(sample(), Msg{Kind: KindSend}))
	f.Add(encodeAll(Msg{Data: make([]byte, MaxData)}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("SHI1 garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		whole, err1 := readAll(NewReader(bytes.NewReader(b)))
		bytewise, err2 := readAll(NewReader(iotest.OneByteReader(bytes.NewReader(b))))
		if !reflect.DeepEqual(whole, bytewise) || (err1 == io.EOF) != (err2 == io.EOF) {
			t.Fatalf("whole: %d msgs, %v; byte-wise: %d msgs, %v", len(whole), err1, len(bytewise), err2)
		}
		if err1 != io.EOF && !errors.Is(err1, ErrMalformed) {
			t.Fatalf("error %v is neither io.EOF nor ErrMalformed", err1)
		}
		re := encodeAll(whole...)
		if !bytes.HasPrefix(b, re) {
			t.Fatalf("decoded frames do not re-encode to the stream's prefix")
		}
		if err1 == io.EOF && len(re) != len(b) {
			t.Fatalf("clean EOF after %d of %d bytes", len(re), len(b))
		}
	})
}
