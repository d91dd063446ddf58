package directory

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Domain is one entry of the cluster's domain table.
type Domain struct {
	ID        uint32          `json:"id"`
	Name      string          `json:"name"`
	Host      string          `json:"host"`
	State     string          `json:"state"`
	MemoryMiB uint64          `json:"memory_mib"`
	Driver    bool            `json:"driver,omitempty"` // a host's driver domain
	UUID      string          `json:"uuid,omitempty"`
	Config    json.RawMessage `json:"config,omitempty"`
	Created   int64           `json:"created"` // unix nanoseconds, stamped by the proposer
	Updated   int64           `json:"updated"`
}

// Domain states.
const (
	StateRunning = "running"
	StateDead    = "dead" // its host died or the process exited; awaiting destroy or restart
)

// Domain table operations.
const (
	DomCreate   = "create"    // Domain (ID ignored): allocate a domid, introduce it
	DomSetState = "set-state" // Domain.ID, Domain.State
	DomRemove   = "remove"    // Domain.ID: forget it, release it, remove its XenStore home
	DomHostDown = "host-down" // Domain.Host: mark its domains dead, release them
)

// DomainCmd is a domain-table command of the log.
type DomainCmd struct {
	Op     string `json:"op"`
	Domain Domain `json:"domain"`
}

// Domids go from 1 up to DOMID_FIRST_RESERVED-1; 0 is the toolstack.
const (
	firstDomid = 1
	lastDomid  = 0x7FEF
)

// Errors of domain commands (replicated, so deterministic).
var (
	ErrNameInUse = errors.New("a domain with that name exists")
	ErrNoSuchDom = errors.New("no such domain")
	ErrNoDomids  = errors.New("no free domid")
	ErrBadDomain = errors.New("malformed domain command")
	ErrUnknownOp = errors.New("unknown domain operation")
)

// domainTable is immutable once built: changes copy the map, which is
// small (one entry per domain), so snapshots can share it.
type domainTable struct {
	byID map[uint32]*Domain
	next uint32 // where the next domid search starts
}

func newDomainTable() *domainTable { return &domainTable{byID: map[uint32]*Domain{}, next: firstDomid} }

func (t *domainTable) clone() *domainTable {
	c := &domainTable{byID: make(map[uint32]*Domain, len(t.byID)+1), next: t.next}
	for k, v := range t.byID {
		c.byID[k] = v
	}
	return c
}

func (t *domainTable) list() []Domain {
	out := make([]Domain, 0, len(t.byID))
	for _, d := range t.byID {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (t *domainTable) byName(name string) *Domain {
	for _, d := range t.byID {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// allocate finds a free domid, searching on from the last one handed out
// so that ids are not reused soon after a domain goes (as Xen does).
func (t *domainTable) allocate() (uint32, bool) {
	id := t.next
	for range lastDomid - firstDomid + 1 {
		if id > lastDomid || id < firstDomid {
			id = firstDomid
		}
		if t.byID[id] == nil {
			t.next = id + 1
			return id, true
		}
		id++
	}
	return 0, false
}

// validName keeps names printable and short; they appear in XenStore and
// on the command line.
func validName(s string) bool {
	if s == "" || len(s) > 64 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x21 || r == 0x7f || r == '/' {
			return false
		}
	}
	return true
}

func decodeDomainCmd(b []byte) (DomainCmd, error) {
	var c DomainCmd
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrBadDomain, err)
	}
	return c, nil
}

func homeOf(id uint32) string { return "/local/domain/" + strconv.FormatUint(uint64(id), 10) }
