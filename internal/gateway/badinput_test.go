package gateway

import (
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"chatr/internal/proto"
)

// Bad input is the client's fault: it is answered with a 4xx and an error
// code, never a 500, and logs nothing at info or above (a client must not
// be able to flood the node's log).
func TestBadInputIsNot500AndNotLogged(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ts.appendN(t, "lobby", 3)
	node := ts.origin
	huge := strconv.FormatUint(math.MaxInt64+1, 10) // 2^63: past SQLite's integers
	for _, tc := range []struct {
		name, path string
		status     int
	}{
		{"before seq 2^63", "/chatr/api/rooms/lobby/messages?before=" + node + "-" + huge, 400},
		{"before seq 2^64-1", "/chatr/api/rooms/lobby/messages?before=" + node + "-" + strconv.FormatUint(math.MaxUint64, 10), 400},
		{"since garbage", "/chatr/api/rooms/lobby/messages?since=" + url.QueryEscape("??"), 400},
		{"limit not a number", "/chatr/api/rooms/lobby/messages?limit=x", 400},
		{"bad room", "/chatr/api/rooms/NO/messages", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, data := ts.do(t, "GET", tc.path, "", nil)
			if status != tc.status {
				t.Fatalf("GET %s: %d %s, want %d", tc.path, status, data, tc.status)
			}
			checkErrorBody(t, data)
		})
	}
	c := ts.hello(t, "ann")
	c.Send(`{"type":"join","room":"lobby","since":"garbage","ref":"j"}`)
	c.ExpectError(proto.CodeBadRequest, "j")
	c.Quiet()
	for _, level := range []string{"INFO", "WARN", "ERROR"} {
		if lines := ts.logLines(level); len(lines) > 0 {
			t.Errorf("bad input logged at %s:\n%s", level, strings.Join(lines, "\n"))
		}
	}
}

// What clients can make the node log is rate-limited: a bad frame logs at
// debug, a failure a request meets (here a closed store) at error, and a
// flood of either writes a few lines and counts the rest.
func TestClientCausedLogsAreLimited(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, unlimited("--get-rate", "1e6", "--get-burst", "1000000")...) // 200 GETs
	c := ts.hello(t, "flood")
	for range 200 {
		c.Send(`{"type":"bogus"}`)
	}
	for range 200 {
		c.Expect("error")
	}
	ts.st.Close() // every read fails from here on
	for range 200 {
		if status, _, _ := ts.do(t, "GET", "/chatr/api/rooms/lobby/messages", "", nil); status != 500 {
			t.Fatalf("a read of a closed store: %d, want 500", status)
		}
	}
	if n := len(ts.logLines("DEBUG")); n == 0 || n > 2*logBurst {
		t.Errorf("200 bad frames logged %d debug lines, want 1 to %d", n, 2*logBurst)
	}
	if n := len(ts.logLines("ERROR")); n == 0 || n > 2*logBurst {
		t.Errorf("200 failed reads logged %d error lines, want 1 to %d", n, 2*logBurst)
	}
	if got := ts.metric(t, "chatr_log_lines_dropped_total"); got < 300 {
		t.Errorf("chatr_log_lines_dropped_total = %v, want most of the 400 lines", got)
	}
}
