package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"chatr/internal/proto"
)

// postKeyed posts body to the lobby with Idempotency-Key headers (none
// when keys is empty) and returns the status and the decoded answer.
func postKeyed(t *testing.T, ts *testServer, body string, keys ...string) (int, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", ts.url+"/chatr/api/rooms/lobby/messages", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, data)
	}
	return resp.StatusCode, v
}

// An HTTP post retried with the same idempotency key (after a 503, a
// timeout or a lost answer) is stored once: the retry gets the first
// message back. The key comes in the Idempotency-Key header (a
// structured-field string, or bare) or as "ref" in the body.
func TestPostIdempotencyKey(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	status, first := postKeyed(t, ts, `{"sender":"ann","text":"hi"}`, `"k-1"`)
	if status != http.StatusCreated {
		t.Fatalf("first post: %d %v", status, first)
	}
	for name, retry := range map[string]func() (int, map[string]any){
		"same header":     func() (int, map[string]any) { return postKeyed(t, ts, `{"sender":"ann","text":"hi"}`, `"k-1"`) },
		"bare header":     func() (int, map[string]any) { return postKeyed(t, ts, `{"sender":"ann","text":"hi"}`, `k-1`) },
		"ref in the body": func() (int, map[string]any) { return postKeyed(t, ts, `{"sender":"ann","text":"hi","ref":"k-1"}`) },
		"header and ref": func() (int, map[string]any) {
			return postKeyed(t, ts, `{"sender":"ann","text":"hi","ref":"k-1"}`, `"k-1"`)
		},
		"escaped sf-string": func() (int, map[string]any) { return postKeyed(t, ts, `{"sender":"ann","text":"hi"}`, `"k\-1"`) },
	} {
		status, again := retry()
		if name == "escaped sf-string" { // \- is no escape: a bad header, not a retry
			if status != http.StatusBadRequest {
				t.Errorf("%s: %d %v, want 400", name, status, again)
			}
			continue
		}
		if status != http.StatusCreated || again["id"] != first["id"] {
			t.Errorf("%s: %d %v, want 201 with the first message %v", name, status, again, first["id"])
		}
	}
	// Another sender, room or key is another message.
	if _, other := postKeyed(t, ts, `{"sender":"bob","text":"hi"}`, `"k-1"`); other["id"] == first["id"] {
		t.Errorf("another sender's post with the same key got the first message")
	}
	if _, other := postKeyed(t, ts, `{"sender":"ann","text":"hi"}`, `"k-2"`); other["id"] == first["id"] {
		t.Errorf("a post with another key got the first message")
	}
	page, err := ts.srv.store.Latest(context.Background(), "lobby", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 3 {
		t.Fatalf("stored %d messages, want 3 (one per sender and key)", len(page.Messages))
	}
}

// A key reused with another text is a client bug, answered 422 conflict
// rather than hidden behind the first message's 201 (the new text would be
// lost); a key that does not parse, two keys, or a header and a ref that
// differ are 400s. None stores anything.
func TestPostIdempotencyKeyRefused(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	if status, v := postKeyed(t, ts, `{"sender":"ann","text":"hi"}`, `"k"`); status != http.StatusCreated {
		t.Fatalf("first post: %d %v", status, v)
	}
	long := `"` + string(bytes.Repeat([]byte("x"), proto.MaxRefLen+1)) + `"`
	for _, tc := range []struct {
		name, body string
		keys       []string
		status     int
		code       string
	}{
		{"another text", `{"sender":"ann","text":"bye"}`, []string{`"k"`}, http.StatusUnprocessableEntity, proto.CodeConflict},
		{"another text, ref in body", `{"sender":"ann","text":"bye","ref":"k"}`, nil, http.StatusUnprocessableEntity, proto.CodeConflict},
		{"header and ref differ", `{"sender":"ann","text":"x","ref":"a"}`, []string{`"b"`}, http.StatusBadRequest, proto.CodeBadRequest},
		{"two headers", `{"sender":"ann","text":"x"}`, []string{`"a"`, `"b"`}, http.StatusBadRequest, proto.CodeBadRequest},
		{"empty", `{"sender":"ann","text":"x"}`, []string{`""`}, http.StatusBadRequest, proto.CodeBadRequest},
		{"unclosed", `{"sender":"ann","text":"x"}`, []string{`"abc`}, http.StatusBadRequest, proto.CodeBadRequest},
		{"after the quote", `{"sender":"ann","text":"x"}`, []string{`"abc"def`}, http.StatusBadRequest, proto.CodeBadRequest},
		{"too long", `{"sender":"ann","text":"x"}`, []string{long}, http.StatusBadRequest, proto.CodeBadRequest},
		{"ref too long", `{"sender":"ann","text":"x","ref":` + long + `}`, nil, http.StatusBadRequest, proto.CodeBadRequest},
		{"ref not a string", `{"sender":"ann","text":"x","ref":5}`, nil, http.StatusBadRequest, proto.CodeBadRequest},
	} {
		status, v := postKeyed(t, ts, tc.body, tc.keys...)
		e, _ := v["error"].(map[string]any)
		if status != tc.status || e["code"] != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.name, status, v, tc.status, tc.code)
		}
	}
	if page, _ := ts.srv.store.Latest(context.Background(), "lobby", 10); len(page.Messages) != 1 {
		t.Fatalf("refused posts stored messages: %d in the room", len(page.Messages))
	}
}

// A WebSocket send whose ref names an earlier message with another text is
// refused with conflict, not acked with the earlier message.
func TestSendRefReusedWithAnotherText(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	c := ts.hello(t, "ann")
	c.Join("lobby", nil)
	c.Say("lobby", "first", "r1")
	c.Send(`{"type":"send","room":"lobby","text":"second","ref":"r1"}`)
	c.ExpectError(proto.CodeConflict, "r1")
}

// StopSends, the first step of a shutdown: sends and posts are refused
// with unavailable (so clients go to another node), no new session is
// let in, /readyz says 503, and open sessions keep receiving.
func TestStopSends(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	c := ts.hello(t, "ann")
	c.Join("lobby", nil)
	ts.srv.StopSends()
	c.Send(`{"type":"send","room":"lobby","text":"late","ref":"r1"}`)
	c.ExpectError(proto.CodeUnavailable, "r1")
	if status, v := postKeyed(t, ts, `{"sender":"ann","text":"late"}`); status != http.StatusServiceUnavailable {
		t.Errorf("post after StopSends: %d %v, want 503", status, v)
	}
	if status, _, _ := ts.do(t, "GET", "/readyz", "", nil); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz after StopSends: %d, want 503", status)
	}
	if _, resp, err := ts.dialWS(nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a new session after StopSends: %v %v, want a 503", resp, err)
	}
	ids := ts.appendN(t, "lobby", 1) // as a peer's message would come
	if m := c.Expect("message"); m.ID != ids[0] {
		t.Errorf("the open session got %v, want %s", m, ids[0])
	}
}
