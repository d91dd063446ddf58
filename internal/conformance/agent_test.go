package conformance

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"shi/api"
)

// TestAgentLifecycle checks the contract scripts rely on: exactly two lines
// on stdout naming the socket and the API, the API describing the same
// socket, and a clean exit that removes the socket on SIGTERM and SIGINT.
func TestAgentLifecycle(t *testing.T) {
	realProcesses(t)
	shi := mustShi(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "xs.sock")
			a, err := startAgent(shi, sock)
			if err != nil {
				t.Fatal(err)
			}
			if a.socket != sock {
				t.Errorf("XENSTORED_PATH=%s, want %s", a.socket, sock)
			}
			if !regexp.MustCompile(`^http://127\.0\.0\.1:[0-9]+$`).MatchString(a.url) {
				t.Errorf("SHI_AGENT=%s, want http://127.0.0.1:PORT", a.url)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			self, err := api.NewClient(a.url).Self(ctx)
			if err != nil || self.XenstoreSocket != sock {
				t.Errorf("Self = %+v, %v", self, err)
			}
			if c, err := net.Dial("unix", sock); err != nil {
				t.Errorf("socket does not answer: %v", err)
			} else {
				c.Close()
			}
			if err := a.stop(sig); err != nil {
				t.Fatalf("exit after %v: %v\n%s", sig, err, a.stderr)
			}
			if extra := a.extraLines(); len(a.stdout) != 2 || len(extra) != 0 {
				t.Errorf("stdout had %q then %q, want exactly the two lines", a.stdout, extra)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("socket left behind after %v: %v", sig, err)
			}
		})
	}
}
