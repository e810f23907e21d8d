package e2e

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/clustertest"
	"chatr/internal/natstest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// presenceLeftGoal is how soon after a kill -9 the other nodes' clients
// must see its people leave, on either engine: failure detection takes
// about 3 s on the local engine, a missed presence heartbeat
// natsengine.PresenceTTL to PresenceTTL+PresenceHeartbeat on NATS; this
// leaves room for a loaded machine.
const presenceLeftGoal = 10 * time.Second

// engines are the engines the presence suite runs on: each test is a
// table of them.
var engines = []string{"local", "nats"}

// presenceCluster is three chatr processes on 127.0.0.1 in one cluster
// (joined over gossip, or on one 3-server NATS cluster), and their ids.
type presenceCluster struct {
	nodes []*localNode
	apis  []clustertest.API
	ids   []string
}

// startPresenceCluster starts three processes on engine, each joining the
// other two (local) or on one NATS cluster started here (nats), and waits
// until every one lists all three as alive.
func startPresenceCluster(t *testing.T, engine string) *presenceCluster {
	t.Helper()
	pc := &presenceCluster{nodes: newLocalNodes(t, 3)}
	var natsURL string
	if engine == "nats" {
		natsURL = natstest.Start(t, 3).URL()
	}
	for i, n := range pc.nodes {
		if natsURL != "" {
			n.natsURL = natsURL
			n.start(t)
			pc.apis = append(pc.apis, n.api())
			continue
		}
		var join []string
		for j, o := range pc.nodes {
			if j != i {
				join = append(join, o.gossip)
			}
		}
		n.start(t, join...)
		pc.apis = append(pc.apis, n.api())
	}
	for _, a := range pc.apis {
		pc.ids = append(pc.ids, selfID(t, a))
	}
	waitAlive(t, startTimeout, pc.apis, pc.ids)
	return pc
}

// presenceDial connects name to node i and joins lobby, reading up to its
// synced; it returns the joined frame. The session is closed when the
// test ends.
func (pc *presenceCluster) presenceDial(t *testing.T, ctx context.Context, i int, name string) (*client.Conn, client.Frame) {
	t.Helper()
	conn, err := client.Dial(ctx, pc.nodes[i].http, name, nil)
	if err != nil {
		t.Fatalf("%s dials %s: %v", name, pc.nodes[i].name, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	if err := conn.JoinHistory(ctx, "lobby", 0); err != nil {
		t.Fatalf("%s joins lobby: %v", name, err)
	}
	frames, err := conn.ReadUntil(ctx, client.IsType(client.TypeSynced, "lobby"))
	if err != nil {
		t.Fatalf("%s joins lobby on %s: %v (read %v)", name, pc.nodes[i].name, err, frames)
	}
	for _, f := range frames {
		if f.Type == client.TypeJoined {
			return conn, f
		}
	}
	t.Fatalf("%s joins lobby on %s: no joined frame before synced: %v", name, pc.nodes[i].name, frames)
	return nil, client.Frame{}
}

// sessions reads node i's chatr_ws_sessions gauge (on its admin listener).
func (pc *presenceCluster) sessions(i int) (int, error) {
	resp, err := httpClient.Get("http://" + pc.nodes[i].admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "chatr_ws_sessions "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("%s: no chatr_ws_sessions in /metrics: %v", pc.nodes[i].name, sc.Err())
}

// countNamed counts the entries of ps with name.
func countNamed(ps []proto.Person, name string) int {
	n := 0
	for _, p := range ps {
		if p.Name == name {
			n++
		}
	}
	return n
}

// presenceWatch reads an observer's frames and remembers every presence
// change of lobby it was told, in order.
type presenceWatch struct {
	t      *testing.T
	conn   *client.Conn
	events []string // "+name@node" or "-name@node"
}

func (w *presenceWatch) take(f client.Frame) {
	if f.Room != "lobby" {
		return
	}
	switch f.Type {
	case client.TypeJoined:
		for _, p := range f.Presence {
			w.events = append(w.events, "+"+p.Name+"@"+p.Node)
		}
	case client.TypePresence:
		for _, p := range f.Joined {
			w.events = append(w.events, "+"+p.Name+"@"+p.Node)
		}
		for _, p := range f.Left {
			w.events = append(w.events, "-"+p.Name+"@"+p.Node)
		}
	}
}

// isPresenceEvent reports whether e is event: "+name" or "-name", with
// or without the "@node" part.
func isPresenceEvent(e, event string) bool { return e == event || strings.HasPrefix(e, event+"@") }

// until reads frames until one holds the event (see isPresenceEvent),
// within d, and returns how long that took.
func (w *presenceWatch) until(event string, d time.Duration) time.Duration {
	w.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		f, err := w.conn.Read(ctx)
		if err != nil {
			w.t.Fatalf("no presence event %s within %v: %v (events so far %v)", event, d, err, w.events)
		}
		n := len(w.events)
		w.take(f)
		for _, e := range w.events[n:] {
			if isPresenceEvent(e, event) {
				return time.Since(start)
			}
		}
	}
}

// count is how many times event was told.
func (w *presenceWatch) count(event string) int {
	n := 0
	for _, e := range w.events {
		if isPresenceEvent(e, event) {
			n++
		}
	}
	return n
}

// TestPresenceLeftOnKill9: ann on node A shows on node B; after kill -9 of
// node A, bob on node B is told that ann left within the failure
// detection time, with no ghost left behind.
func TestPresenceLeftOnKill9(t *testing.T) {
	needBinary(t)
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			testPresenceLeftOnKill9(t, startPresenceCluster(t, engine))
		})
	}
}

func testPresenceLeftOnKill9(t *testing.T, pc *presenceCluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pc.presenceDial(t, ctx, 0, "ann")
	bob, joined := pc.presenceDial(t, ctx, 1, "bob")
	w := &presenceWatch{t: t, conn: bob}
	w.take(joined)
	if w.count("+ann") == 0 {
		// Node A's presence snapshot had not reached node B yet.
		w.until("+ann", convergeTimeout)
	}
	if n := w.count("+ann@" + pc.ids[0]); n != 1 {
		t.Fatalf("bob was told %d times that ann joined on %s (%s), want once: %v", n, pc.nodes[0].name, pc.ids[0], w.events)
	}

	killed := time.Now()
	pc.nodes[0].kill9(t)
	w.until("-ann", convergeTimeout)
	took := time.Since(killed)
	t.Logf("presence_left_ms=%d (kill -9 of %s to presence.left for ann on %s; goal %v)",
		took.Milliseconds(), pc.nodes[0].name, pc.nodes[1].name, presenceLeftGoal)
	if took > presenceLeftGoal {
		t.Errorf("bob was told ann left %v after the kill -9 of her node, want within %v", took, presenceLeftGoal)
	}

	// No ghost: once the third node has noticed the failure too (each node
	// detects it on its own, within the same bound), a new session there
	// does not list her.
	proctest.Eventually(t, time.Until(killed.Add(presenceLeftGoal)), func() error {
		conn, j := pc.presenceDial(t, ctx, 2, "cleo")
		conn.CloseNow()
		if countNamed(j.Presence, "ann") != 0 {
			return fmt.Errorf("%v after the kill -9, joined.presence on %s still lists ann: %v", presenceLeftGoal, pc.nodes[2].name, j.Presence)
		}
		return nil
	})
}

// TestPresenceTwoSessions: ann with a session on node A and another on
// node B (two tabs) is listed once on node C, stays when one session goes,
// and leaves when the last one does.
func TestPresenceTwoSessions(t *testing.T) {
	needBinary(t)
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			testPresenceTwoSessions(t, startPresenceCluster(t, engine))
		})
	}
}

func testPresenceTwoSessions(t *testing.T, pc *presenceCluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	carl, joined := pc.presenceDial(t, ctx, 2, "carl")
	w := &presenceWatch{t: t, conn: carl}
	w.take(joined)

	// Presence changes of one node reach another in order, so a person
	// who joins on a node after ann is seen on node C after her: each
	// node's ann is known on C once carl sees the one who came after.
	annA, _ := pc.presenceDial(t, ctx, 0, "ann")
	w.until("+ann", convergeTimeout)
	annB, _ := pc.presenceDial(t, ctx, 1, "ann")
	pc.presenceDial(t, ctx, 1, "eve")
	w.until("+eve", convergeTimeout)
	pc.presenceDial(t, ctx, 0, "finn")
	w.until("+finn", convergeTimeout)
	if n := w.count("+ann"); n != 1 {
		t.Fatalf("carl on %s was told ann joined %d times with a session on %s and on %s, want once: %v",
			pc.nodes[2].name, n, pc.nodes[0].name, pc.nodes[1].name, w.events)
	}
	_, j := pc.presenceDial(t, ctx, 2, "dora")
	if n := countNamed(j.Presence, "ann"); n != 1 {
		t.Fatalf("joined.presence on %s lists ann %d times, want once: %v", pc.nodes[2].name, n, j.Presence)
	}

	// Ann closes her tab on node A: she is still on node B, so nobody is
	// told she left. Once node A has dropped the session, gus joins
	// there; when carl sees gus, node A's change is known on C too.
	if err := annA.Close(); err != nil {
		t.Logf("ann's session on %s closed: %v", pc.nodes[0].name, err)
	}
	proctest.Eventually(t, convergeTimeout, func() error {
		n, err := pc.sessions(0)
		if err == nil && n != 1 { // finn's
			err = fmt.Errorf("%s has %d sessions, want 1 once ann's is gone", pc.nodes[0].name, n)
		}
		return err
	})
	pc.presenceDial(t, ctx, 0, "gus")
	w.until("+gus", convergeTimeout)
	if n := w.count("-ann"); n != 0 {
		t.Fatalf("carl was told ann left while her session on %s is open: %v", pc.nodes[1].name, w.events)
	}
	_, j = pc.presenceDial(t, ctx, 2, "hal")
	if n := countNamed(j.Presence, "ann"); n != 1 {
		t.Fatalf("with ann's session on %s gone, joined.presence on %s lists ann %d times, want once (she is on %s): %v",
			pc.nodes[0].name, pc.nodes[2].name, n, pc.nodes[1].name, j.Presence)
	}

	// Her last session goes: now she leaves, once.
	closed := time.Now()
	if err := annB.Close(); err != nil {
		t.Logf("ann's session on %s closed: %v", pc.nodes[1].name, err)
	}
	w.until("-ann", convergeTimeout)
	t.Logf("carl was told ann left %v after her last session closed", time.Since(closed).Round(time.Millisecond))
	if n := w.count("-ann"); n != 1 {
		t.Fatalf("carl was told ann left %d times: %v", n, w.events)
	}
	_, j = pc.presenceDial(t, ctx, 2, "ivy")
	if n := countNamed(j.Presence, "ann"); n != 0 {
		t.Errorf("with both of ann's sessions gone, joined.presence on %s still lists her: %v", pc.nodes[2].name, j.Presence)
	}
}
