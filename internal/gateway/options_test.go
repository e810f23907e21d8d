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
