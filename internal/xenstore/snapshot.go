package xenstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"sort"

	iradix "github.com/hashicorp/go-immutable-radix"
)

// A State is snapshotted as: magic, the generation counter, the quota,
// the meta maps, then every node in path order (path, value, permissions,
// children in creation order, generations). Node counts per owner are
// derived on restore. A snapshot comes from another replica over the
// network, so ReadState checks every length and the restored tree's
// invariants before accepting it.

var snapMagic = [8]byte{'s', 'h', 'i', 'x', 's', 0, 0, 1}

// ErrBadSnapshot reports a snapshot that cannot be restored.
var ErrBadSnapshot = errors.New("xenstore: malformed snapshot")

// WriteTo writes a snapshot of s.
func (s *State) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	var b []byte
	b = append(b, snapMagic[:]...)
	b = binary.LittleEndian.AppendUint64(b, s.gen)
	q := s.meta.quota
	for _, v := range []int{q.MaxNodes, q.MaxNodeSize, q.MaxPerms, q.MaxPathLen, q.MaxWatches,
		q.MaxTransactions, q.MaxTxNodes, q.MaxOutstanding, q.MaxQueuedEvents, q.MaxConnWatches, q.MaxConnTx} {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	specials := []string{IntroduceDomain, ReleaseDomain}
	for _, k := range specials {
		b = appendPerms(b, s.meta.special[k])
	}
	b = appendDoms(b, keys(s.meta.introduced))
	tk := make([]uint32, 0, len(s.meta.targets))
	for d := range s.meta.targets {
		tk = append(tk, d)
	}
	sort.Slice(tk, func(i, j int) bool { return tk[i] < tk[j] })
	b = binary.LittleEndian.AppendUint32(b, uint32(len(tk)))
	for _, d := range tk {
		b = binary.LittleEndian.AppendUint32(b, d)
		b = binary.LittleEndian.AppendUint32(b, s.meta.targets[d])
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Len()))
	n, err := bw.Write(b)
	total := int64(n)
	if err != nil {
		return total, err
	}
	s.Walk(func(p string, nd *Node) bool {
		b = b[:0]
		b = appendBytes(b, []byte(p))
		b = appendBytes(b, nd.Value)
		b = appendPerms(b, nd.Perms)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(nd.Children)))
		for _, c := range nd.Children {
			b = appendBytes(b, []byte(c))
		}
		for _, g := range [...]uint64{nd.Created, nd.VGen, nd.PGen, nd.CGen} {
			b = binary.LittleEndian.AppendUint64(b, g)
		}
		n, err = bw.Write(b)
		total += int64(n)
		return err == nil
	})
	if err != nil {
		return total, err
	}
	return total, bw.Flush()
}

func keys(m map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func appendPerms(b []byte, ps Perms) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ps)))
	for _, p := range ps {
		b = binary.LittleEndian.AppendUint32(b, p.Dom)
		b = append(b, p.Bits)
	}
	return b
}

func appendDoms(b []byte, ds []uint32) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ds)))
	for _, d := range ds {
		b = binary.LittleEndian.AppendUint32(b, d)
	}
	return b
}

// snapReader reads bounded fields from a stream.
type snapReader struct {
	r   *bufio.Reader
	err error
}

func (r *snapReader) full(b []byte) {
	if r.err == nil {
		_, r.err = io.ReadFull(r.r, b)
	}
}

func (r *snapReader) u32() uint32 {
	var b [4]byte
	r.full(b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *snapReader) u64() uint64 {
	var b [8]byte
	r.full(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// bytes reads a length-prefixed field of at most limit bytes.
func (r *snapReader) bytes(limit int) []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if int64(n) > int64(limit) {
		r.err = ErrBadSnapshot
		return nil
	}
	b := make([]byte, n)
	r.full(b)
	return b
}

func (r *snapReader) count(limit int) int {
	n := r.u32()
	if r.err == nil && int64(n) > int64(limit) {
		r.err = ErrBadSnapshot
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

func (r *snapReader) perms() Perms {
	n := r.count(1 << 16)
	ps := make(Perms, n)
	for i := range ps {
		ps[i].Dom = r.u32()
		var b [1]byte
		r.full(b[:])
		ps[i].Bits = b[0] & (PermRead | PermWrite)
	}
	return ps
}

// ReadState restores a snapshot written by WriteTo.
func ReadState(rd io.Reader) (*State, error) {
	r := &snapReader{r: bufio.NewReader(rd)}
	var magic [8]byte
	r.full(magic[:])
	if r.err == nil && magic != snapMagic {
		return nil, ErrBadSnapshot
	}
	s := &State{gen: r.u64(), meta: &meta{special: map[string]Perms{}, introduced: map[uint32]bool{}, targets: map[uint32]uint32{}}}
	q := &s.meta.quota
	for _, p := range []*int{&q.MaxNodes, &q.MaxNodeSize, &q.MaxPerms, &q.MaxPathLen, &q.MaxWatches,
		&q.MaxTransactions, &q.MaxTxNodes, &q.MaxOutstanding, &q.MaxQueuedEvents, &q.MaxConnWatches, &q.MaxConnTx} {
		*p = int(min(r.u64(), 1<<31))
	}
	for _, k := range []string{IntroduceDomain, ReleaseDomain} {
		s.meta.special[k] = r.perms()
		if r.err == nil && len(s.meta.special[k]) == 0 {
			r.err = ErrBadSnapshot
		}
	}
	for n := r.count(1 << 20); n > 0; n-- {
		s.meta.introduced[r.u32()] = true
	}
	for n := r.count(1 << 20); n > 0; n-- {
		d := r.u32()
		s.meta.targets[d] = r.u32()
	}
	count := r.u64()
	if r.err == nil && count > 1<<26 {
		r.err = ErrBadSnapshot
	}
	nodes := iradix.New().Txn()
	owners := map[uint32]int{}
	for i := uint64(0); i < count && r.err == nil; i++ {
		p := string(r.bytes(4096))
		n := &Node{Value: r.bytes(1 << 20), Perms: r.perms()}
		if k := r.count(1 << 20); k > 0 {
			n.Children = make([]string, k)
			for j := range n.Children {
				n.Children[j] = string(r.bytes(4096))
			}
		}
		n.Created, n.VGen, n.PGen, n.CGen = r.u64(), r.u64(), r.u64(), r.u64()
		if len(n.Value) == 0 {
			n.Value = nil
		}
		if r.err != nil {
			break
		}
		if len(n.Perms) == 0 || !validPath(p) {
			return nil, ErrBadSnapshot
		}
		if _, dup := nodes.Insert([]byte(p), n); dup {
			return nil, ErrBadSnapshot
		}
		owners[n.Perms.Owner()]++
	}
	if r.err != nil {
		return nil, ErrBadSnapshot
	}
	s.nodes = nodes.CommitOnly()
	ot := iradix.New().Txn()
	for d, n := range owners {
		ot.Insert(domKey(d), n)
	}
	s.owners = ot.CommitOnly()
	if err := s.Check(); err != nil {
		return nil, errors.Join(ErrBadSnapshot, err)
	}
	return s, nil
}
