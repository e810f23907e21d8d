package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/client/clienttest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// Sending over --send-rate answers rate_limited; going on sending fast
// closes the session with 1008.
func TestRateLimitThenClose(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--send-rate", "1", "--send-burst", "1")
	c := ts.hello(t, "fast")
	c.Join("lobby", nil)
	c.Send(`{"type":"send","room":"lobby","text":"one","ref":"r1"}`)
	c.Send(`{"type":"send","room":"lobby","text":"two","ref":"r2"}`)
	var gotAck, gotMsg, gotErr bool
	for !(gotAck && gotMsg && gotErr) {
		f := c.Next()
		switch {
		case f.Type == "ack" && f.Ref == "r1":
			gotAck = true
		case f.Type == "message" && f.Text == "one":
			gotMsg = true
		case f.Type == "error":
			if f.Code != proto.CodeRateLimited || f.Ref != "r2" {
				t.Fatalf("got %s, want rate_limited for r2", f)
			}
			gotErr = true
		default:
			t.Fatalf("unexpected frame %s", f)
		}
	}
	if got := ts.metric(t, "chatr_rate_limited_total"); got < 1 {
		t.Fatalf("chatr_rate_limited_total = %v, want >= 1", got)
	}
	// A rate-limited session still answers.
	c.Quiet()

	// Keep hammering: the session is closed as abusive.
	for i := range maxRateBreaches + 5 {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		err := c.Conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"send","room":"lobby","text":"spam","ref":"s%d"}`, i))
		cancel()
		if err != nil {
			break // closed under us: fine
		}
	}
	for {
		f, err := c.Read()
		if err != nil {
			if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
				t.Fatalf("closed with %d (%v), want 1008", got, err)
			}
			break
		}
		if f.Type != "error" || f.Code != proto.CodeRateLimited {
			t.Fatalf("while hammering: got %s, want only rate_limited errors", f)
		}
	}
	// Only the one message within the rate was stored.
	page, err := ts.srv.store.Latest(context.Background(), "lobby", 100)
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("stored %d messages (err %v), want 1", len(page.Messages), err)
	}
}

// The Origin check: none, this node's own pages (over http, by the
// listener's address; loopback names are one host) and --allowed-origins
// are accepted; anything else, the https scheme of an http page included,
// is closed with 1008.
func TestOrigin(t *testing.T) {
	t.Parallel()
	plain := newTestServer(t)
	wide := newTestServer(t, "--allowed-origins", "evil.example,other.example:8443")
	public := newTestServer(t, "--public-url", "https://chat.example.com,http://alt.example:8080/chatr/")
	member := startTestServerWith(t, func(o *Options) {
		o.KnownHTTP = func() []string { return []string{"peer.example:5081", "https://tls.example"} }
	}, nil)
	host := func(ts *testServer) string { return strings.TrimPrefix(ts.url, "http://") }
	port := func(ts *testServer) string { _, p, _ := net.SplitHostPort(host(ts)); return p }
	cases := []struct {
		name   string
		ts     *testServer
		origin string
		ok     bool
	}{
		{"no origin", plain, "", true},
		{"same host", plain, "http://" + host(plain), true},
		{"localhost for 127.0.0.1", plain, "http://localhost:" + port(plain), true},
		{"same host, https", plain, "https://" + host(plain), false},
		{"same host, with a path", plain, "http://" + host(plain) + "/x", false},
		{"foreign host", plain, "http://evil.example", false},
		{"same IP, other port", plain, "http://127.0.0.1:1", false},
		{"host as prefix", plain, "http://" + host(plain) + ".evil.example", false},
		{"null origin", plain, "null", false},
		{"allowed host", wide, "http://evil.example", true},
		{"allowed host, any port", wide, "http://evil.example:8080", true},
		{"allowed host:port", wide, "https://other.example:8443", true},
		{"allowed host, other port", wide, "https://other.example:9000", false},
		{"not allowed", wide, "http://bad.example", false},
		{"wide still allows same host", wide, "http://" + host(wide), true},
		{"public URL", public, "https://chat.example.com", true},
		{"public URL, default port spelled", public, "https://chat.example.com:443", true},
		{"public URL, upper case", public, "https://Chat.Example.COM", true},
		{"public URL, http", public, "http://chat.example.com", false},
		{"public URL, other port", public, "https://chat.example.com:8443", false},
		{"second public URL", public, "http://alt.example:8080", true},
		{"public URLs replace the listener's names", public, "http://" + host(public), false},
		{"a member's page", member, "http://peer.example:5081", true},
		{"a member's page, https", member, "https://peer.example:5081", false},
		{"a member's URL", member, "https://tls.example", true},
		{"a member still allows its own host", member, "http://" + host(member), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hdr := http.Header{}
			if tc.origin != "" {
				hdr.Set("Origin", tc.origin)
			}
			c := tc.ts.dialHeader(t, hdr)
			if !tc.ok {
				// Closed at once: not even a hello is answered.
				c.Send(`{"type":"hello","name":"o"}`)
				if f, err := c.Read(); err == nil {
					t.Fatalf("a session of origin %q was served: %s", tc.origin, f)
				} else if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
					t.Fatalf("origin %q: closed with %d (%v), want 1008", tc.origin, got, err)
				}
				return
			}
			c.Hello("o")
			c.Quiet()
		})
	}
}

// DNS rebinding: a page of evil.example, whose name now resolves to this
// node, sends Origin and Host both evil.example. The Host header says
// nothing about which pages this node serves, so the origin is refused.
func TestOriginIgnoresHostHeader(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(ts.url, "http://"))
	rebound := "evil.example:" + port
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, strings.TrimPrefix(ts.url, "http://"))
		}}}
	c := clienttest.DialRaw(t, "ws://"+rebound+"/chatr/ws", &clienttest.RawOptions{
		HTTPClient: client, Header: http.Header{"Origin": {"http://" + rebound}}})
	c.Send(`{"type":"hello","name":"rebound"}`)
	if f, err := c.Read(); err == nil {
		t.Fatalf("a rebound page's session was served: %s", f)
	} else if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
		t.Fatalf("a rebound page's session ended with %d (%v), want 1008", got, err)
	}
	// Nor may such a page read the API from script.
	req, _ := http.NewRequest("GET", "http://"+rebound+"/chatr/api/rooms", nil)
	req.Header.Set("Origin", "http://"+rebound)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Fatalf("a rebound page may read the API: Access-Control-Allow-Origin %q", got)
	}
}

// --max-conns-per-ip refuses extra upgrades with 429 while the open
// sessions keep working, and takes new ones once a session ends.
func TestMaxConnsPerIP(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--max-conns-per-ip", "2")
	a := ts.hello(t, "a")
	b := ts.hello(t, "b")
	_, resp, err := ts.dialWS(nil)
	if err == nil {
		t.Fatal("a third connection from one IP was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection: %v, response %v, want 429", err, resp)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	a.Quiet()
	b.Quiet()
	b.Conn.Close(websocket.StatusNormalClosure, "")
	proctest.Eventually(t, 5*time.Second, func() error {
		conn, _, err := ts.dialWS(nil)
		if err != nil {
			return fmt.Errorf("no slot freed after a session ended: %w", err)
		}
		conn.CloseNow()
		return nil
	})
	a.Quiet()
}

// --max-conns refuses extra upgrades with 503 while the open sessions keep
// working.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--max-conns", "2")
	a := ts.hello(t, "a")
	b := ts.hello(t, "b")
	_, resp, err := ts.dialWS(nil)
	if err == nil {
		t.Fatal("a connection over --max-conns was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connection over the limit: %v, response %v, want 503", err, resp)
	}
	a.Quiet()
	b.Quiet()
}

// --max-conns holds when many clients connect at once: exactly the limit
// get a session, and every other dial is refused with 503.
func TestMaxConnsConcurrentDials(t *testing.T) {
	t.Parallel()
	const limit, dialers = 3, 64
	ts := newTestServer(t, "--max-conns", fmt.Sprint(limit))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []*websocket.Conn
	var refused []string // how each refused dial was answered
	start := make(chan struct{})
	for range dialers {
		wg.Go(func() {
			<-start
			conn, resp, err := ts.dialWS(nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				conns = append(conns, conn)
			case resp != nil:
				refused = append(refused, resp.Status)
			default:
				refused = append(refused, err.Error())
			}
		})
	}
	close(start)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.CloseNow()
		}
	})
	if len(conns) != limit {
		t.Fatalf("%d of %d concurrent dials upgraded with --max-conns %d, want %d", len(conns), dialers, limit, limit)
	}
	for _, r := range refused {
		if want := "503 Service Unavailable"; r != want {
			t.Fatalf("a dial over the limit got %q, want %q", r, want)
		}
	}
	// Every accepted upgrade is a session: each answers hello.
	for _, conn := range conns {
		clienttest.NewRaw(t, conn).Hello("x")
	}
}

// A client that never reads is closed with 4000 once its queue is full;
// the others in the room get every message and stay connected.
func TestSlowConsumerClosed4000(t *testing.T) {
	t.Parallel()
	// Small socket buffers, so that a client that does not read fills them
	// after a few dozen messages rather than megabytes.
	ts := startTestServer(t, func(c net.Conn) { c.(*net.TCPConn).SetWriteBuffer(32 << 10) },
		"--send-queue", "16", "--send-rate", "100000", "--send-burst", "100000")
	slow := clienttest.DialRaw(t, ts.ws, &clienttest.RawOptions{HTTPClient: smallReadsClient()})
	slow.Hello("slow")
	slow.Join("lobby", nil)
	reader := ts.hello(t, "reader")
	reader.Join("lobby", nil)
	sender := ts.hello(t, "sender")
	sender.Join("lobby", nil)
	// From here on the slow client reads nothing until it has been cut off.

	// The reader reads in the background and hands over message ids.
	readerIDs := make(chan string, 10000)
	readerErr := make(chan error, 1)
	go func() {
		for {
			f, err := reader.ReadWithin(60 * time.Second)
			if err != nil {
				readerErr <- err
				return
			}
			if f.Type == "message" {
				readerIDs <- f.ID
			}
		}
	}()

	text := strings.Repeat("s", 4000)
	var acked, echoed []string
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; ts.metric(t, "chatr_ws_slow_closed_total") < 1; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the slow client was not closed after %d messages", len(acked))
		}
		// Four at a time, so a commit holds at most four messages and a
		// client that reads keeps up easily with a queue of 16.
		refs := map[string]bool{}
		for j := range 4 {
			ref := fmt.Sprintf("r%d-%d", i, j)
			refs[ref] = true
			sender.Send(map[string]any{"type": "send", "room": "lobby", "text": text, "ref": ref})
		}
		for len(refs) > 0 {
			f := sender.Next()
			switch {
			case f.Type == "ack" && refs[f.Ref]:
				delete(refs, f.Ref)
				acked = append(acked, f.ID)
			case f.Type == "message":
				echoed = append(echoed, f.ID)
			default:
				t.Fatalf("sender got %s", f)
			}
		}
	}
	// Now read the slow client: what was buffered, then the close.
	if got := slow.CloseStatus(); got != proto.CloseSlowClient {
		t.Fatalf("slow client closed with %d, want 4000", got)
	}
	// The sender and the reader got every message once, in order, and are
	// still connected.
	for len(echoed) < len(acked) {
		f := sender.Next()
		switch f.Type {
		case "message":
			echoed = append(echoed, f.ID)
		case "presence": // the slow client left
		default:
			t.Fatalf("sender got %s", f)
		}
	}
	var read []string
	for len(read) < len(acked) {
		select {
		case id := <-readerIDs:
			read = append(read, id)
		case err := <-readerErr:
			t.Fatalf("reader: %v (after %d of %d messages)", err, len(read), len(acked))
		case <-time.After(readTimeout):
			t.Fatalf("reader got %d of %d messages", len(read), len(acked))
		}
	}
	if strings.Join(read, ",") != strings.Join(acked, ",") || strings.Join(echoed, ",") != strings.Join(acked, ",") {
		t.Fatalf("acked %v\nsender saw %v\nreader saw %v", acked, echoed, read)
	}
	reader.Send(`{"type":"ping"}`)
	sender.PingPong()
	select {
	case id := <-readerIDs:
		t.Fatalf("reader got an extra message %s", id)
	case err := <-readerErr:
		t.Fatalf("reader: %v", err)
	default:
	}
	t.Logf("slow client cut off after %d messages of %d bytes", len(acked), len(text))
}

// Drain closes every session with 1001, refuses new ones and makes
// /readyz answer 503.
func TestDrain(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	if status, _, _ := ts.do(t, "GET", "/readyz", "", nil); status != 200 {
		t.Fatalf("/readyz = %d before draining, want 200", status)
	}
	a := ts.hello(t, "a")
	a.Join("lobby", nil)
	b := ts.dial(t) // not even greeted
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		ts.srv.Drain(ctx)
		close(done)
	}()
	a.ExpectClose(websocket.StatusGoingAway)
	b.ExpectClose(websocket.StatusGoingAway)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after its sessions closed")
	}
	if n := ts.srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions after Drain", n)
	}
	if status, _, _ := ts.do(t, "GET", "/readyz", "", nil); status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d while draining, want 503", status)
	}
	if status, _, _ := ts.do(t, "GET", "/healthz", "", nil); status != 200 {
		t.Fatalf("/healthz = %d while draining, want 200", status)
	}
	_, resp, err := ts.dialWS(nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade while draining: %v %v, want 503", err, resp)
	}
}

// Once the server has sent its close frame and the client has answered
// with its own, the connection is over (RFC 6455 7.1.1: the server closes
// the TCP connection immediately), so a drain of clients that answer at
// once is quick and their connection slots are free again.
func TestCloseHandshakeEndsPromptly(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--max-conns", "1")
	c := ts.hello(t, "a")
	done := make(chan struct{})
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ts.srv.Drain(ctx)
		close(done)
	}()
	c.ExpectClose(websocket.StatusGoingAway) // the client answers the close frame
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Drain took %v though the client answered the close at once", d)
	}

	// A session closed for abuse frees its slot once the client answered.
	ts2 := newTestServer(t, "--max-conns", "1")
	c2 := ts2.dialHeader(t, http.Header{"Origin": {"http://evil.example"}})
	c2.ExpectClose(websocket.StatusPolicyViolation)
	closed := time.Now()
	proctest.Eventually(t, 10*time.Second, func() error {
		conn, _, err := ts2.dialWS(nil)
		if err != nil {
			return fmt.Errorf("the slot of a closed session is not free: %w", err)
		}
		conn.CloseNow()
		return nil
	})
	if d := time.Since(closed); d > time.Second {
		t.Errorf("the slot of a session whose close was answered was held %v", d)
	}
}

// Clients that read as fast as they can are not "too slow" when many
// messages are committed at once: a burst of sends (within the rate limit)
// reaches every reader of the room, none is cut off with 4000.
func TestBurstDoesNotCutOffReaders(t *testing.T) {
	t.Parallel()
	const burst = 64
	ts := newTestServer(t, "--send-queue", "16", "--send-rate", "1000", "--send-burst", fmt.Sprint(burst))
	reader := ts.hello(t, "reader")
	reader.Join("lobby", nil)
	sender := ts.hello(t, "sender")
	sender.Join("lobby", nil)
	reader.Expect("presence")
	for i := range burst {
		sender.Send(fmt.Sprintf(`{"type":"send","room":"lobby","text":"m%d","ref":"r%d"}`, i, i))
	}
	for _, c := range []*clienttest.Raw{reader, sender} {
		got := 0
		for got < burst {
			f, err := c.Read()
			if err != nil {
				t.Fatalf("a reading client was cut off after %d of %d messages: %v (chatr_ws_slow_closed_total %v)",
					got, burst, err, ts.metric(t, "chatr_ws_slow_closed_total"))
			}
			if f.Type == "message" {
				got++
			}
		}
	}
}
