package domain_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"shi/internal/domain"
	"shi/internal/domain/domaintest"
)

// TestXenLibsRefused: an agent without -xen-libs refuses a domain with
// xen_libs = 1, saying which flag it needs, and starts nothing.
func TestXenLibsRefused(t *testing.T) {
	e := domaintest.Start(t)
	cfg := domaintest.Config("xl", "sleeper", nil, "xen_libs = 1")
	_, err := e.Manager.Create(context.Background(), domain.Spec{Config: cfg})
	if !errors.Is(err, domain.ErrNoXenLibs) || !strings.Contains(err.Error(), "-xen-libs") {
		t.Fatalf("create: %v, want a refusal naming -xen-libs", err)
	}
	if ds := e.Manager.List(); len(ds) != 0 {
		t.Errorf("domains after the refusal: %v", ds)
	}
}
