package gateway

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/client/clienttest"
	"chatr/internal/config"
	"chatr/internal/hub"
	"chatr/internal/natsengine"
	"chatr/internal/natstest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
	"chatr/internal/store"
	"chatr/web"
)

// readTimeout bounds a dial, a request and a commit: a test never hangs
// longer.
const readTimeout = clienttest.DefaultTimeout

func noEnv(string) string { return "" }

// engine is the engine the test servers run on: local (the default), or
// nats (go test ./internal/gateway -args -engine nats; make test runs the
// engine-independent tests so too): a single JetStream server per test
// server, in this process, and the natsengine in front of it.
var engine = flag.String("engine", "local", "engine of the test servers: local or nats")

// unlimited lifts the per-session caps on frames and replays, for tests
// that drive one session through hundreds of joins or bad frames on
// purpose. Its flags come first, so a test's own flags win.
func unlimited(args ...string) []string {
	return append([]string{"--frame-rate", "1e9", "--frame-burst", "1000000000",
		"--replay-rate", "1e9", "--replay-bytes-rate", "1e12"}, args...)
}

// testServer is one gateway with a real store and hub behind an
// httptest.Server.
type testServer struct {
	cfg  config.Config
	srv  *Server
	st   *store.Store
	hub  *hub.Hub
	addr string // host:port of the listener
	url  string // http://host:port
	ws   string // ws://host:port/chatr/ws
	// admin is http://host:port of the admin listener (ServeAdmin).
	admin string
	// logs holds what the server logged, every level, as text lines.
	logs *proctest.Buffer
	// origin is the origin of the messages it stores: the node's id, or
	// the stream's with the NATS engine.
	origin string
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
	return startTestServerWith(t, nil, onAccept, args...)
}

// startTestServerWith is startTestServer with a hook that may change the
// server's Options.
func startTestServerWith(t testing.TB, tweak func(*Options), onAccept func(net.Conn), args ...string) *testServer {
	t.Helper()
	base := []string{"--http", "127.0.0.1:0", "--data", t.TempDir(), "--node", "testnode"}
	var js *natstest.Cluster
	if *engine == "nats" {
		js = natstest.Start(t, 1)
		base = append(base, "--engine", "nats", "--nats-url", js.URL(), "--nats-replicas", "1")
	}
	cfg, err := config.Parse(append(base, args...), noEnv, io.Discard)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	st, err := store.Open(cfg.DataDir, store.Options{Metrics: reg})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	var nats *natsengine.Engine
	var key []byte
	if js != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		nats, err = natsengine.Open(ctx, natsengine.Config{URL: js.URL(), Replicas: 1, Name: "test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil {
			key, err = nats.SharedKey(ctx, "cursor")
		}
		cancel()
		if err != nil {
			t.Fatalf("nats engine: %v", err)
		}
	}
	h := hub.New(hub.Options{NodeID: st.NodeID(), Cluster: cfg.ClusterName, Metrics: reg, PresenceInterval: cfg.PresenceInterval, CursorKey: key})
	var fanout *store.Follower
	if nats == nil {
		fanout = st.Follow(true)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	logs := &proctest.Buffer{}
	opts := Options{Config: cfg, NodeID: st.NodeID(), HTTPAddr: ln.Addr().String(), History: StoreHistory{Store: st}, Hub: h,
		Poster: StorePoster{Store: st}, Web: web.FS, Metrics: reg,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if nats != nil {
		opts.History, opts.Poster, opts.Ready = nats, nats, nats.Ready
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv := New(opts)
	var served net.Listener = ln
	if onAccept != nil {
		served = hookListener{ln, onAccept}
	}
	serving := make(chan struct{})
	go func() { defer close(serving); srv.Serve(served) }()
	servingAdmin := make(chan struct{})
	go func() { defer close(servingAdmin); srv.ServeAdmin(adminLn) }()
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); srv.Run(runCtx) }()
	fannedOut := make(chan struct{})
	go func() {
		defer close(fannedOut)
		if nats != nil {
			nats.Follow(runCtx, 0, h.Publish, func() {})
			return
		}
		h.Run(runCtx, fanout)
	}()
	url := "http://" + ln.Addr().String()
	ts := &testServer{cfg: cfg, srv: srv, st: st, hub: h, addr: ln.Addr().String(), url: url, logs: logs,
		admin: "http://" + adminLn.Addr().String(), origin: st.NodeID(),
		ws: "ws" + strings.TrimPrefix(url, "http") + "/chatr/ws"}
	if nats != nil {
		ts.origin = nats.Origin()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Drain(ctx)
		stopRun()
		<-ran
		<-fannedOut
		srv.Shutdown(ctx)
		<-serving
		<-servingAdmin
		if nats != nil {
			nats.Close()
		}
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

// smallReadsClient dials sockets with a 4 KB receive buffer, so that a
// client that does not read stalls the node's writes after a few KB.
func smallReadsClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(4 << 10)
			}
			return c, err
		}}}
}

// dialWS opens a WebSocket and returns what websocket.Dial does, for tests
// of refused upgrades; wrap an accepted one in clienttest.NewRaw.
func (ts *testServer) dialWS(hdr http.Header) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	return websocket.Dial(ctx, ts.ws, &websocket.DialOptions{HTTPHeader: hdr})
}

// dial opens a session with no hello yet.
func (ts *testServer) dial(t testing.TB) *clienttest.Raw {
	t.Helper()
	return clienttest.DialRaw(t, ts.ws, nil)
}

// dialHeader is dial with handshake headers.
func (ts *testServer) dialHeader(t testing.TB, hdr http.Header) *clienttest.Raw {
	t.Helper()
	return clienttest.DialRaw(t, ts.ws, &clienttest.RawOptions{Header: hdr})
}

// hello dials and says hello as name.
func (ts *testServer) hello(t testing.TB, name string) *clienttest.Raw {
	t.Helper()
	c := ts.dial(t)
	c.Hello(name)
	return c
}

var createdRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

// checkCreated checks a docs/protocol.md time: RFC 3339, UTC, microseconds.
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

func ids(fs []clienttest.Frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

// msgID is the id of message seq of this server's node.
func (ts *testServer) msgID(seq int) string { return ts.origin + "-" + strconv.Itoa(seq) }

// appendN stores n messages in room through the server's Poster (the
// store or the stream), in order, and returns their ids.
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
		err := ts.srv.post.Post(context.Background(), proto.Message{Room: room, Sender: "bot", Text: "m" + strconv.Itoa(i)}, func(m proto.Message, err error) { ch <- res{m, err} })
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

// adminGet is do of a GET on the admin listener.
func (ts *testServer) adminGet(t testing.TB, path string) (int, http.Header, []byte) {
	t.Helper()
	status, hdr, data, err := ts.requestURL("GET", ts.admin+path, "", nil)
	if err != nil {
		t.Fatalf("GET %s on the admin listener: %v", path, err)
	}
	return status, hdr, data
}

// request is do for goroutines other than the test's.
func (ts *testServer) request(method, path, contentType string, body []byte) (int, http.Header, []byte, error) {
	return ts.requestURL(method, ts.url+path, contentType, body)
}

// requestURL is request of a whole URL.
func (ts *testServer) requestURL(method, url, contentType string, body []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
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

// metric reads one unlabelled sample of /metrics on the admin listener,
// or -1 when absent.
func (ts *testServer) metric(t testing.TB, name string) float64 {
	t.Helper()
	status, _, body := ts.adminGet(t, "/metrics")
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

// logLines returns the lines the server logged at level (DEBUG, INFO,
// WARN, ERROR).
func (ts *testServer) logLines(level string) []string {
	var out []string
	for _, line := range strings.Split(ts.logs.String(), "\n") {
		if strings.Contains(line, " level="+level+" ") {
			out = append(out, line)
		}
	}
	return out
}
