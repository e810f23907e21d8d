package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"chatr/internal/proctest"
)

// Profiles are served only when --pprof asks for them, and only on the
// admin listener.
func TestPprofOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args  []string
		admin int
	}{
		{nil, http.StatusNotFound},
		{[]string{"--pprof"}, http.StatusOK},
	} {
		ts := newTestServer(t, tc.args...)
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
			if status, _, _ := ts.adminGet(t, path); status != tc.admin {
				t.Errorf("args %v: %s on the admin listener answered %d, want %d", tc.args, path, status, tc.admin)
			}
			if status, _, _ := ts.do(t, "GET", path, "", nil); status != http.StatusNotFound {
				t.Errorf("args %v: %s on the public listener answered %d, want 404", tc.args, path, status)
			}
		}
	}
}

// With --write-delay, frames wait for others so that one write carries
// them all, and they still arrive, in order.
func TestWriteDelayBatches(t *testing.T) {
	t.Parallel()
	// Long enough for the test to send three pings, each once the server
	// has read the one before, and to poll /metrics in between, on a loaded
	// machine.
	ts := newTestServer(t, "--write-delay", "500ms")
	a := ts.hello(t, "ann")
	a.Join("lobby", nil)
	for i := range 3 {
		a.Send(fmt.Sprintf(`{"type":"send","room":"lobby","text":"m%d","ref":"r%d"}`, i, i))
	}
	var texts []string
	for acks := 0; acks < 3 || len(texts) < 3; {
		switch f := a.Next(); f.Type {
		case "message":
			texts = append(texts, f.Text)
		case "ack":
			acks++
		default:
			t.Fatalf("got %s, want acks and messages", f)
		}
	}
	if strings.Join(texts, ",") != "m0,m1,m2" {
		t.Fatalf("got %v", texts)
	}

	// Three pings, each sent once the server has read the one before: what
	// batches their pongs into one write is the delay, not the client.
	framesIn := ts.metric(t, "chatr_ws_frames_in_total")
	framesOut, writes := ts.metric(t, "chatr_ws_frames_out_total"), ts.metric(t, "chatr_ws_writes_total")
	for i := range 3 {
		a.Send(`{"type":"ping"}`)
		proctest.Eventually(t, 5*time.Second, func() error {
			if n := ts.metric(t, "chatr_ws_frames_in_total") - framesIn; n < float64(i+1) {
				return fmt.Errorf("the server has read %v of %d pings", n, i+1)
			}
			return nil
		})
	}
	for range 3 {
		a.Expect("pong")
	}
	frames, w := ts.metric(t, "chatr_ws_frames_out_total")-framesOut, ts.metric(t, "chatr_ws_writes_total")-writes
	if frames != 3 || w != 1 {
		t.Fatalf("the 3 pongs went out as %v frames in %v writes, want 3 frames in 1 write", frames, w)
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
