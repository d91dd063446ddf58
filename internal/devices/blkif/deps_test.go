package blkif

import (
	"testing"

	"shi/internal/deptest"
)

// TestDeps: front ends in domains link this package, so it links no
// cluster or agent code, nor the XenStore engine's libraries (the
// toolstack's commands, which need the engine, are in toolstack/).
func TestDeps(t *testing.T) {
	deptest.Forbid(t, "shi/internal/devices/blkif", append(deptest.Cluster, "shi/internal/domain",
		"shi/internal/hypervisor", "shi/internal/evtchn", "shi/internal/gnttab", "github.com/hashicorp", "testing")...)
}
