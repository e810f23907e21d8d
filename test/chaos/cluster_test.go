package chaos

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/clustertest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// Ports every node listens on, each at its own LAN address.
const (
	httpPort   = 5080
	gossipPort = 7946
)

// Bounds of the harness, for a loaded 2-core machine: a node starts in
// about a second, failure detection takes about 3 s, a healed partition
// re-merges within the reconnect loop's 3 s backoff.
const (
	readyTimeout    = 30 * time.Second
	convergeTimeout = 30 * time.Second
	requestTimeout  = 5 * time.Second
	// stopGrace is how long a SIGTERMed node may drain (it runs with
	// --shutdown-timeout 5s) before it is killed.
	stopGrace = 15 * time.Second
)

// nodeState is where a node is in the schedule. Only the test goroutine
// moves it.
type nodeState int

const (
	nodeUp     nodeState = iota // running
	nodePaused                  // SIGSTOPped
	nodeDown                    // exited: killed or stopped
)

func (s nodeState) String() string {
	return [...]string{"up", "paused", "down"}[s]
}

// chaosNode is one node slot: its address and data directory are kept
// across restarts.
type chaosNode struct {
	index int
	name  string // --node: n1, n2, ...
	addr  string // 10.77.0.(index+1)
	data  string
	id    string          // its node id, read at its first start
	logs  proctest.Buffer // what every run printed, with a line per start

	proc  *proctest.Process // the current run
	state nodeState
	runs  int
}

func (n *chaosNode) base() string { return fmt.Sprintf("http://%s:%d", n.addr, httpPort) }

// cluster is the nodes, in LAN hosts 0..n-1, and the clients' namespace,
// host n, from which every request of the test is made.
type cluster struct {
	t      *testing.T
	cfg    config
	lan    *clustertest.LAN
	bin    string
	nodes  []*chaosNode
	start  time.Time
	hc     *http.Client      // API requests, from the clients' namespace
	wsHTTP *http.Client      // WebSocket handshakes, likewise (no Timeout: coder/websocket refuses one)
	fetch  clustertest.Fetch // over hc
}

// newCluster makes the LAN and starts every node, and waits until each
// lists all as alive.
func newCluster(t *testing.T, cfg config) *cluster {
	t.Helper()
	c := &cluster{t: t, cfg: cfg, start: time.Now()}
	for i := range cfg.nodes {
		// Made before the LAN, so removed after its cleanup killed the
		// processes writing them.
		c.nodes = append(c.nodes, &chaosNode{index: i, name: fmt.Sprintf("n%d", i+1), data: t.TempDir()})
	}
	c.lan = clustertest.NewLAN(t, cfg.nodes+1) // skips when not root
	bin, err := proctest.Binary()
	if err != nil {
		t.Fatalf("chaos: %v", err)
	}
	c.bin = bin
	for _, n := range c.nodes {
		n.addr = c.lan.Addr(n.index)
	}
	dial := c.lan.DialContext(cfg.nodes)
	c.hc = &http.Client{Timeout: requestTimeout, Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 4}}
	c.wsHTTP = &http.Client{Transport: &http.Transport{DialContext: dial}}
	c.fetch = clustertest.HTTPFetch(c.hc)
	t.Cleanup(c.cleanup) // before the LAN's: kills the nodes, prints their logs
	for _, n := range c.nodes {
		c.run(n)
	}
	for _, n := range c.nodes {
		c.waitReady(n)
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		v, err := c.api(n.index).Cluster(ctx)
		cancel()
		if err != nil {
			t.Fatalf("chaos: read %s's id: %v", n.name, err)
		}
		n.id = v.Self
	}
	if err := c.waitMembers(readyTimeout); err != nil {
		t.Fatalf("chaos: the cluster did not form: %v", err)
	}
	return c
}

// logf logs with the time since the start.
func (c *cluster) logf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("%6.1fs "+format, append([]any{time.Since(c.start).Seconds()}, args...)...)
}

func (c *cluster) api(i int) clustertest.API {
	return clustertest.API{Base: c.nodes[i].base(), Fetch: c.fetch}
}

// run starts node n's process on its data directory.
func (c *cluster) run(n *chaosNode) {
	c.t.Helper()
	var join []string
	for _, o := range c.nodes {
		if o != n {
			join = append(join, fmt.Sprintf("%s:%d", o.addr, gossipPort))
		}
	}
	args := []string{"serve", "--http", fmt.Sprintf("%s:%d", n.addr, httpPort),
		"--cluster-addr", fmt.Sprintf("%s:%d", n.addr, gossipPort), "--join", strings.Join(join, ","),
		"--data", n.data, "--node", n.name, "--shutdown-timeout", "5s",
		// Every client comes from one address: lift the per-IP limits.
		"--send-rate", "1000000", "--send-burst", "1000000", "--secret", proctest.TestSecret}
	cmd := c.lan.Command(n.index, c.bin, args...)
	cmd.Stdout, cmd.Stderr = &n.logs, &n.logs
	n.runs++
	fmt.Fprintf(&n.logs, "==== run %d of %s at %.1fs\n", n.runs, n.name, time.Since(c.start).Seconds())
	p, err := proctest.Start(cmd)
	if err != nil {
		c.t.Fatalf("chaos: start %s: %v", n.name, err)
	}
	n.proc, n.state = p, nodeUp
}

// waitReady waits until node n answers /readyz.
func (c *cluster) waitReady(n *chaosNode) {
	c.t.Helper()
	if err := n.proc.WaitReadyVia(c.hc, n.base(), readyTimeout); err != nil {
		c.t.Fatalf("chaos: %s: %v", n.name, err)
	}
}

// restart starts a node that is down and waits until it is ready.
func (c *cluster) restart(n *chaosNode) {
	c.t.Helper()
	if n.state != nodeDown {
		c.t.Fatalf("chaos: restart %s: it is %v", n.name, n.state)
	}
	c.run(n)
	c.waitReady(n)
}

// kill ends node n with SIGKILL: a crash.
func (c *cluster) kill(n *chaosNode) {
	c.t.Helper()
	if err := n.proc.Kill(); err != nil {
		c.t.Fatalf("chaos: kill -9 %s: %v", n.name, err)
	}
	n.state = nodeDown
}

// term stops node n with SIGTERM and waits until it has exited.
func (c *cluster) term(n *chaosNode) {
	c.t.Helper()
	if !n.proc.Stop(stopGrace) {
		c.t.Errorf("chaos: %s did not exit within %v of SIGTERM; killed (seed %d; replay: %s)", n.name, stopGrace, c.cfg.seed, c.cfg.replay())
	}
	n.state = nodeDown
}

// pause stops node n with SIGSTOP; resume continues it.
func (c *cluster) pause(n *chaosNode) {
	c.t.Helper()
	if err := n.proc.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatalf("chaos: SIGSTOP %s: %v", n.name, err)
	}
	n.state = nodePaused
}

func (c *cluster) resume(n *chaosNode) {
	c.t.Helper()
	if err := n.proc.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatalf("chaos: SIGCONT %s: %v", n.name, err)
	}
	n.state = nodeUp
}

// up lists the nodes that run (not paused, not down).
func (c *cluster) up() []*chaosNode {
	var out []*chaosNode
	for _, n := range c.nodes {
		if n.state == nodeUp {
			out = append(out, n)
		}
	}
	return out
}

// waitMembers waits until every node that is up is ready and lists
// exactly the nodes that are up as alive.
func (c *cluster) waitMembers(timeout time.Duration) error {
	_, err := proctest.Poll(timeout, func() error {
		up := c.up()
		for _, n := range up {
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			a := c.api(n.index)
			err := a.Ready(ctx)
			var v clustertest.ClusterView
			if err == nil {
				v, err = a.Cluster(ctx)
			}
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			alive := v.Alive()
			if len(alive) != len(up) {
				return fmt.Errorf("%s lists %d alive members, %d are up: %s", n.name, len(alive), len(up), v)
			}
			for _, o := range up {
				if !alive[o.id] {
					return fmt.Errorf("%s does not list %s as alive: %s", n.name, o.name, v)
				}
			}
		}
		return nil
	})
	return err
}

// histories reads node i's history of each room.
func (c *cluster) histories(i int, rooms []string) (map[string][]proto.MessageJSON, error) {
	out := map[string][]proto.MessageJSON{}
	for _, room := range rooms {
		ctx, cancel := context.WithTimeout(context.Background(), 2*requestTimeout)
		h, err := c.api(i).History(ctx, room)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.nodes[i].name, err)
		}
		out[room] = h
	}
	return out, nil
}

// recent reads node i's messages of each room created at from or later.
func (c *cluster) recent(i int, rooms []string, from time.Time) (map[string][]proto.MessageJSON, error) {
	out := map[string][]proto.MessageJSON{}
	for _, room := range rooms {
		ctx, cancel := context.WithTimeout(context.Background(), 2*requestTimeout)
		h, err := c.api(i).Recent(ctx, room, from)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.nodes[i].name, err)
		}
		out[room] = h
	}
	return out, nil
}

// presence joins room on node i as probe, a fresh client, and returns
// the names its joined frame lists.
func (c *cluster) presence(i int, room, probe string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	conn, err := client.Dial(ctx, c.nodes[i].base(), probe, &client.Options{HTTPClient: c.wsHTTP})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.JoinHistory(ctx, room, 0); err != nil {
		return nil, err
	}
	frames, err := conn.ReadUntil(ctx, client.IsType(client.TypeSynced, room))
	if err != nil {
		return nil, fmt.Errorf("join %s on %s: %w", room, c.nodes[i].name, err)
	}
	for _, f := range frames {
		if f.Type == client.TypeJoined {
			var names []string
			for _, p := range f.Presence {
				names = append(names, p.Name)
			}
			slices.Sort(names)
			return names, nil
		}
	}
	return nil, fmt.Errorf("join %s on %s: no joined frame before synced", room, c.nodes[i].name)
}

// nodeOf is the node whose id is id, or nil.
func (c *cluster) nodeOf(id string) *chaosNode {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// cleanup kills what still runs (the LAN's cleanup would too, later) and
// prints the nodes' logs when the test failed.
func (c *cluster) cleanup() {
	for _, n := range c.nodes {
		if n.proc != nil && n.proc.Running() {
			_ = n.proc.Kill()
		}
	}
	c.hc.CloseIdleConnections()
	if c.t.Failed() {
		for _, n := range c.nodes {
			c.t.Logf("---- %s (%s) log tail ----\n%s", n.name, n.id, tail(n.logs.String(), 120))
		}
		c.t.Logf("chaos: FAILED with %s", c.cfg)
	}
}

func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
