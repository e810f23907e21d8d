// Package clienttest helps test clients of chatr: it builds the chatr
// binary and starts real nodes from it, and it offers a FakeNode that runs
// in the test process.
package clienttest

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Main builds the chatr binary (unless -short), runs the tests and removes
// the binary. Call it from TestMain of a package whose tests use StartNode:
//
//	func TestMain(m *testing.M) { clienttest.Main(m) }
//
// A failed build fails the tests that need the binary, not the others.
func Main(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		Binary()
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Binary builds the chatr binary once per test process (go build
// ./cmd/chatr from the module root) and returns its path.
func Binary() (string, error) {
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil || strings.TrimSpace(string(out)) == "" {
			buildErr = fmt.Errorf("find the module root: %v", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		binDir, err = os.MkdirTemp("", "chatr-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(binDir, "chatr")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/chatr")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/chatr: %v\n%s", err, out)
		}
	})
	return binPath, buildErr
}

// Node is a chatr node process started by StartNode.
type Node struct {
	HTTP string // http://127.0.0.1:PORT
	WS   string // ws://127.0.0.1:PORT/chatr/ws
	Data string // its data directory

	cmd *exec.Cmd
	out *syncBuffer
}

// Output returns what the node printed so far.
func (n *Node) Output() string { return n.out.String() }

// StartNode starts `chatr serve --http 127.0.0.1:PORT --data DIR [args]`
// on a free port, waits until /readyz answers 200 and stops the node in
// t.Cleanup. On a failed test it logs what the node printed.
func StartNode(t testing.TB, args ...string) *Node {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	n := &Node{
		HTTP: "http://" + addr,
		WS:   "ws://" + addr + "/chatr/ws",
		Data: t.TempDir(),
		out:  &syncBuffer{},
	}
	n.cmd = exec.Command(bin, append([]string{"serve", "--http", addr, "--data", n.Data}, args...)...)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		n.cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("node %s output:\n%s", addr, n.Output())
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(n.HTTP + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return n
			}
		}
		select {
		case <-exited:
			t.Fatalf("node exited before it was ready:\n%s", n.Output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not ready after 30s (last: %v)", addr, err)
		}
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Eventually calls cond every few milliseconds until it returns true, and
// fails the test if it has not by the deadline.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
