package xenstore

import (
	"bytes"
	"testing"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

func TestSnapshotRoundTrip(t *testing.T) {
	e := NewEngine(NewState(DefaultQuota()))
	e.Open(1, 0)
	for _, m := range []wire.Msg{
		{Type: abi.XS_WRITE, Payload: []byte("/a/b\x00v\x00x")},
		{Type: abi.XS_WRITE, Payload: []byte("/a/c\x00")},
		{Type: abi.XS_SET_PERMS, Payload: wire.JoinStrings("/a/c", "b3", "r4")},
		{Type: abi.XS_INTRODUCE, Payload: wire.JoinStrings("3", "0", "1")},
		{Type: abi.XS_INTRODUCE, Payload: wire.JoinStrings("4", "0", "1")},
		{Type: abi.XS_SET_TARGET, Payload: wire.JoinStrings("3", "4")},
		{Type: abi.XS_SET_PERMS, Payload: wire.JoinStrings("@releaseDomain", "n0", "r3")},
	} {
		e.Handle(1, m)
	}
	s := e.State()
	var buf bytes.Buffer
	if _, err := s.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	r, err := ReadState(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if r.Dump("/") != s.Dump("/") || r.Generation() != s.Generation() || r.Owned(3) != s.Owned(3) {
		t.Fatalf("restored tree differs:\n%s", r.Dump("/"))
	}
	var buf2 bytes.Buffer
	r.WriteTo(&buf2)
	if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
		t.Fatal("snapshot of the restored state differs")
	}
	// The same command must have the same outcome on both.
	c := &Command{Op: OpWrite, Dom: 3, Path: "/a/c/x", Value: []byte("1")}
	s2, res1 := s.Apply(c)
	r2, res2 := r.Apply(c)
	if res1.Err != res2.Err || s2.Dump("/") != r2.Dump("/") {
		t.Fatalf("diverged after restore: %v %v", res1.Err, res2.Err)
	}
}

// FuzzReadState feeds arbitrary bytes to the snapshot reader: it must
// reject them or return a state that satisfies the invariants.
func FuzzReadState(f *testing.F) {
	var buf bytes.Buffer
	s, _ := NewState(DefaultQuota()).Apply(&Command{Op: OpWrite, Path: "/a/b", Value: []byte("v")})
	s.WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ReadState(bytes.NewReader(b))
		if err != nil {
			return
		}
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
	})
}
