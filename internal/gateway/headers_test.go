package gateway

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// pagePolicy is the Content-Security-Policy of a single node's pages.
const pagePolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Every answer of the public listener says nosniff and no-referrer; the
// pages and files of the web client, and the redirect to them, carry the
// page's Content-Security-Policy.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	for _, tc := range []struct {
		method, path, contentType string
		status                    int
		page                      bool
	}{
		{"GET", "/", "", http.StatusFound, true},
		{"GET", "/chatr/chatr.html", "", 200, true},
		{"GET", "/chatr/chatr.js", "", 200, true},
		{"GET", "/chatr/chatr.css", "", 200, true},
		{"GET", "/chatr/", "", 200, true},
		{"GET", "/chatr/nothing.html", "", 404, true},
		{"GET", "/chatr/api/rooms", "", 200, false},
		{"GET", "/chatr/api/rooms/lobby/messages", "", 200, false},
		{"GET", "/chatr/api/cluster", "", 200, false},
		{"POST", "/chatr/api/rooms/lobby/messages", "text/plain", http.StatusUnsupportedMediaType, false},
		{"GET", "/healthz", "", 200, false},
		{"GET", "/readyz", "", 200, false},
		{"GET", "/nothing", "", 404, false},
		{"POST", "/chatr/ws", "", http.StatusMethodNotAllowed, false},
		// Last: gobwas/ws answers it on the hijacked connection, and closes it.
		{"GET", "/chatr/ws", "", http.StatusBadRequest, false},
	} {
		status, hdr, _ := ts.do(t, tc.method, tc.path, tc.contentType, []byte("x"))
		if status != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, status, tc.status)
		}
		checkHeaders(t, tc.method+" "+tc.path, hdr, tc.page)
	}

	// An answer of the GET limit, and of the connection caps, too.
	limited := newTestServer(t, "--get-rate", "0.001", "--get-burst", "1")
	limited.do(t, "GET", "/healthz", "", nil)
	status, hdr, _ := limited.do(t, "GET", "/chatr/api/rooms", "", nil)
	if status != http.StatusTooManyRequests {
		t.Fatalf("GET past --get-burst: %d, want 429", status)
	}
	checkHeaders(t, "a 429 of --get-rate", hdr, false)
	full := newTestServer(t, "--max-conns", "1")
	full.dialHTTP(t).get("/healthz")
	resp, _, err := full.dialHTTP(t).get("/healthz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a connection over --max-conns: %v %v, want 503", resp, err)
	}
	checkHeaders(t, "a 503 of --max-conns", resp.Header, false)
}

func checkHeaders(t *testing.T, what string, hdr http.Header, page bool) {
	t.Helper()
	if got := hdr.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, got)
	}
	if !page {
		return
	}
	if got := hdr.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("%s: Referrer-Policy %q, want no-referrer", what, got)
	}
	if got := hdr.Get("Content-Security-Policy"); got != pagePolicy {
		t.Errorf("%s: Content-Security-Policy\n%q, want\n%q", what, got, pagePolicy)
	}
}

// directives splits a Content-Security-Policy into its directives' sources.
func directives(policy string) map[string][]string {
	out := map[string][]string{}
	for _, d := range strings.Split(policy, ";") {
		if f := strings.Fields(d); len(f) > 0 {
			out[f[0]] = f[1:]
		}
	}
	return out
}

// A page may connect, over http(s) and ws(s), to every member alive now,
// where its failover takes it; an address that cannot stand in a policy
// as it is is left out.
func TestPolicyConnectsToMembers(t *testing.T) {
	t.Parallel()
	ts := startTestServerWith(t, func(o *Options) {
		o.KnownHTTP = func() []string {
			return []string{"http://127.0.0.1:5081", "https://Node-B.example:8443", "10.0.0.3:5080", "[::1]:5082",
				"http://127.0.0.1:5081", "http://bad;host:1", "http://bad'host:1", "nonsense"}
		}
	}, nil)
	_, hdr, _ := ts.do(t, "GET", "/chatr/chatr.html", "", nil)
	got := directives(hdr.Get("Content-Security-Policy"))["connect-src"]
	want := []string{"'self'", "http://10.0.0.3:5080", "http://127.0.0.1:5081", "http://[::1]:5082", "https://node-b.example:8443",
		"ws://10.0.0.3:5080", "ws://127.0.0.1:5081", "ws://[::1]:5082", "wss://node-b.example:8443"}
	if !slices.Equal(got, want) {
		t.Errorf("connect-src %q\nwant %q", got, want)
	}
}

// --allow-framing names the origins that may frame the pages.
func TestAllowFramingPolicy(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--allow-framing", "https://intranet.example, http://wiki.example:8080/")
	_, hdr, _ := ts.do(t, "GET", "/chatr/chatr.html", "", nil)
	got := directives(hdr.Get("Content-Security-Policy"))["frame-ancestors"]
	if want := []string{"https://intranet.example", "http://wiki.example:8080"}; !slices.Equal(got, want) {
		t.Errorf("frame-ancestors %q, want %q", got, want)
	}
}
