package cluster_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
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
		PublicKey:   helperKey(),
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
	proc  *proctest.Process
	stdin io.Closer // closing it stops the helper
}

var viewLine = regexp.MustCompile(`cluster view: (\d+) members?`)

// view returns the helper's last view line and the members it counts.
func (h *helper) view() (int, string) {
	out := h.proc.Stdout.String()
	out = out[:strings.LastIndexByte(out, '\n')+1] // whole lines only
	count, last := 0, ""
	for _, line := range strings.Split(out, "\n") {
		if m := viewLine.FindStringSubmatch(line); m != nil {
			count, _ = strconv.Atoi(m[1])
			last = line
		}
	}
	return count, last
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
		h := &helper{name: fmt.Sprintf("n%d", i)}
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
		h.stdin = stdin
		h.proc = proctest.Run(t, "helper "+h.name, cmd)
		nodes = append(nodes, h)
	}
	// Runs first, before the LAN's cleanup and proctest.Run's (which wait
	// for each helper to end, and log what it said if the test failed):
	// all helpers begin to stop at once.
	t.Cleanup(func() {
		for _, h := range nodes {
			_ = h.stdin.Close()
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

// helperKey is an identity key for a helper process's member.
func helperKey() []byte {
	pub, _, _ := ed25519.GenerateKey(nil)
	return pub
}
