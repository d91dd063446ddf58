package shm

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// testChildEnv selects a test's child role when the test binary is
// re-executed as the second process.
const testChildEnv = "SHI_SHM_TEST_CHILD"

var testChildren = map[string]func() error{}

func TestMain(m *testing.M) {
	if role := os.Getenv(testChildEnv); role != "" {
		f := testChildren[role]
		if f == nil {
			fmt.Fprintf(os.Stderr, "unknown test child %q\n", role)
			os.Exit(2)
		}
		if err := f(); err != nil {
			fmt.Fprintf(os.Stderr, "test child %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild re-executes the test binary in role with files as fds 3, ...
// and waits for it to exit successfully.
func runChild(t *testing.T, role string, files ...*os.File) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), testChildEnv+"="+role)
	cmd.ExtraFiles = files
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", role, err, out)
	}
}
