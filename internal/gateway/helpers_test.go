package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/config"
	"chatr/internal/hub"
	"chatr/internal/proto"
	"chatr/internal/store"
	"chatr/web"
)

// readTimeout bounds every wait for one frame; a test never hangs longer.
const readTimeout = 10 * time.Second

func noEnv(string) string { return "" }

// testServer is one gateway with a real store and hub behind an
// httptest.Server.
type testServer struct {
	cfg  config.Config
	srv  *Server
	st   *store.Store
	hub  *hub.Hub
	http *httptest.Server
	url  string // http://host:port
	ws   string // ws://host:port/chatr/ws
}

// newTestServer starts a gateway configured by the flags args (on top of a
// loopback address and a fresh data directory). Everything stops at cleanup.
func newTestServer(t testing.TB, args ...string) *testServer {
	t.Helper()
	return startTestServer(t, nil, args...)
}

// startTestServer is newTestServer with a hook that may change each
// accepted connection (socket buffer sizes, say).
func startTestServer(t testing.TB, onAccept func(net.Conn), args ...string) *testServer {
	t.Helper()
	cfg, err := config.Parse(append([]string{"--http", "127.0.0.1:0", "--data", t.TempDir(), "--node", "testnode"}, args...), noEnv, io.Discard)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	st, err := store.Open(cfg.DataDir, store.Options{Metrics: reg})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	h := hub.New(hub.Options{NodeID: st.NodeID(), Cluster: cfg.ClusterName, Metrics: reg})
	st.OnCommit(h.Publish)
	hs := httptest.NewUnstartedServer(nil) // binds its listener now
	srv := New(Options{Config: cfg, NodeID: st.NodeID(), HTTPAddr: hs.Listener.Addr().String(), Store: st, Hub: h,
		Poster: StorePoster{Store: st}, Web: web.FS, Metrics: reg})
	hs.Config.Handler = srv.Handler()
	if onAccept != nil {
		hs.Listener = hookListener{hs.Listener, onAccept}
	}
	hs.Start()
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); srv.Run(runCtx) }()
	ts := &testServer{cfg: cfg, srv: srv, st: st, hub: h, http: hs, url: hs.URL,
		ws: "ws" + strings.TrimPrefix(hs.URL, "http") + "/chatr/ws"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Drain(ctx)
		stopRun()
		<-ran
		hs.Close()
		st.Close()
	})
	return ts
}

type hookListener struct {
	net.Listener
	onAccept func(net.Conn)
}

func (l hookListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.onAccept(c)
	}
	return c, err
}

// frame is any server frame; only the fields of its type are set.
type frame struct {
	Type      string         `json:"type"`
	Ref       string         `json:"ref"`
	Code      string         `json:"code"`
	Message   string         `json:"message"`
	Room      string         `json:"room"`
	ID        string         `json:"id"`
	Sender    string         `json:"sender"`
	Text      string         `json:"text"`
	Created   string         `json:"created"`
	Node      string         `json:"node"`
	Cursor    string         `json:"cursor"`
	Truncated bool           `json:"truncated"`
	Session   string         `json:"session"`
	Name      string         `json:"name"`
	Nodes     []proto.Member `json:"nodes"`
	Presence  []proto.Person `json:"presence"`
	Joined    []proto.Person `json:"joined"`
	Left      []proto.Person `json:"left"`

	raw []byte
}

func (f frame) String() string {
	if len(f.raw) > 300 {
		return string(f.raw[:300]) + "..."
	}
	return string(f.raw)
}

// keys lists the JSON keys of the frame as sent.
func (f frame) keys() []string {
	var m map[string]json.RawMessage
	json.Unmarshal(f.raw, &m)
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// wsClient is a test WebSocket client. Its methods fail the test on any
// unexpected frame, error or timeout; call them from the test goroutine only.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

// dialWS opens a WebSocket; the error and response are for tests of refused
// upgrades.
func (ts *testServer) dialWS(hdr http.Header) (*websocket.Conn, *http.Response, error) {
	return ts.dialWith(hdr, nil)
}

// dialWith dials with a hook on the client's TCP connection.
func (ts *testServer) dialWith(hdr http.Header, onDial func(net.Conn)) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: hdr}
	if onDial != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					onDial(c)
				}
				return c, err
			}}}
	}
	return websocket.Dial(ctx, ts.ws, opts)
}

func (ts *testServer) dial(t testing.TB) *wsClient {
	t.Helper()
	return ts.dialHeader(t, nil)
}

func (ts *testServer) dialHeader(t testing.TB, hdr http.Header) *wsClient {
	t.Helper()
	conn, _, err := ts.dialWS(hdr)
	if err != nil {
		t.Fatalf("dial %s: %v", ts.ws, err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{t: t, conn: conn}
}

// hello dials and says hello as name.
func (ts *testServer) hello(t testing.TB, name string) *wsClient {
	t.Helper()
	c := ts.dial(t)
	c.send(map[string]any{"type": "hello", "name": name})
	c.expect("welcome")
	return c
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	var data []byte
	switch v := v.(type) {
	case string:
		data = []byte(v)
	case []byte:
		data = v
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			c.t.Fatalf("marshal %v: %v", v, err)
		}
	}
	c.write(websocket.MessageText, data)
}

func (c *wsClient) write(typ websocket.MessageType, data []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if err := c.conn.Write(ctx, typ, data); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame or the read error.
func (c *wsClient) read() (frame, error) { return c.readWithin(readTimeout) }

func (c *wsClient) readWithin(d time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	typ, data, err := c.conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	if typ != websocket.MessageText {
		return frame{}, errors.New("server sent a binary frame")
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return frame{}, errors.New("server sent a frame that is not JSON: " + string(data))
	}
	f.raw = data
	return f, nil
}

func (c *wsClient) next() frame {
	c.t.Helper()
	f, err := c.read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// expect reads the next frame and checks its type.
func (c *wsClient) expect(typ string) frame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("got frame %s, want type %q", f, typ)
	}
	return f
}

// until reads frames until one of type typ, returning it and the frames
// before it.
func (c *wsClient) until(typ string) (frame, []frame) {
	c.t.Helper()
	var before []frame
	for {
		f := c.next()
		if f.Type == typ {
			return f, before
		}
		before = append(before, f)
	}
}

// expectError reads the next frame, which must be an error with code and ref.
func (c *wsClient) expectError(code, ref string) frame {
	c.t.Helper()
	f := c.expect("error")
	if f.Code != code || f.Ref != ref {
		c.t.Fatalf("got error %s, want code %q ref %q", f, code, ref)
	}
	if f.Message == "" {
		c.t.Fatalf("error %s has no message for people", f)
	}
	return f
}

// pingPong checks the connection still answers, and returns any frames
// that came before the pong.
func (c *wsClient) pingPong() []frame {
	c.t.Helper()
	c.send(`{"type":"ping"}`)
	_, before := c.until("pong")
	return before
}

// quiet checks that nothing but the pong comes back to a ping.
func (c *wsClient) quiet() {
	c.t.Helper()
	if before := c.pingPong(); len(before) > 0 {
		c.t.Fatalf("unexpected frames before pong: %v", before)
	}
}

// join joins room with the extra fields and returns the joined frame, the
// replayed messages and the synced frame.
func (c *wsClient) join(room string, extra map[string]any) (frame, []frame, frame) {
	c.t.Helper()
	m := map[string]any{"type": "join", "room": room}
	for k, v := range extra {
		m[k] = v
	}
	c.send(m)
	joined := c.expect("joined")
	if joined.Room != room {
		c.t.Fatalf("joined %s, want room %q", joined, room)
	}
	var msgs []frame
	for {
		f := c.next()
		switch f.Type {
		case "message":
			msgs = append(msgs, f)
		case "synced":
			if f.Room != room {
				c.t.Fatalf("synced %s, want room %q", f, room)
			}
			return joined, msgs, f
		default:
			c.t.Fatalf("during the replay of %s: unexpected frame %s", room, f)
		}
	}
}

// closeStatus reads until the connection ends and returns its close code
// (-1 when it ended without one).
func (c *wsClient) closeStatus() websocket.StatusCode {
	c.t.Helper()
	for {
		_, err := c.readWithin(15 * time.Second)
		if err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

// expectClose reads (skipping frames) until the server closes with code.
func (c *wsClient) expectClose(code websocket.StatusCode) {
	c.t.Helper()
	if got := c.closeStatus(); got != code {
		c.t.Fatalf("connection closed with %d, want %d", got, code)
	}
}

var createdRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

// checkCreated checks a PROTOCOL.md time: RFC 3339, UTC, microseconds.
func checkCreated(t testing.TB, s string) time.Time {
	t.Helper()
	if !createdRE.MatchString(s) {
		t.Fatalf("created %q is not RFC 3339 UTC with microseconds", s)
	}
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("created %q: %v", s, err)
	}
	return tm
}

func ids(fs []frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

// msgID is the id of message seq of this server's node.
func (ts *testServer) msgID(seq int) string { return ts.st.NodeID() + "-" + strconv.Itoa(seq) }

// appendN stores n messages in room through the store (as another node
// session would), in order, and returns their ids.
func (ts *testServer) appendN(t testing.TB, room string, n int) []string {
	t.Helper()
	type res struct {
		m   proto.Message
		err error
	}
	chs := make([]chan res, n)
	for i := range n {
		ch := make(chan res, 1)
		chs[i] = ch
		err := ts.st.AppendAsync(context.Background(), proto.Message{Room: room, Sender: "bot", Text: "m" + strconv.Itoa(i)}, func(m proto.Message, err error) { ch <- res{m, err} })
		if err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	out := make([]string, n)
	for i, ch := range chs {
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("append: %v", r.err)
			}
			out[i] = r.m.ID()
		case <-time.After(readTimeout):
			t.Fatalf("append: no commit within %v", readTimeout)
		}
	}
	return out
}

// do makes an HTTP request and returns the status, headers and body.
func (ts *testServer) do(t testing.TB, method, path, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	status, hdr, data, err := ts.request(method, path, contentType, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, hdr, data
}

// request is do for goroutines other than the test's.
func (ts *testServer) request(method, path, contentType string, body []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, ts.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data, err
}

// metric reads one unlabelled sample of /metrics, or -1 when absent.
func (ts *testServer) metric(t testing.TB, name string) float64 {
	t.Helper()
	status, _, body := ts.do(t, "GET", "/metrics", "", nil)
	if status != 200 {
		t.Fatalf("GET /metrics: %d", status)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return -1
}

// say sends text to room with ref and reads until both its ack and its
// own message frame came back; other frames are returned.
func (c *wsClient) say(room, text, ref string) (ack, msg frame, other []frame) {
	c.t.Helper()
	c.send(map[string]any{"type": "send", "room": room, "text": text, "ref": ref})
	for ack.Type == "" || msg.Type == "" {
		f := c.next()
		switch {
		case f.Type == "ack" && f.Ref == ref:
			ack = f
		case f.Type == "error" && f.Ref == ref:
			c.t.Fatalf("send %q: %s", ref, f)
		case f.Type == "message" && f.Text == text && f.Room == room && msg.Type == "":
			msg = f
		default:
			other = append(other, f)
		}
	}
	if ack.ID != msg.ID {
		c.t.Fatalf("ack %s and message %s differ", ack, msg)
	}
	return ack, msg, other
}
