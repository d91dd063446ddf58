package nbd

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// File serves a raw (possibly sparse) image file.
type File struct {
	f    *os.File
	size int64
	ro   bool
}

// OpenFile opens a raw image; readOnly opens it O_RDONLY and serves it so.
func OpenFile(path string, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("nbd: %s is not a regular file", path)
	}
	return &File{f: f, size: st.Size(), ro: readOnly}, nil
}

func (f *File) Close() error                             { return f.f.Close() }
func (f *File) Size() int64                              { return f.size }
func (f *File) ReadOnly() bool                           { return f.ro }
func (f *File) ReadAt(p []byte, off int64) (int, error)  { return f.f.ReadAt(p, off) }
func (f *File) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }

// Flush is fdatasync: data and the metadata needed to read it back.
func (f *File) Flush() error { return unix.Fdatasync(int(f.f.Fd())) }

func (f *File) Trim(off, n int64) error {
	return unix.Fallocate(int(f.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (f *File) Zero(off, n int64, mayTrim bool) error {
	fd := int(f.f.Fd())
	mode := uint32(unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE)
	if mayTrim {
		mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	}
	err := unix.Fallocate(fd, mode, off, n)
	if err == nil || !(errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)) {
		return err
	}
	// The file system cannot do it in place: write zeroes.
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(buf)))
		if _, err := f.f.WriteAt(buf[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// Extents walks SEEK_DATA/SEEK_HOLE; holes read as zeroes.
func (f *File) Extents(off, n int64) ([]Extent, error) {
	fd := int(f.f.Fd())
	end := off + n
	var out []Extent
	for o := off; o < end && len(out) < maxExtents; {
		d, err := unix.Seek(fd, o, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			d = end // no data after o
		} else if err != nil {
			return nil, err
		}
		if d > o {
			d = min(d, end)
			out = append(out, Extent{Length: d - o, Hole: true, Zero: true})
			o = d
			continue
		}
		h, err := unix.Seek(fd, o, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		h = min(h, end)
		if h <= o { // file changed under us; report data to the end
			h = end
		}
		out = append(out, Extent{Length: h - o})
		o = h
	}
	return out, nil
}
