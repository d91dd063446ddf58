package directory

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"

	"shi/internal/xenstore"
)

// Snapshot is an immutable view of the FSM, cheap to take (the XenStore
// state and the domain table are persistent) and written out later, while
// the FSM goes on applying entries.
type Snapshot struct {
	xs      *xenstore.State
	doms    *domainTable
	auth    *authTable
	applied uint64
}

// Snapshot captures the current state.
func (f *FSM) Snapshot() Snapshot {
	return Snapshot{xs: f.xs, doms: f.doms, auth: f.auth, applied: f.applied}
}

// Version 2 adds the auth table after the domain table; version 1
// snapshots restore with none.
var (
	dirMagic   = [8]byte{'s', 'h', 'i', 'd', 'i', 'r', 0, 2}
	dirMagicV1 = [8]byte{'s', 'h', 'i', 'd', 'i', 'r', 0, 1}
)

// maxDomainJSON bounds the domain table in a snapshot read from a peer.
const maxDomainJSON = 64 << 20

// Persist writes the snapshot.
func (s Snapshot) Persist(w io.Writer) error {
	doms, err := json.Marshal(s.doms.list())
	if err != nil {
		return err
	}
	var h []byte
	h = append(h, dirMagic[:]...)
	h = binary.LittleEndian.AppendUint64(h, s.applied)
	h = binary.LittleEndian.AppendUint32(h, s.doms.next)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(doms)))
	if _, err := w.Write(h); err != nil {
		return err
	}
	if _, err := w.Write(doms); err != nil {
		return err
	}
	auth, err := s.auth.marshal()
	if err != nil {
		return err
	}
	if _, err := w.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(auth)))); err != nil {
		return err
	}
	if _, err := w.Write(auth); err != nil {
		return err
	}
	_, err = s.xs.WriteTo(w)
	return err
}

// ErrBadSnapshot reports a snapshot that cannot be restored.
var ErrBadSnapshot = errors.New("directory: malformed snapshot")

// ReadSnapshot restores an FSM from a snapshot.
func ReadSnapshot(r io.Reader) (*FSM, error) {
	br := bufio.NewReader(r)
	var h [24]byte
	if _, err := io.ReadFull(br, h[:]); err != nil || [8]byte(h[:8]) != dirMagic && [8]byte(h[:8]) != dirMagicV1 {
		return nil, ErrBadSnapshot
	}
	v1 := [8]byte(h[:8]) == dirMagicV1
	f := &FSM{applied: binary.LittleEndian.Uint64(h[8:]), doms: newDomainTable(), auth: newAuthTable()}
	f.doms.next = binary.LittleEndian.Uint32(h[16:])
	n := binary.LittleEndian.Uint32(h[20:])
	if n > maxDomainJSON {
		return nil, ErrBadSnapshot
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, ErrBadSnapshot
	}
	var list []Domain
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, ErrBadSnapshot
	}
	for i := range list {
		d := list[i]
		if d.ID < firstDomid || d.ID > lastDomid || f.doms.byID[d.ID] != nil {
			return nil, ErrBadSnapshot
		}
		f.doms.byID[d.ID] = &d
	}
	if !v1 {
		var n [4]byte
		if _, err := io.ReadFull(br, n[:]); err != nil || binary.LittleEndian.Uint32(n[:]) > maxDomainJSON {
			return nil, ErrBadSnapshot
		}
		b := make([]byte, binary.LittleEndian.Uint32(n[:]))
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, ErrBadSnapshot
		}
		auth, err := unmarshalAuth(b)
		if err != nil {
			return nil, ErrBadSnapshot
		}
		f.auth = auth
	}
	xs, err := xenstore.ReadState(br)
	if err != nil {
		return nil, errors.Join(ErrBadSnapshot, err)
	}
	f.xs = xs
	return f, nil
}
