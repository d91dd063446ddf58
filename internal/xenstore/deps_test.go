package xenstore

import (
	"testing"

	"shi/internal/deptest"
)

// The core stays pure: no cluster code, no sockets.
func TestDeps(t *testing.T) {
	deptest.Forbid(t, "shi/internal/xenstore", append(deptest.Cluster, "net", "os/exec", "shi/internal/xenstore/server")...)
}
