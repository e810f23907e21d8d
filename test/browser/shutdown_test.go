package browser

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatr/internal/proctest"
)

// TestPageFailsOverWhenItsNodeStops: a node that is shutting down answers
// a send with unavailable and the other nodes in `nodes`. The page keeps
// the message, goes to one of those nodes and sends it again there with
// the same ref: it is shown once, stored once, and the outbox empties.
//
// The answer is the node's (docs/protocol.md), put on the page's socket by
// the test while alpha is frozen, so the send is surely unanswered when it
// comes; when alpha thaws it stores its own copy of the send, later than
// beta's, which every node then hides: the page still shows it once.
func TestPageFailsOverWhenItsNodeStops(t *testing.T) {
	requireBrowser(t)
	t.Parallel()
	gossip := proctest.FreeAddr(t)
	alpha := startServer(t, "--node", "alpha", "--cluster-addr", gossip)
	beta := startServer(t, "--node", "beta", "--cluster-addr", proctest.FreeAddr(t), "--join", gossip)
	for _, s := range []*server{alpha, beta} {
		proctest.Eventually(t, waitTimeout, func() error {
			if alive := aliveMembers(t, s); len(alive) != 2 {
				return fmt.Errorf("%s does not see 2 alive members (it sees %q)", s.addr, alive)
			}
			return nil
		})
	}
	browser := newBrowser(t, 90*time.Second)
	x := openRecordedPage(t, browser, alpha.url("/chatr/chatr.html"), "xena")
	x.waitStatus("connected to alpha")
	x.send("x: before")
	x.waitShows("x: before")

	const text = "x: sent while alpha stops"
	if err := alpha.proc.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP alpha: %v", err)
	}
	t.Cleanup(func() { _ = alpha.proc.Cmd.Process.Signal(syscall.SIGCONT) })
	x.send(text)
	var ref string
	proctest.Eventually(t, waitTimeout, func() error {
		for _, e := range x.wsLog() {
			if f := e.frame(); e.Dir == "out" && f.Type == "send" && f.Text == text {
				ref = f.Ref
				return nil
			}
		}
		return fmt.Errorf("the send has not left the page")
	})
	refusal := fmt.Sprintf(`{"type":"error","ref":%s,"code":"unavailable","message":"the node is shutting down","nodes":[{"id":%s,"name":"beta","http":%s}]}`,
		jsString(ref), jsString(nodeID(t, beta)), jsString(beta.addr))
	if _, err := eval[bool](x, `(() => {
		const r = window.__chatrWS, s = r.sockets[r.sockets.length - 1];
		s.dispatchEvent(new MessageEvent('message', { data: `+jsString(refusal)+` }));
		return true;
	})()`); err != nil {
		t.Fatalf("X's page: the refusal: %v", err)
	}
	x.waitStatus("reconnected to beta")
	x.waitShows("x: before", text)
	waitStored(t, beta, "lobby", text)
	betaID := nodeID(t, beta)
	proctest.Eventually(t, waitTimeout, func() error {
		if n := x.outboxLen(); n != 0 {
			return fmt.Errorf("the outbox holds %d sends", n)
		}
		return nil
	})
	sends := 0
	for _, e := range x.wsLog() {
		if f := e.frame(); e.Dir == "out" && f.Type == "send" && f.Text == text {
			sends++
			if f.Ref != ref {
				t.Errorf("the send went again with ref %q, want the same %q", f.Ref, ref)
			}
		}
	}
	if sends != 2 {
		t.Errorf("the page sent the message %d times, want twice (alpha, then beta)", sends)
	}

	// Alpha thaws and stores its copy of the send; beta's is earlier.
	if err := alpha.proc.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT alpha: %v", err)
	}
	proctest.Eventually(t, waitTimeout, func() error {
		for _, s := range []*server{alpha, beta} {
			n := 0
			for _, m := range storedMessages(t, s, "lobby") {
				if m.Text == text {
					n++
					if !strings.HasPrefix(m.ID, betaID+"-") {
						return fmt.Errorf("%s lists the send as %s, want beta's copy", s.addr, m.ID)
					}
				}
			}
			if n != 1 {
				return fmt.Errorf("%s lists the send %d times", s.addr, n)
			}
		}
		return nil
	})
	shown := x.waitShows("x: before", text)
	checkUnique(t, shown)

	// A hidden frame takes a shown copy off the page (here one that is no
	// copy at all: the page cannot tell, and need not).
	var before string
	for _, m := range shown {
		if m.Text == "x: before" {
			before = m.ID
		}
	}
	hidden := fmt.Sprintf(`{"type":"hidden","room":"lobby","id":%s}`, jsString(before))
	if _, err := eval[bool](x, `(() => {
		const r = window.__chatrWS, s = r.sockets[r.sockets.length - 1];
		s.dispatchEvent(new MessageEvent('message', { data: `+jsString(hidden)+` }));
		return true;
	})()`); err != nil {
		t.Fatalf("X's page: the hidden frame: %v", err)
	}
	x.waitShows(text)
}
