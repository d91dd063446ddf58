package directory

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
)

func TestLogStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	s, err := openLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if i, _ := s.LastIndex(); i != 0 {
		t.Fatalf("empty store: last %d", i)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: i / 3, Type: raft.LogCommand, Data: []byte{byte(i)}, AppendedAt: time.Unix(0, int64(i))})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("term"), 7); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Everything survives a reopen.
	s, err = openLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 4 || last != 10 {
		t.Fatalf("first %d last %d", first, last)
	}
	var l raft.Log
	if err := s.GetLog(7, &l); err != nil || !cmp.Equal(&l, logs[6]) {
		t.Fatalf("GetLog(7) = %+v, %v", l, err)
	}
	if err := s.GetLog(2, &l); err != raft.ErrLogNotFound {
		t.Fatalf("deleted log: %v", err)
	}
	if v, err := s.GetUint64([]byte("term")); err != nil || v != 7 {
		t.Fatalf("term %d %v", v, err)
	}
	if _, err := s.Get([]byte("missing")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key: %v", err)
	}
}

// FuzzDecodeLog: what is on disk may be damaged; decoding must fail
// cleanly or round-trip.
func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog(&raft.Log{Index: 1, Term: 2, Data: []byte("x")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if decodeLog(b, &l) != nil {
			return
		}
		if !bytes.Equal(encodeLog(&l), b) {
			t.Fatalf("round trip differs")
		}
	})
}
