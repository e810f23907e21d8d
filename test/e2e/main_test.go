// Package e2e tests the chatr binary as people run it: real processes on
// 127.0.0.1 with distinct ports, killed with SIGKILL and restarted on their
// data, fed bad peers and garbage, and (as root) nodes in network
// namespaces that find each other with mDNS.
package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatr/internal/clustertest"
	"chatr/internal/proto"
)

// binary is the chatr binary TestMain built; empty with -short.
var binary string

// TestMain builds the binary once (go build ./cmd/chatr from the module
// root) for every test, and removes it at the end.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "chatr-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil || strings.TrimSpace(string(gomod)) == "" {
			fmt.Fprintf(os.Stderr, "e2e: find the module root: %v\n", err)
			return 1
		}
		binary = filepath.Join(dir, "chatr")
		build := exec.Command("go", "build", "-o", binary, "./cmd/chatr")
		build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/chatr: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func needBinary(t *testing.T) {
	t.Helper()
	if binary == "" {
		t.Skip("e2e: -short: the chatr binary is not built")
	}
}

// Timeouts: a node starts in well under a second; failure detection takes
// about 3 s and a re-merge a few more; these leave room for a loaded
// machine.
const (
	startTimeout    = 30 * time.Second
	convergeTimeout = 45 * time.Second
	requestTimeout  = 15 * time.Second
)

// proc is one chatr process.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	exited chan struct{}
}

// startProc starts cmd (its Stdout and Stderr are set here) and stops it
// when the test ends: SIGTERM, then SIGKILL to its process group after
// 10 s. A failed test prints what it wrote.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() || os.Getenv("CHATR_TEST_LOGS") != "" {
			t.Logf("---- %s (%s) stdout ----\n%s", name, strings.Join(cmd.Args, " "), tail(p.stdout.String(), 100))
			t.Logf("---- %s stderr ----\n%s", name, tail(p.stderr.String(), 150))
		}
	})
	return p
}

// stop sends SIGTERM and waits, then SIGKILLs the group.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s did not stop within 10s of SIGTERM; killing it", p.name)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// kill9 kills the process with SIGKILL and waits for it to be gone.
func (p *proc) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	<-p.exited
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
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

func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// localNode is a node on 127.0.0.1: fixed ports, so a restart reuses them.
type localNode struct {
	name   string
	http   string // 127.0.0.1:port
	gossip string // 127.0.0.1:port
	data   string
	extra  []string
	proc   *proc
}

// newLocalNodes makes n node slots with free ports and data directories.
func newLocalNodes(t *testing.T, n int) []*localNode {
	t.Helper()
	ports, err := clustertest.FreePorts(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	var out []*localNode
	for i := range n {
		out = append(out, &localNode{name: fmt.Sprintf("n%d", i+1), data: t.TempDir(),
			http:   "127.0.0.1:" + strconv.Itoa(ports[i]),
			gossip: "127.0.0.1:" + strconv.Itoa(ports[n+i])})
	}
	return out
}

// start runs the node with --join set to join (when not empty).
func (n *localNode) start(t *testing.T, join ...string) {
	t.Helper()
	args := []string{"serve", "--http", n.http, "--cluster-addr", n.gossip, "--data", n.data, "--node", n.name,
		"--shutdown-timeout", "3s", "--send-rate", "1000000", "--send-burst", "1000000"}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(args, n.extra...)
	n.proc = startProc(t, n.name, exec.Command(binary, args...))
}

func (n *localNode) api() clustertest.API {
	return clustertest.API{Base: "http://" + n.http, Fetch: clustertest.HTTPFetch(httpClient)}
}

var httpClient = &http.Client{Timeout: requestTimeout}

func reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), requestTimeout)
}

// waitAlive waits until every API is ready and lists every id in ids as
// alive, and none other.
func waitAlive(t *testing.T, timeout time.Duration, apis []clustertest.API, ids []string) {
	t.Helper()
	clustertest.Eventually(t, timeout, func() error {
		for _, a := range apis {
			ctx, cancel := reqCtx()
			err := a.Ready(ctx)
			var v clustertest.ClusterView
			if err == nil {
				v, err = a.Cluster(ctx)
			}
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", a.Base, err)
			}
			alive := v.Alive()
			if len(alive) != len(ids) {
				return fmt.Errorf("%s lists %d alive members, want %d: %s", a.Base, len(alive), len(ids), v)
			}
			for _, id := range ids {
				if !alive[id] {
					return fmt.Errorf("%s does not list %s as alive: %s", a.Base, id, v)
				}
			}
		}
		return nil
	})
}

// selfID reads a node's own id from its cluster view.
func selfID(t *testing.T, a clustertest.API) string {
	t.Helper()
	var id string
	clustertest.Eventually(t, startTimeout, func() error {
		ctx, cancel := reqCtx()
		defer cancel()
		v, err := a.Cluster(ctx)
		id = v.Self
		return err
	})
	return id
}

// waitSameHistory waits until every API lists the same history of room,
// well ordered and without gaps, holding want messages, and returns it.
func waitSameHistory(t *testing.T, timeout time.Duration, apis []clustertest.API, room string, want int) []proto.MessageJSON {
	t.Helper()
	var first []proto.MessageJSON
	clustertest.Eventually(t, timeout, func() error {
		for k, a := range apis {
			ctx, cancel := reqCtx()
			h, err := a.History(ctx, room)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", a.Base, err)
			}
			if err := clustertest.CheckHistory(h); err != nil {
				return fmt.Errorf("%s: %w", a.Base, err)
			}
			if err := clustertest.CheckNoGaps(h); err != nil {
				return fmt.Errorf("%s: %w", a.Base, err)
			}
			if len(h) != want {
				return fmt.Errorf("%s holds %d messages of %s, want %d", a.Base, len(h), room, want)
			}
			if k == 0 {
				first = h
			} else if err := clustertest.SameHistory(first, h); err != nil {
				return fmt.Errorf("%s and %s differ: %w", apis[0].Base, a.Base, err)
			}
		}
		return nil
	})
	return first
}

// post posts n messages to a, failing the test on any error.
func post(t *testing.T, a clustertest.API, room, sender string, n int, tag string) {
	t.Helper()
	if err := postN(a, room, sender, n, tag); err != nil {
		t.Fatal(err)
	}
}

// postN posts n messages to a and stops at the first error.
func postN(a clustertest.API, room, sender string, n int, tag string) error {
	for k := range n {
		ctx, cancel := reqCtx()
		_, err := a.Post(ctx, room, sender, fmt.Sprintf("%s #%d", tag, k))
		cancel()
		if err != nil {
			return fmt.Errorf("post to %s: %w", a.Base, err)
		}
	}
	return nil
}
