package clustertest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

var resumeStepsFlag = flag.Int("clustertest.resume-steps", 40, "steps of TestRandomResume")

// dialTimeout bounds one client's handshake with a node.
const dialTimeout = 15 * time.Second

// resumer is one chat client of the resume tests. Like a real client it
// keeps, across its sessions, the newest cursor of each room and what it
// was shown; it has at most one session at a time, read by one goroutine.
type resumer struct {
	t     testing.TB
	name  string
	rooms []string

	mu       sync.Mutex
	view     *View              // what it was shown, all sessions
	cursor   map[string]string  // room -> newest cursor, kept across sessions
	sends    map[string]*wsSend // ref -> send over the WebSocket
	failures []string           // frames no correct node sends

	conn *client.Conn  // the current session, nil between sessions
	node int           // its node
	done chan struct{} // closed when its reader ends
	ends []string      // how each session ended, for the log
}

// wsSend is a message sent over the WebSocket, re-sent with its ref after
// a resume until it is acked.
type wsSend struct {
	room, text string
	id         string // from the ack; "" until acked
	tries      int
	nodes      []int // where each try went
}

func newResumer(t testing.TB, name string, rooms ...string) *resumer {
	return &resumer{t: t, name: name, rooms: rooms, view: NewView(),
		cursor: map[string]string{}, sends: map[string]*wsSend{}}
}

func (r *resumer) connected() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn != nil
}

// lost reports whether the session ended without the client ending it
// (the node closed it), and how.
func (r *resumer) lost() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		return false, ""
	}
	select {
	case <-r.done:
		return true, r.ends[len(r.ends)-1]
	default:
		return false, ""
	}
}

// connect opens a session on node i and joins every room of the client:
// with since set to its cursor, or, with no cursor yet (it has seen no
// message of the room), asking for the whole history. Sends not acked
// yet are sent again with their ref. It does not wait for the replay.
func (r *resumer) connect(c *Cluster, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	conn, err := client.Dial(ctx, c.HTTPAddr(i), r.name, nil)
	if err != nil {
		return err
	}
	r.mu.Lock()
	cursors := make(map[string]string, len(r.rooms))
	for _, room := range r.rooms {
		cursors[room] = r.cursor[room]
	}
	r.mu.Unlock()
	for _, room := range r.rooms {
		if cursors[room] == "" {
			err = conn.JoinHistory(ctx, room, 1000)
		} else {
			err = conn.Join(ctx, room, cursors[room])
		}
		if err != nil {
			conn.CloseNow()
			return err
		}
	}
	done := make(chan struct{})
	r.mu.Lock()
	r.conn, r.node, r.done = conn, i, done
	var resend []string
	for ref, s := range r.sends {
		if s.id == "" {
			resend = append(resend, ref)
		}
	}
	slices.Sort(resend)
	r.mu.Unlock()
	go r.read(conn, done)
	for _, ref := range resend {
		r.mu.Lock()
		s := r.sends[ref]
		s.tries++
		s.nodes = append(s.nodes, i)
		r.mu.Unlock()
		if err := conn.Send(ctx, s.room, s.text, ref); err != nil {
			break // the session is gone already; the next one re-sends
		}
	}
	return nil
}

// read takes every frame of one session until it ends.
func (r *resumer) read(conn *client.Conn, done chan struct{}) {
	defer close(done)
	for {
		f, err := conn.Read(context.Background())
		if err != nil {
			r.mu.Lock()
			r.ends = append(r.ends, fmt.Sprintf("node %d: close %d", r.node, client.CloseStatus(err)))
			r.mu.Unlock()
			return
		}
		r.take(f)
	}
}

func (r *resumer) take(f client.Frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch f.Type {
	case client.TypeMessage:
		if !slices.Contains(r.rooms, f.Room) {
			r.failures = append(r.failures, fmt.Sprintf("node %d sent %s of room %s, which %s never joined", r.node, f.ID, f.Room, r.name))
		}
		r.view.Take(f) // a Replaces drops another copy of the same send
	case client.TypeHidden:
		r.view.Take(f)
	case client.TypeAck:
		if s := r.sends[f.Ref]; s != nil {
			if s.id != "" && s.id != f.ID {
				r.failures = append(r.failures, fmt.Sprintf("ref %s acked as %s, then as %s", f.Ref, s.id, f.ID))
			}
			s.id = f.ID
		}
	case client.TypeError:
		// A send may meet a node that is shutting down; it is sent again
		// on the next session. Nothing else may fail.
		if s := r.sends[f.Ref]; s == nil || f.Code != proto.CodeUnavailable {
			r.failures = append(r.failures, fmt.Sprintf("node %d answered %s %q (ref %q)", r.node, f.Code, f.Message, f.Ref))
		}
	}
}

// disconnect ends the session (a clean close or a dropped connection)
// and keeps its cursors.
func (r *resumer) disconnect(clean bool) {
	r.mu.Lock()
	conn := r.conn
	r.mu.Unlock()
	if clean {
		conn.Close()
	} else {
		conn.CloseNow()
	}
	r.ended()
}

// ended waits for the session's reader to stop, after the node or the
// client closed it, and keeps the newest cursor of each room. Only then
// is the cursor final: it is that of the last frame the reader took.
func (r *resumer) ended() {
	r.mu.Lock()
	conn, done := r.conn, r.done
	r.mu.Unlock()
	select {
	case <-done:
	case <-time.After(dialTimeout):
		r.t.Fatalf("%s: the session on node %d did not end", r.name, r.node)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, room := range r.rooms {
		if cur := conn.Cursor(room); cur != "" {
			r.cursor[room] = cur
		}
	}
	r.conn, r.done = nil, nil
}

// send sends text to room on the current session, with a ref unique to
// this client.
func (r *resumer) send(room, text string) {
	r.mu.Lock()
	ref := fmt.Sprintf("%s-%d", r.name, len(r.sends))
	r.sends[ref] = &wsSend{room: room, text: text, tries: 1, nodes: []int{r.node}}
	conn := r.conn
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	_ = conn.Send(ctx, room, text, ref) // a lost session re-sends on the next
}

// unacked counts the sends not acked yet.
func (r *resumer) unacked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.sends {
		if s.id == "" {
			n++
		}
	}
	return n
}

// holds checks that the client was shown exactly the room's history h:
// each message once over all its sessions, none missing, none other, as
// the nodes list it, each origin's messages in order. A WrongDelivery
// fails the test at once: waiting does not mend it.
func (r *resumer) holds(room string, h []proto.MessageJSON) error {
	r.t.Helper()
	err := r.view.Compare(r.name, room, h)
	if errors.As(err, new(WrongDelivery)) {
		r.t.Fatal(err)
	}
	return err
}

// waitSame waits until every running node lists the same well-ordered
// history of each room, without gaps, holding every id of acked, and
// returns it. (WaitConvergedRooms counts only HTTP sends as accepted.)
//
// texts maps the id a WebSocket send was acked with to its text (unique per
// send): when a re-send made a second copy, nodes list only the earlier copy,
// so an acked id missing from the lists is accounted for when a message
// with its text is listed; it still counts in the per-origin numbering.
func waitSame(t *testing.T, c *Cluster, acked []string, texts map[string]string, rooms ...string) map[string][]proto.MessageJSON {
	t.Helper()
	var out map[string][]proto.MessageJSON
	proctest.Eventually(t, convergeTimeout, func() error {
		out = map[string][]proto.MessageJSON{}
		have := map[string]bool{}
		first := -1
		for i := range c.N() {
			if !c.Running(i) {
				continue
			}
			var all [][]proto.MessageJSON
			for _, room := range rooms {
				h, err := c.History(i, room)
				if err != nil {
					return fmt.Errorf("node %d: %w", i, err)
				}
				if err := CheckHistory(h); err != nil {
					return fmt.Errorf("node %d, room %s: %w", i, room, err)
				}
				if first >= 0 {
					if err := SameHistory(out[room], h); err != nil {
						return fmt.Errorf("room %s: nodes %d and %d differ: %w", room, first, i, err)
					}
				}
				out[room] = h
				all = append(all, h)
				for _, m := range h {
					have[m.ID] = true
				}
			}
			listed := map[string]bool{}
			for _, h := range all {
				for _, m := range h {
					listed[m.Text] = true
				}
			}
			for id, text := range texts {
				if !have[id] && listed[text] {
					have[id] = true // a hidden copy of a listed send
				}
			}
			// The log holds every copy, hidden ones included: no gaps there.
			if err := CheckLog(c.Node(i).Store()); err != nil {
				return fmt.Errorf("node %d: %w", i, err)
			}
			if first < 0 {
				first = i
			}
		}
		for _, id := range acked {
			if !have[id] {
				return fmt.Errorf("acked message %s is in no history", id)
			}
		}
		return nil
	})
	return out
}

// TestRandomResume: clients on random nodes of a 3-node cluster drop
// their sessions (or lose them to a node that stops or is killed) and
// resume on random nodes with their cursors while messages flow, sent
// over the WebSocket and over HTTP. At the end every client holds exactly
// each room's history: every message once over all its sessions, none
// missing, each origin's in order. Replay a failure with the seed it logs:
//
//	go test -race -run TestRandomResume ./internal/clustertest -clustertest.seed=N
func TestRandomResume(t *testing.T) {
	t.Parallel()
	seed := randomSeed(t)
	t.Logf("seed %d (replay: go test -race -run TestRandomResume ./internal/clustertest -clustertest.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x243f6a8885a308d3))
	const n = 3
	rooms := []string{"lobby", "dev"}
	c := Start(t, n)

	running := func() []int {
		var out []int
		for i := range n {
			if c.Running(i) {
				out = append(out, i)
			}
		}
		return out
	}
	pick := func(from []int) int { return from[rng.IntN(len(from))] }

	var clients []*resumer
	for k := range 6 {
		rs := []string{"lobby"}
		if k%2 == 1 {
			rs = append(rs, "dev")
		}
		r := newResumer(t, fmt.Sprintf("client%d", k), rs...)
		clients = append(clients, r)
	}
	connect := func(r *resumer) int {
		t.Helper()
		var err error
		for range 3 {
			i := pick(running())
			if err = r.connect(c, i); err == nil {
				return i
			}
		}
		t.Fatalf("%s: connect: %v (seed %d)", r.name, err, seed)
		return -1
	}
	for _, r := range clients {
		connect(r)
	}

	// Messages flow over HTTP, to random running nodes, all along.
	var httpMu sync.Mutex
	var httpIDs []string
	var httpFailed int
	stop := make(chan struct{})
	poster := make(chan struct{})
	go func() {
		defer close(poster)
		prng := rand.New(rand.NewPCG(seed, 1))
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for k := 0; k < 400; k++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			up := running()
			if len(up) == 0 {
				continue
			}
			i := up[prng.IntN(len(up))]
			m, err := c.Post(i, rooms[prng.IntN(len(rooms))], "poster", fmt.Sprintf("http %d", k))
			httpMu.Lock()
			if err == nil {
				httpIDs = append(httpIDs, m.ID)
			} else {
				httpFailed++ // a node stopping under the request
			}
			httpMu.Unlock()
		}
	}()

	// failOver resumes the clients whose node ended their session for a
	// reason of its own, as a real client does.
	failOver := func() {
		for _, r := range clients {
			if lost, how := r.lost(); lost {
				r.ended()
				t.Logf("%s's session ended (%s); it resumes on node %d", r.name, how, connect(r))
			}
		}
	}
	for step := range *resumeStepsFlag {
		failOver()
		var live, gone []*resumer
		for _, r := range clients {
			if r.connected() {
				live = append(live, r)
			} else {
				gone = append(gone, r)
			}
		}
		up := running()
		// The actions possible now, by weight.
		weights := map[string]int{"wait": 12}
		if len(live) > 0 {
			weights["send"], weights["drop"] = 30, 25
		}
		if len(gone) > 0 {
			weights["resume"] = 20
		}
		if len(up) == n {
			weights["cut"] = 8
		} else {
			weights["restart"] = 8
		}
		action, x := "", 0
		for _, a := range slices.Sorted(maps.Keys(weights)) {
			x += weights[a]
		}
		x = rng.IntN(x)
		for _, a := range slices.Sorted(maps.Keys(weights)) {
			if x -= weights[a]; x < 0 {
				action = a
				break
			}
		}
		var did string
		switch action {
		case "send": // over the WebSocket
			r := live[rng.IntN(len(live))]
			room := r.rooms[rng.IntN(len(r.rooms))]
			k := 1 + rng.IntN(3)
			for j := range k {
				r.send(room, fmt.Sprintf("%s step %d #%d", r.name, step, j))
			}
			did = fmt.Sprintf("%s sends %d to %s on node %d", r.name, k, room, r.node)
		case "drop": // a client ends its session; maybe resumes at once
			r := live[rng.IntN(len(live))]
			from, clean := r.node, rng.IntN(2) == 0
			r.disconnect(clean)
			did = fmt.Sprintf("%s leaves node %d (clean close %v)", r.name, from, clean)
			if rng.IntN(2) == 0 {
				did += fmt.Sprintf(", resumes on node %d", connect(r))
			}
		case "resume":
			r := gone[rng.IntN(len(gone))]
			did = fmt.Sprintf("%s resumes on node %d", r.name, connect(r))
			if rng.IntN(3) == 0 {
				// Dropped again at once, likely in the middle of its
				// replay: the cursor of the last frame read must do.
				r.disconnect(false)
				did += fmt.Sprintf(", drops at once, resumes on node %d", connect(r))
			}
		case "cut": // the server ends sessions: a node stops or is killed
			i := pick(up)
			how := "stop"
			if rng.IntN(2) == 0 {
				how = "kill"
				c.Kill(i)
			} else {
				c.Stop(i)
			}
			var moved []string
			for _, r := range live {
				if r.node == i {
					r.ended()
					moved = append(moved, fmt.Sprintf("%s to node %d", r.name, connect(r)))
				}
			}
			did = fmt.Sprintf("%s node %d; its clients fail over: %v", how, i, moved)
		case "restart":
			for i := range n {
				if !c.Running(i) {
					c.Restart(i)
					did = fmt.Sprintf("restart node %d", i)
					break
				}
			}
		default: // let messages flow
			d := time.Duration(100+rng.IntN(500)) * time.Millisecond
			time.Sleep(d)
			did = fmt.Sprintf("wait %v", d)
		}
		t.Logf("step %2d: %s (running %v)", step, did, running())
	}

	close(stop)
	<-poster
	for i := range n {
		if !c.Running(i) {
			c.Restart(i)
		}
	}
	start := time.Now()
	c.WaitMembers(convergeTimeout)
	failOver()
	for _, r := range clients {
		if !r.connected() {
			connect(r)
		}
	}
	// Every WebSocket send is acked at last: re-sent after each resume.
	proctest.Eventually(t, convergeTimeout, func() error {
		for _, r := range clients {
			if k := r.unacked(); k > 0 {
				return fmt.Errorf("%s has %d sends not acked", r.name, k)
			}
		}
		return nil
	})
	httpMu.Lock()
	acked := slices.Clone(httpIDs)
	t.Logf("HTTP: %d messages posted, %d posts failed", len(httpIDs), httpFailed)
	httpMu.Unlock()
	var sent, resent int
	byText := map[string]*wsSend{}
	for _, r := range clients {
		r.mu.Lock()
		for _, s := range r.sends {
			acked = append(acked, s.id)
			sent++
			if s.tries > 1 {
				resent++
			}
			byText[s.text] = s
		}
		r.mu.Unlock()
	}
	texts := map[string]string{}
	for _, r := range clients {
		r.mu.Lock()
		for _, snd := range r.sends {
			texts[snd.id] = snd.text
		}
		r.mu.Unlock()
	}
	hists := waitSame(t, c, acked, texts, rooms...)
	stored := map[string][]string{} // text of a WebSocket send -> ids
	for _, room := range rooms {
		for _, m := range hists[room] {
			if byText[m.Text] != nil {
				stored[m.Text] = append(stored[m.Text], m.ID)
			}
		}
	}
	twice := 0
	for _, text := range slices.Sorted(maps.Keys(stored)) {
		if ids := stored[text]; len(ids) > 1 {
			// A re-send is recognised on a node that holds the first
			// one; one whose first copy was on a node that was down, or
			// not yet replicated, is stored again.
			twice++
			t.Logf("%q, sent on nodes %v, stored as %v", text, byText[text].nodes, ids)
		}
	}
	t.Logf("WebSocket: %d messages sent, %d re-sent after a resume, %d stored twice", sent, resent, twice)
	for _, r := range clients {
		for _, room := range r.rooms {
			proctest.Eventually(t, convergeTimeout, func() error { return r.holds(room, hists[room]) })
		}
		r.mu.Lock()
		if len(r.failures) > 0 {
			t.Errorf("%s: %s (seed %d)", r.name, strings.Join(r.failures, "; "), seed)
		}
		t.Logf("%s: %d sessions; rooms %v; ends %v", r.name, len(r.ends)+1, r.rooms, r.ends)
		r.mu.Unlock()
	}
	var summary []string
	for _, room := range rooms {
		summary = append(summary, fmt.Sprintf("%s: %d messages", room, len(hists[room])))
	}
	t.Logf("every client holds each room's history exactly, %v after the last fault: %s",
		time.Since(start).Round(time.Millisecond), strings.Join(summary, ", "))
	if t.Failed() {
		t.Logf("replay with -clustertest.seed=%d", seed)
	}
}

// TestResumeOnNodeBehind: a client that read everything on node 0
// resumes, with its cursor, on node 2, which is cut off and has not
// received node 0's and node 1's latest messages. It gets only what it
// lacks from node 2, nothing twice; after the heal it gets the rest, once;
// and its cursor then resumes anywhere with no replay at all.
func TestResumeOnNodeBehind(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	sendOnEach(t, c, "lobby", all(3), 3, "before")
	c.WaitConverged("lobby", convergeTimeout)

	c.Partition([]int{0, 1}, []int{2})
	sendOnEach(t, c, "lobby", []int{0, 1}, 5, "0 and 1 only")
	only2 := c.MustPost(2, "lobby", "user2", "node 2 alone, before the move")

	r := newResumer(t, "mover", "lobby")
	if err := r.connect(c, 0); err != nil {
		t.Fatal(err)
	}
	// Node 0 holds the 9 earlier messages and the 10 of its side.
	var atNode0 []proto.MessageJSON
	proctest.Eventually(t, convergeTimeout, func() error {
		h, err := c.History(0, "lobby")
		if err != nil {
			return err
		}
		if len(h) != 19 {
			return fmt.Errorf("node 0 holds %d messages, want 19", len(h))
		}
		atNode0 = h
		return r.holds("lobby", h)
	})
	r.disconnect(false)
	before := len(r.view.Shown("lobby"))

	if err := r.connect(c, 2); err != nil {
		t.Fatal(err)
	}
	// The replay on node 2 is the one message of node 2 the client lacks.
	proctest.Eventually(t, convergeTimeout, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if got := r.view.Shown("lobby")[before:]; len(got) != 1 || got[0].ID != only2.ID {
			return fmt.Errorf("after the move to node 2 the client got %d messages %v, want %s alone", len(got), frameIDs(got), only2.ID)
		}
		return nil
	})
	// Live messages on both sides while still cut: node 2's reach it now.
	live2 := c.MustPost(2, "lobby", "user2", "node 2 alone, after the move")
	r.send("lobby", "from the mover on node 2")
	sendOnEach(t, c, "lobby", []int{0}, 4, "node 0 after the move")
	proctest.Eventually(t, convergeTimeout, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if got := r.view.Shown("lobby")[before:]; len(got) != 3 || got[1].ID != live2.ID {
			return fmt.Errorf("on node 2 the client got %v, want %s, %s and its own", frameIDs(got), only2.ID, live2.ID)
		}
		return nil
	})
	r.mu.Lock()
	for _, m := range atNode0 {
		if n := r.view.Times(m.ID); n != 1 {
			t.Errorf("%s received %d times", m.ID, n)
		}
	}
	var acked []string
	for _, s := range r.sends {
		acked = append(acked, s.id)
	}
	r.mu.Unlock()
	if t.Failed() {
		t.FailNow()
	}

	c.Heal()
	c.WaitMembers(convergeTimeout)
	h := waitSame(t, c, acked, nil, "lobby")
	if len(h["lobby"]) != 9+10+2+1+4 {
		t.Fatalf("after the heal the nodes list %d messages, want 26", len(h["lobby"]))
	}
	// Node 2 now stores node 0's and 1's messages the client had: none
	// comes again; the 4 it lacked do, once.
	proctest.Eventually(t, convergeTimeout, func() error { return r.holds("lobby", h["lobby"]) })

	// Its cursor is exact: resumed on node 1, nothing is replayed; a new
	// message comes once.
	r.disconnect(true)
	had := len(r.view.Shown("lobby"))
	if err := r.connect(c, 1); err != nil {
		t.Fatal(err)
	}
	last := c.MustPost(1, "lobby", "user1", "after the resume on node 1")
	proctest.Eventually(t, convergeTimeout, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if got := r.view.Shown("lobby")[had:]; len(got) != 1 || got[0].ID != last.ID {
			return fmt.Errorf("resumed on node 1 the client got %v, want %s alone", frameIDs(got), last.ID)
		}
		return nil
	})
	h = waitSame(t, c, append(acked, last.ID), nil, "lobby")
	if err := r.holds("lobby", h["lobby"]); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) > 0 {
		t.Fatal(strings.Join(r.failures, "; "))
	}
}

func frameIDs(fs []client.Frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

// TestResendAfterFailover: a client sends, loses its session without
// seeing the ack, and re-sends with the same ref on another node that
// holds the first copy (its node alive, or killed): it gets the first
// message's ack, and the room holds the message once. (A re-send that
// reaches a node before the first copy does is stored again: see the
// "stored twice" line of TestRandomResume.)
func TestResendAfterFailover(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	for _, kill := range []bool{false, true} {
		r := newResumer(t, fmt.Sprintf("rita%v", kill), "lobby")
		if err := r.connect(c, 0); err != nil {
			t.Fatal(err)
		}
		text := fmt.Sprintf("once, node 0 killed: %v", kill)
		r.send("lobby", text)
		var first proto.MessageJSON
		proctest.Eventually(t, convergeTimeout, func() error {
			for _, i := range []int{0, 2} {
				h, err := c.History(i, "lobby")
				if err != nil {
					return err
				}
				k := slices.IndexFunc(h, func(m proto.MessageJSON) bool { return m.Text == text })
				if k < 0 {
					return fmt.Errorf("node %d does not hold %q yet", i, text)
				}
				first = h[k]
			}
			return nil
		})
		// The session is lost before the client saw the ack (it is
		// forgotten if it came).
		r.disconnect(false)
		if kill {
			c.Kill(0)
		}
		r.mu.Lock()
		for _, s := range r.sends {
			s.id = ""
		}
		r.mu.Unlock()
		if err := r.connect(c, 2); err != nil { // re-sends the send
			t.Fatal(err)
		}
		proctest.Eventually(t, convergeTimeout, func() error {
			if k := r.unacked(); k > 0 {
				return fmt.Errorf("re-send not acked")
			}
			return nil
		})
		r.mu.Lock()
		for ref, s := range r.sends {
			if s.id != first.ID {
				t.Errorf("node 0 killed %v: re-send of %s on node 2 acked as %s, want the first copy %s (stored on node 0, held by node 2)",
					kill, ref, s.id, first.ID)
			}
		}
		r.mu.Unlock()
		h, err := c.History(2, "lobby")
		if err != nil {
			t.Fatal(err)
		}
		var copies []string
		for _, m := range h {
			if m.Text == text {
				copies = append(copies, m.ID)
			}
		}
		if len(copies) != 1 {
			t.Errorf("node 0 killed %v: node 2 holds %q as %v, want once", kill, text, copies)
		}
		r.disconnect(true)
	}
}
