package directory

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// With a cluster key, a forwarded request without a valid HMAC is refused
// before anything else happens; the key's owner passes.
func TestForwardAuth(t *testing.T) {
	c := &Cluster{Key: []byte("0123456789abcdef")}
	body := NoopEntry()
	for _, tc := range []struct {
		name string
		mac  string
		ok   bool
	}{
		{"none", "", false},
		{"garbage", "zz", false},
		{"other key", (&Cluster{Key: []byte("fedcba9876543210")}).mac(body), false},
		{"right", c.mac(body), true},
	} {
		r := httptest.NewRequest(http.MethodPost, "/v1/internal/commit", strings.NewReader(string(body)))
		if tc.mac != "" {
			r.Header.Set(authHeader, tc.mac)
		}
		if got := c.authentic(r, body); got != tc.ok {
			t.Errorf("%s: authentic = %v", tc.name, got)
		}
	}
	w := httptest.NewRecorder()
	c.ServeCommit(w, httptest.NewRequest(http.MethodPost, "/v1/internal/commit", strings.NewReader(string(body))))
	if w.Code != http.StatusForbidden {
		t.Fatalf("unauthenticated commit: %d %s", w.Code, w.Body)
	}
	if !(&Cluster{}).authentic(httptest.NewRequest(http.MethodPost, "/", nil), nil) {
		t.Fatal("without a key every request must pass")
	}
}
