// Package clienttest helps test clients of chatr and the WebSocket side of
// nodes: it starts real nodes from the chatr binary that proctest builds,
// it offers a FakeNode that runs in the test process, and Raw, a session
// that sends and reads the protocol frame by frame.
package clienttest

import (
	"os/exec"
	"testing"
	"time"

	"chatr/internal/proctest"
)

// Node is a chatr node process started by StartNode.
type Node struct {
	HTTP string // http://127.0.0.1:PORT
	WS   string // ws://127.0.0.1:PORT/chatr/ws
	Data string // its data directory

	// Process is the node's process; its Stdout and Stderr hold what it
	// printed so far.
	Process *proctest.Process
}

// StartNode starts `chatr serve --http 127.0.0.1:PORT --data DIR [args]`
// on a free port (the admin listener on any free port: its default, the
// port + 10, may be another test's) and waits until /readyz answers 200; the node stops when
// the test ends (proctest.Run), which logs what it printed if the test
// failed. The test binary's TestMain should call proctest.Main, which builds
// chatr; with -short the test is skipped.
func StartNode(t testing.TB, args ...string) *Node {
	t.Helper()
	bin := proctest.NeedBinary(t)
	addr := proctest.FreeAddr(t)
	n := &Node{
		HTTP: "http://" + addr,
		WS:   "ws://" + addr + "/chatr/ws",
		Data: t.TempDir(),
	}
	cmd := exec.Command(bin, append([]string{"serve", "--http", addr, "--data", n.Data, "--admin-http", "127.0.0.1:0"}, args...)...)
	n.Process = proctest.Run(t, "node "+addr, cmd)
	if err := n.Process.WaitReady(n.HTTP, 30*time.Second); err != nil {
		t.Fatalf("node %s: %v", addr, err) // the cleanup logs its output
	}
	return n
}
