package chaos

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"chatr/internal/clustertest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
	"chatr/internal/store"
)

// viewTimeout bounds the wait for a client's view to match the history,
// once the nodes agree: what is left is in flight on its session.
const viewTimeout = 15 * time.Second

// TestChaos: nodes in network namespaces, WebSocket and HTTP clients
// sending all along, a seeded schedule of faults; then everything healed
// and every end check made. Each check is a subtest, so one that fails
// does not hide the others. Replay a failure with the command it prints:
//
//	make chaos SEED=N DURATION=70s NODES=3
func TestChaos(t *testing.T) {
	if os.Getenv("CHATR_CHAOS") == "" {
		t.Skip("chaos: the fault-injection suite runs with CHATR_CHAOS=1: make test runs one short seed as a step of its own; make chaos SEED=N DURATION=5m NODES=5 runs longer ones")
	}
	if testing.Short() {
		t.Skip("chaos: -short")
	}
	cfg := loadConfig(t)
	t.Logf("chaos: %s", cfg)
	cl := newCluster(t, cfg)
	crowd := startCrowd(cl, cfg.seed, 2*cfg.nodes, 2)
	t.Cleanup(crowd.stop) // before the nodes' cleanup: no client outlives the test
	cl.logf("cluster of %d up; %d WebSocket and %d HTTP clients sending", cfg.nodes, len(crowd.ws), len(crowd.http))

	sched := newSchedule(cl, crowd, cfg.seed)
	sched.run(time.Now().Add(cfg.duration))
	crowd.settled.Store(true)
	cl.logf("faults over (%d: %s); clients stop sending", len(sched.faults), strings.Join(sched.faults, ", "))

	e := &ending{t: t, cl: cl, crowd: crowd, sched: sched, over: time.Now()}
	e.run()
}

// ending runs the end checks, in order, each a subtest.
type ending struct {
	t     *testing.T
	cl    *cluster
	crowd *crowd
	sched *schedule
	over  time.Time // when the last fault was undone

	hists  map[string][]proto.MessageJSON         // the agreed history of each room (of the first node when they do not agree)
	byNode map[int]map[string][]proto.MessageJSON // the last read of each node
	failed []string
}

// failf fails a check with the seed and the replay command.
func (e *ending) failf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Errorf("%s\n(seed %d; replay: %s)", fmt.Sprintf(format, args...), e.cl.cfg.seed, e.cl.cfg.replay())
}

func (e *ending) check(name string, f func(t *testing.T)) {
	if !e.t.Run(name, f) {
		e.failed = append(e.failed, name)
	}
}

func (e *ending) run() {
	cl := e.cl
	e.check("cluster-reformed-at-end", func(t *testing.T) {
		if err := cl.waitMembers(convergeTimeout); err != nil {
			e.failf(t, "after the last fault the cluster did not re-form within %v: %v", convergeTimeout, err)
		}
	})
	e.check("every-send-acked", e.everySendAcked)
	e.check("histories-agree", e.historiesAgree)
	e.check("acked-once-everywhere", e.ackedOnceEverywhere)
	e.check("no-text-twice", e.noTextTwice)
	e.check("client-views", e.clientViews)
	e.check("client-frames", func(t *testing.T) {
		for _, f := range e.crowd.failures() {
			e.failf(t, "%s", f)
		}
	})
	e.check("presence-while-connected", e.presenceConnected)
	e.crowd.stopWS()
	cl.logf("every client disconnected")
	e.check("no-ghosts", e.noGhosts)
	for _, name := range []string{checkReforms, checkTerm, checkPartial} {
		e.check(name, func(t *testing.T) {
			for _, f := range e.sched.findings[name] {
				e.failf(t, "%s", f)
			}
			t.Logf("%s: checked %d times during the run, %d failures", name, e.sched.checked[name], len(e.sched.findings[name]))
		})
	}
	e.check("logs-without-gaps", e.logsWithoutGaps)
	if len(e.failed) > 0 {
		e.t.Logf("chaos: checks failed: %s\n(seed %d; replay: %s)", strings.Join(e.failed, ", "), cl.cfg.seed, cl.cfg.replay())
	} else {
		cl.logf("chaos: every check passed (%s)", cl.cfg)
	}
}

// everySendAcked: after the heal every send is acked at last, the
// unacked ones retried by their clients.
func (e *ending) everySendAcked(t *testing.T) {
	e.crowd.stopHTTP(convergeTimeout)
	_, err := proctest.Poll(convergeTimeout, func() error {
		if u := e.crowd.unacked(); len(u) > 0 {
			return fmt.Errorf("%d sends not acked: %s", len(u), sample(u, 5))
		}
		return nil
	})
	if err != nil {
		e.failf(t, "%v after the final heal: %v", convergeTimeout, err)
	}
	acked := e.crowd.acked()
	var overHTTP int
	for _, a := range acked {
		if a.http {
			overHTTP++
		}
	}
	e.cl.logf("%d sends acked: %d over the WebSocket, %d over HTTP", len(acked), len(acked)-overHTTP, overHTTP)
}

// historiesAgree: every node lists the same history of each room, in
// (created, id) order, holding every acked message (or, for a hidden
// copy, the copy listed instead: one with its text).
func (e *ending) historiesAgree(t *testing.T) {
	cl := e.cl
	acked := e.crowd.acked()
	_, err := proctest.Poll(convergeTimeout, func() error {
		e.byNode = map[int]map[string][]proto.MessageJSON{}
		var first *chaosNode
		for _, n := range cl.nodes {
			hists, err := cl.histories(n.index, allRooms)
			if err != nil {
				return err
			}
			e.byNode[n.index] = hists
			for _, room := range allRooms {
				if err := clustertest.CheckHistory(hists[room]); err != nil {
					return fmt.Errorf("%s, room %s: %w", n.name, room, err)
				}
			}
			if first == nil {
				first, e.hists = n, hists
			} else {
				for _, room := range allRooms {
					if err := clustertest.SameHistory(e.hists[room], hists[room]); err != nil {
						return fmt.Errorf("room %s: %s and %s differ: %w", room, first.name, n.name, err)
					}
				}
			}
			ids, texts := listed(hists)
			for _, a := range acked {
				if !ids[a.id] && !texts[a.text] {
					return fmt.Errorf("%s does not list acked message %s (%q)", n.name, a.id, a.text)
				}
			}
		}
		return nil
	})
	if err != nil {
		e.failf(t, "the nodes do not agree %v after the final heal: %v", convergeTimeout, err)
		return
	}
	var sizes []string
	for _, room := range allRooms {
		sizes = append(sizes, fmt.Sprintf("%s %d", room, len(e.hists[room])))
	}
	cl.logf("every node lists the same histories (%s), %v after the last fault", strings.Join(sizes, ", "), time.Since(e.over).Round(100*time.Millisecond))
}

// ackedOnceEverywhere: every acked message is listed on every node, once;
// an acked id not listed is fine only if it is a hidden copy, another
// copy of the same send (same text) being listed instead.
func (e *ending) ackedOnceEverywhere(t *testing.T) {
	acked := e.crowd.acked()
	for _, n := range e.cl.nodes {
		hists, ok := e.byNode[n.index]
		if !ok {
			e.failf(t, "%s's history could not be read", n.name)
			continue
		}
		times, texts := map[string]int{}, map[string]bool{}
		for _, h := range hists {
			for _, m := range h {
				times[m.ID]++
				texts[m.Text] = true
			}
		}
		var missing, twice []string
		for _, a := range acked {
			switch {
			case times[a.id] > 1:
				twice = append(twice, a.id)
			case times[a.id] == 0 && !texts[a.text]:
				via := "WebSocket"
				if a.http {
					via = "HTTP"
				}
				missing = append(missing, fmt.Sprintf("%s %q (%s, acked by %s)", a.id, a.text, via, e.cl.nodes[a.by].name))
			}
		}
		if len(missing) > 0 {
			e.failf(t, "%s does not list %d acked messages: %s", n.name, len(missing), sample(missing, 5))
		}
		if len(twice) > 0 {
			e.failf(t, "%s lists %d acked messages more than once: %s", n.name, len(twice), sample(twice, 5))
		}
	}
	// How much of the copy handling the run exercised.
	ids, _ := listed(e.hists)
	var copies int
	for _, a := range acked {
		if !ids[a.id] {
			copies++ // acked as a copy that is hidden: another is listed
		}
	}
	var resent, replaces, hidden int
	for _, w := range e.crowd.ws {
		w.mu.Lock()
		for _, s := range w.sends {
			if s.tries > 1 {
				resent++
			}
		}
		replaces += w.replaces
		hidden += w.hidden
		w.mu.Unlock()
	}
	e.cl.logf("%d WebSocket sends re-sent after a failover, %d acked as a copy now hidden; clients got %d replaces and %d hidden frames",
		resent, copies, replaces, hidden)
}

// noTextTwice: each send made one listed message. Texts are unique per
// send, so a text listed twice is a send stored twice and shown twice: an
// HTTP retry stored again, or two copies of a WebSocket re-send neither
// of which was hidden.
func (e *ending) noTextTwice(t *testing.T) {
	keys := map[string]*httpPost{}
	for _, h := range e.crowd.http {
		h.mu.Lock()
		for _, p := range h.posts {
			keys[p.text] = p
		}
		h.mu.Unlock()
	}
	for _, room := range allRooms {
		ids := map[string][]string{}
		var order []string
		for _, m := range e.hists[room] {
			if len(ids[m.Text]) == 0 {
				order = append(order, m.Text)
			}
			ids[m.Text] = append(ids[m.Text], m.ID)
		}
		var httpDup, wsDup []string
		for _, text := range order {
			if len(ids[text]) < 2 {
				continue
			}
			if p := keys[text]; p != nil {
				httpDup = append(httpDup, fmt.Sprintf("%q as %v (Idempotency-Key %s, %d tries: %s)", text, ids[text], p.key, p.tries, strings.Join(p.errs, "; ")))
			} else {
				wsDup = append(wsDup, fmt.Sprintf("%q as %v", text, ids[text]))
			}
		}
		if len(httpDup) > 0 {
			e.failf(t, "room %s: %d HTTP posts retried with the same Idempotency-Key are listed more than once: %s", room, len(httpDup), sample(httpDup, 4))
		}
		if len(wsDup) > 0 {
			e.failf(t, "room %s: %d WebSocket sends re-sent with the same ref are listed more than once (no copy hidden): %s", room, len(wsDup), sample(wsDup, 4))
		}
	}
}

// clientViews: each WebSocket client shows, over all its sessions, less
// what it was told to drop, exactly each of its rooms' history: each
// message once, none missing, none other.
func (e *ending) clientViews(t *testing.T) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, w := range e.crowd.ws {
		for _, room := range w.rooms {
			wg.Go(func() {
				var wrong error
				_, err := proctest.Poll(viewTimeout, func() error {
					err := w.view.Compare(w.name, room, e.hists[room])
					if errors.As(err, new(clustertest.WrongDelivery)) {
						wrong = err
						return nil // no wait mends it
					}
					return err
				})
				if wrong != nil {
					err = wrong
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					w.mu.Lock()
					sessions, ends := w.sessions, sample(w.ends, 4)
					w.mu.Unlock()
					e.failf(t, "%v (%d sessions: %s)", err, sessions, ends)
				}
			})
		}
	}
	wg.Wait()
}

// presenceConnected: while every WebSocket client is connected, a probe
// joining a room on any node sees each client of that room, and no one
// else.
func (e *ending) presenceConnected(t *testing.T) {
	_, err := proctest.Poll(convergeTimeout, func() error {
		for _, w := range e.crowd.ws {
			if !w.isLive() {
				return fmt.Errorf("%s has no session that has synced", w.name)
			}
		}
		return nil
	})
	if err != nil {
		e.failf(t, "clients did not all reconnect: %v", err)
		return
	}
	for _, room := range allRooms {
		var want []string
		for _, w := range e.crowd.ws {
			if slices.Contains(w.rooms, room) {
				want = append(want, w.name)
			}
		}
		e.probe(t, room, want, "with every client connected")
	}
}

// noGhosts: once every client has left, a probe sees no one but itself.
func (e *ending) noGhosts(t *testing.T) {
	for _, room := range allRooms {
		e.probe(t, room, nil, "after every client disconnected")
	}
}

// probe waits until a fresh probe client joining room on each node sees
// exactly want and itself.
func (e *ending) probe(t *testing.T, room string, want []string, when string) {
	k := 0
	for _, n := range e.cl.nodes {
		var got []string
		_, err := proctest.Poll(convergeTimeout, func() error {
			k++
			probe := fmt.Sprintf("probe-%s-%d", n.name, k)
			names, err := e.cl.presence(n.index, room, probe)
			if err != nil {
				return err
			}
			got = slices.DeleteFunc(names, func(s string) bool { return s == probe })
			if !slices.Equal(got, sorted(want)) {
				return fmt.Errorf("presence %v, want %v", got, sorted(want))
			}
			return nil
		})
		if err != nil {
			e.failf(t, "room %s on %s %s: %v", room, n.name, when, err)
		}
	}
}

func sorted(xs []string) []string {
	out := slices.Clone(xs)
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// logsWithoutGaps stops every node with SIGTERM and opens its store: each
// origin's messages 1..n are there (hidden copies included), and every
// node holds the same vector.
func (e *ending) logsWithoutGaps(t *testing.T) {
	var wg sync.WaitGroup
	for _, n := range e.cl.nodes {
		if n.state == nodePaused {
			e.cl.resume(n)
		}
		if n.state == nodeUp {
			wg.Go(func() {
				if !n.proc.Stop(stopGrace) {
					t.Errorf("chaos: %s did not exit within %v of SIGTERM; killed", n.name, stopGrace)
				}
			})
			n.state = nodeDown
		}
	}
	wg.Wait()
	var first proto.Vector
	var firstName string
	for _, n := range e.cl.nodes {
		st, err := store.Open(n.data, store.Options{})
		if err != nil {
			e.failf(t, "%s: %v", n.name, err)
			continue
		}
		if err := clustertest.CheckLog(st); err != nil {
			e.failf(t, "%s's log: %v", n.name, err)
		}
		v := st.Vector()
		st.Close()
		if first == nil {
			first, firstName = v, n.name
		} else if !maps.Equal(first, v) {
			e.failf(t, "%s holds vector %v, %s holds %v", firstName, first, n.name, v)
		}
	}
	e.cl.logf("every log is without gaps; vector %v", first)
}
