package domain

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Host is what placement knows about one host of the cluster.
type Host struct {
	Name    string
	Alive   bool
	MemFree uint64 // bytes, as the host last reported
	// Reserved is the memory (bytes) promised to domains running there:
	// their whole shareable pool, used or not.
	Reserved uint64
	// Unreachable means its agent did not take a request just now, though
	// membership has not yet given up on it: not a candidate.
	Unreachable bool
}

// ErrNoHost means no live host can take the domain.
var ErrNoHost = errors.New("no live host has enough free memory")

// Place chooses the host for a domain of memMiB.
//
// With node set, the domain goes there; the host must be alive and report
// at least memMiB free. Otherwise the policy is: among live hosts that
// report at least memMiB free, the one with the most memory left after
// its running domains' pools (MemFree - Reserved, which may go negative:
// free memory does not yet show pools that are not touched), ties broken
// by name. A host whose report lags a burst of creations is thus not
// chosen again and again, and domains spread as long as hosts are alike.
// Unreachable hosts are left out (a named one is not: the caller found it
// unreachable and says so).
//
// Place is pure: the caller gathers hosts from membership and the
// domain table.
func Place(hosts []Host, memMiB uint64, node string) (string, error) {
	need := memMiB << 20
	if node != "" {
		for _, h := range hosts {
			if h.Name != node {
				continue
			}
			if !h.Alive {
				return "", fmt.Errorf("host %q is unreachable: membership does not see it alive", node)
			}
			if h.MemFree < need {
				return "", fmt.Errorf("host %q has %d MiB free, the domain needs %d MiB", node, h.MemFree>>20, memMiB)
			}
			return node, nil
		}
		return "", fmt.Errorf("no host named %q", node)
	}
	var fit []Host
	var unreachable []string
	for _, h := range hosts {
		switch {
		case h.Alive && h.Unreachable:
			unreachable = append(unreachable, h.Name)
		case h.Alive && h.MemFree >= need:
			fit = append(fit, h)
		}
	}
	if len(fit) == 0 {
		if len(unreachable) > 0 {
			return "", fmt.Errorf("%w (%d MiB) among those that answer (%s did not)", ErrNoHost, memMiB, strings.Join(unreachable, ", "))
		}
		return "", fmt.Errorf("%w (%d MiB)", ErrNoHost, memMiB)
	}
	left := func(h Host) int64 { return int64(h.MemFree) - int64(h.Reserved) }
	sort.Slice(fit, func(i, j int) bool {
		if a, b := left(fit[i]), left(fit[j]); a != b {
			return a > b
		}
		return fit[i].Name < fit[j].Name
	})
	return fit[0].Name, nil
}
