// Package clustertest runs chatr clusters for tests: N nodes in the test
// process (Start) with a simulated network that can be partitioned and
// healed, nodes that can be killed and restarted on the same data, and
// helpers to speak the HTTP API and check that histories converge. It also
// builds virtual LANs of network namespaces (NewLAN) for real processes.
package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"chatr/internal/config"
	"chatr/internal/node"
	"chatr/internal/proctest"
	"chatr/internal/proto"
	"chatr/internal/store"
)

// Timeouts of the harness. Failure detection takes about 3 s and a healed
// partition re-merges within the reconnect loop's 3 s backoff, so these
// leave room for a loaded 2-core machine running -race.
const (
	// ReadyTimeout bounds Start and WaitMembers by default.
	ReadyTimeout = 45 * time.Second
	// stopTimeout bounds one node's shutdown.
	stopTimeout = 20 * time.Second
	// requestTimeout bounds one HTTP request to a node; it exceeds the
	// replication ack timeout (5 s) so an --ack-replicas send is answered.
	requestTimeout = 15 * time.Second
)

// Option changes how Start builds the cluster.
type Option func(*options)

type options struct {
	args    []string
	argsFor map[int][]string
}

// WithArgs adds serve flags (e.g. "--ack-replicas", "1") to every node.
func WithArgs(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// WithNodeArgs adds serve flags to node i only.
func WithNodeArgs(i int, args ...string) Option {
	return func(o *options) { o.argsFor[i] = append(o.argsFor[i], args...) }
}

// Cluster is n chatr nodes running in the test process, numbered from 0,
// on 127.0.0.1, joined through a simulated network (Net).
type Cluster struct {
	t    testing.TB
	net  *Net
	opts options
	api  *http.Client

	mu       sync.Mutex
	nodes    []*member
	accepted map[string][]string // room -> ids answered 201
	unsure   map[string]int      // room -> sends answered with an error (maybe stored)
}

// member is one node slot: what survives a restart, and the running node.
type member struct {
	index  int
	name   string // --node
	gossip string // 127.0.0.1:port, kept across restarts
	data   string // --data, kept across restarts
	logs   *logBuffer

	n      *node.Node // nil while stopped
	id     string
	http   string
	cancel context.CancelFunc
	done   chan error
}

// Start runs n nodes in this process and waits until every node is ready
// and lists all n as alive members. Each node gets --http 127.0.0.1:0, a
// fixed --cluster-addr on 127.0.0.1 (reused by Restart), its own data
// directory, and --join with every other node's gossip address (any one
// live member is enough, so a node restarted while others are down still
// finds the cluster). Everything stops when the test ends; on failure the
// nodes' logs are printed.
func Start(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("clustertest: Start with %d nodes", n)
	}
	o := options{argsFor: map[int][]string{}}
	for _, opt := range opts {
		opt(&o)
	}
	ports, err := FreePorts(n)
	if err != nil {
		t.Fatalf("clustertest: pick gossip ports: %v", err)
	}
	c := &Cluster{t: t, net: newNet(), opts: o,
		api:      &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}},
		accepted: map[string][]string{}, unsure: map[string]int{}}
	for i := range n {
		m := &member{index: i, name: fmt.Sprintf("n%d", i), data: dataDir(t), logs: &logBuffer{},
			gossip: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i]))}
		c.nodes = append(c.nodes, m)
		c.net.setGossip(m.gossip, i)
	}
	// Registered after the TempDirs, so it runs before they are removed.
	t.Cleanup(c.cleanup)
	for i := range n {
		if err := c.open(i, true); err != nil {
			t.Fatalf("clustertest: start node %d: %v", i, err)
		}
	}
	for i := range n {
		c.run(i)
	}
	c.WaitMembers(ReadyTimeout)
	return c
}

// dataDir makes a data directory removed when the test ends, in memory
// (/dev/shm) when the machine has it: every node fsyncs each commit, and on
// a shared disk that, not chatr, would set the pace of these tests. A node
// killed in-process keeps its files either way; CHATR_TEST_DISK=1 puts
// them on disk.
func dataDir(t testing.TB) string {
	if os.Getenv("CHATR_TEST_DISK") == "" {
		if dir, err := os.MkdirTemp("/dev/shm", "chatr-clustertest-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// N is the number of nodes, running or not.
func (c *Cluster) N() int { return len(c.nodes) }

// Net is the simulated network between the nodes.
func (c *Cluster) Net() *Net { return c.net }

// Node is node i, or nil while it is stopped.
func (c *Cluster) Node(i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].n
}

// Running reports whether node i runs.
func (c *Cluster) Running(i int) bool { return c.Node(i) != nil }

// ID is node i's node id (kept across restarts).
func (c *Cluster) ID(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].id
}

// HTTPAddr is node i's current HTTP address (a restart picks a new port).
func (c *Cluster) HTTPAddr(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].http
}

// GossipAddr is node i's gossip address.
func (c *Cluster) GossipAddr(i int) string { return c.nodes[i].gossip }

// Logs is what node i logged and printed on its console so far (the tail,
// when it logged a lot).
func (c *Cluster) Logs(i int) string { return c.nodes[i].logs.String() }

// API is a client of node i's HTTP API at its current address.
func (c *Cluster) API(i int) API {
	return API{Base: "http://" + c.HTTPAddr(i), Fetch: HTTPFetch(c.api)}
}

// args builds node i's serve flags.
func (c *Cluster) args(i int) []string {
	m := c.nodes[i]
	var join []string
	for j, o := range c.nodes {
		if j != i {
			join = append(join, o.gossip)
		}
	}
	args := []string{"--http", "127.0.0.1:0", "--cluster-addr", m.gossip, "--data", m.data,
		"--node", m.name, "--shutdown-timeout", "3s",
		// Every test request comes from 127.0.0.1: lift the per-IP limits.
		"--send-rate", "1000000", "--send-burst", "1000000"}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(args, c.opts.args...)
	return proctest.WithSecret(append(args, c.opts.argsFor[i]...))
}

// open builds node i (store, listeners) without running it. On the first
// start a gossip port taken meanwhile is replaced by another.
func (c *Cluster) open(i int, first bool) error {
	m := c.nodes[i]
	for attempt := 0; ; attempt++ {
		cfg, err := config.Parse(c.args(i), func(string) string { return "" }, io.Discard)
		if err != nil {
			return fmt.Errorf("flags %q: %w", c.args(i), err)
		}
		level := slog.LevelInfo
		if os.Getenv("CHATR_TEST_DEBUG") != "" {
			level = slog.LevelDebug
		}
		log := slog.New(slog.NewTextHandler(m.logs, &slog.HandlerOptions{Level: level}))
		n, err := node.NewWithHooks(cfg, log, m.logs, c.net.hooks(i))
		if err != nil && first && attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			ports, perr := FreePorts(1)
			if perr != nil {
				return perr
			}
			m.gossip = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			c.net.setGossip(m.gossip, i)
			continue
		}
		if err != nil {
			return err
		}
		c.mu.Lock()
		m.n, m.id, m.http = n, n.ID(), n.HTTPAddr()
		c.mu.Unlock()
		c.net.setHTTP(m.http, i)
		return nil
	}
}

// run starts node i's Run loop.
func (c *Cluster) run(i int) {
	m := c.nodes[i]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c.mu.Lock()
	n := m.n
	m.cancel, m.done = cancel, done
	c.mu.Unlock()
	go func() { done <- n.Run(ctx) }()
}

// Stop stops node i cleanly, as SIGTERM does: it leaves the cluster, closes
// sessions with 1001 and flushes its store.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	c.stop(i)
}

// Kill stops node i abruptly as far as the others can tell: every link
// to and from it is cut first, so its goodbye never reaches anyone and the
// others must detect the failure, as after kill -9. (In one process the
// node still flushes its store, which only acked messages are in anyway.)
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.net.setDown(i, true)
	c.stop(i)
}

func (c *Cluster) stop(i int) {
	c.t.Helper()
	m := c.nodes[i]
	c.mu.Lock()
	n, cancel, done := m.n, m.cancel, m.done
	m.n = nil
	c.mu.Unlock()
	if n == nil {
		c.t.Fatalf("clustertest: node %d is not running", i)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			c.t.Logf("clustertest: node %d (%s) stopped with: %v", i, m.id, err)
		}
	case <-time.After(stopTimeout):
		c.t.Errorf("clustertest: node %d (%s) did not stop within %v", i, m.id, stopTimeout)
	}
}

// Restart starts stopped node i again on the same data directory and
// gossip port (its HTTP port changes) and waits until it serves HTTP. It
// does not wait for it to rejoin the cluster, which cannot happen while a
// partition cuts it from everyone: use WaitMembers for that.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Running(i) {
		c.t.Fatalf("clustertest: restart node %d: it is running", i)
	}
	c.net.setDown(i, false)
	if err := c.open(i, false); err != nil {
		c.t.Fatalf("clustertest: restart node %d: %v", i, err)
	}
	c.run(i)
	api := c.API(i)
	proctest.Eventually(c.t, ReadyTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		status, body, err := api.Fetch(ctx, http.MethodGet, api.Base+"/healthz", nil)
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("GET /healthz: %d %s", status, body)
		}
		return err
	})
}

// Partition cuts every link between nodes of different groups (replacing
// any earlier partition); nodes in no group keep all their links. Open
// connections across the cut are closed.
func (c *Cluster) Partition(groups ...[]int) { c.net.Partition(groups...) }

// Heal removes the partition (killed nodes stay unreachable until restarted).
func (c *Cluster) Heal() { c.net.Heal() }

// CutLink cuts the link between nodes i and j only, on top of any
// partition: a partial partition, where both still reach the others.
func (c *Cluster) CutLink(i, j int) { c.net.CutLink(i, j) }

// WaitMembers waits until every running node is ready and lists exactly
// the running nodes as alive members (the others not alive).
func (c *Cluster) WaitMembers(timeout time.Duration) {
	c.t.Helper()
	proctest.Eventually(c.t, timeout, c.membersAgree)
}

func (c *Cluster) membersAgree() error {
	running := map[string]bool{}
	var idx []int
	for i := range c.nodes {
		if c.Running(i) {
			running[c.ID(i)] = true
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		api := c.API(i)
		err := api.Ready(ctx)
		var view ClusterView
		if err == nil {
			view, err = api.Cluster(ctx)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		alive := view.Alive()
		for id := range running {
			if !alive[id] {
				return fmt.Errorf("node %d does not list %s as alive: %s", i, id, view)
			}
		}
		for id := range alive {
			if !running[id] {
				return fmt.Errorf("node %d lists stopped node %s as alive: %s", i, id, view)
			}
		}
	}
	return nil
}

// Post sends a message to node i over HTTP. A 201 is recorded as accepted
// for WaitConverged; an error answer as a send that may have been stored.
func (c *Cluster) Post(i int, room, sender, text string) (proto.MessageJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	m, err := c.API(i).Post(ctx, room, sender, text)
	c.mu.Lock()
	defer c.mu.Unlock()
	var se *StatusError
	switch {
	case err == nil:
		c.accepted[room] = append(c.accepted[room], m.ID)
	case errors.As(err, &se) && se.Status >= 500:
		c.unsure[room]++
	}
	return m, err
}

// MustPost is Post that fails the test on an error.
func (c *Cluster) MustPost(i int, room, sender, text string) proto.MessageJSON {
	c.t.Helper()
	m, err := c.Post(i, room, sender, text)
	if err != nil {
		c.t.Fatalf("post to node %d: %v", i, err)
	}
	return m
}

// Accepted lists the ids of the messages of room answered with 201.
func (c *Cluster) Accepted(room string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.accepted[room])
}

// History reads node i's whole history of room.
func (c *Cluster) History(i int, room string) ([]proto.MessageJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	return c.API(i).History(ctx, room)
}

// WaitConverged waits until every running node holds the same history of
// room, in the same order, holding every message answered with 201 (and, of
// the sends answered with an error, at most those), and returns that
// history. Its gap check assumes every message went to room: with several
// rooms, use WaitConvergedRooms.
func (c *Cluster) WaitConverged(room string, timeout time.Duration) []proto.MessageJSON {
	c.t.Helper()
	return c.WaitConvergedRooms(timeout, room)[room]
}

// WaitConvergedRooms is WaitConverged for every room messages were sent
// to: each origin's messages, over all those rooms, must be numbered 1..n
// without gaps.
func (c *Cluster) WaitConvergedRooms(timeout time.Duration, rooms ...string) map[string][]proto.MessageJSON {
	c.t.Helper()
	var hists map[string][]proto.MessageJSON
	proctest.Eventually(c.t, timeout, func() error {
		var err error
		hists, err = c.converged(rooms)
		return err
	})
	return hists
}

func (c *Cluster) converged(rooms []string) (map[string][]proto.MessageJSON, error) {
	c.mu.Lock()
	accepted, unsure := map[string][]string{}, map[string]int{}
	for _, room := range rooms {
		accepted[room], unsure[room] = slices.Clone(c.accepted[room]), c.unsure[room]
	}
	c.mu.Unlock()
	var first map[string][]proto.MessageJSON
	firstNode := -1
	for i := range c.nodes {
		if !c.Running(i) {
			continue
		}
		hists := map[string][]proto.MessageJSON{}
		var all [][]proto.MessageJSON
		for _, room := range rooms {
			h, err := c.History(i, room)
			if err != nil {
				return nil, fmt.Errorf("node %d: %w", i, err)
			}
			if err := CheckHistory(h); err != nil {
				return nil, fmt.Errorf("node %d, room %s: %w", i, room, err)
			}
			if err := holds(h, accepted[room], unsure[room]); err != nil {
				return nil, fmt.Errorf("node %d, room %s: %w", i, room, err)
			}
			if firstNode >= 0 {
				if err := SameHistory(first[room], h); err != nil {
					return nil, fmt.Errorf("room %s: nodes %d and %d differ: %w", room, firstNode, i, err)
				}
			}
			hists[room] = h
			all = append(all, h)
		}
		if err := CheckNoGaps(all...); err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
		if firstNode < 0 {
			first, firstNode = hists, i
		}
	}
	return first, nil
}

// holds checks that h has every id of accepted and at most unsure others.
func holds(h []proto.MessageJSON, accepted []string, unsure int) error {
	have := make(map[string]bool, len(h))
	for _, m := range h {
		have[m.ID] = true
	}
	var missing []string
	for _, id := range accepted {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		if len(missing) > 5 {
			missing = append(missing[:5], "...")
		}
		return fmt.Errorf("holds %d messages, lacks %d of the %d accepted: %v", len(h), len(missing), len(accepted), missing)
	}
	if extra := len(h) - len(accepted); extra > unsure {
		return fmt.Errorf("holds %d messages: %d more than the %d accepted (only %d sends failed)", len(h), extra, len(accepted), unsure)
	}
	return nil
}

// CheckHistory checks a room's history as the API lists it: ordered by
// (created, origin, seq), no message twice, each message's node its origin.
func CheckHistory(h []proto.MessageJSON) error {
	for k, m := range h {
		origin, _, perr := proto.ParseMessageID(m.ID)
		if perr != nil {
			return fmt.Errorf("message %d: %v", k, perr)
		}
		if origin != m.Node {
			return fmt.Errorf("message %s: node %q is not its origin", m.ID, m.Node)
		}
		if k > 0 && compareOrder(h[k-1], m) >= 0 {
			return fmt.Errorf("messages %d and %d out of order or twice: %s@%s then %s@%s", k-1, k, h[k-1].ID, h[k-1].Created, m.ID, m.Created)
		}
	}
	return nil
}

// CheckNoGaps checks that, over the histories of all the rooms of a node,
// each origin's messages are numbered 1..n, each once.
func CheckNoGaps(hists ...[]proto.MessageJSON) error {
	seqs := map[string][]uint64{}
	for _, h := range hists {
		for _, m := range h {
			origin, seq, perr := proto.ParseMessageID(m.ID)
			if perr != nil {
				return perr
			}
			seqs[origin] = append(seqs[origin], seq)
		}
	}
	for origin, s := range seqs {
		slices.Sort(s)
		for k, seq := range s {
			if seq != uint64(k+1) {
				return fmt.Errorf("origin %s: %d messages numbered %d..%d, a gap or a duplicate at %d (want 1..%d)",
					origin, len(s), s[0], s[len(s)-1], seq, len(s))
			}
		}
	}
	return nil
}

// CheckLog checks that a store holds every origin's messages 1..n, n
// being its vector: the log keeps every copy of a send, hidden ones
// included, so it has no gaps even where the history does not list them.
func CheckLog(st *store.Store) error {
	for origin, n := range st.Vector() {
		msgs, err := st.Range(context.Background(), origin, 1, int(n)+1)
		if err != nil {
			return err
		}
		for k, m := range msgs {
			if m.Seq != uint64(k+1) {
				return fmt.Errorf("origin %s: the log holds %d messages up to %d, a gap at %d", origin, len(msgs), n, m.Seq)
			}
		}
		if uint64(len(msgs)) != n {
			return fmt.Errorf("origin %s: the log holds %d messages, its vector says %d", origin, len(msgs), n)
		}
	}
	return nil
}

// compareOrder orders messages by (created, origin, seq).
func compareOrder(a, b proto.MessageJSON) int {
	if c := strings.Compare(a.Created, b.Created); c != 0 {
		return c
	}
	ao, as, _ := proto.ParseMessageID(a.ID)
	bo, bs, _ := proto.ParseMessageID(b.ID)
	if c := strings.Compare(ao, bo); c != 0 {
		return c
	}
	switch {
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

// SameHistory reports the first difference between two histories.
func SameHistory(a, b []proto.MessageJSON) error {
	for k := range min(len(a), len(b)) {
		if a[k] != b[k] {
			return fmt.Errorf("message %d: %+v vs %+v", k, a[k], b[k])
		}
	}
	if len(a) != len(b) {
		return fmt.Errorf("%d messages vs %d", len(a), len(b))
	}
	return nil
}

// cleanup stops every running node (at once, so leave waits overlap) and
// prints the logs of a failed test.
func (c *Cluster) cleanup() {
	start := time.Now()
	var wg sync.WaitGroup
	for i := range c.nodes {
		c.mu.Lock()
		m := c.nodes[i]
		n, cancel, done := m.n, m.cancel, m.done
		m.n = nil
		c.mu.Unlock()
		if n == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cancel()
			select {
			case <-done:
			case <-time.After(stopTimeout):
				c.t.Errorf("clustertest: node %d (%s) did not stop within %v", i, m.id, stopTimeout)
			}
		}()
	}
	wg.Wait()
	c.api.CloseIdleConnections()
	if took := time.Since(start); took > 5*time.Second {
		c.t.Logf("clustertest: stopping the nodes took %v", took)
	}
	if c.t.Failed() || os.Getenv("CHATR_TEST_LOGS") != "" {
		for _, m := range c.nodes {
			c.t.Logf("---- node %d (%s, %s) log tail ----\n%s", m.index, m.name, m.id, m.logs.Tail(200))
		}
	}
}

// Net is the simulated network of a Cluster: node i's gossip and peer
// links go through hooks that drop what crosses a cut.
type Net struct {
	mu     sync.Mutex
	cut    map[[2]int]bool // pairs (low, high) with no link
	down   map[int]bool    // killed nodes: no link at all
	gossip map[string]int  // gossip address -> node
	http   map[string]int  // HTTP address -> node (old ones kept)
	conns  map[*trackedConn]struct{}
}

func newNet() *Net {
	return &Net{cut: map[[2]int]bool{}, down: map[int]bool{}, gossip: map[string]int{},
		http: map[string]int{}, conns: map[*trackedConn]struct{}{}}
}

func pair(i, j int) [2]int { return [2]int{min(i, j), max(i, j)} }

func (n *Net) setGossip(addr string, i int) {
	n.mu.Lock()
	n.gossip[addr] = i
	n.mu.Unlock()
}

func (n *Net) setHTTP(addr string, i int) {
	n.mu.Lock()
	n.http[addr] = i
	n.mu.Unlock()
}

// Blocked reports whether nodes i and j are cut from each other.
func (n *Net) Blocked(i, j int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blockedLocked(i, j)
}

func (n *Net) blockedLocked(i, j int) bool {
	if i == j || i < 0 || j < 0 {
		return false
	}
	return n.down[i] || n.down[j] || n.cut[pair(i, j)]
}

// hooks are node i's doors to the network.
func (n *Net) hooks(i int) node.Hooks {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return node.Hooks{
		GossipBlocked: func(addr string) bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			j, ok := n.gossip[addr]
			return ok && n.blockedLocked(i, j)
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			n.mu.Lock()
			j, ok := n.http[addr]
			if !ok {
				j = -1
			}
			blocked := n.blockedLocked(i, j)
			n.mu.Unlock()
			if blocked {
				return nil, fmt.Errorf("dial %s: node %d is cut from node %d (simulated partition)", addr, i, j)
			}
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := &trackedConn{Conn: conn, net: n, from: i, to: j}
			n.mu.Lock()
			blocked = n.blockedLocked(i, j) // cut while dialing
			if !blocked {
				n.conns[tc] = struct{}{}
			}
			n.mu.Unlock()
			if blocked {
				conn.Close()
				return nil, fmt.Errorf("dial %s: node %d is cut from node %d (simulated partition)", addr, i, j)
			}
			return tc, nil
		},
	}
}

// Partition cuts every link between nodes of different groups, replacing
// the earlier partition, and closes the connections that cross it.
func (n *Net) Partition(groups ...[]int) {
	n.mu.Lock()
	n.cut = map[[2]int]bool{}
	for a, ga := range groups {
		for b, gb := range groups {
			if a == b {
				continue
			}
			for _, i := range ga {
				for _, j := range gb {
					if i != j {
						n.cut[pair(i, j)] = true
					}
				}
			}
		}
	}
	n.mu.Unlock()
	n.closeBlocked()
}

// CutLink cuts the link between i and j, keeping the other cuts, and closes
// the connections that cross it.
func (n *Net) CutLink(i, j int) {
	n.mu.Lock()
	n.cut[pair(i, j)] = true
	n.mu.Unlock()
	n.closeBlocked()
}

// Heal removes the partition; killed nodes stay cut until restarted.
func (n *Net) Heal() {
	n.mu.Lock()
	n.cut = map[[2]int]bool{}
	n.mu.Unlock()
}

// setDown cuts (or restores) all of node i's links.
func (n *Net) setDown(i int, down bool) {
	n.mu.Lock()
	n.down[i] = down
	n.mu.Unlock()
	n.closeBlocked()
}

func (n *Net) closeBlocked() {
	n.mu.Lock()
	var doomed []*trackedConn
	for tc := range n.conns {
		if n.blockedLocked(tc.from, tc.to) {
			doomed = append(doomed, tc)
			delete(n.conns, tc)
		}
	}
	n.mu.Unlock()
	for _, tc := range doomed {
		tc.Conn.Close()
	}
}

// trackedConn is a peer-link connection the Net can cut.
type trackedConn struct {
	net.Conn
	net      *Net
	from, to int
}

func (tc *trackedConn) Close() error {
	tc.net.mu.Lock()
	delete(tc.net.conns, tc)
	tc.net.mu.Unlock()
	return tc.Conn.Close()
}

// freeGossipPorts finds n ports free on 127.0.0.1 for both TCP and UDP
// (memberlist binds both), holding them until all are found so that they
// differ.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	lo := net.IPv4(127, 0, 0, 1)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 50*n {
			return nil, errors.New("no free port for both TCP and UDP")
		}
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: lo})
		if err != nil {
			return nil, err
		}
		closers = append(closers, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: lo, Port: port})
		if err != nil {
			continue
		}
		closers = append(closers, u)
		ports = append(ports, port)
	}
	return ports, nil
}

// logBuffer keeps the last few megabytes a node logged.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

const logKeep = 2 << 20

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 2*logKeep {
		l.b = append([]byte(nil), l.b[len(l.b)-logKeep:]...)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// Tail is the last n lines.
func (l *logBuffer) Tail(n int) string {
	s := l.String()
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// Fetch does one HTTP request and returns the status and the body. It lets
// the API helpers run over a Go client or, inside a network namespace, curl.
type Fetch func(ctx context.Context, method, url string, body []byte) (status int, respBody []byte, err error)

// HTTPFetch is a Fetch over an http.Client.
func HTTPFetch(hc *http.Client) Fetch {
	return func(ctx context.Context, method, u string, body []byte) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
}

// API speaks chatr's HTTP API (docs/protocol.md) to one node.
type API struct {
	Base  string // "http://host:port"
	Fetch Fetch
}

// StatusError is an HTTP answer other than the one expected.
type StatusError struct {
	Status  int
	Code    string // the error code of the body, when it has one
	Message string
	Body    string
}

func (e *StatusError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, strings.TrimSpace(e.Body))
}

func statusError(status int, body []byte) *StatusError {
	se := &StatusError{Status: status, Body: string(body)}
	var eb struct {
		Error *proto.Error `json:"error"`
	}
	if json.Unmarshal(body, &eb) == nil && eb.Error != nil {
		se.Code, se.Message = eb.Error.Code, eb.Error.Message
	}
	return se
}

func (a API) get(ctx context.Context, path string, want int, v any) error {
	status, body, err := a.Fetch(ctx, http.MethodGet, a.Base+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if status != want {
		return fmt.Errorf("GET %s: %w", path, statusError(status, body))
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w: %s", path, err, body)
	}
	return nil
}

// Ready returns nil when /readyz answers 200.
func (a API) Ready(ctx context.Context) error { return a.get(ctx, "/readyz", http.StatusOK, nil) }

// Post posts a message and returns it as stored (the 201 answer); any
// other answer is a *StatusError.
func (a API) Post(ctx context.Context, room, sender, text string) (proto.MessageJSON, error) {
	var m proto.MessageJSON
	body, _ := json.Marshal(map[string]string{"sender": sender, "text": text})
	path := "/chatr/api/rooms/" + url.PathEscape(room) + "/messages"
	status, resp, err := a.Fetch(ctx, http.MethodPost, a.Base+path, body)
	if err != nil {
		return m, fmt.Errorf("POST %s: %w", path, err)
	}
	if status != http.StatusCreated {
		return m, statusError(status, resp)
	}
	if err := json.Unmarshal(resp, &m); err != nil {
		return m, fmt.Errorf("POST %s: %w: %s", path, err, resp)
	}
	return m, nil
}

// historyPage is the most messages one GET returns.
const historyPage = 1000

// History reads the whole history of room, oldest first, paging back from
// the newest messages with before.
func (a API) History(ctx context.Context, room string) ([]proto.MessageJSON, error) {
	return a.historyBack(ctx, room, "")
}

// Recent reads the messages of room created at from or later, oldest
// first: History that stops paging back once a page reaches past from, so
// that a check of the last moments of a long run reads only those.
func (a API) Recent(ctx context.Context, room string, from time.Time) ([]proto.MessageJSON, error) {
	at := from.UTC().Format(proto.TimeLayout) // fixed width: compares as text
	h, err := a.historyBack(ctx, room, at)
	return slices.DeleteFunc(h, func(m proto.MessageJSON) bool { return m.Created < at }), err
}

// historyBack pages back from the newest messages of room until a page
// holds one created before from ("": to the start).
func (a API) historyBack(ctx context.Context, room, from string) ([]proto.MessageJSON, error) {
	type page struct {
		Messages []proto.MessageJSON `json:"messages"`
	}
	path := "/chatr/api/rooms/" + url.PathEscape(room) + "/messages?limit=" + strconv.Itoa(historyPage)
	var p page
	if err := a.get(ctx, path, http.StatusOK, &p); err != nil {
		return nil, err
	}
	all := p.Messages
	for len(p.Messages) == historyPage && all[0].Created >= from {
		p = page{}
		if err := a.get(ctx, path+"&before="+url.QueryEscape(all[0].ID), http.StatusOK, &p); err != nil {
			return nil, err
		}
		all = append(slices.Clone(p.Messages), all...)
	}
	return all, nil
}

// Page reads GET /chatr/api/rooms/{room}/messages: the messages after the
// cursor since, or with since "" the newest ones (at most 1000), and the
// page's cursor. A refused cursor is a *StatusError (400).
func (a API) Page(ctx context.Context, room, since string) ([]proto.MessageJSON, string, error) {
	var p struct {
		Messages []proto.MessageJSON `json:"messages"`
		Cursor   string              `json:"cursor"`
	}
	path := "/chatr/api/rooms/" + url.PathEscape(room) + "/messages?limit=" + strconv.Itoa(historyPage)
	if since != "" {
		path += "&since=" + url.QueryEscape(since)
	}
	err := a.get(ctx, path, http.StatusOK, &p)
	return p.Messages, p.Cursor, err
}

// ClusterView is the answer of GET /chatr/api/cluster.
type ClusterView = proto.ClusterView

// Cluster reads GET /chatr/api/cluster.
func (a API) Cluster(ctx context.Context) (ClusterView, error) {
	var v ClusterView
	err := a.get(ctx, "/chatr/api/cluster", http.StatusOK, &v)
	return v, err
}
