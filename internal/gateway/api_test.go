package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"chatr/internal/proto"
)

// apiMessage is a message object of the HTTP API.
type apiMessage struct {
	Room, ID, Sender, Text, Created, Node string
}

type apiPage struct {
	Messages []apiMessage `json:"messages"`
	Cursor   string       `json:"cursor"`
}

func (ts *testServer) post(t *testing.T, room, body string) (int, []byte) {
	t.Helper()
	status, _, data := ts.do(t, "POST", "/chatr/api/rooms/"+room+"/messages", "application/json", []byte(body))
	return status, data
}

func (ts *testServer) getPage(t *testing.T, room, query string) apiPage {
	t.Helper()
	status, _, data := ts.do(t, "GET", "/chatr/api/rooms/"+room+"/messages"+query, "", nil)
	if status != 200 {
		t.Fatalf("GET %s%s: %d %s", room, query, status, data)
	}
	var p apiPage
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("GET %s%s: %v: %s", room, query, err, data)
	}
	return p
}

func pageIDs(p apiPage) []string {
	out := make([]string, len(p.Messages))
	for i, m := range p.Messages {
		out[i] = m.ID
	}
	return out
}

// checkErrorBody checks the docs/protocol.md error shape and returns its code.
func checkErrorBody(t *testing.T, data []byte) string {
	t.Helper()
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(data, &outer); err != nil || len(outer) != 1 || outer["error"] == nil {
		t.Fatalf("error body %s is not {\"error\": {...}}", data)
	}
	var inner map[string]any
	if err := json.Unmarshal(outer["error"], &inner); err != nil || len(inner) != 2 {
		t.Fatalf("error body %s: want exactly code and message", data)
	}
	code, _ := inner["code"].(string)
	msg, _ := inner["message"].(string)
	if code == "" || msg == "" {
		t.Fatalf("error body %s: empty code or message", data)
	}
	return code
}

func TestPostMessage(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	watcher := ts.hello(t, "watcher")
	watcher.Join("lobby", nil)
	status, hdr, data := ts.do(t, "POST", "/chatr/api/rooms/lobby/messages", "application/json; charset=utf-8",
		[]byte(`{"sender":"  api bot ","text":"<script>alert(1)</script>"}`))
	if status != 201 {
		t.Fatalf("POST: %d %s", status, data)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	var keys map[string]any
	json.Unmarshal(data, &keys)
	got := slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"created", "id", "node", "room", "sender", "text"}; !slices.Equal(got, want) {
		t.Errorf("message fields %v, want %v", got, want)
	}
	var m apiMessage
	json.Unmarshal(data, &m)
	if m.Room != "lobby" || m.ID != ts.msgID(1) || m.Sender != "api bot" || m.Text != "<script>alert(1)</script>" || m.Node != ts.origin {
		t.Fatalf("stored %+v", m)
	}
	checkCreated(t, m.Created)
	// WebSocket sessions in the room get it live.
	if f := watcher.Expect("message"); f.ID != m.ID || f.Created != m.Created || f.Sender != "api bot" {
		t.Fatalf("watcher got %s", f)
	}
	// And it is stored.
	p := ts.getPage(t, "lobby", "")
	if len(p.Messages) != 1 || p.Messages[0] != m {
		t.Fatalf("GET after POST: %+v, want %+v", p.Messages, m)
	}
	// The largest text, all escapes, still fits the body limit.
	big := strings.Repeat(`\u0001`, proto.MaxTextBytes)
	if status, data := ts.post(t, "lobby", `{"sender":"bot","text":"`+big+`"}`); status != 201 {
		t.Fatalf("4096-byte text, escaped: %d %s", status, data)
	}
}

// Every bad POST answers with its status and the error shape, and stores
// nothing.
func TestPostRejects(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	cases := []struct {
		name        string
		room        string
		contentType string
		body        string
		status      int
		code        string
	}{
		{"not JSON", "lobby", "application/json", `sender=a&text=b`, 400, proto.CodeBadRequest},
		{"empty body", "lobby", "application/json", ``, 400, proto.CodeBadRequest},
		{"JSON array", "lobby", "application/json", `[{"sender":"a","text":"b"}]`, 400, proto.CodeBadRequest},
		{"two objects", "lobby", "application/json", `{"sender":"a","text":"b"}{"sender":"a","text":"b"}`, 400, proto.CodeBadRequest},
		{"trailing garbage", "lobby", "application/json", `{"sender":"a","text":"b"} x`, 400, proto.CodeBadRequest},
		{"unknown field", "lobby", "application/json", `{"sender":"a","text":"b","room":"dev"}`, 400, proto.CodeBadRequest},
		{"wrong types", "lobby", "application/json", `{"sender":1,"text":"b"}`, 400, proto.CodeBadRequest},
		{"no sender", "lobby", "application/json", `{"text":"b"}`, 400, proto.CodeBadRequest},
		{"blank sender", "lobby", "application/json", `{"sender":"  ","text":"b"}`, 400, proto.CodeBadRequest},
		{"sender too long", "lobby", "application/json", `{"sender":"` + strings.Repeat("s", 33) + `","text":"b"}`, 400, proto.CodeBadRequest},
		{"sender bad character", "lobby", "application/json", `{"sender":"a<b","text":"b"}`, 400, proto.CodeBadRequest},
		{"no text", "lobby", "application/json", `{"sender":"a"}`, 400, proto.CodeBadRequest},
		{"empty text", "lobby", "application/json", `{"sender":"a","text":""}`, 400, proto.CodeBadRequest},
		{"text too long", "lobby", "application/json", `{"sender":"a","text":"` + strings.Repeat("t", 4097) + `"}`, 413, proto.CodeTooLarge},
		{"text not UTF-8", "lobby", "application/json", "{\"sender\":\"a\",\"text\":\"\xff\"}", 400, proto.CodeBadRequest},
		{"body over 32 KiB", "lobby", "application/json", `{"sender":"a","text":"` + strings.Repeat(`\u0001`, 6000) + `"}`, 413, proto.CodeTooLarge},
		{"text/plain", "lobby", "text/plain", `{"sender":"a","text":"b"}`, 415, proto.CodeBadRequest},
		{"form", "lobby", "application/x-www-form-urlencoded", `sender=a&text=b`, 415, proto.CodeBadRequest},
		{"no content type", "lobby", "", `{"sender":"a","text":"b"}`, 415, proto.CodeBadRequest},
		{"bad content type", "lobby", "application/json; ===", `{"sender":"a","text":"b"}`, 415, proto.CodeBadRequest},
		{"bad room", "Lobby", "application/json", `{"sender":"a","text":"b"}`, 400, proto.CodeBadRequest},
		{"room too long", strings.Repeat("r", 65), "application/json", `{"sender":"a","text":"b"}`, 400, proto.CodeBadRequest},
		{"room with escapes", "a%20b", "application/json", `{"sender":"a","text":"b"}`, 400, proto.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, data := ts.do(t, "POST", "/chatr/api/rooms/"+tc.room+"/messages", tc.contentType, []byte(tc.body))
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, data, tc.status)
			}
			if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("error Content-Type %q", ct)
			}
			if code := checkErrorBody(t, data); code != tc.code {
				t.Fatalf("code %q, want %q", code, tc.code)
			}
		})
	}
	if rooms := ts.st.Rooms(); len(rooms) != 0 {
		t.Fatalf("rejected requests stored messages: %+v", rooms)
	}
	if p := ts.getPage(t, "lobby", ""); len(p.Messages) != 0 {
		t.Fatalf("rejected requests stored %+v", p.Messages)
	}
}

// The HTTP API is rate limited per IP: 429 with Retry-After, nothing stored.
func TestPostRateLimit(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--send-rate", "1", "--send-burst", "2")
	for i := range 2 {
		if status, data := ts.post(t, "lobby", `{"sender":"a","text":"ok`+strconv.Itoa(i)+`"}`); status != 201 {
			t.Fatalf("POST %d: %d %s", i, status, data)
		}
	}
	status, hdr, data := ts.do(t, "POST", "/chatr/api/rooms/lobby/messages", "application/json", []byte(`{"sender":"a","text":"too many"}`))
	if status != 429 {
		t.Fatalf("third POST: %d %s, want 429", status, data)
	}
	if code := checkErrorBody(t, data); code != proto.CodeRateLimited {
		t.Fatalf("code %q", code)
	}
	ra, err := strconv.Atoi(hdr.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After %q, want whole seconds >= 1", hdr.Get("Retry-After"))
	}
	if p := ts.getPage(t, "lobby", ""); len(p.Messages) != 2 {
		t.Fatalf("stored %d messages, want 2", len(p.Messages))
	}
	// A bad body does not use up the rate: it is refused for what it is.
	if status, _ := ts.post(t, "lobby", `nope`); status != 400 {
		t.Fatalf("bad body while limited: %d, want 400", status)
	}
}

func TestGetMessagesLimit(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	all := ts.appendN(t, "lobby", 1005)
	cases := []struct {
		query  string
		status int
		want   []string
	}{
		{"", 200, all[955:]},
		{"?limit=1", 200, all[1004:]},
		{"?limit=7", 200, all[998:]},
		{"?limit=1000", 200, all[5:]},
		{"?limit=1001", 200, all[5:]},  // clamped to 1000
		{"?limit=99999", 200, all[5:]}, // clamped to 1000
		{"?limit=0", 400, nil},         // documented: 1 to 1000
		{"?limit=-1", 400, nil},
		{"?limit=ten", 400, nil},
		{"?limit=1.5", 400, nil},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			status, _, data := ts.do(t, "GET", "/chatr/api/rooms/lobby/messages"+tc.query, "", nil)
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, data, tc.status)
			}
			if status != 200 {
				if code := checkErrorBody(t, data); code != proto.CodeBadRequest {
					t.Fatalf("code %q", code)
				}
				return
			}
			var p apiPage
			json.Unmarshal(data, &p)
			if got := pageIDs(p); !slices.Equal(got, tc.want) {
				t.Fatalf("got %d messages %v..., want %d", len(got), head(got), len(tc.want))
			}
			if p.Cursor == "" {
				t.Fatal("no cursor")
			}
		})
	}
	// An empty or unknown room is an empty page.
	if p := ts.getPage(t, "empty", ""); len(p.Messages) != 0 || p.Messages == nil || p.Cursor != "" {
		t.Fatalf("empty room: %+v", p)
	}
}

func head(s []string) []string { return s[:min(3, len(s))] }

// before pages back, since pages forward; each message is listed once.
func TestGetMessagesPaging(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	first := ts.appendN(t, "lobby", 5)
	ts.appendN(t, "other", 3)
	start := ts.getPage(t, "lobby", "")
	if !slices.Equal(pageIDs(start), first) || start.Cursor == "" {
		t.Fatalf("first page %+v", start)
	}
	rest := ts.appendN(t, "lobby", 23)
	all := append(slices.Clone(first), rest...)

	// Forward from the first page's cursor.
	var got []string
	cursor := start.Cursor
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("since paging does not end")
		}
		p := ts.getPage(t, "lobby", "?limit=5&since="+url.QueryEscape(cursor))
		if p.Cursor == "" {
			t.Fatal("since page without cursor")
		}
		cursor = p.Cursor
		if len(p.Messages) == 0 {
			break
		}
		got = append(got, pageIDs(p)...)
	}
	if !slices.Equal(got, rest) {
		t.Fatalf("since paging got %v, want %v", got, rest)
	}
	// From the end, nothing new until a new message.
	more := ts.appendN(t, "lobby", 1)
	if p := ts.getPage(t, "lobby", "?since="+url.QueryEscape(cursor)); !slices.Equal(pageIDs(p), more) {
		t.Fatalf("since at the head then one more: %v", pageIDs(p))
	}
	all = append(all, more...)

	// Back from the newest with before.
	p := ts.getPage(t, "lobby", "?limit=4")
	back := pageIDs(p)
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("before paging does not end")
		}
		p := ts.getPage(t, "lobby", "?limit=4&before="+back[0])
		if len(p.Messages) == 0 {
			break
		}
		back = append(pageIDs(p), back...)
	}
	if !slices.Equal(back, all) {
		t.Fatalf("before paging got %v, want %v", back, all)
	}
	if p := ts.getPage(t, "lobby", "?before="+all[10]+"&limit=3"); !slices.Equal(pageIDs(p), all[7:10]) {
		t.Fatalf("before %s: %v, want %v", all[10], pageIDs(p), all[7:10])
	}

	cases := []struct {
		name, query string
		status      int
	}{
		{"before and since", "?before=" + all[3] + "&since=" + url.QueryEscape(start.Cursor), 400},
		{"bad before id", "?before=nonsense", 400},
		{"before id without seq", "?before=" + ts.origin + "-", 400},
		{"before id seq 0", "?before=" + ts.origin + "-0", 400},
		{"unknown before id", "?before=" + ts.origin + "-9999", 404},
		{"unknown node", "?before=abcdefabcdef-1", 404},
		{"before id of another room", "?before=" + ts.msgID(6), 404},
		{"bad since", "?since=garbage", 400},
		{"since of another room", "?since=" + url.QueryEscape(proto.EncodeCursor(ts.hub.Scope("other"), proto.Vector{ts.origin: 1})), 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, data := ts.do(t, "GET", "/chatr/api/rooms/lobby/messages"+tc.query, "", nil)
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, data, tc.status)
			}
			checkErrorBody(t, data)
		})
	}
	if status, _, data := ts.do(t, "GET", "/chatr/api/rooms/NOPE/messages", "", nil); status != 400 {
		t.Fatalf("bad room: %d %s", status, data)
	}
}

func TestGetRooms(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	status, _, data := ts.do(t, "GET", "/chatr/api/rooms", "", nil)
	if status != 200 || strings.TrimSpace(string(data)) != `{"rooms":[]}` {
		t.Fatalf("no rooms: %d %s", status, data)
	}
	ts.appendN(t, "lobby", 3)
	ts.appendN(t, "dev", 2)
	status, _, data = ts.do(t, "GET", "/chatr/api/rooms", "", nil)
	var body struct {
		Rooms []struct {
			Room     string
			Messages int
			Last     string
		}
	}
	if err := json.Unmarshal(data, &body); status != 200 || err != nil {
		t.Fatalf("GET rooms: %d %s", status, data)
	}
	if len(body.Rooms) != 2 || body.Rooms[0].Room != "dev" || body.Rooms[0].Messages != 2 ||
		body.Rooms[1].Room != "lobby" || body.Rooms[1].Messages != 3 {
		t.Fatalf("rooms %+v", body.Rooms)
	}
	last := ts.getPage(t, "lobby", "?limit=1").Messages[0].Created
	if body.Rooms[1].Last != last {
		t.Fatalf("lobby last %q, want the newest message's %q", body.Rooms[1].Last, last)
	}
	checkCreated(t, body.Rooms[0].Last)
}

func TestGetCluster(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--cluster", "blue")
	status, _, data := ts.do(t, "GET", "/chatr/api/cluster", "", nil)
	var body struct {
		Self    string
		Cluster string
		Members []map[string]string
	}
	if err := json.Unmarshal(data, &body); status != 200 || err != nil {
		t.Fatalf("GET cluster: %d %s", status, data)
	}
	if body.Self != ts.st.NodeID() || body.Cluster != "blue" || len(body.Members) != 1 {
		t.Fatalf("cluster %s", data)
	}
	m := body.Members[0]
	if m["id"] != body.Self || m["name"] != "testnode" || m["state"] != "alive" || m["http"] != ts.addr {
		t.Fatalf("member %v", m)
	}
	checkCreated(t, m["since"])
	if len(m) != 5 {
		t.Fatalf("member fields %v, want id name http state since", m)
	}
}

func TestPagesAndProbes(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	status, hdr, _ := ts.do(t, "GET", "/", "", nil)
	if status != 302 && status != 301 && status != 307 && status != 308 || hdr.Get("Location") != "/chatr/chatr.html" {
		t.Fatalf("GET /: %d Location %q", status, hdr.Get("Location"))
	}
	status, hdr, data := ts.do(t, "GET", "/chatr/chatr.html", "", nil)
	if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s", status, hdr.Get("Content-Type"))
	}
	for _, id := range []string{`id="name"`, `id="text"`, `id="send"`, `id="messages"`, `id="presence"`, `id="status"`} {
		if !bytes.Contains(data, []byte(id)) {
			t.Errorf("page lacks %s", id)
		}
	}
	for _, path := range []string{"/chatr/chatr.js", "/chatr/chatr.css"} {
		if status, _, _ := ts.do(t, "GET", path, "", nil); status != 200 {
			t.Errorf("GET %s: %d", path, status)
		}
	}
	if status, _, _ := ts.do(t, "GET", "/chatr/nothing.html", "", nil); status != 404 {
		t.Errorf("missing file: %d", status)
	}
	if status, _, _ := ts.do(t, "GET", "/healthz", "", nil); status != 200 {
		t.Errorf("/healthz: %d", status)
	}
	if status, _, _ := ts.do(t, "GET", "/readyz", "", nil); status != 200 {
		t.Errorf("/readyz: %d", status)
	}
	// Metrics, on the admin listener: the gateway's, the hub's and the store's.
	ts.hello(t, "m")
	ts.appendN(t, "lobby", 1)
	status, _, data = ts.adminGet(t, "/metrics")
	if status != 200 {
		t.Fatalf("/metrics: %d", status)
	}
	for _, name := range []string{"chatr_ws_sessions 1", "chatr_ws_frames_in_total", "chatr_hub_deliveries_total",
		"chatr_store_messages_total", "chatr_ws_queued_frames", "chatr_rate_limited_total"} {
		if !bytes.Contains(data, []byte(name)) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
	// An upgrade request that is not one is refused, not a 500.
	if status, _, _ := ts.do(t, "GET", "/chatr/ws", "", nil); status < 400 || status >= 500 {
		t.Errorf("plain GET /chatr/ws: %d, want 4xx", status)
	}
}

// A POST answers only once the message is stored: a GET right after the
// 201 lists it, for many posts in parallel.
func TestPostAckAfterCommit(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--send-rate", "100000", "--send-burst", "100000")
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() {
			status, _, data, err := ts.request("POST", "/chatr/api/rooms/lobby/messages", "application/json",
				fmt.Appendf(nil, `{"sender":"p","text":"%d"}`, i))
			if err != nil {
				errs <- err
				return
			}
			if status != 201 {
				errs <- fmt.Errorf("POST %d: %d %s", i, status, data)
				return
			}
			var m apiMessage
			json.Unmarshal(data, &m)
			_, seq, _ := proto.ParseMessageID(m.ID)
			origin := ts.st.NodeID()
			if ts.st.Vector()[origin] < seq {
				errs <- fmt.Errorf("201 for %s before the store holds it", m.ID)
				return
			}
			errs <- nil
		}()
	}
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("posts did not finish")
		}
	}
	if p := ts.getPage(t, "lobby", ""); len(p.Messages) != n {
		t.Fatalf("stored %d, want %d", len(p.Messages), n)
	}
}

// GET /chatr/api/rooms is paged (a node with 20,000 rooms answered 2.3 MB):
// limit rooms (100 by default, at most 1000) after the room named by
// after, and next, the after of the next page, while more follow.
func TestGetRoomsPaged(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	var want []string
	for i := range 250 {
		room := fmt.Sprintf("r%03d", i)
		want = append(want, room)
		ts.appendN(t, room, 1)
	}
	type page struct {
		Rooms []struct{ Room string }
		Next  string
	}
	get := func(query string) page {
		t.Helper()
		status, _, data := ts.do(t, "GET", "/chatr/api/rooms"+query, "", nil)
		var p page
		if err := json.Unmarshal(data, &p); status != 200 || err != nil {
			t.Fatalf("GET rooms%s: %d %s", query, status, data)
		}
		return p
	}
	var got []string
	sizes := []int{}
	for query, pages := "", 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		p := get(query)
		sizes = append(sizes, len(p.Rooms))
		for _, r := range p.Rooms {
			got = append(got, r.Room)
		}
		if p.Next == "" {
			break
		}
		if p.Next != got[len(got)-1] {
			t.Fatalf("next %q, want the last room listed, %q", p.Next, got[len(got)-1])
		}
		query = "?after=" + p.Next
	}
	if !slices.Equal(got, want) || !slices.Equal(sizes, []int{100, 100, 50}) {
		t.Fatalf("paged %d rooms in pages of %v, want %d in 100, 100, 50", len(got), sizes, len(want))
	}
	if p := get("?limit=5000"); len(p.Rooms) != 250 || p.Next != "" {
		t.Fatalf("limit 5000: %d rooms, next %q; want all 250 (at most 1000) and no next", len(p.Rooms), p.Next)
	}
	if p := get("?limit=2&after=r100"); len(p.Rooms) != 2 || p.Rooms[0].Room != "r101" || p.Next != "r102" {
		t.Fatalf("limit 2 after r100: %+v", p)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?after=NOPE"} {
		status, _, data := ts.do(t, "GET", "/chatr/api/rooms"+q, "", nil)
		if status != 400 {
			t.Fatalf("GET rooms%s: %d %s, want 400", q, status, data)
		}
		checkErrorBody(t, data)
	}
}
