package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"chatr/internal/proto"
)

const (
	// maxRefusing bounds the refused connections being answered at once:
	// each holds a file for at most refuseTimeout while its request is read
	// and answered. Past it, refused connections are closed unanswered, so
	// a flood of them costs no more than 64 files.
	maxRefusing = 64
	// refuseTimeout bounds the read of a refused connection's request and
	// the write of the answer.
	refuseTimeout = time.Second
	// retryFull and retryPerIP are the Retry-After of a connection refused
	// because the node is full (try another node soon) and because its
	// address holds too many (wait for some to close).
	retryFull  = 5 * time.Second
	retryPerIP = 10 * time.Second
)

// Limits named in chatr_limit_refused_total{limit}.
const (
	limitMaxConns      = "max_conns"
	limitMaxConnsPerIP = "max_conns_per_ip"
	limitSendRate      = "send_rate"    // --send-rate: a session's sends, an address's posts
	limitFrameRate     = "frame_rate"   // --frame-rate: a session's other frames
	limitReplayRate    = "replay_rate"  // --replay-rate: messages a session's joins replay
	limitReplayBytes   = "replay_bytes" // --replay-bytes-rate: their bytes
	limitRoomsPerSess  = "rooms_per_session"
	limitNewRooms      = "new_rooms" // --new-rooms-per-minute, per address
	limitGetRate       = "get_rate"  // --get-rate, per address
)

// conns counts the open connections of the HTTP listener, plain HTTP and
// WebSocket alike, in total and per client address, from accept until the
// connection is really closed (a hijacked one by its session).
type conns struct {
	max, maxPerIP int // 0: no limit

	mu    sync.Mutex
	open  int
	perIP map[string]int
}

// admit takes a slot for a connection from key, or names the limit it is
// over.
func (c *conns) admit(key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.max > 0 && c.open >= c.max:
		return limitMaxConns
	case c.maxPerIP > 0 && c.perIP[key] >= c.maxPerIP:
		return limitMaxConnsPerIP
	}
	c.open++
	c.perIP[key]++
	return ""
}

func (c *conns) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
	if c.perIP[key]--; c.perIP[key] <= 0 {
		delete(c.perIP, key)
	}
}

func (c *conns) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// limitedListener admits the connections of ln that are within the
// connection limits; the others are answered (refuseConn) and closed.
type limitedListener struct {
	net.Listener
	s *Server
}

func (l limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				// Out of files, most likely: http.Server retries with a
				// back-off; say so, since clients wait meanwhile.
				l.s.metrics.acceptErrors.Inc()
				l.s.logLimited(slog.LevelWarn, "accept failed; the node may be out of files (see --max-conns)", "err", err)
			}
			return nil, err
		}
		key := ipKey(c.RemoteAddr().String())
		if limit := l.s.conns.admit(key); limit != "" {
			l.s.refuseConn(c, limit)
			continue
		}
		return &countedConn{Conn: c, conns: &l.s.conns, key: key}, nil
	}
}

// countedConn holds its slot in conns until it is closed.
type countedConn struct {
	net.Conn
	conns *conns
	key   string
	once  sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.conns.release(c.key) })
	return err
}

// NetConn is the connection under the count, which the WebSocket writer
// writes to directly (one writev per batch of frames).
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// SyscallConn gives the poller the connection's file descriptor.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connection has no file descriptor")
	}
	return sc.SyscallConn()
}

// CloseWrite lets http.Server close its side gracefully; the slot goes
// with Close.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// refusal is the canned answer of a connection over a limit.
func refusal(status int, retryAfter time.Duration, e *proto.Error) []byte {
	body := append(proto.Encode(errorBody{Error: e}), '\n')
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\nRetry-After: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), int(retryAfter.Seconds()), body)
}

// refuseConn answers a connection over limit with a short canned 503 (the
// node is full) or 429 (too many from one address) and closes it. The
// request is read first, so that the client takes the answer as the
// answer to it; a TCP reset from closing with the request unread would
// hide it.
func (s *Server) refuseConn(c net.Conn, limit string) {
	s.metrics.limitRefused.WithLabelValues(limit).Inc()
	select {
	case s.refusing <- struct{}{}:
	default:
		c.Close() // too many being answered: this one just goes
		return
	}
	s.refusals.Add(1)
	go func() {
		defer func() { <-s.refusing; s.refusals.Done() }()
		defer c.Close()
		c.SetDeadline(time.Now().Add(refuseTimeout))
		buf := make([]byte, 4096)
		for n := 0; n < len(buf); {
			k, err := c.Read(buf[n:])
			n += k
			if err != nil || bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
				break
			}
		}
		answer := s.refuseFull
		if limit == limitMaxConnsPerIP {
			answer = s.refusePerIP
		}
		c.Write(answer)
	}()
}

// ipKey is the address a per-address limit counts a client under: its
// IPv4 address, or the /64 of its IPv6 address (one subscriber's
// network, which hands out addresses by the billion).
func ipKey(hostport string) string {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return hostport
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
}

// Serve accepts connections on ln and serves them until Shutdown. Every
// connection, plain HTTP or WebSocket, counts against --max-conns and
// --max-conns-per-ip until it is closed; one over a limit is answered with
// 503 or 429 and closed. It returns http.ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	var l net.Listener = limitedListener{Listener: ln, s: s}
	if s.opts.TLS != nil {
		l = tls.NewListener(l, s.opts.TLS)
	}
	return s.http.Serve(l)
}

// Shutdown stops the listeners (the admin one, then the public one),
// closes idle connections and waits for the requests in progress to end,
// until ctx ends; then it closes what is left. WebSocket sessions are not
// its business: Drain them first.
func (s *Server) Shutdown(ctx context.Context) error {
	err := errors.Join(shutdownHTTP(ctx, s.admin), shutdownHTTP(ctx, s.http))
	s.refusals.Wait()
	return err
}

// shutdownHTTP shuts hs down gracefully within ctx, and then closes what
// is left.
func shutdownHTTP(ctx context.Context, hs *http.Server) error {
	err := hs.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		hs.Close()
		err = nil
	}
	return err
}

// newHTTPServer is the http.Server of Serve: its timeouts come from
// --http-read-timeout (the whole request: header and body) and
// --http-idle-timeout (a kept-alive connection between requests); the
// write deadline of --http-write-timeout is set per request by
// withDeadlines, since WebSockets need none.
func (s *Server) newHTTPServer() *http.Server {
	return &http.Server{
		Handler:     withHeaders(s.withDeadlines(s.limitGets(s.mux))),
		ReadTimeout: s.cfg.HTTPReadTimeout,
		IdleTimeout: s.cfg.HTTPIdleTimeout,
		ErrorLog:    log.New(limitedLog{s}, "", 0),
	}
}

// withDeadlines gives each plain request --http-write-timeout to write its
// answer. A WebSocket upgrade gets no deadline at all: the read deadline
// of --http-read-timeout would otherwise stay on a hijacked connection and
// cut every session off after it; a session sets its own.
func (s *Server) withDeadlines(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if isUpgrade(r) && (r.URL.Path == "/chatr/ws" || strings.HasPrefix(r.URL.Path, "/chatr/peer/")) {
			rc.SetReadDeadline(time.Time{})
			rc.SetWriteDeadline(time.Time{})
		} else if d := s.cfg.HTTPWriteTimeout; d > 0 {
			rc.SetWriteDeadline(time.Now().Add(d))
		}
		h.ServeHTTP(w, r)
	})
}

// limitGets answers the GETs of an address past --get-rate with 429 and
// Retry-After. Peer links are the cluster's own and not limited.
func (s *Server) limitGets(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !strings.HasPrefix(r.URL.Path, "/chatr/peer/") {
			if ok, wait := s.gets.allow(ipKey(r.RemoteAddr)); !ok {
				s.metrics.limitRefused.WithLabelValues(limitGetRate).Inc()
				w.Header().Set("Retry-After", retryAfter(wait))
				writeError(w, http.StatusTooManyRequests, proto.Errorf(proto.CodeRateLimited,
					"over %v requests per second from your address; slow down", s.cfg.GetRate))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// isUpgrade reports whether r asks for a WebSocket.
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// retryAfter is the Retry-After of an answer that waits for wait.
func retryAfter(wait time.Duration) string {
	return strconv.Itoa(int(wait.Seconds()) + 1)
}
