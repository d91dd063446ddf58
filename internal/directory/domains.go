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

// Domain states. A domain leaves the table when it is destroyed or shuts
// down; until then it is running, or it is crashed: its processes ended
// without a destroy (killed, out of memory, a failing exit, its host died
// or its agent restarted). A crashed domain is released at once
// (@releaseDomain fires, its XenStore home goes), its name is free for a
// new domain, and it stays listed until its on_crash is followed (the
// domain package: "destroy" removes it, "restart" starts it again on its
// host under a new domid).
const (
	StateRunning = "running"
	StateCrashed = "crashed"
	// StateDead is what agents before StateCrashed wrote for both a
	// crash and a dead host. Never written now; read as not running.
	StateDead = "dead"
)

// Running reports whether the domain's processes run (or are starting),
// as opposed to crashed or dead.
func (d Domain) Running() bool { return d.State == StateRunning }

// Domain table operations.
const (
	DomCreate   = "create"    // Domain (ID ignored): allocate a domid, introduce it
	DomSetState = "set-state" // Domain.ID, Domain.State; to crashed: release it, remove its home
	DomRemove   = "remove"    // Domain.ID: forget it, release it (if running), remove its XenStore home
	DomHostDown = "host-down" // Domain.Host, Domain.State: mark its running domains so, release them
)

// DomainCmd is a domain-table command of the log.
type DomainCmd struct {
	Op     string `json:"op"`
	Domain Domain `json:"domain"`
	// Reuse lets DomCreate take the name of a domain that no longer
	// runs (crashed or dead), whose entry then goes. A flag rather than
	// a new rule, so that entries logged before it apply as they did.
	Reuse bool `json:"reuse,omitempty"`
	// IDs are, for DomHostDown, the domains the verdict covers: those
	// the host ran when it was taken. A domain created on the host after
	// it (the host came back at once: a verdict on a starved agent) is
	// left alone. Empty: every domain of the host (entries logged
	// before it).
	IDs []uint32 `json:"ids,omitempty"`
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
