package xs

import (
	"fmt"
	"strconv"

	"shi/internal/abi"
)

// Access is what a permission entry allows: the XS_PERM_* bits of
// xenstore_lib.h.
type Access uint8

// Access values and their letters in a permission string.
const (
	AccessNone  Access = abi.XS_PERM_NONE                     // n
	AccessRead  Access = abi.XS_PERM_READ                     // r
	AccessWrite Access = abi.XS_PERM_WRITE                    // w
	AccessBoth  Access = abi.XS_PERM_READ | abi.XS_PERM_WRITE // b
)

// Perm is one entry of a node's permission list, written on the wire as a
// letter and a decimal domid ("b0", "r5"). In a list, the first entry names
// the owner and the access of every domain not listed after it.
type Perm struct {
	Domid  uint32
	Access Access
}

const accessLetters = "nrwb"

// ParsePerm parses a permission string such as "r5". As in Xen, the letter
// is one of n, r, w, b and the domid is decimal.
func ParsePerm(s string) (Perm, error) {
	if len(s) < 2 {
		return Perm{}, fmt.Errorf("xs: bad permission %q", s)
	}
	a := Access(0)
	switch s[0] {
	case 'n':
		a = AccessNone
	case 'r':
		a = AccessRead
	case 'w':
		a = AccessWrite
	case 'b':
		a = AccessBoth
	default:
		return Perm{}, fmt.Errorf("xs: bad permission %q: access must be n, r, w or b", s)
	}
	for _, ch := range s[1:] {
		if ch < '0' || ch > '9' {
			return Perm{}, fmt.Errorf("xs: bad permission %q: domid must be decimal", s)
		}
	}
	d, err := strconv.ParseUint(s[1:], 10, 32)
	if err != nil {
		return Perm{}, fmt.Errorf("xs: bad permission %q: %v", s, err)
	}
	return Perm{Domid: uint32(d), Access: a}, nil
}

// String formats p as on the wire, e.g. "b0".
func (p Perm) String() string {
	return string(accessLetters[p.Access&AccessBoth]) + strconv.FormatUint(uint64(p.Domid), 10)
}

// ParsePerms parses a list of permission strings.
func ParsePerms(ss ...string) ([]Perm, error) {
	out := make([]Perm, len(ss))
	for i, s := range ss {
		p, err := ParsePerm(s)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}
