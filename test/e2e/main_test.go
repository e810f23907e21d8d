// Package e2e tests the chatr binary as people run it: real processes on
// 127.0.0.1 with distinct ports, killed with SIGKILL and restarted on their
// data, fed bad peers and garbage, and (as root) nodes in network
// namespaces that find each other with mDNS.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatr/internal/clustertest"
	"chatr/internal/natstest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// binary is the chatr binary TestMain built; empty with -short.
var binary string

// TestMain builds the binary once for every test (unless -short), and
// removes it at the end; run as a NATS server, it serves instead.
func TestMain(m *testing.M) {
	natstest.ServeIfChild() // when this process is a NATS server of natstest.StartProcesses
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	bin, err := proctest.Binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		proctest.RemoveBinary()
		os.Exit(1)
	}
	binary = bin
	code := m.Run()
	proctest.RemoveBinary()
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

// startProc runs cmd until the test ends (proctest.Run) in a process group
// of its own, so that the kill at the end also reaches what it started.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proctest.Process {
	t.Helper()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return proctest.Run(t, name, cmd)
}

// localNode is a node on 127.0.0.1: fixed ports, so a restart reuses them.
type localNode struct {
	name   string
	http   string // 127.0.0.1:port
	gossip string // 127.0.0.1:port
	admin  string // 127.0.0.1:port of the admin listener (metrics)
	data   string
	extra  []string
	// natsURL, when set, runs the node on the NATS engine with those
	// servers instead of joining the others over gossip.
	natsURL string
	// ownSecret starts the node with no secret flag: in cluster mode it uses
	// (or makes) the one kept in its data directory.
	ownSecret bool
	proc      *proctest.Process
}

// newLocalNodes makes n node slots with free ports and data directories.
func newLocalNodes(t *testing.T, n int) []*localNode {
	t.Helper()
	ports, err := clustertest.FreePorts(3 * n)
	if err != nil {
		t.Fatal(err)
	}
	var out []*localNode
	for i := range n {
		out = append(out, &localNode{name: fmt.Sprintf("n%d", i+1), data: t.TempDir(),
			http:   "127.0.0.1:" + strconv.Itoa(ports[i]),
			gossip: "127.0.0.1:" + strconv.Itoa(ports[n+i]),
			admin:  "127.0.0.1:" + strconv.Itoa(ports[2*n+i])})
	}
	return out
}

// start runs the node with --join set to join (when not empty; the local
// engine only).
func (n *localNode) start(t *testing.T, join ...string) {
	t.Helper()
	args := []string{"serve", "--http", n.http, "--admin-http", n.admin, "--data", n.data, "--node", n.name,
		"--shutdown-timeout", "3s", "--send-rate", "1000000", "--send-burst", "1000000"}
	if n.natsURL != "" {
		args = append(args, "--engine", "nats", "--nats-url", n.natsURL)
	} else {
		args = append(args, "--cluster-addr", n.gossip)
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(args, n.extra...)
	if !n.ownSecret {
		args = proctest.WithSecret(args)
	}
	n.proc = startProc(t, n.name, exec.Command(binary, args...))
}

// kill9 kills the node with SIGKILL and waits until it is gone.
func (n *localNode) kill9(t *testing.T) {
	t.Helper()
	if err := n.proc.Kill(); err != nil {
		t.Fatalf("kill -9 %s: %v", n.name, err)
	}
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
	proctest.Eventually(t, timeout, func() error {
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
	proctest.Eventually(t, startTimeout, func() error {
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
	proctest.Eventually(t, timeout, func() error {
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
