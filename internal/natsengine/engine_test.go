package natsengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"chatr/internal/natstest"
	"chatr/internal/proto"
	"chatr/internal/store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t *testing.T, c *natstest.Cluster, stream string) *Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := Open(ctx, Config{URL: c.URL(), Stream: stream, Replicas: 3, Name: "test"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// post posts one message and waits for its ack.
func post(t *testing.T, e *Engine, room, sender, text, ref string) (proto.Message, error) {
	t.Helper()
	type result struct {
		m   proto.Message
		err error
	}
	ch := make(chan result, 1)
	if err := e.Post(context.Background(), proto.Message{Room: room, Sender: sender, Text: text, Ref: ref},
		func(m proto.Message, err error) { ch <- result{m, err} }); err != nil {
		return proto.Message{}, err
	}
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(20 * time.Second):
		t.Fatal("no answer to a post in 20 s")
		return proto.Message{}, nil
	}
}

func texts(ms []proto.Message) string {
	var b []string
	for _, m := range ms {
		b = append(b, m.Text)
	}
	return strings.Join(b, " ")
}

func TestEngine(t *testing.T) {
	c := natstest.Start(t, 3)
	e := open(t, c, "T1")
	ctx := context.Background()

	// Live delivery, from the start of Follow on.
	var mu sync.Mutex
	var live []proto.Message
	var skipped int
	fctx, stop := context.WithCancel(ctx)
	followed := make(chan error, 1)
	go func() {
		_, err := e.Follow(fctx, 0, func(b []store.Committed) {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range b {
				if c.RoomVector[e.Origin()] != c.Msg.Seq {
					t.Errorf("room vector %v of message %d", c.RoomVector, c.Msg.Seq)
				}
				live = append(live, c.Msg)
			}
		}, func() { mu.Lock(); skipped++; mu.Unlock() })
		followed <- err
	}()
	defer func() { stop(); <-followed }()
	time.Sleep(500 * time.Millisecond) // Follow's consumer is in place

	// Ten messages in "a", interleaved with others in "b".
	var a []proto.Message
	for i := 1; i <= 10; i++ {
		m, err := post(t, e, "a", "ann", fmt.Sprint("a", i), fmt.Sprint("r", i))
		if err != nil {
			t.Fatal(err)
		}
		a = append(a, m)
		if _, err := post(t, e, "b", "bob", fmt.Sprint("b", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	if a[0].Origin != e.Origin() || !proto.ValidNodeID(a[0].Origin) || a[1].Seq <= a[0].Seq {
		t.Fatalf("ids %s, %s", a[0].ID(), a[1].ID())
	}

	// A re-send with the same ref is the first copy.
	again, err := post(t, e, "a", "ann", "a3", "r3")
	if err != nil || again.Seq != a[2].Seq || again.Text != "a3" || again.Created != a[2].Created {
		t.Fatalf("re-send: %+v %v, want %+v", again, err, a[2])
	}

	p, err := e.Latest(ctx, "a", 4)
	if err != nil || texts(p.Messages) != "a7 a8 a9 a10" || p.Vector[e.Origin()] != a[9].Seq {
		t.Fatalf("Latest 4: %q %v %v", texts(p.Messages), p.Vector, err)
	}
	if p, err := e.Latest(ctx, "a", 100); err != nil || len(p.Messages) != 10 {
		t.Fatalf("Latest 100: %q %v", texts(p.Messages), err)
	}
	if p, err := e.Latest(ctx, "none", 10); err != nil || len(p.Messages) != 0 || len(p.Vector) != 0 {
		t.Fatalf("Latest of an empty room: %+v %v", p, err)
	}

	cur := proto.Vector{e.Origin(): a[5].Seq}
	if p, err := e.Since(ctx, "a", cur, 100, false); err != nil || texts(p.Messages) != "a7 a8 a9 a10" || p.Truncated {
		t.Fatalf("Since a6: %q %+v %v", texts(p.Messages), p, err)
	}
	if p, err := e.Since(ctx, "a", cur, 2, false); err != nil || texts(p.Messages) != "a7 a8" || !p.Truncated || p.Vector[e.Origin()] != a[7].Seq {
		t.Fatalf("Since a6, 2 oldest: %q %+v %v", texts(p.Messages), p, err)
	}
	if p, err := e.Since(ctx, "a", cur, 2, true); err != nil || texts(p.Messages) != "a9 a10" || !p.Truncated {
		t.Fatalf("Since a6, 2 newest: %q %+v %v", texts(p.Messages), p, err)
	}
	if p, err := e.Since(ctx, "a", proto.Vector{e.Origin(): a[9].Seq}, 10, false); err != nil || len(p.Messages) != 0 || p.Truncated {
		t.Fatalf("Since the newest: %+v %v", p, err)
	}
	// A cursor is the client's: one past the end (2^64-1 here, which +1
	// would wrap to 0) replays nothing.
	if p, err := e.Since(ctx, "a", proto.Vector{e.Origin(): 1<<64 - 1}, 10, false); err != nil || len(p.Messages) != 0 || p.Truncated {
		t.Fatalf("Since a cursor past the end: %q %+v %v", texts(p.Messages), p, err)
	}

	if p, err := e.Before(ctx, "a", e.Origin(), a[5].Seq, 3); err != nil || texts(p.Messages) != "a3 a4 a5" {
		t.Fatalf("Before a6: %q %v", texts(p.Messages), err)
	}
	if p, err := e.Before(ctx, "a", e.Origin(), a[2].Seq, 10); err != nil || texts(p.Messages) != "a1 a2" {
		t.Fatalf("Before a3: %q %v", texts(p.Messages), err)
	}
	for _, bad := range []struct {
		room, origin string
		seq          uint64
	}{{"b", e.Origin(), a[0].Seq}, {"a", "000000000000", a[0].Seq}, {"a", e.Origin(), 1 << 40}} {
		if _, err := e.Before(ctx, bad.room, bad.origin, bad.seq, 3); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Before %v: %v, want not found", bad, err)
		}
	}

	// A gap in the live feed is filled with what lies between, every room.
	if got, skipped := e.fill(ctx, a[0].Seq, a[3].Seq); texts(got) != "b1 a2 b2 a3 b3" || skipped != 0 {
		t.Fatalf("fill between a1 and a4: %q (%d skipped)", texts(got), skipped)
	}

	if !e.HasRoom("a") || e.HasRoom("none") {
		t.Error("HasRoom")
	}
	rooms, more, err := e.RoomsAfter(ctx, "", 1)
	if err != nil || len(rooms) != 1 || rooms[0].Room != "a" || rooms[0].Messages != 10 || !more || rooms[0].Last != a[9].Created {
		t.Fatalf("RoomsAfter: %+v %v %v", rooms, more, err)
	}

	// A message on the stream that is not chatr's is skipped and counted.
	nc := e.Conn()
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, subject("a"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "chatr.room.!!", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	post(t, e, "a", "ann", "a11", "")
	if p, err := e.Latest(ctx, "a", 2); err != nil || texts(p.Messages) != "a10 a11" {
		t.Fatalf("Latest past a foreign message: %q %v", texts(p.Messages), err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n, sk := len(live), skipped
		mu.Unlock()
		if n == 21 && sk == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live: %d messages and %d skipped, want 21 and 2", n, sk)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	for i := 1; i < len(live); i++ {
		if live[i].Seq <= live[i-1].Seq {
			t.Fatalf("live out of order: %d after %d", live[i].Seq, live[i-1].Seq)
		}
	}
	mu.Unlock()
}

// TestStreamChecks: an existing stream whose settings break chatr's
// guarantees is refused, naming each; one that keeps them is taken.
func TestStreamChecks(t *testing.T) {
	c := natstest.Start(t, 1)
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BAD", Subjects: []string{"chatr.room.*"},
		Storage: jetstream.MemoryStorage, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Config{URL: c.URL(), Stream: "BAD", Replicas: 1}, quiet)
	for _, want := range []string{"storage is memory", "duplicate window 1m0s", "--nats-stream"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open on a bad stream: %v, want it to say %q", err, want)
		}
	}
	// Streams of one account may not share subjects.
	if err := js.DeleteStream(ctx, "BAD"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, Config{URL: c.URL(), Stream: "GOOD", Replicas: 1}, quiet); err != nil {
		t.Fatalf("create: %v", err)
	}
	e, err := Open(ctx, Config{URL: c.URL(), Stream: "GOOD", Replicas: 1}, quiet)
	if err != nil {
		t.Fatalf("open the stream it made: %v", err)
	}
	e.Close()
	if _, err := Open(ctx, Config{URL: c.URL(), Stream: "GOOD", Replicas: 3}, quiet); err == nil || !strings.Contains(err.Error(), "1 replicas, fewer than --nats-replicas 3") {
		t.Errorf("Open with more replicas than the stream has: %v", err)
	}
}

// TestUnreachable: a NATS URL that does not answer fails Open at once with
// the URL named.
func TestUnreachable(t *testing.T) {
	start := time.Now()
	_, err := Open(context.Background(), Config{URL: "nats://127.0.0.1:1", Replicas: 1}, quiet)
	if err == nil || !strings.Contains(err.Error(), "--nats-url nats://127.0.0.1:1") {
		t.Fatalf("Open: %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v", d)
	}
	for _, f := range []string{"/nonexistent/token", os.DevNull} {
		if _, err := Open(context.Background(), Config{URL: "nats://127.0.0.1:1", TokenFile: f}, quiet); err == nil || !strings.Contains(err.Error(), "--nats-token-file") {
			t.Errorf("token file %s: %v", f, err)
		}
	}
}

func TestSubjects(t *testing.T) {
	for _, room := range []string{"lobby", "a.b", ".x.", "a-b_c.9"} {
		s := subject(room)
		if strings.ContainsAny(s[len(roomPrefix):], ".*> ") {
			t.Errorf("subject(%q) = %q", room, s)
		}
		if got, ok := roomOf(s); !ok || got != room {
			t.Errorf("roomOf(subject(%q)) = %q %v", room, got, ok)
		}
	}
	for _, s := range []string{"chatr.room.", "chatr.room.!!", "chatr.room.A", "chatr.room.a.b", "other.x", "chatr.room." + strings.Repeat("a", 65)} {
		if _, ok := roomOf(s); ok {
			t.Errorf("roomOf(%q) took it", s)
		}
	}
}

// fakeHub records what Presence tells it.
type fakeHub struct {
	mu      sync.Mutex
	remote  map[string]map[string][]proto.Person
	changed chan struct{}
}

func (h *fakeHub) LocalSnapshot() (map[string][]proto.Person, uint64) {
	return map[string][]proto.Person{"lobby": {{Name: "me"}}}, 1
}
func (h *fakeHub) LocalSince(gen uint64) (map[string][]proto.Person, uint64, bool) {
	return nil, gen, true
}
func (h *fakeHub) LocalChanged() <-chan struct{} { return h.changed }
func (h *fakeHub) SetRemote(node string, snap map[string][]proto.Person) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.remote[node] = snap
}
func (h *fakeHub) get(node string) (map[string][]proto.Person, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.remote[node]
	return s, ok
}

// TestPresenceInput: presence from other nodes is taken as snapshots and
// deltas in order; garbage, another node's subject, this node's own id and
// a delta after a missed one change nothing.
func TestPresenceInput(t *testing.T) {
	c := natstest.Start(t, 1)
	e, err := Open(context.Background(), Config{URL: c.URL(), Replicas: 1, Name: "test"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	h := &fakeHub{remote: map[string]map[string][]proto.Person{}, changed: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Presence(ctx, "aaaaaaaaaaaa", h) }()
	defer func() { stop(); <-done }()
	time.Sleep(200 * time.Millisecond) // subscribed

	const other = "bbbbbbbbbbbb"
	pub := func(subj, data string) {
		if err := e.Conn().Publish(subj, []byte(data)); err != nil {
			t.Fatal(err)
		}
		e.Conn().Flush()
	}
	for _, bad := range []struct{ subj, data string }{
		{presencePrefix + other, "not json"},
		{presencePrefix + other, `{"node":"` + other + `","gen":1,"rooms":{"x":[{"name":"m"}]}}`},    // a delta before any snapshot
		{presencePrefix + "cccccccccccc", `{"node":"` + other + `","full":true,"gen":1,"rooms":{}}`}, // another node's subject
		{presencePrefix + "aaaaaaaaaaaa", `{"node":"aaaaaaaaaaaa","full":true,"gen":1,"rooms":{}}`},  // this node's own
		{presencePrefix + "nope", `{"node":"nope","full":true,"gen":1,"rooms":{}}`},
	} {
		pub(bad.subj, bad.data)
	}
	time.Sleep(200 * time.Millisecond)
	h.mu.Lock()
	taken := len(h.remote)
	h.mu.Unlock()
	if taken != 0 {
		t.Fatalf("bad presence was taken: %d nodes", taken)
	}
	pub(presencePrefix+other, `{"node":"`+other+`","full":true,"gen":5,"rooms":{"lobby":[{"name":"bo"}]}}`)
	pub(presencePrefix+other, `{"node":"`+other+`","from":4,"gen":9,"rooms":{"lobby":[]}}`) // after a missed one
	pub(presencePrefix+other, `{"node":"`+other+`","from":5,"gen":6,"rooms":{"x":[{"name":"bo"}]}}`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		snap, _ := h.get(other)
		if len(snap["lobby"]) == 1 && len(snap["x"]) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence of %s: %v, want bo in lobby and x", other, snap)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pub(presencePrefix+other, `{"node":"`+other+`","full":true,"rooms":{}}`) // goodbye
	deadline = time.Now().Add(5 * time.Second)
	for snap, _ := h.get(other); len(snap) != 0; snap, _ = h.get(other) {
		if time.Now().After(deadline) {
			t.Fatalf("after a goodbye: %v", snap)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpenTogether: chatr nodes started at the same moment on a fresh NATS
// cluster all make (or find) the stream and the shared key bucket, and
// share one key.
func TestOpenTogether(t *testing.T) {
	c := natstest.Start(t, 3)
	const n = 3
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			e, err := Open(ctx, Config{URL: c.URL(), Replicas: 3, Name: fmt.Sprint("node", i)}, quiet)
			if err != nil {
				errs[i] = err
				return
			}
			defer e.Close()
			keys[i], errs[i] = e.SharedKey(ctx, "cursor")
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if string(keys[i]) != string(keys[0]) {
			t.Errorf("node %d has another key than node 0", i)
		}
	}
}
