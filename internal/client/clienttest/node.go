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

	out proctest.Buffer
}

// Output returns what the node printed so far.
func (n *Node) Output() string { return n.out.String() }

// StartNode starts `chatr serve --http 127.0.0.1:PORT --data DIR [args]`
// on a free port, waits until /readyz answers 200 and stops the node in
// t.Cleanup. On a failed test it logs what the node printed. The test
// binary's TestMain should call proctest.Main, which builds chatr.
func StartNode(t testing.TB, args ...string) *Node {
	t.Helper()
	bin, err := proctest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	addr := proctest.FreeAddr(t)
	n := &Node{
		HTTP: "http://" + addr,
		WS:   "ws://" + addr + "/chatr/ws",
		Data: t.TempDir(),
	}
	cmd := exec.Command(bin, append([]string{"serve", "--http", addr, "--data", n.Data}, args...)...)
	cmd.Stdout, cmd.Stderr = &n.out, &n.out
	p, err := proctest.Start(cmd)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("node %s output:\n%s", addr, n.Output())
		}
	})
	if err := p.WaitReady(n.HTTP, 30*time.Second); err != nil {
		t.Fatalf("node %s: %v", addr, err) // t.Cleanup logs its output
	}
	return n
}
