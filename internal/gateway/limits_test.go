package gateway

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"chatr/internal/proto"
)

// Every frame type is rate-limited, not only sends: past --frame-burst,
// joins, leaves, pings and bad frames are answered rate_limited (sends
// keep their own --send-rate), and going on closes the session with 1008.
func TestFrameRateLimit(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--frame-rate", "0.001", "--frame-burst", "3")
	c := ts.hello(t, "fast") // 1
	c.Join("lobby", nil)     // 2
	c.Quiet()                // 3
	for _, f := range []struct{ frame, ref string }{
		{`{"type":"ping","ref":"p"}`, "p"},
		{`{"type":"join","room":"other","ref":"j"}`, "j"},
		{`{"type":"leave","room":"lobby","ref":"l"}`, "l"},
		{`{"type":"bogus","ref":"b"}`, "b"},
	} {
		c.Send(f.frame)
		c.ExpectError(proto.CodeRateLimited, f.ref)
	}
	// Sends have their own budget.
	c.Say("lobby", "still heard", "s1")
	if got := ts.metric(t, `chatr_limit_refused_total{limit="frame_rate"}`); got != 4 {
		t.Fatalf(`chatr_limit_refused_total{limit="frame_rate"} = %v, want 4`, got)
	}
	// Keep pinging (frames and WebSocket pings): the session is closed.
	for range maxRateBreaches {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		err := c.Conn.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`))
		cancel()
		if err != nil {
			break // closed under us: fine
		}
	}
	c.ExpectClose(websocket.StatusPolicyViolation)
}

// A session's joins replay at most --replay-rate messages a second after
// a first --replay-max (a re-join loop with history 1000 made a node send
// 857 MB in 5 s): a join over the budget is refused with rate_limited and
// joins nothing; a resume the budget would cut short is refused rather
// than shown a gap.
func TestReplayBudgetMessages(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--replay-max", "2000", "--replay-rate", "0.001", "--frame-burst", "1000")
	ts.appendN(t, "lobby", 1000)
	c := ts.hello(t, "rejoiner")
	for i := range 2 {
		if _, msgs, _ := c.Join("lobby", map[string]any{"history": 1000}); len(msgs) != 1000 {
			t.Fatalf("join %d replayed %d messages, want 1000", i, len(msgs))
		}
	}
	c.Send(`{"type":"join","room":"lobby","history":1,"ref":"j3"}`)
	c.ExpectError(proto.CodeRateLimited, "j3")
	// The refused join re-joined nothing; the session was in the room
	// before it, and is still.
	c.Say("lobby", "still in", "s1")
	if got := ts.metric(t, `chatr_limit_refused_total{limit="replay_rate"}`); got != 1 {
		t.Fatalf(`chatr_limit_refused_total{limit="replay_rate"} = %v, want 1`, got)
	}

	// Resumes: the room holds 1,001 messages; a history of 1,000 takes
	// half the budget of 2,000 and a resume from its first message 999
	// more; the next resume would be cut at what is left, so it is
	// refused, with no gap shown.
	r := ts.hello(t, "resumer")
	_, msgs, _ := r.Join("lobby", map[string]any{"history": 1000})
	from := msgs[0].Cursor
	if _, msgs, synced := r.Join("lobby", map[string]any{"since": from}); len(msgs) != 999 || synced.Truncated {
		t.Fatalf("resume replayed %d messages (truncated %v), want 999", len(msgs), synced.Truncated)
	}
	r.Send(`{"type":"leave","room":"lobby"}`)
	r.Expect("left")
	r.Send(map[string]any{"type": "join", "room": "lobby", "since": from, "ref": "r3"})
	r.ExpectError(proto.CodeRateLimited, "r3")
	r.Send(`{"type":"send","room":"lobby","text":"x","ref":"s"}`)
	r.ExpectError(proto.CodeNotJoined, "s")
}

// The bytes of a session's replays are bounded too: a join may overdraw
// --replay-bytes-burst once, and the next waits until it is paid back.
func TestReplayBudgetBytes(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--replay-bytes-burst", "65536", "--replay-bytes-rate", "1")
	long := strings.Repeat("x", proto.MaxTextBytes)
	for range 20 {
		if status, data := ts.post(t, "lobby", `{"sender":"bot","text":"`+long+`"}`); status != 201 {
			t.Fatalf("post: %d %s", status, data)
		}
	}
	c := ts.hello(t, "reader")
	if _, msgs, _ := c.Join("lobby", map[string]any{"history": 20}); len(msgs) != 20 {
		t.Fatalf("first join replayed %d messages, want 20", len(msgs))
	}
	c.Send(`{"type":"join","room":"lobby","history":1,"ref":"j2"}`)
	c.ExpectError(proto.CodeRateLimited, "j2")
	if got := ts.metric(t, `chatr_limit_refused_total{limit="replay_bytes"}`); got != 1 {
		t.Fatalf(`chatr_limit_refused_total{limit="replay_bytes"} = %v, want 1`, got)
	}
}

// --max-rooms-per-session caps the rooms one session is in (one joined
// 20,000, each join slower than the last): a join past it is answered
// too_many_rooms and joins nothing; leaving one makes room.
func TestMaxRoomsPerSession(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, unlimited("--max-rooms-per-session", "3")...)
	c := ts.hello(t, "hopper")
	for _, room := range []string{"a", "b", "c"} {
		c.Join(room, nil)
	}
	c.Join("b", nil) // a second join of a joined room is no new room
	c.Send(`{"type":"join","room":"d","ref":"d"}`)
	c.ExpectError(proto.CodeTooManyRooms, "d")
	c.Send(`{"type":"send","room":"d","text":"x","ref":"s"}`)
	c.ExpectError(proto.CodeNotJoined, "s")
	c.Send(`{"type":"leave","room":"a"}`)
	c.Expect("left")
	c.Join("d", nil)
	if got := ts.metric(t, `chatr_limit_refused_total{limit="rooms_per_session"}`); got != 1 {
		t.Fatalf(`chatr_limit_refused_total{limit="rooms_per_session"} = %v, want 1`, got)
	}
}

// --new-rooms-per-minute caps the rooms one address brings into being (one
// made 20,000 permanent rooms in 4 s): a room is new while it has no
// message and no one in it. Joining or posting to a room that exists is
// never refused.
func TestNewRoomsPerMinute(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, unlimited("--new-rooms-per-minute", "2")...)
	ts.appendN(t, "old", 1)
	c := ts.hello(t, "maker")
	c.Join("new1", nil)
	if status, data := ts.post(t, "new2", `{"sender":"maker","text":"hi"}`); status != 201 {
		t.Fatalf("first new rooms: post %d %s", status, data)
	}
	c.Send(`{"type":"join","room":"new3","ref":"n3"}`)
	c.ExpectError(proto.CodeTooManyNewRooms, "n3")
	status, hdr, data := ts.do(t, "POST", "/chatr/api/rooms/new4/messages", "application/json", []byte(`{"sender":"maker","text":"hi"}`))
	if status != 429 || hdr.Get("Retry-After") == "" || checkErrorBody(t, data) != proto.CodeTooManyNewRooms {
		t.Fatalf("a post to a new room over the cap: %d %v %s, want 429 too_many_new_rooms with Retry-After", status, hdr, data)
	}
	// Rooms that exist: one with messages, one with someone in it.
	c.Join("old", nil)
	c.Join("new2", nil)
	other := ts.hello(t, "other")
	other.Join("new1", nil)
	if status, data := ts.post(t, "old", `{"sender":"maker","text":"hi"}`); status != 201 {
		t.Fatalf("a post to an old room: %d %s", status, data)
	}
	if got := ts.metric(t, `chatr_limit_refused_total{limit="new_rooms"}`); got != 2 {
		t.Fatalf(`chatr_limit_refused_total{limit="new_rooms"} = %v, want 2`, got)
	}
}

// GETs are limited per address (--get-rate, --get-burst): past the burst,
// any GET route is answered 429 with Retry-After, and other addresses are
// served as before.
func TestGetRateLimit(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--get-rate", "0.001", "--get-burst", "3")
	for i := range 3 {
		if status, _, data := ts.do(t, "GET", "/chatr/api/rooms", "", nil); status != 200 {
			t.Fatalf("GET %d within the burst: %d %s", i, status, data)
		}
	}
	for _, path := range []string{"/chatr/api/rooms", "/chatr/api/rooms/lobby/messages", "/chatr/chatr.html", "/healthz"} {
		status, hdr, data := ts.do(t, "GET", path, "", nil)
		if status != 429 || hdr.Get("Retry-After") == "" || checkErrorBody(t, data) != proto.CodeRateLimited {
			t.Fatalf("GET %s past the burst: %d %v %s, want 429 rate_limited with Retry-After", path, status, hdr, data)
		}
	}
	// Posts have their own limit; another address its own budget.
	if status, data := ts.post(t, "lobby", `{"sender":"ann","text":"hi"}`); status != 201 {
		t.Fatalf("post: %d %s", status, data)
	}
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	resp, err := other.Get(ts.url + "/chatr/api/rooms")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET from another address: %s", resp.Status)
	}
	// The admin listener has no GET limit.
	if _, _, body := ts.adminGet(t, "/metrics"); !strings.Contains(string(body), `chatr_limit_refused_total{limit="get_rate"} 4`) {
		t.Fatalf(`/metrics lacks chatr_limit_refused_total{limit="get_rate"} 4`)
	}
}
