package api

import (
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

func TestSocketBeside(t *testing.T) {
	for xs, want := range map[string]string{
		"/run/shi/xenstored.sock": "/run/shi/api.sock",
		"/tmp/x/h0.sock":          "/tmp/x/h0.api.sock",
		"/tmp/x/xs":               "/tmp/x/xs.api.sock",
	} {
		if got := SocketBeside(xs); got != want {
			t.Errorf("SocketBeside(%q) = %q, want %q", xs, got, want)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for v, want := range map[string]string{
		"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "Bearer": "", "Bearer ": "", "": "",
	} {
		h := http.Header{}
		if v != "" {
			h.Set("Authorization", v)
		}
		got, ok := BearerToken(h)
		if got != want || ok != (want != "") {
			t.Errorf("BearerToken(%q) = %q %v, want %q", v, got, ok, want)
		}
	}
}

// TestClientFromEnv: SHI_AGENT and SHI_TOKEN as given; with neither, the
// socket beside XENSTORED_PATH's when it answers.
func TestClientFromEnv(t *testing.T) {
	dir := t.TempDir()
	xs := filepath.Join(dir, "h0.sock")
	env := map[string]string{EnvXenstore: xs}
	getenv := func(k string) string { return env[k] }
	if c := ClientFromEnv(getenv); c.URL == "unix:"+SocketBeside(xs) {
		t.Fatal("a socket nobody serves was chosen")
	}
	ln, err := net.Listen("unix", SocketBeside(xs))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if c := ClientFromEnv(getenv); c.URL != "unix:"+SocketBeside(xs) || c.Token != "" || c.Base() != "http://"+unixHost {
		t.Fatalf("with the socket served: %q %q %q", c.URL, c.Token, c.Base())
	}
	env[EnvToken] = "T"
	if c := ClientFromEnv(getenv); c.URL != "http://"+DefaultAddr || c.Token != "T" {
		t.Fatalf("with a token: %q %q", c.URL, c.Token)
	}
	env[EnvAgent] = "unix:/x/api.sock"
	if c := ClientFromEnv(getenv); c.URL != "unix:/x/api.sock" || c.WebSocketURL("/p") != "ws://"+unixHost+"/p" {
		t.Fatalf("SHI_AGENT=unix: %q %q", c.URL, c.WebSocketURL("/p"))
	}
}
