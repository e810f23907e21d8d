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

// pollInterval is how often Eventually checks its condition: often enough
// not to slow a test down, seldom enough not to load the machine.
const pollInterval = 10 * time.Millisecond

// Eventually calls cond every few milliseconds until it returns true, and
// fails the test if it has not by the deadline; what says what the test
// waited for.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(pollInterval)
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
