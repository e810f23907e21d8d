package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/client/clienttest"
	"chatr/internal/proto"
)

// fakeTokens stands in for the --auth-* verifier (internal/auth is tested
// on its own): each token names an identity or an error.
type fakeTokens struct {
	mu sync.Mutex
	m  map[string]fakeToken
}

type fakeToken struct {
	id  Identity
	err error
}

func (f *fakeTokens) Verify(token string) (Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.m[token]
	if !ok {
		return Identity{}, errors.New("bad signature")
	}
	return t.id, t.err
}

func (f *fakeTokens) add(token string, id Identity, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[token] = fakeToken{id, err}
}

// rooms makes a CanJoin or CanSend of glob patterns.
func rooms(patterns ...string) func(string) bool {
	return func(room string) bool {
		for _, p := range patterns {
			if ok, _ := path.Match(p, room); ok {
				return true
			}
		}
		return false
	}
}

// newAuthServer is a test server with auth on, tokens of the test's
// choosing, and the API key "prog-key-0123456789abcdef" of the program
// "importer".
func newAuthServer(t *testing.T, grace time.Duration) (*testServer, *fakeTokens) {
	t.Helper()
	tokens := &fakeTokens{m: map[string]fakeToken{}}
	later := time.Now().Add(time.Hour)
	tokens.add("ann", Identity{User: "u-ann", Name: "Ann", Expires: later}, nil)
	tokens.add("ann2", Identity{User: "u-ann", Name: "Ann", Expires: later.Add(time.Hour)}, nil)
	tokens.add("impostor", Identity{User: "u-imp", Name: "Ann", Expires: later}, nil)
	tokens.add("reader", Identity{User: "u-reader", Name: "Rea", Expires: later, CanJoin: rooms("team-*", "news"), CanSend: rooms("team-*")}, nil)
	tokens.add("old", Identity{}, fmt.Errorf("exp in the past: %w", ErrTokenExpired))
	ts := startTestServerWith(t, func(o *Options) {
		o.Tokens = tokens
		o.ExpiredGrace = grace
		o.APIKey = func(k string) (string, bool) { return "importer", k == "prog-key-0123456789abcdef" }
	}, nil, unlimited()...)
	return ts, tokens
}

// helloToken dials and says hello with token, and returns the session and
// its first frame.
func helloToken(t *testing.T, ts *testServer, token string) (*clienttest.Raw, clienttest.Frame) {
	t.Helper()
	c := ts.dial(t)
	c.Send(map[string]any{"type": "hello", "name": "whoever", "token": token})
	f, err := c.Read()
	if err != nil {
		t.Fatalf("hello with %q: %v", token, err)
	}
	return c, f
}

// With auth on, a hello needs a token: none or a bad one is answered
// unauthorized and closed with 1008, an expired one token_expired and
// closed with 4001 (the client fetches a new token); a good one names the
// client, whatever name the hello said, and says when the token expires.
func TestHelloNeedsAToken(t *testing.T) {
	t.Parallel()
	ts, _ := newAuthServer(t, time.Minute)
	for _, tc := range []struct {
		token string
		code  string
		close int
	}{
		{"", proto.CodeUnauthorized, 1008},
		{"forged", proto.CodeUnauthorized, 1008},
		{"old", proto.CodeTokenExpired, 4001},
	} {
		c, f := helloToken(t, ts, tc.token)
		if f.Type != "error" || f.Code != tc.code {
			t.Errorf("hello with %q: %v, want error %s", tc.token, f, tc.code)
		}
		c.ExpectClose(websocket.StatusCode(tc.close))
	}
	c, w := helloToken(t, ts, "ann")
	if w.Type != "welcome" || w.Name != "Ann" || w.User != "u-ann" || w.Expires == "" {
		t.Fatalf("welcome %v: want name Ann, user u-ann and when it expires", w)
	}
	c.Join("lobby", nil)
	_, msg, _ := c.Say("lobby", "hi", "r1")
	if msg.Sender != "Ann" || msg.User != "u-ann" {
		t.Fatalf("message %v: want sender Ann, user u-ann", msg)
	}
}

// Two people with one display name are two users: the impostor's message
// carries its own user id, and presence lists both.
func TestOneNameTwoUsers(t *testing.T) {
	t.Parallel()
	ts, _ := newAuthServer(t, time.Minute)
	ann, _ := helloToken(t, ts, "ann")
	joined, _, _ := ann.Join("lobby", nil)
	imp, _ := helloToken(t, ts, "impostor")
	joined, _, _ = imp.Join("lobby", nil)
	if len(joined.Presence) != 2 || joined.Presence[0].User == joined.Presence[1].User {
		t.Fatalf("presence %v: want Ann twice, as u-ann and u-imp", joined.Presence)
	}
	_, msg, _ := imp.Say("lobby", "I am Ann", "r1")
	f, _ := ann.Until("message")
	if f.ID != msg.ID || f.Sender != "Ann" || f.User != "u-imp" {
		t.Fatalf("ann got %v: want the impostor's message with user u-imp", f)
	}
}

// A room the token does not allow is forbidden, the session stays; a
// read-only room may be joined, not sent to.
func TestRoomsOfTheToken(t *testing.T) {
	t.Parallel()
	ts, _ := newAuthServer(t, time.Minute)
	c, _ := helloToken(t, ts, "reader")
	c.Send(`{"type":"join","room":"lobby","ref":"j1"}`)
	c.ExpectError(proto.CodeForbidden, "j1")
	c.Join("news", nil)
	c.Send(`{"type":"send","room":"news","text":"x","ref":"s1"}`)
	c.ExpectError(proto.CodeForbidden, "s1")
	c.Join("team-a", nil)
	c.Say("team-a", "ok here", "s2")
}

// A refresh moves the session onto a new token of the same user; one of
// another user, an expired one or a bad one is refused and the session
// keeps its token.
func TestRefresh(t *testing.T) {
	t.Parallel()
	ts, _ := newAuthServer(t, time.Minute)
	c, _ := helloToken(t, ts, "ann")
	for token, code := range map[string]string{"impostor": proto.CodeUnauthorized, "old": proto.CodeTokenExpired, "forged": proto.CodeUnauthorized} {
		c.Send(map[string]any{"type": "refresh", "token": token, "ref": token})
		c.ExpectError(code, token)
	}
	c.Send(map[string]any{"type": "refresh", "token": "ann2", "ref": "r"})
	f := c.Expect("refreshed")
	if f.Ref != "r" || f.Expires == "" {
		t.Fatalf("refreshed %v", f)
	}
	c.PingPong()
}

// A session whose token expires is told token_expired, and closed with
// 4001 if no refresh comes within the grace; a refresh that comes after
// the expiry but before the close is honoured.
func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	ts, tokens := newAuthServer(t, 2*time.Second)
	soon := time.Now().Add(time.Second)
	tokens.add("short", Identity{User: "u-s", Name: "Sam", Expires: soon}, nil)
	tokens.add("short2", Identity{User: "u-s", Name: "Sam", Expires: soon.Add(time.Hour)}, nil)

	left, _ := helloToken(t, ts, "short")
	saved, _ := helloToken(t, ts, "short")
	if f, _ := saved.Until("error"); f.Code != proto.CodeTokenExpired {
		t.Fatalf("after the expiry: %v, want token_expired", f)
	}
	saved.Send(map[string]any{"type": "refresh", "token": "short2"})
	saved.Expect("refreshed")

	if f, _ := left.Until("error"); f.Code != proto.CodeTokenExpired {
		t.Fatalf("after the expiry: %v, want token_expired", f)
	}
	left.ExpectClose(4001)
	// That close came 2 s after the expiry: the refreshed session lives on.
	saved.PingPong()
}

// authPost posts body to room with an Authorization header (none if
// cred is empty).
func authPost(t *testing.T, ts *testServer, room, cred, body string) (int, http.Header, map[string]any) {
	t.Helper()
	return authDo(t, ts, "POST", "/chatr/api/rooms/"+room+"/messages", cred, body)
}

func authDo(t *testing.T, ts *testServer, method, path, cred, body string) (int, http.Header, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, ts.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var v map[string]any
	json.Unmarshal(data, &v)
	return resp.StatusCode, resp.Header, v
}

// The HTTP API with auth on: no credential is 401 with WWW-Authenticate; a
// user's token posts as that user (under its name); a program's API key
// may post as any sender, marked with the key's name; a room the token
// does not allow is 403 for posts and reads.
func TestHTTPAPIWithAuth(t *testing.T) {
	t.Parallel()
	ts, _ := newAuthServer(t, time.Minute)
	status, h, _ := authPost(t, ts, "lobby", "", `{"sender":"ann","text":"x"}`)
	if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("post without a credential: %d %q, want 401 with WWW-Authenticate", status, h.Get("WWW-Authenticate"))
	}
	for cred, code := range map[string]string{"forged": proto.CodeUnauthorized, "old": proto.CodeTokenExpired} {
		if status, _, v := authPost(t, ts, "lobby", cred, `{"text":"x"}`); status != http.StatusUnauthorized || v["error"].(map[string]any)["code"] != code {
			t.Errorf("post with %q: %d %v, want 401 %s", cred, status, v, code)
		}
	}
	if status, _, v := authPost(t, ts, "lobby", "ann", `{"text":"from the API"}`); status != http.StatusCreated || v["sender"] != "Ann" || v["user"] != "u-ann" {
		t.Errorf("post with ann's token: %d %v, want 201 from Ann, u-ann", status, v)
	}
	if status, _, v := authPost(t, ts, "lobby", "ann", `{"sender":"Bob","text":"as bob"}`); status != http.StatusBadRequest {
		t.Errorf("post with ann's token as Bob: %d %v, want 400", status, v)
	}
	if status, _, v := authPost(t, ts, "lobby", "prog-key-0123456789abcdef", `{"sender":"Build bot","text":"green"}`); status != http.StatusCreated || v["sender"] != "Build bot" || v["user"] != "key:importer" {
		t.Errorf("post with the API key: %d %v, want 201 from Build bot, key:importer", status, v)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "post with an API key") || !strings.Contains(logs, "key=importer") ||
		strings.Contains(logs, "prog-key-0123456789abcdef") {
		t.Errorf("the API key's post is not logged by the key's name alone:\n%s", logs)
	}
	if status, _, v := authPost(t, ts, "lobby", "prog-key-0123456789abcdef", `{"text":"no sender"}`); status != http.StatusBadRequest {
		t.Errorf("post with the API key and no sender: %d %v, want 400", status, v)
	}
	if status, _, _ := authPost(t, ts, "lobby", "reader", `{"text":"x"}`); status != http.StatusForbidden {
		t.Errorf("post to a room the token does not allow: %d, want 403", status)
	}
	if status, _, _ := authDo(t, ts, "GET", "/chatr/api/rooms/lobby/messages", "reader", ""); status != http.StatusForbidden {
		t.Errorf("read of a room the token does not allow: %d, want 403", status)
	}
	if status, _, _ := authDo(t, ts, "GET", "/chatr/api/rooms/lobby/messages", "", ""); status != http.StatusUnauthorized {
		t.Errorf("read without a credential: %d, want 401", status)
	}
	authPost(t, ts, "team-a", "reader", `{"text":"in team-a"}`)
	status, _, v := authDo(t, ts, "GET", "/chatr/api/rooms", "reader", "")
	list, _ := json.Marshal(v)
	if status != http.StatusOK || !strings.Contains(string(list), "team-a") || strings.Contains(string(list), "lobby") {
		t.Errorf("rooms for the reader: %d %s, want team-a and not lobby", status, list)
	}
}

// The web client learns from /chatr/config.json whether to sign in and
// where to fetch its token.
func TestClientConfig(t *testing.T) {
	t.Parallel()
	open := newTestServer(t)
	if status, _, v := authDo(t, open, "GET", "/chatr/config.json", "", ""); status != http.StatusOK || v["auth"] != false {
		t.Errorf("auth off: %d %v", status, v)
	}
	ts := startTestServerWith(t, func(o *Options) {
		o.Tokens = &fakeTokens{m: map[string]fakeToken{}}
		o.TokenURL = "https://site.example/chat-token"
	}, nil)
	if status, h, v := authDo(t, ts, "GET", "/chatr/config.json", "", ""); status != http.StatusOK || v["auth"] != true ||
		v["tokenURL"] != "https://site.example/chat-token" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("auth on: %d %v %v", status, v, h)
	}
}

// The page's policy lets it fetch its token from --auth-token-url.
func TestPolicyAllowsTheTokenURL(t *testing.T) {
	t.Parallel()
	ts := startTestServerWith(t, func(o *Options) {
		o.Tokens = &fakeTokens{m: map[string]fakeToken{}}
		o.TokenURL = "https://site.example:8443/chat-token?x=1"
	}, nil)
	_, h, _ := authDo(t, ts, "GET", "/chatr/chatr.html", "", "")
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self' https://site.example:8443") {
		t.Fatalf("policy %q does not let the page fetch its token", csp)
	}
}

// With auth on, an admin on the public listener is a program's API key or
// a token with admin: true; a user's token or none is not.
func TestAdminByCredential(t *testing.T) {
	t.Parallel()
	ts, tokens := newAuthServer(t, time.Minute)
	tokens.add("boss", Identity{User: "u-boss", Name: "Boss", Expires: time.Now().Add(time.Hour), Admin: true}, nil)
	for cred, want := range map[string]bool{"": false, "ann": false, "forged": false, "boss": true, "prog-key-0123456789abcdef": true} {
		r, _ := http.NewRequest("GET", "/chatr/api/cluster", nil)
		if cred != "" {
			r.Header.Set("Authorization", "Bearer "+cred)
		}
		if got := ts.srv.opts.IsAdmin(r); got != want {
			t.Errorf("admin with %q: %v, want %v", cred, got, want)
		}
	}
}
