package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"chatr/internal/auth"
	"chatr/internal/client"
	"chatr/internal/clustertest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// authNode starts a node that takes tokens signed with a secret it
// returns, and programs with the API key "importer:<key>".
func authNode(t *testing.T, extra ...string) (n *localNode, secret []byte, key string) {
	t.Helper()
	dir := t.TempDir()
	secret = []byte("a test secret of more than thirty-two bytes, for tokens")
	secretFile, keyFile := filepath.Join(dir, "hmac"), filepath.Join(dir, "keys")
	key = "importer-key-0123456789abcdef"
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte("importer:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n = newLocalNodes(t, 1)[0]
	n.extra = append([]string{"--auth-hmac-secret-file", secretFile, "--api-key-file", keyFile}, extra...)
	n.start(t)
	if err := n.proc.WaitReady("http://"+n.http, startTimeout); err != nil {
		t.Fatal(err)
	}
	return n, secret, key
}

func sign(t *testing.T, secret []byte, c auth.Claims) string {
	t.Helper()
	tok, err := auth.Sign(secret, "HS256", c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestSignIn, with the real binary and tokens from `chatr token`: the
// impostor of the issue (a hello "alice" with no token) is refused; a
// token names the user, whatever the hello says; one person's message is
// not another's even under one name; an expired token is told to fetch a
// new one (4001); the HTTP API takes a program's API key, with any
// sender, and a user's token as that user.
func TestSignIn(t *testing.T) {
	needBinary(t)
	t.Parallel()
	n, secret, key := authNode(t)
	// The console lines follow the listener, which the node was waited for.
	proctest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(n.proc.Stdout.String(), "sign-in: people need a signed token") {
			return fmt.Errorf("the start lines do not say sign-in is on:\n%s", n.proc.Stdout.String())
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws := "ws://" + n.http

	if _, err := client.Dial(ctx, ws, "alice", nil); err == nil || !strings.Contains(err.Error(), proto.CodeUnauthorized) {
		t.Fatalf("hello alice without a token: %v, want unauthorized", err)
	}

	// The token comes from chatr token, as an operator makes one.
	secretFile := filepath.Join(t.TempDir(), "s")
	os.WriteFile(secretFile, secret, 0o600)
	out, err := exec.Command(binary, "token", "--hmac-secret-file", secretFile, "--sub", "u-alice", "--name", "alice", "--ttl", "1h").Output()
	if err != nil {
		t.Fatalf("chatr token: %v", err)
	}
	alice, err := client.Dial(ctx, ws, "whoever", &client.Options{Token: strings.TrimSpace(string(out))})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.CloseNow()
	if w := alice.Welcome(); w.Name != "alice" || w.User != "u-alice" || w.Expires == "" {
		t.Fatalf("welcome %+v: want alice, u-alice, and when the token expires", w)
	}
	mallory, err := client.Dial(ctx, ws, "", &client.Options{Token: sign(t, secret, auth.Claims{Sub: "u-mallory", Name: "alice", TTL: time.Hour})})
	if err != nil {
		t.Fatal(err)
	}
	defer mallory.CloseNow()
	for _, c := range []*client.Conn{alice, mallory} {
		c.JoinHistory(ctx, "lobby", 0)
		if _, err := c.ReadUntil(ctx, client.IsType(client.TypeSynced, "lobby")); err != nil {
			t.Fatal(err)
		}
	}
	mallory.Send(ctx, "lobby", "it is me, alice", "m1")
	fs, err := alice.ReadUntil(ctx, client.IsType(client.TypeMessage, "lobby"))
	if err != nil {
		t.Fatal(err)
	}
	if m := fs[len(fs)-1]; m.Sender != "alice" || m.User != "u-mallory" {
		t.Fatalf("alice got %+v: want the message under mallory's user id", m)
	}

	expired := sign(t, secret, auth.Claims{Sub: "u-old", TTL: time.Second})
	proctest.Eventually(t, 20*time.Second, func() error {
		_, err := client.Dial(ctx, ws, "", &client.Options{Token: expired})
		if err == nil || !strings.Contains(err.Error(), proto.CodeTokenExpired) {
			return fmt.Errorf("hello with a token past its expiry (and the leeway): %v, want token_expired", err)
		}
		return nil
	})

	post := func(cred, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+n.http+"/chatr/api/rooms/lobby/messages", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+cred)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := post(key, `{"sender":"Build bot","text":"green"}`); status != http.StatusCreated || !strings.Contains(body, `"user":"key:importer"`) {
		t.Errorf("post with the API key: %d %s", status, body)
	}
	if status, body := post(strings.TrimSpace(string(out)), `{"text":"from alice's script"}`); status != http.StatusCreated || !strings.Contains(body, `"user":"u-alice"`) {
		t.Errorf("post with alice's token: %d %s", status, body)
	}
	if status, _ := post("not-a-key", `{"sender":"x","text":"y"}`); status != http.StatusUnauthorized {
		t.Errorf("post with a bad credential: %d, want 401", status)
	}
}

// TestChatRefreshesItsToken: `chatr chat --token-url` fetches a token from
// the site at each connect and a fresh one before it expires, so a session
// outlives its first token (2 s, plus the node's 5 s leeway, plus a grace
// of 1 s) and its lines are acked throughout.
func TestChatRefreshesItsToken(t *testing.T) {
	needBinary(t)
	t.Parallel()
	n, secret, key := authNode(t, "--auth-expired-grace", "1s")
	var fetched atomic.Int64
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		tok, err := auth.Sign(secret, "HS256", auth.Claims{Sub: "u-bot", Name: "bot", TTL: 2 * time.Second})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, `{"token":%q}`, tok)
	}))
	defer site.Close()

	stdin, stdinW := io.Pipe()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, "chat", "--url", "ws://"+n.http, "--token-url", site.URL, "--room", "lobby", "--history", "0")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	fmt.Fprintln(stdinW, "the first line")
	// Well past when the first token (its 2 s, the 5 s leeway, the 1 s
	// grace) ended.
	began := time.Now()
	proctest.Eventually(t, 30*time.Second, func() error {
		if f := fetched.Load(); f < 6 || time.Since(began) < 10*time.Second {
			return fmt.Errorf("%d tokens fetched in %v: want one at connect and fresh ones as they run out, for 10 s", f, time.Since(began))
		}
		return nil
	})
	fmt.Fprintln(stdinW, "a line long after")
	stdinW.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chatr chat: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("chatr chat did not end:\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), "connection lost") {
		t.Fatalf("the session was lost to the expiry:\n%s", stderr.String())
	}
	api := clustertest.API{Base: "http://" + n.http, Fetch: clustertest.HTTPFetch(&http.Client{Transport: bearer(key), Timeout: requestTimeout})}
	h, err := api.History(context.Background(), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[1].Text != "a line long after" || h[1].User != "u-bot" {
		t.Fatalf("history %+v: want both lines, by u-bot", h)
	}
}

// bearer is a RoundTripper that sends every request with a credential.
type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}
