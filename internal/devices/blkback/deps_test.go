package blkback

import (
	"testing"

	"shi/internal/deptest"
)

// TestDeps keeps the back end a domain like any other (DESIGN.md §2): it
// reaches the hypervisor only through guest/, never the agent's tables.
func TestDeps(t *testing.T) {
	deptest.Forbid(t, "shi/internal/devices/blkback", append(deptest.Cluster, "shi/internal/domain",
		"shi/internal/hypervisor", "shi/internal/evtchn", "shi/internal/gnttab", "testing")...)
}
