package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"chatr/internal/auth"
	"chatr/internal/proctest"
)

const testHMAC = "a browser test secret, thirty-two bytes at least"

// authServer runs chatr with sign-in on (tokens signed with testHMAC).
func authServer(t *testing.T, args ...string) *server {
	t.Helper()
	f := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(f, []byte(testHMAC), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServer(t, append([]string{"--auth-hmac-secret-file", f}, args...)...)
}

func token(t *testing.T, c auth.Claims) string {
	t.Helper()
	tok, err := auth.Sign([]byte(testHMAC), "HS256", c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// openSignedIn opens the page at url and waits until it is connected
// (there is no name to type: the token names the user).
func openSignedIn(t *testing.T, browser context.Context, url, name string) *page {
	t.Helper()
	p := newPage(t, browser, url, name, "")
	p.do(chromedp.Navigate(url))
	p.waitStatus("connected to ")
	return p
}

// TestSignInWithAFragmentToken: a page opened with #token=... signs in
// with it, keeps it for the tab and takes it out of the address bar; no
// name box is shown. Two people with one name are two: the impostor's
// message is not shown as the real one's own, and presence marks both
// with their user ids.
func TestSignInWithAFragmentToken(t *testing.T) {
	requireBrowser(t)
	t.Parallel()
	srv := authServer(t)
	browser := newBrowser(t, 90*time.Second)
	alice := openSignedIn(t, browser, srv.url("/chatr/chatr.html#token="+token(t, auth.Claims{Sub: "u-alice", Name: "alice", TTL: time.Hour})), "alice")
	if hash, _ := eval[string](alice, `location.hash`); hash != "" {
		t.Errorf("the token stays in the address bar: %q", hash)
	}
	if kept, _ := eval[bool](alice, `!!sessionStorage.getItem('chatr.token')`); !kept {
		t.Errorf("the token is not kept for the tab")
	}
	if hidden, _ := eval[bool](alice, `document.getElementById('namebox').hidden`); !hidden {
		t.Errorf("the name box is shown with sign-in on")
	}
	mallory := openSignedIn(t, browser, srv.url("/chatr/chatr.html#token="+token(t, auth.Claims{Sub: "u-mallory", Name: "alice", TTL: time.Hour})), "mallory")
	alice.send("the real one")
	mallory.send("me too")
	alice.waitTexts("the real one", "me too")
	mine, err := eval[[]string](alice, `[...document.querySelectorAll('#messages .mine .text')].map((e) => e.textContent)`)
	if err != nil || len(mine) != 1 || mine[0] != "the real one" {
		t.Fatalf("alice's page shows as hers: %q (%v); want only her own message", mine, err)
	}
	proctest.Eventually(t, waitTimeout, func() error {
		badges, err := eval[[]string](alice, `[...document.querySelectorAll('#presence .who')].map((e) => e.textContent)`)
		if err != nil || len(badges) != 2 || badges[0] == badges[1] {
			return fmt.Errorf("presence badges %q (%v): want the two alices told apart by user id", badges, err)
		}
		return nil
	})
	// A reload signs in again with the token kept for the tab.
	alice.do(chromedp.Reload())
	alice.waitStatus("connected to ")
}

// TestSignInRequired: with sign-in on, a page without a token says so
// and why, and does not connect.
func TestSignInRequired(t *testing.T) {
	requireBrowser(t)
	t.Parallel()
	srv := authServer(t)
	browser := newBrowser(t, 60*time.Second)
	p := newPage(t, browser, srv.url("/chatr/chatr.html"), "nobody", "")
	p.do(chromedp.Navigate(p.url))
	p.waitStatus("sign-in required")
	if msg, _ := eval[string](p, `document.getElementById('error').textContent`); !strings.Contains(msg, "#token=") {
		t.Errorf("the page does not say how to sign in: %q", msg)
	}
	// A forged token: the node refuses it, the page says so.
	q := newPage(t, browser, srv.url("/chatr/chatr.html#token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."), "forger", "")
	q.do(chromedp.Navigate(q.url))
	q.waitStatus("sign-in required")
}

// TestSignInFromTheTokenURL: with --auth-token-url, the page fetches its
// token from the embedding site with the site's cookies, and a fresh one
// before each expires (tokens of 3 s here, so several), staying
// connected and able to send past the first token's end.
func TestSignInFromTheTokenURL(t *testing.T) {
	requireBrowser(t)
	t.Parallel()
	var issued atomic.Int64
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/login":
			http.SetCookie(w, &http.Cookie{Name: "sess", Value: "ann", Path: "/", SameSite: http.SameSiteLaxMode})
			w.Write([]byte("signed in"))
		case "/chat-token":
			w.Header().Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			c, err := r.Cookie("sess")
			if err != nil {
				http.Error(w, "not signed in", http.StatusUnauthorized)
				return
			}
			issued.Add(1)
			fmt.Fprintf(w, `{"token":%q}`, token(t, auth.Claims{Sub: "u-" + c.Value, Name: c.Value, TTL: 3 * time.Second}))
		default:
			http.NotFound(w, r)
		}
	}))
	defer site.Close()
	srv := authServer(t, "--auth-token-url", site.URL+"/chat-token", "--auth-expired-grace", "1s")
	browser := newBrowser(t, 90*time.Second)
	p := newPage(t, browser, srv.url("/chatr/chatr.html"), "ann", "")
	p.do(chromedp.Navigate(site.URL + "/login"))
	p.do(chromedp.Navigate(p.url))
	p.waitStatus("connected to ")
	began := time.Now()
	// Past the first token's 3 s, the node's 5 s leeway and the 1 s grace.
	proctest.Eventually(t, 30*time.Second, func() error {
		if n := issued.Load(); n < 5 || time.Since(began) < 10*time.Second {
			return fmt.Errorf("%d tokens issued in %v", n, time.Since(began))
		}
		return nil
	})
	p.waitStatus("connected to ") // never reconnected: still the first session's status
	p.send("still here")
	p.waitTexts("still here")
	if sockets, _ := eval[int](p, `performance.getEntriesByType('resource').filter((e) => e.name.includes('/chatr/ws')).length`); sockets > 1 {
		t.Errorf("the page opened %d WebSockets: the session did not outlive its token", sockets)
	}
}
