package hub

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/proctest"
	"chatr/internal/proto"
	"chatr/internal/store"
)

const (
	local  = "aaaaaaaaaaaa"
	remote = "bbbbbbbbbbbb"
	third  = "cccccccccccc"
)

// recorder is a subscriber that keeps what it is given.
type recorder struct {
	mu  sync.Mutex
	evs []*Event
}

func (r *recorder) Deliver(evs []*Event) {
	r.mu.Lock()
	r.evs = append(r.evs, evs...)
	r.mu.Unlock()
}

// take returns and forgets what was delivered.
func (r *recorder) take() []*Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.evs
	r.evs = nil
	return evs
}

func newHub() *Hub {
	return New(Options{NodeID: local, Cluster: "test", Metrics: prometheus.NewRegistry()})
}

func p(name, node string) proto.Person { return proto.Person{Name: name, Node: node} }

// presenceOf decodes presence frames from events.
func presenceOf(t *testing.T, evs []*Event) []proto.Presence {
	t.Helper()
	var out []proto.Presence
	for _, ev := range evs {
		if ev.Msg != nil {
			t.Fatalf("unexpected message event %s", ev.Frame)
		}
		var pr proto.Presence
		if err := json.Unmarshal(ev.Frame, &pr); err != nil || pr.Type != "presence" {
			t.Fatalf("frame %s is not a presence frame", ev.Frame)
		}
		if pr.Joined == nil || pr.Left == nil {
			t.Fatalf("presence frame %s: joined and left must be lists, never null", ev.Frame)
		}
		slices.SortFunc(pr.Joined, cmpPerson)
		slices.SortFunc(pr.Left, cmpPerson)
		out = append(out, pr)
	}
	return out
}

func cmpPerson(a, b proto.Person) int {
	if a.Name != b.Name {
		if a.Name < b.Name {
			return -1
		}
		return 1
	}
	if a.Node < b.Node {
		return -1
	}
	if a.Node > b.Node {
		return 1
	}
	return 0
}

func wantPresence(t *testing.T, r *recorder, room string, joined, left []proto.Person) {
	t.Helper()
	got := presenceOf(t, r.take())
	if joined == nil {
		joined = []proto.Person{}
	}
	if left == nil {
		left = []proto.Person{}
	}
	want := proto.Presence{Type: "presence", Room: room, Joined: joined, Left: left}
	if len(got) != 1 || got[0].Room != want.Room || !slices.Equal(got[0].Joined, want.Joined) || !slices.Equal(got[0].Left, want.Left) {
		t.Fatalf("presence events %+v, want one %+v", got, want)
	}
}

func wantNothing(t *testing.T, r *recorder) {
	t.Helper()
	if evs := r.take(); len(evs) > 0 {
		t.Fatalf("unexpected events: %d, first %s", len(evs), evs[0].Frame)
	}
}

func TestJoinLeavePresence(t *testing.T) {
	h := newHub()
	alice, bob := &recorder{}, &recorder{}

	if got := h.Join("lobby", alice, "alice", ""); !slices.Equal(got, []proto.Person{p("alice", local)}) {
		t.Fatalf("alice joined with %+v", got)
	}
	wantNothing(t, alice) // no presence frame about oneself

	if got := h.Join("lobby", bob, "bob", ""); !slices.Equal(got, []proto.Person{p("alice", local), p("bob", local)}) {
		t.Fatalf("bob joined with %+v", got)
	}
	wantPresence(t, alice, "lobby", []proto.Person{p("bob", local)}, nil)
	wantNothing(t, bob)

	// Joining twice with the same subscriber changes nothing.
	h.Join("lobby", bob, "bob", "")
	wantNothing(t, alice)

	if !h.Leave("lobby", bob) {
		t.Fatal("Leave of a joined subscriber reported false")
	}
	wantPresence(t, alice, "lobby", nil, []proto.Person{p("bob", local)})
	wantNothing(t, bob) // the one who left is not told
	if h.Leave("lobby", bob) {
		t.Fatal("second Leave reported true")
	}
	if h.Leave("nowhere", bob) {
		t.Fatal("Leave of an unknown room reported true")
	}
	if got := h.Presence("lobby"); !slices.Equal(got, []proto.Person{p("alice", local)}) {
		t.Fatalf("presence %+v", got)
	}
	h.Leave("lobby", alice)
	if got := h.Presence("lobby"); got == nil || len(got) != 0 {
		t.Fatalf("presence of an empty room %+v, want an empty list", got)
	}
	if got := localPresence(h); len(got) != 0 {
		t.Fatalf("local presence %v after everyone left", got)
	}
	h.mu.RLock()
	n := len(h.rooms)
	h.mu.RUnlock()
	if n != 0 {
		t.Fatalf("%d rooms kept after everyone left", n)
	}
}

// A person with two sessions is listed once and leaves with the last one.
func TestTwoSessionsOneName(t *testing.T) {
	h := newHub()
	watcher, tab1, tab2 := &recorder{}, &recorder{}, &recorder{}
	h.Join("lobby", watcher, "watcher", "")
	h.Join("lobby", tab1, "carol", "")
	wantPresence(t, watcher, "lobby", []proto.Person{p("carol", local)}, nil)
	got := h.Join("lobby", tab2, "carol", "")
	if !slices.Equal(got, []proto.Person{p("carol", local), p("watcher", local)}) {
		t.Fatalf("second tab joined with %+v", got)
	}
	wantNothing(t, watcher)
	wantNothing(t, tab1)

	h.Leave("lobby", tab1)
	wantNothing(t, watcher) // carol still has a session
	if got := h.Presence("lobby"); len(got) != 2 {
		t.Fatalf("presence %+v", got)
	}
	h.Leave("lobby", tab2)
	wantPresence(t, watcher, "lobby", nil, []proto.Person{p("carol", local)})

	if lp := localPresence(h); !slices.Equal(localNames(lp["lobby"]), []string{"watcher"}) {
		t.Fatalf("local presence %v", lp)
	}
}

// Presence in one room is not told in another.
func TestRoomsAreSeparate(t *testing.T) {
	h := newHub()
	a, b := &recorder{}, &recorder{}
	h.Join("lobby", a, "a", "")
	h.Join("dev", b, "b", "")
	wantNothing(t, a)
	h.Join("dev", a, "a", "")
	wantPresence(t, b, "dev", []proto.Person{p("a", local)}, nil)
	h.Leave("lobby", a)
	wantNothing(t, b)
	lp := localPresence(h)
	if len(lp) != 1 || !slices.Equal(localNames(lp["dev"]), []string{"a", "b"}) {
		t.Fatalf("local presence %v", lp)
	}
}

// SetRemote replaces what a peer contributes to presence; an empty
// snapshot drops the peer's people and tells local sessions they left.
func TestSetRemote(t *testing.T) {
	h := newHub()
	me := &recorder{}
	h.Join("lobby", me, "me", "")

	h.SetRemote(remote, snapshot(map[string][]string{"lobby": {"carol"}, "dev": {"dan"}}))
	wantPresence(t, me, "lobby", []proto.Person{p("carol", remote)}, nil)
	if got := h.Presence("lobby"); !slices.Equal(got, []proto.Person{p("carol", remote), p("me", local)}) {
		t.Fatalf("presence %+v", got)
	}
	if got := h.Presence("dev"); !slices.Equal(got, []proto.Person{p("dan", remote)}) {
		t.Fatalf("presence of a room with no local session %+v", got)
	}
	// Only this node's people go to peers.
	if lp := localPresence(h); len(lp) != 1 || !slices.Equal(localNames(lp["lobby"]), []string{"me"}) {
		t.Fatalf("local presence %v", lp)
	}

	// The same snapshot again changes nothing.
	h.SetRemote(remote, snapshot(map[string][]string{"lobby": {"carol"}, "dev": {"dan"}}))
	wantNothing(t, me)

	// A person added and one removed, in one frame.
	h.SetRemote(remote, snapshot(map[string][]string{"lobby": {"erin"}, "dev": {"dan"}}))
	wantPresence(t, me, "lobby", []proto.Person{p("erin", remote)}, []proto.Person{p("carol", remote)})

	// Another peer's people are its own.
	h.SetRemote(third, snapshot(map[string][]string{"lobby": {"erin", "me", "fay"}}))
	wantPresence(t, me, "lobby", []proto.Person{p("fay", third)}, nil) // erin and me were present already
	if got := h.Presence("lobby"); !slices.Equal(got, []proto.Person{p("erin", remote), p("fay", third), p("me", local)}) {
		t.Fatalf("presence %+v (each person once, on the first of their nodes)", got)
	}

	// The remote peer dies: its people go, unless present elsewhere.
	h.SetRemote(remote, nil)
	wantNothing(t, me) // erin is still on the third node
	if got := h.Presence("dev"); len(got) != 0 {
		t.Fatalf("dev presence %+v after its only node went", got)
	}
	h.SetRemote(third, snapshot(map[string][]string{}))
	wantPresence(t, me, "lobby", nil, []proto.Person{p("erin", third), p("fay", third)})
	if got := h.Presence("lobby"); !slices.Equal(got, []proto.Person{p("me", local)}) {
		t.Fatalf("presence %+v", got)
	}

	// A snapshot naming this node is ignored: local presence is local.
	h.SetRemote(local, snapshot(map[string][]string{}))
	wantNothing(t, me)
	if got := h.Presence("lobby"); len(got) != 1 {
		t.Fatalf("presence %+v", got)
	}

	// A local person who is also remote stays when the remote goes, and
	// stays when the local session goes while the remote is there.
	h.SetRemote(remote, snapshot(map[string][]string{"lobby": {"me"}}))
	wantNothing(t, me)
	other := &recorder{}
	h.Join("lobby", other, "other", "")
	wantPresence(t, me, "lobby", []proto.Person{p("other", local)}, nil)
	h.Leave("lobby", me)
	wantNothing(t, other) // "me" is still on the remote node
	h.SetRemote(remote, nil)
	wantPresence(t, other, "lobby", nil, []proto.Person{p("me", remote)})
}

// LocalChanged fires on changes of this node's own presence only.
func TestLocalChanged(t *testing.T) {
	h := newHub()
	fired := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	ch := h.LocalChanged()
	a := &recorder{}
	h.Join("lobby", a, "a", "")
	if !fired(ch) {
		t.Fatal("a local join did not signal")
	}
	ch = h.LocalChanged()
	h.Join("lobby", &recorder{}, "a", "") // a second session of a
	h.SetRemote(remote, snapshot(map[string][]string{"lobby": {"z"}}))
	if fired(ch) {
		t.Fatal("a second session or a remote change signalled a local change")
	}
	h.Leave("lobby", a)
	if fired(ch) {
		t.Fatal("leaving with another session left signalled")
	}
}

func committed(room string, seq uint64, vec proto.Vector) store.Committed {
	return store.Committed{
		Msg:        proto.Message{Origin: local, Seq: seq, Room: room, Sender: "s", Text: fmt.Sprint("m", seq), Created: int64(seq) * 1000},
		RoomVector: vec,
	}
}

// Publish hands every subscriber of the room the same event, encoded once,
// in commit order; other rooms get nothing.
func TestPublishEncodesOnce(t *testing.T) {
	h := newHub()
	subs := []*recorder{{}, {}, {}}
	for i, s := range subs {
		h.Join("lobby", s, fmt.Sprint("u", i), "")
	}
	elsewhere := &recorder{}
	h.Join("dev", elsewhere, "e", "")
	for _, s := range subs {
		s.take()
	}

	h.Publish([]store.Committed{
		committed("lobby", 1, proto.Vector{local: 1}),
		committed("dev", 2, proto.Vector{local: 2}),
		committed("lobby", 3, proto.Vector{local: 3}),
		committed("empty", 4, proto.Vector{local: 4}), // nobody there
	})
	first := subs[0].take()
	if len(first) != 2 {
		t.Fatalf("got %d events, want 2", len(first))
	}
	for _, s := range subs[1:] {
		evs := s.take()
		if len(evs) != 2 {
			t.Fatalf("got %d events, want 2", len(evs))
		}
		for i := range evs {
			if evs[i] != first[i] {
				t.Fatal("subscribers got different events for one message")
			}
			if &evs[i].Frame[0] != &first[i].Frame[0] {
				t.Fatal("subscribers got different frame bytes for one message")
			}
		}
	}
	for i, ev := range first {
		seq := uint64(1 + 2*i)
		if ev.Room != "lobby" || ev.Msg == nil || ev.Msg.Seq != seq || ev.Vector[local] != seq {
			t.Fatalf("event %d: %+v", i, ev)
		}
		var m proto.MessageJSON
		if err := json.Unmarshal(ev.Frame, &m); err != nil {
			t.Fatal(err)
		}
		want := ev.Msg.JSON("message", proto.EncodeCursor(h.Scope("lobby"), ev.Vector))
		if m != want {
			t.Fatalf("frame %s, want %+v", ev.Frame, want)
		}
	}
	if evs := elsewhere.take(); len(evs) != 1 || evs[0].Msg.Seq != 2 {
		t.Fatalf("dev subscriber got %d events", len(evs))
	}
	// Publishing to nobody is fine.
	h.Publish(nil)
	h.Publish([]store.Committed{committed("nobody", 9, proto.Vector{local: 9})})
}

// Joins, leaves, publishes and snapshots from many goroutines at once (run
// with -race).
func TestConcurrentUse(t *testing.T) {
	h := newHub()
	var wg sync.WaitGroup
	deadline := time.Now().Add(300 * time.Millisecond)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &recorder{}
			for i := 0; time.Now().Before(deadline); i++ {
				room := fmt.Sprint("r", i%3)
				h.Join(room, r, fmt.Sprint("g", g), "")
				h.Presence(room)
				h.Leave(room, r)
				r.take()
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := uint64(1); time.Now().Before(deadline); i++ {
			h.Publish([]store.Committed{committed(fmt.Sprint("r", i%3), i, proto.Vector{local: i})})
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; time.Now().Before(deadline); i++ {
			h.SetRemote(remote, snapshot(map[string][]string{"r0": {fmt.Sprint("x", i%2)}}))
			localPresence(h)
		}
	}()
	wg.Wait()
	h.SetRemote(remote, nil)
	for _, room := range []string{"r0", "r1", "r2"} {
		if got := h.Presence(room); len(got) != 0 {
			t.Fatalf("presence of %s after all left: %+v", room, got)
		}
	}
}

// counter is a subscriber that only counts.
type counter struct{ n atomic.Int64 }

func (c *counter) Deliver(evs []*Event) { c.n.Add(int64(len(evs))) }

// BenchmarkFanout1000 publishes batches of messages to a room of 1000 local
// subscribers and reports deliveries per second.
func BenchmarkFanout1000(b *testing.B) {
	h := New(Options{NodeID: local, Cluster: "bench"})
	subs := make([]*counter, 1000)
	for i := range subs {
		subs[i] = &counter{}
		h.Join("lobby", subs[i], fmt.Sprint("user", i), "")
	}
	const batch = 16
	text := string(make([]byte, 100))
	batches := make([][]store.Committed, 64)
	seq := uint64(0)
	for i := range batches {
		batches[i] = make([]store.Committed, batch)
		for j := range batch {
			seq++
			batches[i][j] = store.Committed{
				Msg:        proto.Message{Origin: local, Seq: seq, Room: "lobby", Sender: "bench", Text: text, Created: int64(seq)},
				RoomVector: proto.Vector{local: seq},
			}
		}
	}
	for _, s := range subs {
		s.n.Store(0) // the presence frames of the joins
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		h.Publish(batches[i%len(batches)])
	}
	elapsed := time.Since(start)
	b.StopTimer()
	var total int64
	for _, s := range subs {
		total += s.n.Load()
	}
	if want := int64(b.N) * batch * int64(len(subs)); total != want {
		b.Fatalf("%d deliveries, want %d", total, want)
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "msgs/s")
}

// TestScopeKey: the cursors of a hub's rooms decode in every hub with the
// same CursorKey (the nodes of one cluster), and in no hub with another
// key, nor in a hub left to make its own.
func TestScopeKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	given := slices.Clone(key)
	a := New(Options{NodeID: local, Cluster: "chatr", CursorKey: given})
	given[0] ^= 1 // the hub keeps its own copy
	b := New(Options{NodeID: remote, Cluster: "chatr", CursorKey: key})
	other := New(Options{NodeID: third, Cluster: "chatr", CursorKey: []byte("another key, of thirty-two bytes")})
	own1, own2 := New(Options{NodeID: local, Cluster: "chatr"}), New(Options{NodeID: local, Cluster: "chatr"})

	v := proto.Vector{local: 3, remote: 1}
	s := proto.EncodeCursor(a.Scope("lobby"), v)
	if got, err := proto.DecodeCursor(b.Scope("lobby"), s); err != nil || got[local] != 3 || got[remote] != 1 {
		t.Errorf("a cursor of a hub with the same key: %v, %v", got, err)
	}
	for name, h := range map[string]*Hub{"another key": other, "its own key": own1} {
		if got, err := proto.DecodeCursor(h.Scope("lobby"), s); err == nil {
			t.Errorf("a hub with %s took the cursor as %v", name, got)
		}
	}
	if mine := proto.EncodeCursor(own1.Scope("lobby"), v); mine == proto.EncodeCursor(own2.Scope("lobby"), v) {
		t.Error("two hubs without a CursorKey made the same cursor: their keys are not random")
	}
}

// presenceView applies presence frames to a joined list, keyed by name as
// a client does.
func presenceView(t *testing.T, start []proto.Person, evs []*Event) []string {
	t.Helper()
	view := map[string]bool{}
	for _, p := range start {
		view[p.Name] = true
	}
	for _, pr := range presenceOf(t, evs) {
		for _, p := range pr.Joined {
			view[p.Name] = true
		}
		for _, p := range pr.Left {
			delete(view, p.Name)
		}
	}
	var out []string
	for name := range view {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func namesOf(ps []proto.Person) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// waitFrames waits until r has been delivered a presence frame that
// names who, and returns everything delivered until then.
func waitFrames(t *testing.T, r *recorder, who string) []*Event {
	t.Helper()
	var evs []*Event
	proctest.Eventually(t, 10*time.Second, func() error {
		evs = append(evs, r.take()...)
		for _, ev := range evs {
			if strings.Contains(string(ev.Frame), `"`+who+`"`) {
				return nil
			}
		}
		return fmt.Errorf("no presence frame names %s yet (%d frames)", who, len(evs))
	})
	return evs
}

// A loop of joins and leaves costs the room's other members one presence
// frame per interval, not one per change (it sent 17,600 a second), and
// what they are told still adds up to who is there.
func TestPresenceCoalesced(t *testing.T) {
	const interval = 50 * time.Millisecond
	h := New(Options{NodeID: local, Cluster: "test", PresenceInterval: interval})
	watcher := &recorder{}
	start := h.Join("lobby", watcher, "watcher", "")
	began := time.Now()
	const cycles = 1000
	for i := range cycles {
		flood := &recorder{}
		h.Join("lobby", flood, fmt.Sprint("flood", i%3), "")
		h.Leave("lobby", flood)
	}
	stayer := &recorder{}
	h.Join("lobby", stayer, "stayer", "")
	evs := waitFrames(t, watcher, "stayer")
	elapsed := time.Since(began)
	if most := 2 + int(elapsed/interval); len(evs) > most {
		t.Fatalf("%d presence frames for %d joins and leaves in %v, want at most %d (one per %v)", len(evs), 2*cycles, elapsed, most, interval)
	}
	if got, want := presenceView(t, start, evs), namesOf(h.Presence("lobby")); !slices.Equal(got, want) {
		t.Fatalf("the watcher's view %v, want %v", got, want)
	}
	t.Logf("%d joins and leaves in %v: %d presence frames", 2*cycles, elapsed, len(evs))
}

// Within an interval, a person who came and went is not told at all; a
// subscriber that joined meanwhile, whose joined list named that person,
// is told they left; a person with two sessions shows once.
func TestPresenceNetsOut(t *testing.T) {
	h := New(Options{NodeID: local, Cluster: "test", PresenceInterval: 500 * time.Millisecond})
	watcher := &recorder{}
	h.Join("lobby", watcher, "watcher", "")
	h.Join("lobby", &recorder{}, "early", "")                                 // the room was quiet: told at once
	wantPresence(t, watcher, "lobby", []proto.Person{p("early", local)}, nil) // and the interval begins
	dave := &recorder{}
	h.Join("lobby", dave, "dave", "")
	newcomer := &recorder{}
	if got := namesOf(h.Join("lobby", newcomer, "newcomer", "")); !slices.Equal(got, []string{"dave", "early", "newcomer", "watcher"}) {
		t.Fatalf("the newcomer joined with %v", got)
	}
	h.Leave("lobby", dave)
	tab1, tab2 := &recorder{}, &recorder{}
	h.Join("lobby", tab1, "carol", "")
	h.Join("lobby", tab2, "carol", "")
	h.Leave("lobby", tab1)
	wantNothing(t, watcher) // nothing yet: it waits for the interval
	evs := waitFrames(t, watcher, "carol")
	if pr := presenceOf(t, evs); len(pr) != 1 || !slices.Equal(namesOf(pr[0].Joined), []string{"carol", "newcomer"}) || len(pr[0].Left) != 0 {
		t.Fatalf("the watcher was told %+v, want one frame: carol and the newcomer joined", pr)
	}
	evs = waitFrames(t, newcomer, "carol")
	if pr := presenceOf(t, evs); len(pr) != 1 || !slices.Equal(namesOf(pr[0].Joined), []string{"carol"}) || !slices.Equal(namesOf(pr[0].Left), []string{"dave"}) {
		t.Fatalf("the newcomer was told %+v, want one frame: carol joined, dave left", pr)
	}
}

// This node's own presence changes reach peers (LocalChanged) with the
// flush; a room forgotten before its flush signals at once, so a person
// who left is never a ghost on the peers.
func TestLocalChangedCoalesced(t *testing.T) {
	h := New(Options{NodeID: local, Cluster: "test", PresenceInterval: 500 * time.Millisecond})
	a, b := &recorder{}, &recorder{}
	ch := h.LocalChanged()
	h.Join("solo", a, "a", "")
	h.Join("solo", b, "b", "") // told to a at once: the interval begins
	select {
	case <-ch:
	default:
		t.Fatal("the first change of a quiet room did not signal at once")
	}
	ch = h.LocalChanged()
	h.Leave("solo", a) // within the interval: it waits
	select {
	case <-ch:
		t.Fatal("a change within the interval signalled before its flush")
	default:
	}
	h.Leave("solo", b) // it would wait too, but the room is gone
	select {
	case <-ch:
	default:
		t.Fatal("the room went with its last person, and peers were not told")
	}
	if lp := localPresence(h); len(lp) != 0 {
		t.Fatalf("local presence %v", lp)
	}
}

// snapshot is a peer's presence snapshot of people known by name only
// (auth off).
func snapshot(names map[string][]string) map[string][]proto.Person {
	if names == nil {
		return nil
	}
	out := map[string][]proto.Person{}
	for room, ns := range names {
		out[room] = []proto.Person{}
		for _, n := range ns {
			out[room] = append(out[room], proto.Person{Name: n})
		}
	}
	return out
}

// localNames is the sorted names of a local presence list.
func localNames(ps []proto.Person) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	slices.Sort(out)
	return out
}

// Lookalike names the person present, here or on a peer, whose name looks
// like a newcomer's, and follows presence as people come and go.
func TestLookalike(t *testing.T) {
	h := newHub()
	want := func(room, name, other string) {
		t.Helper()
		got, ok := h.Lookalike(room, name)
		if got != other || ok != (other != "") {
			t.Fatalf("Lookalike(%q, %q) = %q, %v; want %q", room, name, got, ok, other)
		}
	}
	want("lobby", "alice", "") // no such room
	alice := &recorder{}
	h.Join("lobby", alice, "alice", "")
	want("lobby", "Alice", "alice")
	want("lobby", "aIice", "alice")
	want("lobby", "alice", "") // her second tab
	want("lobby", "bob", "")
	want("dev", "Alice", "") // another room

	// Built by the calls above, the index follows later arrivals, local
	// and on peers, and departures.
	h.Join("lobby", &recorder{}, "dave", "")
	want("lobby", "DAVE", "dave")
	h.SetRemote(remote, snapshot(map[string][]string{"lobby": {"carol"}}))
	want("lobby", "Carol", "carol")
	h.SetRemote(remote, snapshot(map[string][]string{}))
	want("lobby", "Carol", "")
	h.Leave("lobby", alice)
	want("lobby", "Alice", "")

	// A room built from a peer's people alone is indexed when asked.
	h.SetRemote(remote, snapshot(map[string][]string{"dev": {"erin"}}))
	want("dev", "ERIN", "erin")

	// Lookalikes present together (met after a split): either one may
	// come again; a third is told of the first by name.
	h.SetRemote(remote, snapshot(map[string][]string{"lobby": {"Frank", "frank"}}))
	want("lobby", "frank", "")
	want("lobby", "Frank", "")
	want("lobby", "FRANK", "Frank")
}

// Every subscriber that joins within an interval, while others come, go
// and come back (here and on a peer), ends up with a view, its joined
// list and the frames after it, that is exactly who is there.
func TestPresenceExactForEveryJoiner(t *testing.T) {
	h := New(Options{NodeID: local, Cluster: "test", PresenceInterval: 300 * time.Millisecond})
	type member struct {
		rec   *recorder
		start []proto.Person
	}
	var members []member
	join := func(name string) {
		m := member{rec: &recorder{}}
		m.start = h.Join("lobby", m.rec, name, "")
		members = append(members, m)
	}
	join("first") // told at once: the interval begins
	rng := rand.New(rand.NewPCG(1, 2))
	var tabs []*recorder
	for i := range 60 {
		switch rng.IntN(4) {
		case 0:
			join(fmt.Sprint("m", i))
		case 1:
			tab := &recorder{}
			h.Join("lobby", tab, fmt.Sprint("flicker", rng.IntN(3)), "")
			tabs = append(tabs, tab)
		case 2:
			if len(tabs) > 0 {
				h.Leave("lobby", tabs[0])
				tabs = tabs[1:]
			}
		case 3:
			h.SetRemote(remote, map[string][]proto.Person{"lobby": {{Name: fmt.Sprint("remote", rng.IntN(2))}}})
		}
	}
	join("last")
	want := namesOf(h.Presence("lobby"))
	for _, m := range members {
		var evs []*Event
		proctest.Eventually(t, 10*time.Second, func() error {
			evs = append(evs, m.rec.take()...)
			got := presenceView(t, m.start, evs)
			if !slices.Equal(got, want) {
				return fmt.Errorf("a member's view %v, want %v", got, want)
			}
			return nil
		})
	}
}

// A room's presence frames come at most once per interval per 20 of its
// subscribers: with 400, the second frame waits twenty intervals.
func TestPresenceIntervalGrowsWithTheRoom(t *testing.T) {
	const interval = 50 * time.Millisecond
	h := New(Options{NodeID: local, Cluster: "test", PresenceInterval: interval})
	watcher := &recorder{}
	h.Join("big", watcher, "watcher", "")
	for i := range 399 {
		h.Join("big", &recorder{}, fmt.Sprint("m", i), "")
	}
	waitFrames(t, watcher, "m398") // the first change went at once, the rest after an interval
	told := time.Now()
	h.Join("big", &recorder{}, "late", "")
	evs := waitFrames(t, watcher, "late")
	if waited := time.Since(told); waited < 400*time.Millisecond {
		t.Fatalf("the next presence frame came after %v, want the room's interval (20 x %v)", waited, interval)
	}
	if len(presenceOf(t, evs)) != 1 {
		t.Fatalf("%d presence frames, want 1", len(presenceOf(t, evs)))
	}
}

// LocalSince names the rooms whose local presence changed after a
// generation, with who is in each now, and no other room; a generation
// the hub no longer remembers asks for a snapshot.
func TestLocalSince(t *testing.T) {
	h := New(Options{NodeID: local, Cluster: "test"})
	ann, bob := &recorder{}, &recorder{}
	h.Join("a", ann, "ann", "")
	h.Join("b", bob, "bob", "")
	h.ChangeRemote(remote, map[string][]proto.Person{"c": {{Name: "rita"}}}, nil) // not local: not logged
	snap, gen := h.LocalSnapshot()
	if len(snap) != 2 || len(snap["a"]) != 1 || snap["a"][0].Name != "ann" {
		t.Fatalf("snapshot %v", snap)
	}
	if rooms, now, ok := h.LocalSince(gen); !ok || now != gen || len(rooms) != 0 {
		t.Fatalf("nothing changed: %v %d %v", rooms, now, ok)
	}
	h.Join("c", &recorder{}, "cat", "")
	h.Leave("a", ann)
	rooms, now, ok := h.LocalSince(gen)
	if !ok || len(rooms) != 2 || len(rooms["a"]) != 0 || len(rooms["c"]) != 1 || rooms["c"][0].Name != "cat" {
		t.Fatalf("after a join in c and a leave of a: %v %v", rooms, ok)
	}
	if rooms, _, _ := h.LocalSince(now); len(rooms) != 0 {
		t.Fatalf("since now: %v", rooms)
	}
	for i := range maxLocalLog {
		sub := &recorder{}
		h.Join("d", sub, fmt.Sprint("d", i), "")
		h.Leave("d", sub)
	}
	if _, _, ok := h.LocalSince(gen); ok {
		t.Fatal("a generation further back than the hub remembers did not ask for a snapshot")
	}
	if _, cur := h.LocalSnapshot(); cur < now+maxLocalLog {
		t.Fatalf("generation %d after %d changes from %d", cur, 2*maxLocalLog, now)
	} else if rooms, _, ok := h.LocalSince(cur - 10); !ok || len(rooms) != 1 {
		t.Fatal("a recent generation asked for a snapshot")
	}
}

// ChangeRemote changes only the rooms it names: a peer's person comes and
// goes there, the room's sessions are told, a room left by its last
// person is forgotten, and one never joined is not made.
func TestChangeRemote(t *testing.T) {
	h := New(Options{NodeID: local, Cluster: "test"})
	watcher := &recorder{}
	h.Join("lobby", watcher, "watcher", "")
	h.ChangeRemote(remote, map[string][]proto.Person{"lobby": {{Name: "rita"}}, "dev": {{Name: "rita"}}}, nil)
	wantPresence(t, watcher, "lobby", []proto.Person{p("rita", remote)}, nil)
	if got := h.Presence("dev"); len(got) != 1 || got[0].Node != remote {
		t.Fatalf("dev lists %v", got)
	}
	h.ChangeRemote(remote, map[string][]proto.Person{"lobby": {{Name: "rita"}}}, nil) // no change
	h.ChangeRemote(remote, nil, map[string][]proto.Person{"dev": {{Name: "rita"}}, "nowhere": {{Name: "rita"}}})
	if !h.Empty("dev") || !h.Empty("nowhere") {
		t.Fatal("a room left by its last person, or one never joined, is still there")
	}
	if got := namesOf(h.Presence("lobby")); !slices.Equal(got, []string{"rita", "watcher"}) {
		t.Fatalf("lobby lists %v", got)
	}
	h.ChangeRemote(remote, nil, map[string][]proto.Person{"lobby": {{Name: "rita"}, {Name: "nobody"}}})
	evs := waitFrames(t, watcher, "rita")
	if pr := presenceOf(t, evs); len(pr) == 0 || !slices.Equal(namesOf(pr[len(pr)-1].Left), []string{"rita"}) {
		t.Fatalf("the watcher was told %+v, want rita left", pr)
	}
	h.ChangeRemote(local, map[string][]proto.Person{"lobby": {{Name: "me"}}}, nil) // its own node: ignored
	if got := namesOf(h.Presence("lobby")); !slices.Equal(got, []string{"watcher"}) {
		t.Fatalf("lobby lists %v", got)
	}
}

// A change naming a room with no one in it leaves no room behind.
func TestChangeRemoteMakesNoEmptyRoom(t *testing.T) {
	h := New(Options{NodeID: local, Cluster: "test"})
	h.ChangeRemote(remote, map[string][]proto.Person{"empty": {}}, nil)
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(h.rooms) != 0 {
		t.Fatalf("rooms %v after a change that named no one", h.rooms)
	}
}

// localPresence is the presence of h's own sessions.
func localPresence(h *Hub) map[string][]proto.Person {
	lp, _ := h.LocalSnapshot()
	return lp
}
