package xenstore

import (
	"errors"
	"strconv"
	"strings"
)

// Access bits of a permission entry (XS_PERM_READ, XS_PERM_WRITE).
const (
	PermRead  uint8 = 1
	PermWrite uint8 = 2
	permOwner uint8 = 8 // internal: caller owns the node (may SET_PERMS)
)

// Perm is one entry of a node's permission list: a domain and its access.
// The first entry of a list names the owner and the default access.
type Perm struct {
	Dom  uint32
	Bits uint8 // PermRead|PermWrite
}

// Perms is a node's permission list; it always has at least one entry.
type Perms []Perm

var errBadPerm = errors.New("bad permission")

// ParsePerm parses "n0", "r5", "w7" or "b12".
func ParsePerm(s string) (Perm, error) {
	if len(s) < 2 {
		return Perm{}, errBadPerm
	}
	var p Perm
	switch s[0] {
	case 'n':
	case 'r':
		p.Bits = PermRead
	case 'w':
		p.Bits = PermWrite
	case 'b':
		p.Bits = PermRead | PermWrite
	default:
		return Perm{}, errBadPerm
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return Perm{}, errBadPerm
		}
	}
	d, err := strconv.ParseUint(s[1:], 10, 16)
	if err != nil {
		return Perm{}, errBadPerm
	}
	p.Dom = uint32(d)
	return p, nil
}

// String formats p as Xen does ("b0").
func (p Perm) String() string {
	c := "nrwb"[p.Bits&(PermRead|PermWrite)]
	return string(c) + strconv.FormatUint(uint64(p.Dom), 10)
}

// String formats the list as space-separated entries, for logs and tests.
func (ps Perms) String() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

// appendWire appends the list as XS_GET_PERMS sends it: each entry
// NUL-terminated.
func (ps Perms) appendWire(b []byte) []byte {
	for _, p := range ps {
		b = append(append(b, p.String()...), 0)
	}
	return b
}

// Owner is the owning domain (entry 0).
func (ps Perms) Owner() uint32 { return ps[0].Dom }

// Equal reports whether two lists are identical.
func (ps Perms) Equal(o Perms) bool {
	if len(ps) != len(o) {
		return false
	}
	for i := range ps {
		if ps[i] != o[i] {
			return false
		}
	}
	return true
}

// Caller is who issues a request: its domain, whether it is privileged
// (domain 0 and socket connections) and the domain it acts for after
// XS_SET_TARGET (NoTarget if none).
type Caller struct {
	Dom        uint32
	Privileged bool
	Target     uint32
}

// NoTarget marks a caller without an XS_SET_TARGET target.
const NoTarget = ^uint32(0)

// access computes the caller's rights on a node with permissions ps, as
// perm_for_conn in C xenstored: privileged callers and owners (or the
// owner's controller) get everything; otherwise the first matching later
// entry decides; otherwise entry 0 is the default.
func (c Caller) access(ps Perms) uint8 {
	if c.Privileged || ps[0].Dom == c.Dom || (c.Target != NoTarget && ps[0].Dom == c.Target) {
		return PermRead | PermWrite | permOwner
	}
	for _, p := range ps[1:] {
		if p.Dom == c.Dom || (c.Target != NoTarget && p.Dom == c.Target) {
			return p.Bits
		}
	}
	return ps[0].Bits
}

// can reports whether the caller has all of want on ps.
func (c Caller) can(ps Perms, want uint8) bool { return c.access(ps)&want == want }
