// Package gateway is chatr's front door: the HTTP routes, the WebSocket
// sessions (no goroutine while idle: one poller wakes a reader when a client
// sends, and a flusher runs while frames wait; a bounded outbound queue
// each), the HTTP API and the embedded web client.
package gateway

import (
	"context"
	"crypto/tls"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"chatr/internal/config"
	"chatr/internal/hub"
	"chatr/internal/netpoll"
	"chatr/internal/proto"
	"chatr/internal/store"
)

// Poster stores a new message of this node from a draft (Room, Sender,
// Text, Ref): done is called once it is durable (and, in a cluster with
// --ack-replicas, replicated), with the message as stored, which for a
// repeated ref is the first one. Calls from one goroutine are stored in
// order. done must not block.
type Poster interface {
	Post(ctx context.Context, draft proto.Message, done func(proto.Message, error)) error
}

// History reads the rooms' messages: the node's own store with the local
// engine (StoreHistory), the stream with the NATS one. An error that is a
// *proto.Error (unavailable) goes to the client as it is.
type History interface {
	Latest(ctx context.Context, room string, limit int) (store.Page, error)
	Since(ctx context.Context, room string, cursor proto.Vector, limit int, newest bool) (store.Page, error)
	Before(ctx context.Context, room, origin string, seq uint64, limit int) (store.Page, error)
	HasRoom(room string) bool
	RoomsAfter(ctx context.Context, after string, limit int) ([]store.RoomInfo, bool, error)
}

// StoreHistory reads the node's own store: the local engine.
type StoreHistory struct{ *store.Store }

// RoomsAfter implements History.
func (h StoreHistory) RoomsAfter(_ context.Context, after string, limit int) ([]store.RoomInfo, bool, error) {
	rooms, more := h.Store.RoomsAfter(after, limit)
	return rooms, more, nil
}

// Options wires a Server to the rest of the node.
type Options struct {
	Config config.Config
	NodeID string
	// HTTPAddr is the address this node's listener is bound to, as a single
	// node lists itself to clients.
	HTTPAddr string
	History  History
	Hub      *hub.Hub
	Poster   Poster
	Web      fs.FS // the web client's files, served under /chatr/
	Log      *slog.Logger
	Metrics  *prometheus.Registry
	// Members lists the alive nodes for welcome.nodes; nil means this node alone.
	Members func() []proto.Member
	// ClusterView answers GET /chatr/api/cluster; nil means a single node.
	ClusterView func() proto.ClusterView
	// Ready reports whether the node has joined its cluster; nil means yes.
	Ready func() bool
	// Peer serves the peer links under /chatr/peer/ (cluster mode).
	Peer http.Handler
	// ReaderPerSession reads every session in a goroutine of its own, as
	// where epoll is not available, instead of waking readers from one
	// poller (tests run the fallback with it).
	ReaderPerSession bool
	// Tokens checks client tokens: set, auth is on (a hello needs a token,
	// and the HTTP API a bearer token or API key); nil, anyone may use any
	// name.
	Tokens Tokens
	// APIKey, with auth on, names the program an HTTP API key is for; ok
	// false for a key it does not know. Compare in constant time.
	APIKey func(presented string) (name string, ok bool)
	// TokenURL is where the web client fetches its token when auth is on
	// (--auth-token-url; with the browser's cookies), told to it by
	// /chatr/config.json.
	TokenURL string
	// ExpiredGrace is how long a session whose token expired may take to
	// send a refresh before it is closed with 4001 (--auth-expired-grace).
	ExpiredGrace time.Duration
	// TLS, when set, makes Serve speak TLS (HTTPS and WSS) on its
	// listener, after the connection caps (a refused flood costs no
	// handshake).
	TLS *tls.Config
	// KnownHTTP lists the page origins of the members alive now, as URLs
	// (or host:port, served over http): their pages may open WebSockets
	// here, so a client fails over from a node to this one without
	// --allowed-origins, and this node's pages may connect to them (the
	// Content-Security-Policy's connect-src).
	KnownHTTP func() []string
	// IsAdmin reports whether a request to the public listener comes from
	// an admin (a token with admin: true, an API key): it then gets what
	// the admin listener answers, such as the cluster view with every
	// address. nil: nobody is an admin on the public listener (the admin
	// listener is trusted by its binding); with Tokens set, it defaults to
	// the credential: an API key, or a token with admin: true. It is called
	// on the request's goroutine, concurrently for concurrent requests.
	IsAdmin func(*http.Request) bool
}

// Server serves one node's HTTP listener.
type Server struct {
	opts  Options
	cfg   config.Config
	hub   *hub.Hub
	store History
	post  Poster
	log   *slog.Logger
	mux   *http.ServeMux
	// adminMux holds the admin listener's routes (admin.go), served by
	// admin.
	adminMux *http.ServeMux
	admin    *http.Server
	// frameAncestors is the CSP frame-ancestors of pages (headers.go).
	frameAncestors string

	// sendGate is held for reading while a send is admitted and handed to
	// the Poster, and for writing by StopSends, so that no send slips in
	// after the sends stopped (the node then waits for what it took to be
	// stored and replicated).
	sendGate     sync.RWMutex
	sendsStopped bool

	mu       sync.Mutex
	sessions map[*session]struct{}
	draining bool
	drained  bool           // Drain is done with the poller: Run starts nothing
	wg       sync.WaitGroup // sessions, upgraded or being upgraded

	// http serves the listener (Serve); conns counts its connections
	// against --max-conns and --max-conns-per-ip.
	http  *http.Server
	conns conns
	// refusing holds a token per refused connection being answered, and
	// refusals tracks their goroutines (refuseConn).
	refusing                chan struct{}
	refusals                sync.WaitGroup
	refuseFull, refusePerIP []byte
	// debugLog and errorLog bound the log lines that clients can cause
	// (logLimited): bad input at debug, failures they trigger at warn and
	// error, each with its own budget so a flood of one hides no other.
	debugLog, errorLog *rate.Limiter

	ipLimits *ipLimiter // --send-rate of HTTP posts, per address
	newRooms *ipLimiter // --new-rooms-per-minute, per address
	gets     *ipLimiter // --get-rate, per address
	metrics  *metrics
	// queuedFrames is the frames waiting in every session's queue, kept by
	// the sessions so the gauge takes no lock.
	queuedFrames atomic.Int64
	// poller wakes sessions when their client sends something; nil where
	// epoll is not available (each session then has a reader goroutine).
	poller  *netpoll.Poller
	running sync.WaitGroup // the poller's Run
	// unGreeted holds the hello deadline of sessions that have not said
	// hello; one sweeper closes the late ones (no timer per session).
	unGreeted map[*session]time.Time
	// tokens holds, with auth on, when each session's token expires (the
	// same sweeper tells and closes them).
	tokens map[*session]*tokenDeadline
	// ctx ends when the server is drained; it bounds store calls of sessions.
	ctx  context.Context
	stop context.CancelFunc
	// started is when this node came up, as a single node reports it.
	started time.Time
	// pageOrigins are the origins of this node's own pages (origin.go).
	pageOrigins []origin
}

// New makes a Server. It starts nothing: Serve a listener with it and
// call Run for the background work.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, cfg: opts.Config, hub: opts.Hub, store: opts.History, post: opts.Poster,
		log: opts.Log, mux: http.NewServeMux(), adminMux: http.NewServeMux(), sessions: map[*session]struct{}{},
		ipLimits: newIPLimiter(rate.Limit(opts.Config.SendRate), opts.Config.SendBurst),
		newRooms: newIPLimiter(rate.Limit(float64(opts.Config.NewRoomsPerMinute)/60), opts.Config.NewRoomsPerMinute),
		gets:     newIPLimiter(rate.Limit(opts.Config.GetRate), opts.Config.GetBurst),
		conns:    conns{max: opts.Config.MaxConns, maxPerIP: opts.Config.MaxConnsPerIP, perIP: map[string]int{}},
		refusing: make(chan struct{}, maxRefusing),
		refuseFull: refusal(http.StatusServiceUnavailable, retryFull,
			proto.Errorf(proto.CodeUnavailable, "the node is full; try another node")),
		refusePerIP: refusal(http.StatusTooManyRequests, retryPerIP,
			proto.Errorf(proto.CodeRateLimited, "too many connections from your address")),
		debugLog: rate.NewLimiter(logRate, logBurst),
		errorLog: rate.NewLimiter(logRate, logBurst)}
	s.metrics = newMetrics(opts.Metrics, s)
	s.unGreeted = map[*session]time.Time{}
	s.started = time.Now()
	scheme := "http"
	if opts.TLS != nil {
		scheme = "https"
	}
	s.pageOrigins = pageOrigins(opts.Config.PublicURLs, opts.HTTPAddr, scheme)
	s.ctx, s.stop = context.WithCancel(context.Background())
	if !opts.ReaderPerSession {
		p, err := netpoll.New()
		if err != nil {
			s.log.Warn("no epoll: one reader goroutine per WebSocket session", "err", err)
		}
		s.poller = p // nil on error: each session reads in a goroutine of its own
	}
	s.frameAncestors = frameAncestors(opts.Config.AllowFraming)
	if s.opts.IsAdmin == nil && s.opts.Tokens != nil {
		s.opts.IsAdmin = s.adminCredential
	}
	s.routes()
	s.adminRoutes()
	s.http = s.newHTTPServer()
	s.admin = s.newAdminServer()
	return s
}

const (
	// logRate and logBurst bound the log lines clients can cause (bad
	// input, refused connections, failures of their requests), per level
	// class: past them, lines are counted in chatr_log_lines_dropped_total,
	// not written.
	logRate  = 10
	logBurst = 20
)

// logLimited logs a line a client can cause, within logRate a second. Log
// bad input at debug, never higher.
func (s *Server) logLimited(level slog.Level, msg string, args ...any) {
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	lim := s.errorLog
	if level < slog.LevelWarn {
		lim = s.debugLog
	}
	if !lim.Allow() {
		s.metrics.logDropped.Inc()
		return
	}
	s.log.Log(context.Background(), level, msg, args...)
}

// limitedLog is the http.Server's error log: its lines (a client's TLS
// or protocol errors, failed accepts) at debug, within logLimited.
type limitedLog struct{ s *Server }

func (l limitedLog) Write(p []byte) (int, error) {
	l.s.logLimited(slog.LevelDebug, strings.TrimSpace(string(p)), "part", "http")
	return len(p), nil
}

// Run does the server's background work until ctx ends or the server is
// drained: the poller that wakes sessions with something to read, and the
// sweeper that closes sessions that said no hello in time. Call it once.
func (s *Server) Run(ctx context.Context) {
	s.mu.Lock()
	if s.drained {
		s.mu.Unlock()
		return
	}
	if s.poller != nil {
		s.running.Add(1) // under mu: Drain waits only after it has set drained
		go func() {
			defer s.running.Done()
			s.poller.Run()
		}()
	}
	s.mu.Unlock()
	s.sweepHellos(ctx)
}

// routes are the public listener's: pages, WebSocket, API, probes and
// peer links. Metrics and profiles are on the admin listener (admin.go).
func (s *Server) routes() {
	s.mux.Handle("GET /{$}", s.page(http.RedirectHandler("/chatr/chatr.html", http.StatusFound)))
	if s.opts.Web != nil {
		s.mux.Handle("GET /chatr/", s.page(http.StripPrefix("/chatr/", http.FileServerFS(s.opts.Web))))
	}
	s.mux.HandleFunc("GET /chatr/ws", s.serveWS)
	s.mux.HandleFunc("GET /chatr/config.json", s.serveClientConfig)
	s.mux.HandleFunc("GET /healthz", serveHealth)
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.apiRoutes()
	if s.opts.Peer != nil {
		s.mux.Handle("GET /chatr/peer/", s.opts.Peer)
	}
}

func serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Write([]byte("ok\n"))
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	switch {
	case draining:
		http.Error(w, "draining\n", http.StatusServiceUnavailable)
	case s.opts.Ready != nil && !s.opts.Ready():
		http.Error(w, "not joined to the cluster yet\n", http.StatusServiceUnavailable)
	default:
		w.Write([]byte("ready\n"))
	}
}

func (s *Server) members() []proto.Member {
	if s.opts.Members != nil {
		return s.opts.Members()
	}
	return []proto.Member{{ID: s.opts.NodeID, Name: s.cfg.NodeName, HTTP: s.opts.HTTPAddr}}
}

// clientIP is the remote address without its port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// serveWS upgrades a WebSocket. Its connection was admitted by the
// listener, within --max-conns and --max-conns-per-ip, and keeps its slot
// until the session closes it.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, s.shuttingDown())
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()

	originOK := s.originAllowed(r)
	// The handshake's answer, refusal or 101, is written by the upgrader:
	// it carries the headers of every answer (withHeaders) this way.
	conn, rw, _, err := ws.HTTPUpgrader{Header: w.Header()}.Upgrade(r, w)
	if err != nil {
		s.logLimited(slog.LevelDebug, "websocket upgrade failed", "ip", ip, "err", err)
		if conn != nil {
			conn.Close()
		}
		s.ended(nil)
		return
	}
	// No deadline of the HTTP request stays on the connection; the
	// session sets its own.
	conn.SetDeadline(time.Time{})
	sess := &session{srv: s, ws: newWSConn(conn, rw.Reader), id: newSessionID(), ip: ip, key: ipKey(r.RemoteAddr)}
	s.mu.Lock()
	s.sessions[sess] = struct{}{}
	s.unGreeted[sess] = time.Now().Add(helloTimeout)
	draining := s.draining
	s.mu.Unlock()
	switch {
	case !originOK:
		// A bad origin is accepted only to be closed at once with 1008, as
		// the protocol says; no frame of it is read.
		s.metrics.refused.WithLabelValues("origin").Inc()
		sess.close(proto.ClosePolicy, "origin not allowed")
	case draining:
		sess.close(proto.CloseGoingAway, "the node is shutting down")
	}
	sess.start(rw.Reader.Buffered() > 0)
}

// admitNewRoom checks --new-rooms-per-minute for a join or post of room
// from the address key: a room with no message and no one in it is new,
// and takes one from the address's budget. It returns the error to answer
// and how long to wait, or nil.
func (s *Server) admitNewRoom(room, key string) (*proto.Error, time.Duration) {
	if s.store.HasRoom(room) || !s.hub.Empty(room) {
		return nil, 0
	}
	if ok, wait := s.newRooms.allow(key); !ok {
		s.metrics.limitRefused.WithLabelValues(limitNewRooms).Inc()
		return proto.Errorf(proto.CodeTooManyNewRooms, "your address made %d new rooms in the last minute; use a room that exists, or wait", s.cfg.NewRoomsPerMinute), wait
	}
	return nil, 0
}

// greeted forgets the hello deadline of sess.
func (s *Server) greeted(sess *session) {
	s.mu.Lock()
	delete(s.unGreeted, sess)
	s.mu.Unlock()
}

// sweepHellos closes, with 1008, sessions that said no hello in time, and
// (sweepTokens) tells and closes those whose token expired.
func (s *Server) sweepHellos(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			var late []*session
			s.mu.Lock()
			for sess, deadline := range s.unGreeted {
				if now.After(deadline) {
					late = append(late, sess)
					delete(s.unGreeted, sess)
				}
			}
			s.mu.Unlock()
			for _, sess := range late {
				sess.close(proto.ClosePolicy, "no hello within 10s")
			}
			s.sweepTokens(now)
		}
	}
}

// ended forgets a WebSocket connection that is over, and its session.
func (s *Server) ended(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	delete(s.tokens, sess)
	s.mu.Unlock()
	s.wg.Done()
}

// StopSends is the first step of a shutdown: from now on the node takes no
// new session and no new message (WebSocket sends and HTTP posts are
// answered `unavailable` naming the other nodes, so clients fail over), and
// /readyz says 503. Open sessions stay and keep receiving. When it returns,
// every send it let in has been handed to the Poster.
func (s *Server) StopSends() {
	s.sendGate.Lock()
	s.sendsStopped = true
	s.sendGate.Unlock()
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
}

// admitSend holds the send gate for one send; it returns false (and lets
// go) when sends have stopped. The caller calls s.sendGate.RUnlock once
// the send is handed to the Poster.
func (s *Server) admitSend() bool {
	s.sendGate.RLock()
	if s.sendsStopped {
		s.sendGate.RUnlock()
		return false
	}
	return true
}

// shuttingDown is the error of a send or session refused while the node
// stops: it names the other nodes, so clients fail over.
func (s *Server) shuttingDown() *proto.Error {
	e := proto.Errorf(proto.CodeUnavailable, "the node is shutting down; send again on another node")
	for _, m := range s.members() {
		if m.ID != s.opts.NodeID {
			e.Nodes = append(e.Nodes, m)
		}
	}
	return e
}

// Drain stops taking sessions and sends, and closes every session with
// 1001, so clients reconnect to another node. It waits for the sessions to
// end or ctx.
func (s *Server) Drain(ctx context.Context) {
	s.StopSends()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.close(proto.CloseGoingAway, "the node is shutting down")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	// Sessions still open now are past their close frame; they are torn
	// down by their own timers, and need no more reads.
	s.mu.Lock()
	s.drained = true // no Run starts the poller from here on
	s.mu.Unlock()
	if s.poller != nil {
		s.poller.Close()
	}
	s.running.Wait()
	s.stop()
}

// Sessions is the number of open WebSocket sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}
