// Package proctest helps tests that run chatr as a process, or wait on
// anything else that works in the background: it builds the chatr binary
// once per test binary, starts processes and waits until a node is ready,
// finds free ports, captures output safely, and waits for a condition with
// a deadline. It imports only the standard library, so that any package's
// tests can use it without an import cycle.
package proctest

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent use: a process's pipes write
// it while the test reads it. The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Eventually polls often at first and then less: a condition that holds
// soon is seen within 10 ms, and one that polls a cluster over HTTP or a
// browser does not load a 2-core machine with hundreds of requests a second.
const (
	firstPoll = 10 * time.Millisecond
	maxPoll   = 100 * time.Millisecond
)

// Eventually calls cond until it returns nil, and returns how long that
// took. If cond still returns an error once within has passed, Eventually
// fails the test with that last error, so make it say what the test waits
// for and what it saw instead. Call it from the test's goroutine.
func Eventually(t testing.TB, within time.Duration, cond func() error) time.Duration {
	t.Helper()
	took, err := Poll(within, cond)
	if err != nil {
		t.Fatalf("not within %v: %v", within, err)
	}
	return took
}

// Poll is Eventually for a check that reports what it saw rather than
// failing the test: it calls cond until it returns nil and returns how long
// that took, or, once within has passed, cond's last error. It may be
// called from any goroutine.
func Poll(within time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	poll := firstPoll
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > within {
			return time.Since(start), err
		}
		time.Sleep(poll) // the poll interval, not a guess at how long the wait takes
		poll = min(2*poll, maxPoll)
	}
}

// FreeAddr returns a 127.0.0.1 address with a TCP port that was free a
// moment ago. Someone else may take it before the test does.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestSecret is the cluster secret the tests' clusters share (a key as
// `chatr secret` prints it; for tests only).
const TestSecret = "dGVzdC1zZWNyZXQtb2YtY2hhdHItY2x1c3RlcnMtMDA"

// WithSecret adds --secret TestSecret to a node's serve flags, unless they
// choose a secret (or none) themselves: nodes of one test cluster need the
// same one.
func WithSecret(args []string) []string {
	for _, a := range args {
		if a == "--secret" || a == "--secret-file" || a == "--insecure-no-secret" ||
			strings.HasPrefix(a, "--secret=") || strings.HasPrefix(a, "--secret-file=") {
			return args
		}
	}
	return append(args, "--secret", TestSecret)
}
