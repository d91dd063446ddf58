package directory

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"shi/internal/xenstore"
)

// A log entry is a type byte and its payload, as in Consul's FSM: the
// handler is chosen by type, and an unknown type panics (replicas must
// never silently drift apart) unless its ignorable bit is set, which
// lets a newer leader add entry types older replicas may skip.
const (
	entryXenstore byte = 1 // payload: xenstore.Command (binary)
	entryDomain   byte = 2 // payload: DomainCmd (JSON)
	entryNoop     byte = 3 // no payload: a barrier
	entryAuth     byte = 4 // payload: AuthCmd (JSON), always with flagIgnorable

	flagIgnorable byte = 0x80
)

// Response is what applying an entry returns, on every replica alike.
type Response struct {
	Xs     xenstore.Result // XenStore outcome and events
	Domain *Domain         // the domain a domain command created or changed
	Err    string          // a domain command's error, for people
}

// FSM is the pure replicated state machine: the XenStore tree and the
// domain table. It does no I/O and keeps no clock: times come in the
// commands. Apply on every replica with the same entries gives the same
// state and responses.
type FSM struct {
	xs      *xenstore.State
	doms    *domainTable
	auth    *authTable
	applied uint64
}

// NewFSM returns an empty state machine with the given XenStore quota.
func NewFSM(q xenstore.Quota) *FSM {
	return &FSM{xs: xenstore.NewState(q), doms: newDomainTable(), auth: newAuthTable()}
}

// State returns the current XenStore state.
func (f *FSM) State() *xenstore.State { return f.xs }

// Applied is the index of the last applied entry.
func (f *FSM) Applied() uint64 { return f.applied }

// Domains lists the domain table.
func (f *FSM) Domains() []Domain { return f.doms.list() }

// Domain returns one domain by id.
func (f *FSM) Domain(id uint32) (Domain, bool) {
	d := f.doms.byID[id]
	if d == nil {
		return Domain{}, false
	}
	return *d, true
}

// XenstoreEntry encodes a XenStore command as a log entry.
func XenstoreEntry(c *xenstore.Command) []byte {
	b, _ := c.MarshalBinary()
	return append([]byte{entryXenstore}, b...)
}

// DomainEntry encodes a domain command as a log entry.
func DomainEntry(c DomainCmd) []byte {
	b, _ := json.Marshal(c)
	return append([]byte{entryDomain}, b...)
}

// NoopEntry is an entry that changes nothing (a barrier).
func NoopEntry() []byte { return []byte{entryNoop} }

// ErrBadEntry reports an entry that must not enter the log.
var ErrBadEntry = errors.New("directory: malformed log entry")

// ValidEntry checks an entry before it is proposed: Apply panics on an
// unknown entry type (replicas must not drift apart), so nothing that
// arrives from outside may reach the log unchecked.
func ValidEntry(b []byte) error {
	if len(b) == 0 {
		return ErrBadEntry
	}
	switch b[0] &^ flagIgnorable {
	case entryXenstore:
		var c xenstore.Command
		if c.UnmarshalBinary(b[1:]) != nil {
			return ErrBadEntry
		}
		return nil
	case entryDomain:
		if _, err := decodeDomainCmd(b[1:]); err != nil {
			return ErrBadEntry
		}
		return nil
	case entryNoop:
		return nil
	case entryAuth:
		if _, err := decodeAuthCmd(b[1:]); err != nil {
			return ErrBadEntry
		}
		return nil
	}
	if b[0]&flagIgnorable != 0 {
		return nil
	}
	return ErrBadEntry
}

// Apply applies the entry at index.
func (f *FSM) Apply(index uint64, data []byte) Response {
	if index > f.applied {
		f.applied = index
	}
	if len(data) == 0 {
		return Response{Xs: xenstore.Result{Err: syscall.EINVAL}, Err: "empty entry"}
	}
	switch data[0] &^ flagIgnorable {
	case entryXenstore:
		var c xenstore.Command
		if err := c.UnmarshalBinary(data[1:]); err != nil {
			return Response{Xs: xenstore.Result{Err: syscall.EINVAL}, Err: err.Error()}
		}
		s, res := f.xs.Apply(&c)
		f.xs = s
		return Response{Xs: res}
	case entryDomain:
		c, err := decodeDomainCmd(data[1:])
		if err != nil {
			return Response{Err: err.Error()}
		}
		return f.applyDomain(c)
	case entryNoop:
		return Response{}
	case entryAuth:
		c, err := decodeAuthCmd(data[1:])
		if err != nil {
			return Response{Err: err.Error()}
		}
		return f.applyAuth(c)
	}
	if data[0]&flagIgnorable != 0 {
		return Response{}
	}
	panic(fmt.Sprintf("directory: unknown log entry type %d at index %d", data[0], index))
}

// xs applies a XenStore command as the toolstack (domain 0), collecting
// its events into r; failures of these housekeeping commands (a home
// that is already gone) are not errors.
func (f *FSM) xsAsDom0(r *Response, c xenstore.Command) {
	s, res := f.xs.Apply(&c)
	f.xs = s
	r.Xs.Events = append(r.Xs.Events, res.Events...)
}

// crash releases a domain that crashed: its home goes and
// @releaseDomain fires, as for a destroyed one; its entry stays.
func (f *FSM) crash(r *Response, id uint32) {
	f.xsAsDom0(r, xenstore.Command{Op: xenstore.OpRm, Path: homeOf(id)})
	f.xsAsDom0(r, xenstore.Command{Op: xenstore.OpRelease, Target: id})
}

// removeKeys removes the XenStore keys of a domain that leaves the table:
// its home and its /vm entry.
func (f *FSM) removeKeys(r *Response, d *Domain) {
	f.xsAsDom0(r, xenstore.Command{Op: xenstore.OpRm, Path: homeOf(d.ID)})
	if d.UUID != "" {
		f.xsAsDom0(r, xenstore.Command{Op: xenstore.OpRm, Path: "/vm/" + d.UUID})
	}
}

func (f *FSM) applyDomain(c DomainCmd) Response {
	var r Response
	fail := func(err error) Response { r.Err = err.Error(); return r }
	d := c.Domain
	switch c.Op {
	case DomCreate:
		if !validName(d.Name) || d.Host == "" {
			return fail(ErrBadDomain)
		}
		old := f.doms.byName(d.Name)
		if old != nil && (!c.Reuse || old.Running()) {
			return fail(ErrNameInUse)
		}
		t := f.doms.clone()
		id, ok := t.allocate()
		if !ok {
			return fail(ErrNoDomids)
		}
		if old != nil {
			// The name passes to the new domain; the old one, released
			// when it crashed, goes (a restart keeps its uuid, whose keys
			// the toolstack writes again).
			delete(t.byID, old.ID)
			f.removeKeys(&r, old)
		}
		nd := d
		nd.ID, nd.Updated = id, d.Created
		if nd.State == "" {
			nd.State = StateRunning
		}
		t.byID[id] = &nd
		f.doms = t
		f.xsAsDom0(&r, xenstore.Command{Op: xenstore.OpIntroduce, Target: id})
		r.Domain = &nd
	case DomSetState:
		old := f.doms.byID[d.ID]
		if old == nil {
			return fail(ErrNoSuchDom)
		}
		if d.State == "" {
			return fail(ErrBadDomain)
		}
		nd := *old
		nd.State, nd.Updated = d.State, d.Updated
		t := f.doms.clone()
		t.byID[d.ID] = &nd
		f.doms = t
		switch {
		case d.State == StateCrashed && old.Running():
			f.crash(&r, d.ID)
		case d.State == StateDead && old.State != StateDead:
			f.xsAsDom0(&r, xenstore.Command{Op: xenstore.OpRelease, Target: d.ID})
		}
		r.Domain = &nd
	case DomRemove:
		old := f.doms.byID[d.ID]
		if old == nil {
			return fail(ErrNoSuchDom)
		}
		t := f.doms.clone()
		delete(t.byID, d.ID)
		f.doms = t
		f.removeKeys(&r, old)
		if old.State != StateDead && old.State != StateCrashed { // released when it ended
			f.xsAsDom0(&r, xenstore.Command{Op: xenstore.OpRelease, Target: d.ID})
		}
		r.Domain = old
	case DomHostDown:
		// Entries logged before StateCrashed carry no state: dead.
		state := d.State
		if state == "" {
			state = StateDead
		}
		if state != StateDead && state != StateCrashed {
			return fail(ErrBadDomain)
		}
		var t *domainTable
		for _, od := range f.doms.list() {
			if od.Host != d.Host || od.State == StateDead || od.State == StateCrashed ||
				len(c.IDs) > 0 && !slices.Contains(c.IDs, od.ID) {
				continue
			}
			if t == nil {
				t = f.doms.clone()
			}
			nd := od
			nd.State, nd.Updated = state, d.Updated
			t.byID[od.ID] = &nd
			if state == StateCrashed {
				f.crash(&r, od.ID)
			} else {
				f.xsAsDom0(&r, xenstore.Command{Op: xenstore.OpRelease, Target: od.ID})
			}
		}
		if t != nil {
			f.doms = t
		}
	default:
		return fail(ErrUnknownOp)
	}
	return r
}
