package xs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"syscall"
	"time"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// Store is the part of the protocol that works both outside and inside a
// transaction; *Client and *Tx implement it.
type Store interface {
	Read(path string) ([]byte, error)
	Write(path string, value []byte) error
	Mkdir(path string) error
	Rm(path string) error
	Directory(path string) ([]string, error)
	GetPerms(path string) ([]Perm, error)
	SetPerms(path string, perms ...Perm) error
}

var (
	_ Store = (*Client)(nil)
	_ Store = (*Tx)(nil)
)

// Read returns the value of path (XS_READ).
func (c *Client) Read(path string) ([]byte, error) { return c.read(0, path) }

// Write sets path to value, creating it and its missing ancestors (XS_WRITE).
func (c *Client) Write(path string, value []byte) error { return c.write(0, path, value) }

// Mkdir creates path with an empty value if it does not exist (XS_MKDIR).
func (c *Client) Mkdir(path string) error { return c.simple(abi.XS_MKDIR, 0, path) }

// Rm removes path and everything below it (XS_RM).
func (c *Client) Rm(path string) error { return c.simple(abi.XS_RM, 0, path) }

// Directory lists the names of path's children (XS_DIRECTORY, or
// XS_DIRECTORY_PART when the list does not fit in one reply).
func (c *Client) Directory(path string) ([]string, error) { return c.directory(0, path) }

// GetPerms returns path's permission list; the first entry is the owner and
// the default access (XS_GET_PERMS).
func (c *Client) GetPerms(path string) ([]Perm, error) { return c.getPerms(0, path) }

// SetPerms replaces path's permission list (XS_SET_PERMS).
func (c *Client) SetPerms(path string, perms ...Perm) error { return c.setPerms(0, path, perms) }

// Tx is an open transaction: its reads see its own writes, and nobody else
// sees them before Commit. After Commit or Abort it must not be used.
type Tx struct {
	c  *Client
	id uint32
}

// ID returns the transaction's id as the daemon gave it.
func (t *Tx) ID() uint32 { return t.id }

// Read implements Store.Read inside the transaction.
func (t *Tx) Read(path string) ([]byte, error) { return t.c.read(t.id, path) }

// Write implements Store.Write inside the transaction.
func (t *Tx) Write(path string, value []byte) error { return t.c.write(t.id, path, value) }

// Mkdir implements Store.Mkdir inside the transaction.
func (t *Tx) Mkdir(path string) error { return t.c.simple(abi.XS_MKDIR, t.id, path) }

// Rm implements Store.Rm inside the transaction.
func (t *Tx) Rm(path string) error { return t.c.simple(abi.XS_RM, t.id, path) }

// Directory implements Store.Directory inside the transaction.
func (t *Tx) Directory(path string) ([]string, error) { return t.c.directory(t.id, path) }

// GetPerms implements Store.GetPerms inside the transaction.
func (t *Tx) GetPerms(path string) ([]Perm, error) { return t.c.getPerms(t.id, path) }

// SetPerms implements Store.SetPerms inside the transaction.
func (t *Tx) SetPerms(path string, perms ...Perm) error { return t.c.setPerms(t.id, path, perms) }

// Commit ends the transaction, applying its writes atomically; it fails with
// syscall.EAGAIN when another client changed what the transaction used, and
// then nothing was applied.
func (t *Tx) Commit() error { return t.c.TransactionEnd(t.id, true) }

// Abort ends the transaction and discards its writes.
func (t *Tx) Abort() error { return t.c.TransactionEnd(t.id, false) }

// TransactionStart opens a transaction (XS_TRANSACTION_START).
func (c *Client) TransactionStart() (*Tx, error) {
	p, err := c.request(abi.XS_TRANSACTION_START, 0, []byte{0})
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseUint(cString(p), 10, 32)
	if err != nil || id == 0 {
		return nil, fmt.Errorf("%w: transaction id %q", ErrProtocol, p)
	}
	return &Tx{c: c, id: uint32(id)}, nil
}

// TransactionEnd commits (commit = true) or aborts transaction id
// (XS_TRANSACTION_END).
func (c *Client) TransactionEnd(id uint32, commit bool) error {
	arg := "F"
	if commit {
		arg = "T"
	}
	_, err := c.request(abi.XS_TRANSACTION_END, id, wire.JoinStrings(arg))
	return err
}

// MaxTransactionRetries bounds how often Transaction retries a conflict.
const MaxTransactionRetries = 1000

// Transaction runs fn in a transaction and commits it, starting over while
// the commit (or fn) fails with syscall.EAGAIN, as Xen's tools do. Any other
// error from fn aborts the transaction and is returned. fn may run several
// times, so it must not have effects outside the transaction.
func (c *Client) Transaction(fn func(t *Tx) error) error {
	for attempt := 0; ; attempt++ {
		t, err := c.TransactionStart()
		if err != nil {
			return err
		}
		err = fn(t)
		if err == nil {
			err = t.Commit()
		} else {
			t.Abort() // the error from fn is the one that matters
		}
		if err != syscall.EAGAIN || attempt >= MaxTransactionRetries {
			return err
		}
		if attempt >= 1 {
			// Clients that conflicted once tend to conflict again when they
			// restart in lockstep; a little jitter breaks the tie.
			d := time.Duration(1<<min(attempt, 10)) * time.Microsecond * 10
			time.Sleep(rand.N(d))
		}
	}
}

// GetDomainPath returns the home path of domid, /local/domain/<domid>
// (XS_GET_DOMAIN_PATH).
func (c *Client) GetDomainPath(domid uint32) (string, error) {
	p, err := c.request(abi.XS_GET_DOMAIN_PATH, 0, wire.JoinStrings(itoa(domid)))
	if err != nil {
		return "", err
	}
	return cString(p), nil
}

// Introduce tells the daemon about a new domain whose ring is at gfn and
// whose XenStore event channel is port (XS_INTRODUCE; privileged).
func (c *Client) Introduce(domid uint32, gfn uint64, port uint32) error {
	_, err := c.request(abi.XS_INTRODUCE, 0, wire.JoinStrings(itoa(domid), strconv.FormatUint(gfn, 10), itoa(port)))
	return err
}

// Release tells the daemon that domid is gone (XS_RELEASE; privileged).
func (c *Client) Release(domid uint32) error {
	_, err := c.request(abi.XS_RELEASE, 0, wire.JoinStrings(itoa(domid)))
	return err
}

// Resume clears domid's shutdown state (XS_RESUME; privileged).
func (c *Client) Resume(domid uint32) error {
	_, err := c.request(abi.XS_RESUME, 0, wire.JoinStrings(itoa(domid)))
	return err
}

// SetTarget gives domid the permissions of target (XS_SET_TARGET;
// privileged), as for a device-model stub domain.
func (c *Client) SetTarget(domid, target uint32) error {
	_, err := c.request(abi.XS_SET_TARGET, 0, wire.JoinStrings(itoa(domid), itoa(target)))
	return err
}

// IsDomainIntroduced reports whether the daemon knows domid
// (XS_IS_DOMAIN_INTRODUCED). As in libxenstore, any answer but "F" is true.
func (c *Client) IsDomainIntroduced(domid uint32) (bool, error) {
	p, err := c.request(abi.XS_IS_DOMAIN_INTRODUCED, 0, wire.JoinStrings(itoa(domid)))
	if err != nil {
		return false, err
	}
	return cString(p) != "F", nil
}

// ResetWatches drops every watch and transaction of this connection
// (XS_RESET_WATCHES). The channels of this client's watches are closed.
func (c *Client) ResetWatches() error {
	if _, err := c.request(abi.XS_RESET_WATCHES, 0, []byte{0}); err != nil {
		return err
	}
	c.mu.Lock()
	ws := c.takeWatchesLocked()
	c.mu.Unlock()
	stopAll(ws)
	return nil
}

// Control sends a daemon-specific command with its arguments (XS_CONTROL;
// privileged) and returns the daemon's answer.
func (c *Client) Control(cmd string, args ...string) (string, error) {
	p, err := c.request(abi.XS_CONTROL, 0, wire.JoinStrings(append([]string{cmd}, args...)...))
	if err != nil {
		return "", err
	}
	return cString(p), nil
}

func (c *Client) read(tx uint32, path string) ([]byte, error) {
	return c.request(abi.XS_READ, tx, wire.JoinStrings(path))
}

func (c *Client) write(tx uint32, path string, value []byte) error {
	p := make([]byte, 0, len(path)+1+len(value))
	p = append(append(append(p, path...), 0), value...)
	_, err := c.request(abi.XS_WRITE, tx, p)
	return err
}

func (c *Client) simple(typ, tx uint32, path string) error {
	_, err := c.request(typ, tx, wire.JoinStrings(path))
	return err
}

func (c *Client) getPerms(tx uint32, path string) ([]Perm, error) {
	p, err := c.request(abi.XS_GET_PERMS, tx, wire.JoinStrings(path))
	if err != nil {
		return nil, err
	}
	ss, err := wire.Strings(p)
	if err != nil || len(ss) == 0 {
		return nil, fmt.Errorf("%w: permissions %q", ErrProtocol, p)
	}
	perms := make([]Perm, len(ss))
	for i, s := range ss {
		if perms[i], err = ParsePerm(s); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
	}
	return perms, nil
}

func (c *Client) setPerms(tx uint32, path string, perms []Perm) error {
	ss := make([]string, 0, 1+len(perms))
	ss = append(ss, path)
	for _, p := range perms {
		ss = append(ss, p.String())
	}
	_, err := c.request(abi.XS_SET_PERMS, tx, wire.JoinStrings(ss...))
	return err
}

func (c *Client) directory(tx uint32, path string) ([]string, error) {
	p, err := c.request(abi.XS_DIRECTORY, tx, wire.JoinStrings(path))
	if err == syscall.E2BIG {
		return c.directoryPart(tx, path)
	}
	if err != nil {
		return nil, err
	}
	names, err := wire.Strings(p)
	if err != nil {
		return nil, fmt.Errorf("%w: directory %q", ErrProtocol, p)
	}
	return names, nil
}

// Limits on a directory read in parts, so that a daemon cannot keep us
// looping or growing: Xen's limits make a real list far smaller.
const (
	maxDirectoryBytes    = 16 << 20
	maxDirectoryRestarts = 100
)

// directoryPart reads a long child list in chunks, as libxenstore's
// xs_directory_part: each reply is "<generation>\0" then whole "name\0"
// entries from the requested byte offset, with one more "\0" after the last
// chunk; a changed generation means the list changed and we start over.
func (c *Client) directoryPart(tx uint32, path string) ([]string, error) {
	var gen string
	var list []byte
	for restarts := 0; ; {
		p, err := c.request(abi.XS_DIRECTORY_PART, tx, wire.JoinStrings(path, itoa(uint32(len(list)))))
		if err == syscall.ENOSYS {
			return nil, syscall.E2BIG // as libxenstore: the daemon cannot do better
		}
		if err != nil {
			return nil, err
		}
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			return nil, fmt.Errorf("%w: directory part %q", ErrProtocol, p)
		}
		g, chunk := string(p[:i]), p[i+1:]
		if len(list) == 0 {
			gen = g
		} else if g != gen {
			if restarts++; restarts > maxDirectoryRestarts {
				return nil, syscall.EAGAIN
			}
			gen, list = "", nil
			continue
		}
		if len(chunk) == 0 || chunk[len(chunk)-1] != 0 {
			return nil, fmt.Errorf("%w: directory part chunk %q", ErrProtocol, chunk)
		}
		list = append(list, chunk...)
		if len(list) > maxDirectoryBytes {
			return nil, fmt.Errorf("%w: directory of more than %d bytes", ErrProtocol, maxDirectoryBytes)
		}
		// The end marker is an empty name: the list ends in "\0\0", or is
		// just "\0" for a directory without children.
		if len(list) == 1 || (len(list) >= 2 && list[len(list)-2] == 0) {
			break
		}
	}
	names, err := wire.Strings(list[:len(list)-1])
	if err != nil {
		return nil, fmt.Errorf("%w: directory %q", ErrProtocol, list)
	}
	return names, nil
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
