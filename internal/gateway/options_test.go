package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// Profiles are served only when --pprof asks for them.
func TestPprofOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want int
	}{
		{nil, http.StatusNotFound},
		{[]string{"--pprof"}, http.StatusOK},
	} {
		ts := newTestServer(t, tc.args...)
		resp, err := http.Get(ts.url + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("args %v: /debug/pprof/ answered %d, want %d", tc.args, resp.StatusCode, tc.want)
		}
	}
}

// With --write-delay, frames still arrive, in order, only a little later.
func TestWriteDelayDelivers(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--write-delay", "20ms")
	a := ts.hello(t, "ann")
	a.join("lobby", nil)
	for i := range 3 {
		a.send(fmt.Sprintf(`{"type":"send","room":"lobby","text":"m%d","ref":"r%d"}`, i, i))
	}
	var texts []string
	for len(texts) < 3 {
		if f := a.next(); f.Type == "message" {
			texts = append(texts, f.Text)
		}
	}
	if strings.Join(texts, ",") != "m0,m1,m2" {
		t.Fatalf("got %v", texts)
	}
}

// GET routes of the API may be read from script by the pages of allowed
// origins only.
func TestAPIReadableFromAllowedOrigins(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--allowed-origins", "chat.example")
	for _, tc := range []struct {
		origin string
		allow  bool
	}{
		{"http://chat.example", true},
		{"http://evil.example", false},
		{"", false},
	} {
		req, _ := http.NewRequest("GET", ts.url+"/chatr/api/rooms/lobby/messages", nil)
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("Access-Control-Allow-Origin")
		if tc.allow && got != tc.origin || !tc.allow && got != "" {
			t.Errorf("Origin %q: Access-Control-Allow-Origin %q", tc.origin, got)
		}
	}
}
