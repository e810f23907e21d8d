package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"chatr/internal/proctest"
)

// get answers GET url: status, headers and body.
func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// Metrics and profiles are on the admin listener, which the console
// names, and not on the public one; both have the probes.
func TestAdminListener(t *testing.T) {
	t.Parallel()
	admin := proctest.FreeAddr(t)
	p := startNode(t, t.TempDir(), "--admin-http", admin, "--pprof")
	if out := p.Stdout.String(); !strings.Contains(out, "admin (metrics, profiles, cluster view) on http://"+admin+"\n") {
		t.Errorf("the console does not say where the admin listener is:\n%s", out)
	}
	for _, tc := range []struct {
		url    string
		status int
	}{
		{"http://" + admin + "/metrics", 200},
		{"http://" + admin + "/debug/pprof/", 200},
		{"http://" + admin + "/healthz", 200},
		{"http://" + admin + "/readyz", 200},
		{"http://" + admin + "/chatr/api/cluster", 200},
		{"http://" + p.addr + "/metrics", 404},
		{"http://" + p.addr + "/debug/pprof/", 404},
		{"http://" + p.addr + "/healthz", 200},
		{"http://" + p.addr + "/readyz", 200},
	} {
		if status, _, _ := get(t, tc.url); status != tc.status {
			t.Errorf("GET %s: %d, want %d", tc.url, status, tc.status)
		}
	}
	if _, _, body := get(t, "http://"+admin+"/metrics"); !strings.Contains(body, "chatr_ws_sessions") {
		t.Errorf("the admin /metrics lacks chatr_ws_sessions")
	}
	_, hdr, _ := get(t, "http://"+p.addr+"/chatr/chatr.html")
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("the page's Content-Security-Policy is %q", csp)
	}
}

// A busy admin port stops chatr at start with a message naming
// --admin-http and the address.
func TestBusyAdminPortRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := startProc(t, nil, "serve", "--http", proctest.FreeAddr(t), "--admin-http", ln.Addr().String(), "--data", t.TempDir())
	if code := p.waitExit(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	stderr := p.Stderr.String()
	for _, want := range []string{"--admin-http", ln.Addr().String(), "address already in use"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, stderr)
		}
	}
}
