package clustertest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"shi/internal/libxentest"
)

// buildVchanEcho compiles testdata/vchan-echo.c, a program of Debian's
// unmodified libxenvchan, into libs (which domains can reach).
func buildVchanEcho(t *testing.T, libs string) string {
	t.Helper()
	prog := filepath.Join(libs, "vchan-echo")
	cc := exec.Command("gcc", "-Wall", "-Werror", "-O1", "-o", prog, "testdata/vchan-echo.c", "-l:libxenvchan.so.4.17")
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s (scripts/deps.sh installs libxenmisc4.17)", err, out)
	}
	return prog
}

// pagedRings runs vchan-echo (prog) as two domains, the server on host
// s and the client on host k, with rings in separate granted pages (64
// and 16 KiB), which vchan-socket-proxy never asks for: shared with
// xengntshr_share_pages, mapped side by side with
// xengnttab_map_domain_grant_refs, and at the close unmapped by
// libxenvchan with munmap. The client's bytes come back intact and both
// ends leave cleanly.
func pagedRings(t *testing.T, c *Cluster, prog string, s, k int) {
	const bytes = 8 << 20
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sh, ch := c.Host(s), c.Host(k)
	script := fmt.Sprintf(`until p=$(xenstore-read /local/domain/$SHI_DOMID/data/peer 2>/dev/null); do sleep 0.05; done; exec %s server "$p" data/vchan 65536 16384`,
		libxentest.Shell(prog))
	srv := createOn(t, ctx, sh, proxyConfig("echo-srv", "/bin/sh", "-c", script))
	path := fmt.Sprintf("/local/domain/%d/data/vchan", srv.ID)
	cli := createOn(t, ctx, ch, proxyConfig("echo-cli", prog, "client", strconv.Itoa(int(srv.ID)), path, strconv.Itoa(bytes)))
	if err := sh.XS().Write(fmt.Sprintf("/local/domain/%d/data/peer", srv.ID), []byte(strconv.Itoa(int(cli.ID)))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cliOut := waitEnd(t, ch, cli, 2*time.Minute)
	took := time.Since(start)
	srvOut := waitEnd(t, sh, srv, time.Minute)
	if cliOut.Exit != "exit code 0" || srvOut.Exit != "exit code 0" {
		t.Fatalf("client: %s\n  %s\nserver: %s\n  %s", cliOut.Exit, strings.Join(cliOut.Lines, "\n  "), srvOut.Exit, strings.Join(srvOut.Lines, "\n  "))
	}
	t.Logf("%d MiB echoed through 64/16 KiB rings in %v, both ends left cleanly", bytes>>20, took.Round(time.Millisecond))
}
