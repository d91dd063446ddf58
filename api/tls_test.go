package api

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A client with the server's CA talks HTTPS; without it, or with a bad
// file, it is refused with a reason.
func TestUseCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, Self{Name: "h0"})
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := NewClient(srv.URL)
	c.UseCA(ca)
	if s, err := c.Self(ctx); err != nil || s.Name != "h0" {
		t.Fatalf("with the CA: %+v %v", s, err)
	}
	if _, err := NewClient(srv.URL).Self(ctx); err == nil {
		t.Fatal("an unknown CA was trusted")
	}
	bad := NewClient(srv.URL)
	bad.UseCA(filepath.Join(dir, "missing.pem"))
	if _, err := bad.Self(ctx); err == nil || !strings.Contains(err.Error(), EnvCACert) {
		t.Fatalf("missing CA file: %v", err)
	}
}
