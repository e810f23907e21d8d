package gateway

import (
	"net/http"
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
