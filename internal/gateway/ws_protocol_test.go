package gateway

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/client/clienttest"
	"chatr/internal/proto"
)

func TestWelcome(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	c := ts.dial(t)
	c.Send(`{"type":"hello","name":"  Zoë_the-3rd.  "}`)
	w := c.Expect("welcome")
	if w.Name != "Zoë_the-3rd." {
		t.Errorf("welcome name %q, want the trimmed name", w.Name)
	}
	if w.Node != ts.st.NodeID() || !proto.ValidNodeID(w.Node) {
		t.Errorf("welcome node %q, want %q", w.Node, ts.st.NodeID())
	}
	if w.Session == "" {
		t.Error("welcome has no session")
	}
	if len(w.Nodes) != 1 || w.Nodes[0].ID != ts.st.NodeID() || w.Nodes[0].Name != "testnode" || w.Nodes[0].HTTP != ts.addr {
		t.Errorf("welcome nodes %+v, want this node alone", w.Nodes)
	}
	if got, want := w.Keys(), []string{"engine", "name", "node", "nodes", "session", "type"}; !slices.Equal(got, want) {
		t.Errorf("welcome fields %v, want %v", got, want)
	}
	if want := `"engine":"` + *engine + `"`; !strings.Contains(string(w.Raw), want) {
		t.Errorf("welcome %s, want %s", w, want)
	}
	other := ts.hello(t, "other")
	_ = other
	c2 := ts.dial(t)
	c2.Send(`{"type":"hello","name":"x"}`)
	if w2 := c2.Expect("welcome"); w2.Session == w.Session {
		t.Errorf("two sessions share the id %q", w.Session)
	}
}

// join answers joined with presence, then the history, then synced; send
// is acked after the commit and reaches every session of the room, the
// sender's included.
func TestJoinSendAndPresence(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	alice := ts.hello(t, "alice")
	joined, msgs, synced := alice.Join("lobby", nil)
	if len(joined.Presence) != 1 || joined.Presence[0] != (proto.Person{Name: "alice", Node: ts.st.NodeID()}) {
		t.Fatalf("alice joined with presence %+v, want alice alone", joined.Presence)
	}
	if len(msgs) != 0 || synced.Cursor != "" || synced.Truncated {
		t.Fatalf("empty room: replay %v, synced %s", msgs, synced)
	}

	bob := ts.hello(t, "bob")
	joined, _, _ = bob.Join("lobby", nil)
	want := []proto.Person{{Name: "alice", Node: ts.st.NodeID()}, {Name: "bob", Node: ts.st.NodeID()}}
	if !slices.Equal(joined.Presence, want) {
		t.Fatalf("bob joined with presence %+v, want %+v", joined.Presence, want)
	}
	p := alice.Expect("presence")
	if p.Room != "lobby" || !slices.Equal(p.Joined, want[1:]) || len(p.Left) != 0 || p.Left == nil {
		t.Fatalf("alice got presence %s, want bob joined and an empty left list", p)
	}

	alice.Send(`{"type":"send","room":"lobby","text":"  hello <b>bob</b>  ","ref":"a1"}`)
	var ack, mine clienttest.Frame
	for ack.Type == "" || mine.Type == "" {
		f := alice.Next()
		switch f.Type {
		case "ack":
			ack = f
		case "message":
			mine = f
		default:
			t.Fatalf("alice got %s", f)
		}
	}
	theirs := bob.Expect("message")
	if ack.Ref != "a1" || ack.ID != ts.msgID(1) || ack.Created != mine.Created {
		t.Fatalf("ack %s does not match message %s", ack, mine)
	}
	if got, want := ack.Keys(), []string{"created", "id", "ref", "type"}; !slices.Equal(got, want) {
		t.Errorf("ack fields %v, want %v", got, want)
	}
	for _, m := range []clienttest.Frame{mine, theirs} {
		if m.Room != "lobby" || m.ID != ts.msgID(1) || m.Sender != "alice" || m.Text != "  hello <b>bob</b>  " ||
			m.Node != ts.origin || m.Cursor == "" || m.Created != ack.Created {
			t.Fatalf("message %s", m)
		}
		if got, want := m.Keys(), []string{"created", "cursor", "id", "node", "room", "sender", "text", "type"}; !slices.Equal(got, want) {
			t.Errorf("message fields %v, want %v", got, want)
		}
		created := checkCreated(t, m.Created)
		if d := time.Since(created); d < -time.Second || d > time.Minute {
			t.Errorf("created %s is not now", m.Created)
		}
	}
	// The ack came after the commit: the store holds the message.
	page, err := ts.srv.store.Latest(context.Background(), "lobby", 10)
	if err != nil || len(page.Messages) != 1 || page.Messages[0].ID() != ack.ID {
		t.Fatalf("store after the ack: %+v, %v", page.Messages, err)
	}

	// Bob leaves: alice is told; bob gets left and no more lobby messages.
	bob.Send(`{"type":"leave","room":"lobby"}`)
	if l := bob.Expect("left"); l.Room != "lobby" {
		t.Fatalf("left %s", l)
	}
	p = alice.Expect("presence")
	if !slices.Equal(p.Left, want[1:]) || len(p.Joined) != 0 {
		t.Fatalf("alice got presence %s, want bob left", p)
	}
	if _, _, other := alice.Say("lobby", "bob is gone", "a2"); len(other) > 0 {
		t.Fatalf("alice got %v", other)
	}
	bob.Quiet()
	bob.Send(`{"type":"send","room":"lobby","text":"hi","ref":"b1"}`)
	bob.ExpectError(proto.CodeNotJoined, "b1")

	// Bob comes back, then disconnects: alice is told he left.
	bob.Join("lobby", map[string]any{"history": 0})
	alice.Expect("presence")
	bob.Conn.CloseNow()
	p = alice.Expect("presence")
	if !slices.Equal(p.Left, want[1:]) {
		t.Fatalf("alice got presence %s after bob disconnected, want bob left", p)
	}
	alice.Quiet()
}

// Two rooms are independent: a message of one never reaches the other.
func TestRoomsAreSeparate(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	a := ts.hello(t, "a")
	a.Join("lobby", nil)
	a.Join("dev", nil)
	b := ts.hello(t, "b")
	b.Join("dev", nil)
	a.Expect("presence")
	b.Say("dev", "in dev", "1")
	if m := a.Expect("message"); m.Room != "dev" {
		t.Fatalf("a got %s", m)
	}
	a.Say("lobby", "in lobby", "2")
	b.Quiet() // b is only in dev
}

// A person with two sessions in a room is listed once, and leaves only when
// the last session goes.
func TestTwoSessionsOnePerson(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	watcher := ts.hello(t, "watcher")
	watcher.Join("lobby", nil)
	tab1 := ts.hello(t, "carol")
	tab1.Join("lobby", nil)
	if p := watcher.Expect("presence"); len(p.Joined) != 1 || p.Joined[0].Name != "carol" {
		t.Fatalf("watcher got %s", p)
	}
	tab2 := ts.hello(t, "carol")
	joined, _, _ := tab2.Join("lobby", nil)
	names := []string{}
	for _, p := range joined.Presence {
		names = append(names, p.Name)
	}
	if !slices.Equal(names, []string{"carol", "watcher"}) {
		t.Fatalf("second tab's presence %v, want carol once and watcher", names)
	}
	watcher.Quiet() // no second "carol joined"
	tab1.Quiet()
	if got := ts.hub.Presence("lobby"); len(got) != 2 {
		t.Fatalf("hub presence %+v, want 2 people", got)
	}
	tab1.Send(`{"type":"leave","room":"lobby"}`)
	tab1.Expect("left")
	watcher.Quiet() // carol is still here
	tab2.Conn.CloseNow()
	p := watcher.Expect("presence")
	if len(p.Left) != 1 || p.Left[0].Name != "carol" {
		t.Fatalf("watcher got %s, want carol left", p)
	}
}

// join replays the newest 50 messages by default, or history N, oldest
// first, each with a cursor, then synced with the room's cursor.
func TestJoinHistory(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	all := ts.appendN(t, "lobby", 60)
	c := ts.hello(t, "reader")
	cases := []struct {
		name  string
		extra map[string]any
		want  []string
	}{
		{"default", nil, all[10:]},
		{"history 3", map[string]any{"history": 3}, all[57:]},
		{"history 0", map[string]any{"history": 0}, nil},
		{"history null", map[string]any{"history": nil}, all[10:]},
		{"history over the room", map[string]any{"history": 1000}, all},
		{"history over the limit", map[string]any{"history": 5000}, all},
	}
	var lastCursor string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := c.For(t)
			_, msgs, synced := c.Join("lobby", tc.extra)
			if got := ids(msgs); !slices.Equal(got, tc.want) {
				t.Fatalf("replayed %v, want %v", got, tc.want)
			}
			for _, m := range msgs {
				if m.Cursor == "" || m.Sender != "bot" {
					t.Fatalf("replayed message %s", m)
				}
				checkCreated(t, m.Created)
			}
			if synced.Cursor == "" || synced.Truncated {
				t.Fatalf("synced %s", synced)
			}
			if len(msgs) > 0 && msgs[len(msgs)-1].Cursor != synced.Cursor {
				t.Errorf("the last replayed message's cursor differs from synced's")
			}
			if lastCursor != "" && synced.Cursor != lastCursor {
				t.Errorf("synced cursor changed without new messages")
			}
			lastCursor = synced.Cursor
			// A join of a joined room resyncs it: it must not leave the
			// session joined twice.
			c.Send(`{"type":"leave","room":"lobby"}`)
			c.Expect("left")
		})
	}
	c.Send(`{"type":"leave","room":"lobby"}`)
	c.ExpectError(proto.CodeNotJoined, "")
}

// Resume: a client that went away joins with the cursor of the last
// message it got and receives exactly the missed messages, once, in order.
func TestResumeWithSince(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	first := ts.appendN(t, "lobby", 5)
	c := ts.hello(t, "resumer")
	_, msgs, _ := c.Join("lobby", nil)
	if !slices.Equal(ids(msgs), first) {
		t.Fatalf("replayed %v", ids(msgs))
	}
	more := ts.appendN(t, "lobby", 3)
	var last clienttest.Frame
	for range more {
		last = c.Expect("message")
	}
	cursor := last.Cursor
	c.Conn.CloseNow()

	missed := ts.appendN(t, "lobby", 7)
	ts.appendN(t, "other", 4) // another room's messages do not count

	c = ts.hello(t, "resumer")
	_, msgs, synced := c.Join("lobby", map[string]any{"since": cursor})
	if got := ids(msgs); !slices.Equal(got, missed) {
		t.Fatalf("resumed with %v, want exactly the missed %v", got, missed)
	}
	if synced.Truncated || synced.Cursor == "" {
		t.Fatalf("synced %s", synced)
	}
	c.Quiet()

	// Resuming from the synced cursor gives nothing, and live messages go on.
	c.Send(`{"type":"leave","room":"lobby"}`)
	c.Expect("left")
	_, msgs, synced2 := c.Join("lobby", map[string]any{"since": synced.Cursor})
	if len(msgs) != 0 || synced2.Cursor != synced.Cursor {
		t.Fatalf("resume at the head replayed %v, synced %s", ids(msgs), synced2)
	}
	live := ts.appendN(t, "lobby", 2)
	for _, id := range live {
		if m := c.Expect("message"); m.ID != id {
			t.Fatalf("live %s, want %s", m, id)
		}
	}
	c.Quiet()

	// Each replayed message's cursor resumes right after it.
	c.Send(`{"type":"leave","room":"lobby"}`)
	c.Expect("left")
	_, msgs, _ = c.Join("lobby", map[string]any{"since": cursor})
	mid := msgs[3]
	c.Send(`{"type":"leave","room":"lobby"}`)
	c.Expect("left")
	_, rest, _ := c.Join("lobby", map[string]any{"since": mid.Cursor})
	if got := ids(rest); !slices.Equal(got, ids(msgs[4:])) {
		t.Fatalf("resumed from a replayed message's cursor: %v, want %v", got, ids(msgs[4:]))
	}
}

// A since further back than --replay-max replays the newest messages and
// says synced.truncated.
func TestResumeTruncated(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--replay-max", "5")
	c := ts.hello(t, "late")
	ts.appendN(t, "lobby", 1)
	_, msgs, _ := c.Join("lobby", nil)
	cursor := msgs[0].Cursor
	c.Conn.CloseNow()
	missed := ts.appendN(t, "lobby", 10)

	c = ts.hello(t, "late")
	_, msgs, synced := c.Join("lobby", map[string]any{"since": cursor})
	if got := ids(msgs); !slices.Equal(got, missed[5:]) {
		t.Fatalf("replayed %v, want the newest 5 %v", got, missed[5:])
	}
	if !synced.Truncated {
		t.Fatalf("synced %s, want truncated", synced)
	}
	// The synced cursor is at the head: a resume from it is complete.
	c.Send(`{"type":"leave","room":"lobby"}`)
	c.Expect("left")
	_, msgs, synced = c.Join("lobby", map[string]any{"since": synced.Cursor})
	if len(msgs) != 0 || synced.Truncated {
		t.Fatalf("resume at the head: %v, %s", ids(msgs), synced)
	}
	// Exactly --replay-max missed messages is not a gap.
	c.Send(`{"type":"leave","room":"lobby"}`)
	c.Expect("left")
	_, msgs, synced = c.Join("lobby", map[string]any{"since": msgs0Cursor(t, ts, missed[4])})
	if len(msgs) != 5 || synced.Truncated {
		t.Fatalf("5 missed with --replay-max 5: %v, %s", ids(msgs), synced)
	}
}

// msgs0Cursor is the cursor of a client that holds the room up to id.
func msgs0Cursor(t *testing.T, ts *testServer, id string) string {
	t.Helper()
	_, seq, perr := proto.ParseMessageID(id)
	if perr != nil {
		t.Fatal(perr)
	}
	return proto.EncodeCursor(ts.hub.Scope("lobby"), proto.Vector{ts.origin: seq})
}

// Live messages that race a join are neither lost nor repeated: a client
// leaves and joins again with since while another sends 200 messages.
func TestJoinRacesLiveMessages(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, unlimited("--send-rate", "100000", "--send-burst", "100000")...)
	const total = 200
	sender := ts.hello(t, "sender")
	sender.Join("lobby", nil)
	joiner := ts.hello(t, "joiner")
	_, _, synced := joiner.Join("lobby", map[string]any{"history": 0})
	cursor := synced.Cursor

	// The sender writes its sends in bursts (so commits hold several
	// messages) and counts its acks, both in the background.
	writeErr := make(chan error, 1)
	go func() {
		for i := range total {
			ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
			err := sender.Conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"send","room":"lobby","text":"n%d","ref":"r%d"}`, i, i))
			cancel()
			if err != nil {
				writeErr <- err
				return
			}
			if i%5 == 4 {
				time.Sleep(2 * time.Millisecond) // spread the sends over the rejoins
			}
		}
	}()
	acked := make(chan error, 1)
	go func() {
		acks := 0
		for acks < total {
			f, err := sender.Read()
			if err != nil {
				acked <- err
				return
			}
			if f.Type == "ack" {
				acks++
			} else if f.Type == "error" {
				acked <- fmt.Errorf("sender got %s", f)
				return
			}
		}
		acked <- nil
	}()

	count := map[string]int{}
	var order []string
	take := func(f clienttest.Frame) {
		switch f.Type {
		case "message":
			count[f.ID]++
			order = append(order, f.ID)
			cursor = f.Cursor
		case "synced":
			if f.Truncated {
				t.Fatalf("synced %s truncated", f)
			}
			if f.Cursor != "" {
				cursor = f.Cursor
			}
		case "joined", "left", "presence":
		default:
			t.Fatalf("joiner got %s", f)
		}
	}
	rejoin := func() {
		joiner.Send(`{"type":"leave","room":"lobby"}`)
		for {
			f := joiner.Next()
			take(f)
			if f.Type == "left" {
				break
			}
		}
		if cursor == "" {
			// Nothing received yet: an empty cursor joins with history.
			joiner.Send(`{"type":"join","room":"lobby","history":1000}`)
		} else {
			joiner.Send(map[string]any{"type": "join", "room": "lobby", "since": cursor})
		}
		for {
			f := joiner.Next()
			take(f)
			if f.Type == "synced" {
				break
			}
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	rejoins := 0
	// Rejoin until every message is stored (acked).
	for sending := true; sending; {
		select {
		case err := <-writeErr:
			t.Fatalf("sender: %v", err)
		case err := <-acked:
			if err != nil {
				t.Fatalf("sender: %v", err)
			}
			sending = false
		default:
		}
		rejoin()
		rejoins++
		if time.Now().After(deadline) {
			t.Fatal("took too long")
		}
	}
	rejoin()
	for len(count) < total {
		f, err := joiner.Read()
		if err != nil {
			var missing []int
			for i := 1; i <= total; i++ {
				if count[ts.msgID(i)] == 0 {
					missing = append(missing, i)
				}
			}
			v, _ := proto.DecodeCursor(ts.hub.Scope("lobby"), cursor)
			t.Fatalf("after the last resume: %v; missing seqs %v; cursor %v", err, missing, v)
		}
		take(f)
	}
	for _, f := range joiner.PingPong() {
		take(f)
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("message %s received %d times", id, n)
		}
	}
	if len(count) != total {
		t.Fatalf("received %d distinct messages, want %d", len(count), total)
	}
	// Each origin's order holds.
	for i := 1; i < len(order); i++ {
		_, a, _ := proto.ParseMessageID(order[i-1])
		_, b, _ := proto.ParseMessageID(order[i])
		if b <= a {
			t.Fatalf("out of order: %s after %s", order[i], order[i-1])
		}
	}
	t.Logf("%d rejoins during %d messages", rejoins, total)
}

// A join of a room already joined resyncs it without leaving the session
// subscribed twice.
func TestJoinTwiceResyncs(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ts.appendN(t, "lobby", 3)
	c := ts.hello(t, "twice")
	_, msgs, synced := c.Join("lobby", nil)
	if len(msgs) != 3 {
		t.Fatalf("replay %v", ids(msgs))
	}
	c.Send(map[string]any{"type": "join", "room": "lobby", "since": synced.Cursor})
	// Whatever the resync says first (a left is allowed), it ends in synced.
	for {
		f := c.Next()
		if f.Type == "synced" {
			break
		}
		if f.Type == "message" {
			t.Fatalf("resync from the head replayed %s", f)
		}
	}
	live := ts.appendN(t, "lobby", 1)
	if m := c.Expect("message"); m.ID != live[0] {
		t.Fatalf("live %s", m)
	}
	c.Quiet() // delivered once, not twice
	if got := ts.hub.Presence("lobby"); len(got) != 1 {
		t.Fatalf("presence %+v", got)
	}
}

// A send repeated with the same ref is acked with the first message and
// stores nothing (docs/protocol.md, Changed).
func TestSendSameRefOnce(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	c := ts.hello(t, "dup")
	c.Join("lobby", nil)
	ack1, _, _ := c.Say("lobby", "once", "same")
	c.Send(`{"type":"send","room":"lobby","text":"once","ref":"same"}`)
	ack2, before := c.Until("ack")
	if ack2.ID != ack1.ID || ack2.Created != ack1.Created {
		t.Fatalf("second ack %s, want the first %s", ack2, ack1)
	}
	for _, f := range append(before, c.PingPong()...) {
		if f.Type == "message" {
			t.Fatalf("a repeated ref delivered %s again", f)
		}
	}
	page, _ := ts.srv.store.Latest(context.Background(), "lobby", 10)
	if len(page.Messages) != 1 {
		t.Fatalf("stored %d messages, want 1", len(page.Messages))
	}
	// Another name, or another room, with the same ref is a new message.
	d := ts.hello(t, "other")
	d.Join("lobby", nil)
	d.Send(`{"type":"send","room":"lobby","text":"once","ref":"same"}`)
	if ack3, _ := d.Until("ack"); ack3.ID == ack1.ID {
		t.Fatalf("another sender's ref was taken for a repeat")
	}
}
