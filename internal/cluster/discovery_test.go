package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatr/internal/cluster"
	"chatr/internal/clustertest"
	"chatr/internal/proctest"
)

// The LAN discovery test runs three bare members with DiscoverLAN and no
// Join, each in its own network namespace on a virtual LAN: multicast never
// leaves those namespaces. Each member is this test binary re-executed as
// TestHelperNode; it prints its console lines, which the test reads.

const helperEnv = "CHATR_CLUSTER_HELPER"

// TestHelperNode is not a test: it is one cluster member of TestDiscoverLAN,
// run inside a network namespace. It runs until its stdin closes.
func TestHelperNode(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process of TestDiscoverLAN")
	}
	// Never announce on the machine's own network: only inside a namespace
	// the parent test made.
	if self, _ := os.Readlink("/proc/self/ns/net"); self == "" || self == os.Getenv("CHATR_HELPER_PARENT_NETNS") {
		t.Fatalf("helper node refuses to run mDNS outside a test namespace (netns %q)", self)
	}
	level := slog.LevelInfo
	if os.Getenv("CHATR_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	c, err := cluster.New(cluster.Config{
		NodeID:      os.Getenv("CHATR_HELPER_ID"),
		NodeName:    os.Getenv("CHATR_HELPER_NAME"),
		BindAddr:    os.Getenv("CHATR_HELPER_BIND"),
		HTTPAddr:    os.Getenv("CHATR_HELPER_BIND"),
		DiscoverLAN: true,
		Console:     os.Stdout,
		Log:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = c.Shutdown(sctx)
}

// helper is a running helper node as the parent test sees it.
type helper struct {
	name  string
	stdin io.Closer
	done  chan struct{}

	mu    sync.Mutex
	out   []string // stdout lines
	errs  strings.Builder
	count int // members in the last view line
	last  string
}

var viewLine = regexp.MustCompile(`cluster view: (\d+) members?`)

func (h *helper) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		h.mu.Lock()
		h.out = append(h.out, line)
		if m := viewLine.FindStringSubmatch(line); m != nil {
			h.count, _ = strconv.Atoi(m[1])
			h.last = line
		}
		h.mu.Unlock()
	}
}

func (h *helper) view() (int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count, h.last
}

func (h *helper) Write(p []byte) (int, error) { // stderr
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.errs.Len() < 1<<20 {
		h.errs.Write(p)
	}
	return len(p), nil
}

func TestDiscoverLAN(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("inside a helper")
	}
	lan := clustertest.NewLAN(t, 3)
	parentNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("read own network namespace: %v", err)
	}
	var nodes []*helper
	for i := range 3 {
		h := &helper{name: fmt.Sprintf("n%d", i), done: make(chan struct{})}
		cmd := lan.Command(i, os.Args[0], "-test.run=^TestHelperNode$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"=1",
			"CHATR_HELPER_PARENT_NETNS="+parentNS,
			fmt.Sprintf("CHATR_HELPER_ID=%012x", 0xa0+i),
			"CHATR_HELPER_NAME="+h.name,
			"CHATR_HELPER_BIND="+lan.Addr(i)+":7946")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = h
		if err := cmd.Start(); err != nil {
			t.Fatalf("start helper %d: %v", i, err)
		}
		h.stdin = stdin
		go func() {
			h.read(stdout)
			_ = cmd.Wait()
			close(h.done)
		}()
		nodes = append(nodes, h)
	}
	// Runs before the LAN's cleanup: stop the helpers cleanly (the LAN kills
	// whatever is left), and show what they said when the test failed.
	t.Cleanup(func() {
		stopping := time.Now()
		defer func() { t.Logf("helpers stopped in %v", time.Since(stopping).Round(10*time.Millisecond)) }()
		for _, h := range nodes {
			_ = h.stdin.Close()
		}
		for _, h := range nodes {
			select {
			case <-h.done:
			case <-time.After(10 * time.Second):
				t.Errorf("helper %s did not stop", h.name)
			}
			if t.Failed() {
				h.mu.Lock()
				t.Logf("%s stdout:\n%s\n%s stderr:\n%s", h.name, strings.Join(h.out, "\n"), h.name, h.errs.String())
				h.mu.Unlock()
			}
		}
	})
	// all is a condition: node i's last view line lists want[i] members.
	all := func(what string, want ...int) func() error {
		return func() error {
			for i, h := range nodes {
				if n, last := h.view(); n != want[i] {
					return fmt.Errorf("%s: %s lists %d members, want %d (last view line %q)", what, h.name, n, want[i], last)
				}
			}
			return nil
		}
	}

	d := proctest.Eventually(t, 30*time.Second, all("3 members find each other by mDNS", 3, 3, 3))
	t.Logf("discovered in %v", d.Round(10*time.Millisecond))

	lan.Cut(2)
	d = proctest.Eventually(t, 20*time.Second, all("the cut node is seen failed on both sides", 2, 2, 1))
	t.Logf("cut seen in %v", d.Round(10*time.Millisecond))
	for _, h := range nodes[:2] {
		if _, last := h.view(); !strings.HasSuffix(last, "after n2 failed") {
			t.Fatalf("%s: %q", h.name, last)
		}
	}

	lan.Heal(2)
	d = proctest.Eventually(t, 30*time.Second, all("all 3 together again after the heal", 3, 3, 3))
	t.Logf("healed in %v", d.Round(10*time.Millisecond))
}
