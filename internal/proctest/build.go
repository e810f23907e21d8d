package proctest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Build builds ./cmd/chatr of the module that holds the working directory
// into dir, with extra go build flags (such as -ldflags), and returns the
// binary's path.
func Build(dir string, flags ...string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		return "", fmt.Errorf("find the module root (go env GOMOD): %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "chatr")
	args := append(append([]string{"build", "-o", bin}, flags...), "./cmd/chatr")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/chatr in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Binary builds the chatr binary once per test binary, into a temporary
// directory that RemoveBinary removes, and returns its path. Every call
// returns the same path, or the same error.
func Binary() (string, error) {
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "chatr-test-bin-")
		if buildErr != nil {
			return
		}
		binPath, buildErr = Build(binDir)
	})
	return binPath, buildErr
}

// NeedBinary returns the binary that Binary builds, for a test that runs
// it. With -short, which builds nothing (see Main), it skips the test; a
// failed build fails it.
func NeedBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: this test runs the chatr binary")
	}
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// RemoveBinary removes what Binary built. Call it from TestMain once the
// tests have run.
func RemoveBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Main builds the chatr binary (unless -short), runs the tests and removes
// the binary. Call it from TestMain of a package whose tests need the
// binary:
//
//	func TestMain(m *testing.M) { proctest.Main(m) }
//
// A failed build fails the tests that ask Binary for it, not the others.
func Main(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		Binary()
	}
	code := m.Run()
	RemoveBinary()
	os.Exit(code)
}
