package directory

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"sync"
)

// appliedMark is a small file beside the Raft log holding an index that
// this host has applied the log up to, or is about to: every entry up to
// it is committed, and nothing past it has been applied. Raft does not
// keep its commit index on disk, so without the mark a restarted agent
// knows what it had applied only from its last snapshot, and would
// answer from an older tree (an empty one, before its first snapshot)
// until a leader told it the commit index again — never, if it came back
// cut off from the majority.
//
// The mark is raised before a batch of entries is applied (raftFSM), so
// a reader can never have seen a state the mark does not cover. That
// costs one small synchronous write per applied batch; under load Raft
// applies many entries per batch.
//
// On disk: the index (u64 little-endian), then the CRC-32 (IEEE) of those
// 8 bytes. A torn or missing mark reads as 0: nothing to wait for, as
// before the mark existed.
type appliedMark struct {
	// mu serialises raises; at is the index on disk.
	mu sync.Mutex
	f  *os.File
	at uint64
}

const markSize = 12

// openAppliedMark opens (or creates) the mark at path and returns it with
// the index it holds.
func openAppliedMark(path string) (*appliedMark, uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, err
	}
	var b [markSize]byte
	var at uint64
	if n, _ := f.ReadAt(b[:], 0); n == markSize && crc32.ChecksumIEEE(b[:8]) == binary.LittleEndian.Uint32(b[8:]) {
		at = binary.LittleEndian.Uint64(b[:8])
	}
	return &appliedMark{f: f, at: at}, at, nil
}

// raise makes the mark at least idx, on disk, before it returns.
func (m *appliedMark) raise(idx uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.f == nil {
		return errMarkClosed
	}
	if idx <= m.at {
		return nil
	}
	var b [markSize]byte
	binary.LittleEndian.PutUint64(b[:8], idx)
	binary.LittleEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[:8]))
	if _, err := m.f.WriteAt(b[:], 0); err != nil {
		return err
	}
	if err := m.f.Sync(); err != nil {
		return err
	}
	m.at = idx
	return nil
}

func (m *appliedMark) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.f == nil {
		return nil
	}
	err := m.f.Close()
	m.f = nil
	return err
}

var errMarkClosed = errors.New("directory: applied mark closed")
