package gnttab

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// Run is a range of changed bytes: page[Off:Off+len(Data)] = Data.
type Run struct {
	Off  int
	Data []byte
}

// Runs is a page diff: non-empty, non-overlapping runs in ascending order.
type Runs []Run

// mergeGap is the largest gap of unchanged bytes that Diff folds into the
// surrounding runs: sending a few equal bytes is cheaper than the 2+ bytes
// of header a new run costs.
const mergeGap = 4

// Twin returns a copy of page to diff against later.
func Twin(page []byte) []byte { return bytes.Clone(page) }

// Diff returns the runs of bytes where page differs from twin (same
// length). The runs' Data alias page: encode or copy them before page
// changes again. After shipping a diff, bring the twin up to date with
// Apply(twin, runs).
func Diff(twin, page []byte) Runs {
	if len(twin) != len(page) {
		panic("gnttab: Diff of different-sized pages")
	}
	var out Runs
	n := len(page)
	start, end := -1, -1 // the open run
	for i := 0; i < n; {
		// Skip equal words quickly.
		if i+8 <= n && binary.LittleEndian.Uint64(twin[i:]) == binary.LittleEndian.Uint64(page[i:]) {
			i += 8
			continue
		}
		if twin[i] == page[i] {
			i++
			continue
		}
		if start >= 0 && i-end <= mergeGap {
			end = i + 1
		} else {
			if start >= 0 {
				out = append(out, Run{start, page[start:end]})
			}
			start, end = i, i+1
		}
		i++
	}
	if start >= 0 {
		out = append(out, Run{start, page[start:end]})
	}
	return out
}

// Apply writes the runs into page. It checks every run before writing any,
// so a bad diff leaves page untouched.
func Apply(page []byte, r Runs) error {
	prev := 0
	for i, run := range r {
		if len(run.Data) == 0 || run.Off < prev || (i > 0 && run.Off == prev) || run.Off+len(run.Data) > len(page) {
			return ErrBadDiff
		}
		prev = run.Off + len(run.Data)
	}
	for _, run := range r {
		copy(page[run.Off:], run.Data)
	}
	return nil
}

// ErrBadDiff reports an encoded diff that is truncated, out of order or
// outside the page.
var ErrBadDiff = errors.New("gnttab: malformed page diff")

// Encode appends the wire form of r to dst: for each run, uvarint(gap from
// the end of the previous run), uvarint(length), then the bytes.
func (r Runs) Encode(dst []byte) []byte {
	prev := 0
	for _, run := range r {
		dst = binary.AppendUvarint(dst, uint64(run.Off-prev))
		dst = binary.AppendUvarint(dst, uint64(len(run.Data)))
		dst = append(dst, run.Data...)
		prev = run.Off + len(run.Data)
	}
	return dst
}

// DecodeRuns parses an encoded diff for a page of pageSize bytes. Runs
// must be non-empty, in order, separated by at least one byte and inside
// the page. The runs' Data alias b.
func DecodeRuns(b []byte, pageSize int) (Runs, error) {
	var out Runs
	prev := 0
	for len(b) > 0 {
		gap, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, ErrBadDiff
		}
		b = b[n:]
		length, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, ErrBadDiff
		}
		b = b[n:]
		if (len(out) > 0 && gap == 0) || length == 0 ||
			gap > uint64(pageSize-prev) || length > uint64(pageSize-prev)-gap || length > uint64(len(b)) {
			return nil, ErrBadDiff
		}
		off := prev + int(gap)
		out = append(out, Run{off, b[:length:length]})
		b = b[length:]
		prev = off + int(length)
	}
	return out, nil
}
