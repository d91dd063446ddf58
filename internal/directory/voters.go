package directory

import (
	"sort"
	"time"
)

// Host is what membership says about a host, as the voter planner needs it.
type Host struct {
	Name      string
	RaftAddr  string
	Alive     bool
	Left      bool          // left on purpose
	DownFor   time.Duration // how long it has been failed (0 if alive)
	InCluster bool          // already belongs to a directory cluster
}

// ChangeKind is a Raft configuration change.
type ChangeKind int

// Configuration changes the planner asks for.
const (
	AddVoter ChangeKind = iota + 1 // add a voter, or promote a non-voter
	AddNonvoter
	RemoveServer
)

func (k ChangeKind) String() string {
	return map[ChangeKind]string{AddVoter: "add-voter", AddNonvoter: "add-nonvoter", RemoveServer: "remove"}[k]
}

// Change is one configuration change.
type Change struct {
	Kind    ChangeKind
	ID      string
	Address string
}

// PlanVoters decides the next configuration change, like Consul's
// autopilot: keep `want` voters; hosts beyond that replicate as
// non-voters; a voter that membership has seen down longer than grace, or
// that left, is removed and a live non-voter is promoted in its place. It
// returns at most one change, since Raft takes one at a time; the leader
// (self) is never removed. It is pure: the agent's leader loop calls it
// periodically and carries the change out.
func PlanVoters(servers []Server, hosts []Host, self string, want int, grace time.Duration) (Change, bool) {
	byName := map[string]Host{}
	for _, h := range hosts {
		byName[h.Name] = h
	}
	// Voters are counted as configured, dead or alive: a dead voter is
	// replaced only once it is removed, after the grace period, so that a
	// host that is merely slow or restarting keeps its vote.
	inCfg := map[string]Server{}
	voters := 0
	for _, s := range servers {
		inCfg[s.ID] = s
		if s.Voter {
			voters++
		}
	}
	// 1. Drop servers that left or are down past the grace period.
	for _, s := range sorted(servers) {
		h, known := byName[s.ID]
		if s.ID == self {
			continue
		}
		if known && (h.Left || (!h.Alive && h.DownFor > grace)) {
			return Change{Kind: RemoveServer, ID: s.ID}, true
		}
	}
	// 2. Follow a host that came back at a new address.
	for _, s := range sorted(servers) {
		if h, ok := byName[s.ID]; ok && h.Alive && h.RaftAddr != "" && h.RaftAddr != s.Address && s.ID != self {
			kind := AddNonvoter
			if s.Voter {
				kind = AddVoter
			}
			return Change{Kind: kind, ID: s.ID, Address: h.RaftAddr}, true
		}
	}
	// 3. Promote live non-voters while voters are missing.
	if voters < want {
		for _, s := range sorted(servers) {
			if h, ok := byName[s.ID]; !s.Voter && ok && h.Alive {
				return Change{Kind: AddVoter, ID: s.ID, Address: s.Address}, true
			}
		}
	}
	// 4. Add live hosts that are not in the configuration yet.
	names := make([]string, 0, len(hosts))
	for _, h := range hosts {
		names = append(names, h.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		h := byName[n]
		if _, ok := inCfg[n]; ok || !h.Alive || h.RaftAddr == "" {
			continue
		}
		if voters < want {
			return Change{Kind: AddVoter, ID: n, Address: h.RaftAddr}, true
		}
		return Change{Kind: AddNonvoter, ID: n, Address: h.RaftAddr}, true
	}
	return Change{}, false
}

func sorted(s []Server) []Server {
	out := append([]Server(nil), s...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// InitialVoters picks the hosts that bootstrap the cluster: once at least
// `want` hosts with Raft addresses are alive, the `want` lowest names.
// Every host computes the same list from the same view; a host not in it
// waits to be added by the leader. If any live host already belongs to a
// cluster, nobody bootstraps: the newcomer waits for that cluster's leader.
func InitialVoters(hosts []Host, want int) ([]Server, bool) {
	var live []Host
	for _, h := range hosts {
		if h.Alive && h.InCluster {
			return nil, false
		}
		if h.Alive && h.RaftAddr != "" {
			live = append(live, h)
		}
	}
	if len(live) < want {
		return nil, false
	}
	sort.Slice(live, func(i, j int) bool { return live[i].Name < live[j].Name })
	out := make([]Server, want)
	for i, h := range live[:want] {
		out[i] = Server{ID: h.Name, Address: h.RaftAddr, Voter: true}
	}
	return out, true
}
