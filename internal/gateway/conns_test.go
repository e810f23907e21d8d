package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/client/clienttest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// httpConn is a raw keep-alive HTTP connection to the test server.
type httpConn struct {
	net.Conn
	br *bufio.Reader
}

func (ts *testServer) dialHTTP(t testing.TB) *httpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ts.addr, readTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpConn{Conn: c, br: bufio.NewReader(c)}
}

// get sends GET path on the connection and reads the answer.
func (c *httpConn) get(path string) (*http.Response, string, error) {
	c.SetDeadline(time.Now().Add(readTimeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: chatr\r\n\r\n", path); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

// closed waits for the server to close the connection, and fails the test
// if it does not within readTimeout or sends something instead.
func (c *httpConn) closed(t testing.TB) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(readTimeout))
	n, err := c.br.Read(make([]byte, 1))
	if n > 0 || !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(fmt.Sprint(err), "reset") {
		t.Fatalf("the connection is still open (read %d bytes, %v), want it closed by the server", n, err)
	}
}

// refused checks that a new connection is answered status with the JSON
// error code and a Retry-After, then closed.
func (ts *testServer) refused(t *testing.T, status int, code string) {
	t.Helper()
	c := ts.dialHTTP(t)
	resp, body, err := c.get("/healthz")
	if err != nil {
		t.Fatalf("a connection over the limit: %v, want %d", err, status)
	}
	if resp.StatusCode != status || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("a connection over the limit: %s %v, want %d with Retry-After, as JSON", resp.Status, resp.Header, status)
	}
	if got := checkErrorBody(t, []byte(body)); got != code {
		t.Fatalf("a connection over the limit: code %q, want %q", got, code)
	}
	c.closed(t)
}

// --max-conns-per-ip counts every connection of the listener, idle
// kept-alive HTTP ones as much as WebSockets, from accept until close:
// one over it is answered 429 and closed, whatever it asks for.
func TestConnCapCountsEveryConnection(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--max-conns-per-ip", "2")
	idle := []*httpConn{ts.dialHTTP(t), ts.dialHTTP(t)}
	for _, c := range idle {
		if resp, _, err := c.get("/healthz"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /healthz: %v %v", resp, err)
		}
	}
	// Two idle connections fill the address's slots.
	ts.refused(t, http.StatusTooManyRequests, proto.CodeRateLimited)
	if _, resp, err := ts.dialWS(nil); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a WebSocket over the limit: %v %v, want 429", resp, err)
	}
	// One goes: a WebSocket takes its slot and holds it while it lives.
	idle[0].Close()
	var c *clienttest.Raw
	proctest.Eventually(t, 5*time.Second, func() error {
		conn, _, err := ts.dialWS(nil)
		if err != nil {
			return fmt.Errorf("no slot after an idle connection closed: %w", err)
		}
		c = clienttest.NewRaw(t, conn)
		return nil
	})
	c.Hello("ann")
	ts.refused(t, http.StatusTooManyRequests, proto.CodeRateLimited)
	c.Quiet()
	// The session ends: its slot is free again.
	c.Conn.Close(websocket.StatusNormalClosure, "")
	idle[1].Close()
	proctest.Eventually(t, 5*time.Second, func() error {
		c := ts.dialHTTP(t)
		defer c.Close()
		resp, _, err := c.get("/healthz")
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("no slot after the session ended: %v %v", resp, err)
		}
		return nil
	})
	if got := ts.metric(t, `chatr_limit_refused_total{limit="max_conns_per_ip"}`); got < 3 {
		t.Fatalf(`chatr_limit_refused_total{limit="max_conns_per_ip"} = %v, want >= 3`, got)
	}
}

// --max-conns counts every connection too; one over it is answered 503.
func TestConnCapTotal(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--max-conns", "1")
	idle := ts.dialHTTP(t)
	if resp, _, err := idle.get("/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	ts.refused(t, http.StatusServiceUnavailable, proto.CodeUnavailable)
	// The admin listener is not counted: it answers while the node is full.
	if status, _, body := ts.adminGet(t, "/metrics"); status != 200 || !strings.Contains(string(body), "\nchatr_http_conns 1\n") {
		t.Fatalf("GET /metrics on the admin listener of a full node: %d, want 200 with chatr_http_conns 1", status)
	}
	idle.Close()
	proctest.Eventually(t, 5*time.Second, func() error {
		status, _, body := ts.adminGet(t, "/metrics")
		if status != 200 {
			return fmt.Errorf("GET /metrics: %d", status)
		}
		for _, want := range []string{"\nchatr_http_conns 0\n", // the idle one's slot is free again
			"\n" + `chatr_limit_refused_total{limit="max_conns"} `} { // counted once at least
			if !strings.Contains(string(body), want) {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
	c := ts.dialHTTP(t)
	if resp, _, err := c.get("/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz once the idle connection closed: %v %v", resp, err)
	}
}

// --http-idle-timeout closes a kept-alive connection that asks nothing
// more, --http-read-timeout one whose request never ends; a WebSocket
// session, idle longer than both, lives on (the request's deadlines do not
// stay on its connection), polled or read by a goroutine of its own.
func TestHTTPTimeouts(t *testing.T) {
	t.Parallel()
	for _, perSession := range []bool{false, true} {
		t.Run(fmt.Sprintf("reader per session %v", perSession), func(t *testing.T) {
			t.Parallel()
			ts := startTestServerWith(t, func(o *Options) { o.ReaderPerSession = perSession }, nil,
				"--http-idle-timeout", "300ms", "--http-read-timeout", "300ms")
			c := ts.hello(t, "ann")
			idle := ts.dialHTTP(t)
			if resp, _, err := idle.get("/healthz"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET /healthz: %v %v", resp, err)
			}
			slow := ts.dialHTTP(t)
			fmt.Fprintf(slow, "GET /healthz HTTP/1.1\r\nHost: chatr\r\n") // and never the blank line
			idle.closed(t)
			slow.closed(t)
			// The session said hello before the idle connection was made,
			// so it has been idle longer than both timeouts by now.
			c.Quiet()
			c.Join("lobby", nil)
			c.Say("lobby", "still here", "r1")
		})
	}
}

// Per-address limits count an IPv4 client by its address and an IPv6 one
// by its /64, a subscriber's network; an IPv4-mapped address is IPv4.
func TestIPKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:5080", "127.0.0.1"},
		{"10.1.2.3:1", "10.1.2.3"},
		{"[::ffff:10.1.2.3]:1", "10.1.2.3"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:80", "fe80::/64"},
		{"[::1]:80", "::/64"},
		{"not an address", "not an address"},
	} {
		if got := ipKey(tc.in); got != tc.want {
			t.Errorf("ipKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
