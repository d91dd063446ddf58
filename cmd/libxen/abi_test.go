package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shi/internal/domain"
	"shi/internal/domain/domaintest"
	"shi/internal/libxentest"
)

// TestABI runs testdata/abi.c, a C program calling Xen's event-channel,
// grant and xc_* functions as a libxenvchan-like caller would, as a shi
// domain over the library: event delivery through poll and pending,
// coalescing, a blocking pending, restrict; grants shared, mapped side by
// side, copied, limited, and unmap/unshare notifications;
// xc_domain_getinfo's answers and ESRCH.
func TestABI(t *testing.T) {
	libs := libxentest.Build(t)
	prog := filepath.Join(libs, "abi")
	cc := exec.Command("gcc", "-Wall", "-Werror", "-O1", "-o", prog, "testdata/abi.c",
		"-L"+libs, "-l:libxenevtchn.so.1", "-lpthread")
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	e := domaintest.Start(t)
	env := libxentest.Env(libs)
	cfg := fmt.Sprintf("name = \"abi\"\ncmd = %q\nenv = [%q, %q]\n", prog, env[0], env[1])
	if _, err := e.Manager.Create(context.Background(), domain.Spec{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	x := e.WaitExit(t, "abi", 0, time.Minute)
	out := e.Output.String()
	if x.Status != (domain.ExitStatus{}) || !strings.Contains(out, "ok") {
		t.Fatalf("abi: %v\n%s", x.Status, out)
	}
}
