package bench

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// The stream baseline's two ends, over any connection (plain TCP in
// tcp_linux.go, TLS in tls.go): the server says it is ready, then acks
// each run with the count it read; the client times each run from its
// first write until that ack.

// serveStreamRuns is the server's end after the hello h.
func serveStreamRuns(c io.ReadWriter, h tcpHello, buf []byte) error {
	if _, err := c.Write([]byte{1}); err != nil { // ready
		return err
	}
	for range h.runs {
		var got int64
		for got < h.bytes {
			n, err := c.Read(buf[:min(int64(len(buf)), h.bytes-got)])
			if err != nil {
				return fmt.Errorf("stream: read at %d: %w", got, err)
			}
			got += int64(n)
		}
		if _, err := c.Write(binary.LittleEndian.AppendUint64(nil, uint64(got))); err != nil {
			return err
		}
	}
	return nil
}

// streamRuns is the client's end after its hello: the throughput of each
// run, in bytes per second. what names the stream in errors.
func streamRuns(c io.ReadWriter, total int64, chunk, runs int, what string) ([]float64, error) {
	var ready [1]byte
	if _, err := io.ReadFull(c, ready[:]); err != nil {
		return nil, fmt.Errorf("benchtcp: %s: %w", what, err)
	}
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i)
	}
	var out []float64
	for range runs {
		t0 := time.Now()
		for left := total; left > 0; {
			n := int(min(left, int64(chunk)))
			if _, err := c.Write(buf[:n]); err != nil {
				return nil, fmt.Errorf("benchtcp: %s: %w", what, err)
			}
			left -= int64(n)
		}
		var ack [8]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return nil, fmt.Errorf("benchtcp: %s: %w", what, err)
		}
		d := time.Since(t0)
		if got := int64(binary.LittleEndian.Uint64(ack[:])); got != total {
			return nil, fmt.Errorf("benchtcp: the server read %d of %d bytes", got, total)
		}
		out = append(out, float64(total)/d.Seconds())
	}
	return out, nil
}
