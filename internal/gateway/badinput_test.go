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
	node := ts.st.NodeID()
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
