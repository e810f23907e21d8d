package gateway

import (
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminRoutes are the admin listener's (--admin-http): what an operator
// watches a node with. The listener is trusted by its binding (loopback by
// default), so it has no connection caps and no GET limit: a node full of
// clients can still be watched.
func (s *Server) adminRoutes() {
	m := s.adminMux
	m.HandleFunc("GET /healthz", serveHealth)
	m.HandleFunc("GET /readyz", s.serveReady)
	if s.opts.Metrics != nil {
		m.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Metrics, promhttp.HandlerOpts{}))
	}
	m.HandleFunc("GET /chatr/api/cluster", s.getCluster(true))
	if s.cfg.Pprof {
		m.HandleFunc("/debug/pprof/", pprof.Index)
		m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		m.HandleFunc("/debug/pprof/profile", pprof.Profile)
		m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// newAdminServer is the http.Server of ServeAdmin, with the timeouts of
// the public listener's.
func (s *Server) newAdminServer() *http.Server {
	return &http.Server{
		Handler:     withHeaders(s.adminHosts(s.adminDeadlines(s.adminMux))),
		ReadTimeout: s.cfg.HTTPReadTimeout,
		IdleTimeout: s.cfg.HTTPIdleTimeout,
		ErrorLog:    log.New(limitedLog{s}, "", 0),
	}
}

// ServeAdmin serves the admin routes on ln until Shutdown: /metrics,
// /debug/pprof/ (with --pprof), /healthz, /readyz and the cluster view
// with every address. It returns http.ErrServerClosed after Shutdown.
func (s *Server) ServeAdmin(ln net.Listener) error {
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && ap.Addr().IsUnspecified() {
		s.log.Warn("the admin listener is on every interface: whoever reaches it reads the metrics, the profiles and every member's addresses; give --admin-http an IP to listen on one",
			"admin_http", ln.Addr().String())
	}
	return s.admin.Serve(ln)
}

// adminDeadlines gives each admin request --http-write-timeout to write
// its answer, but a profile or a trace, which takes as long as it was
// asked to (?seconds=).
func (s *Server) adminDeadlines(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
			rc.SetReadDeadline(time.Time{})
			rc.SetWriteDeadline(time.Time{})
		} else if d := s.cfg.HTTPWriteTimeout; d > 0 {
			rc.SetWriteDeadline(time.Now().Add(d))
		}
		h.ServeHTTP(w, r)
	})
}

// adminHosts answers only requests addressed to an IP address, localhost,
// this machine's host name or the host of --admin-http, with 421 to any
// other Host. A page of any DNS name that its owner rebinds to 127.0.0.1
// would otherwise read the admin listener as its own origin (DNS
// rebinding), however well it is bound.
func (s *Server) adminHosts(h http.Handler) http.Handler {
	names := map[string]bool{"localhost": true}
	if host, _, err := net.SplitHostPort(s.cfg.AdminHTTPAddr); err == nil && host != "" {
		names[canonHost(host)] = true
	}
	if name, err := os.Hostname(); err == nil && name != "" {
		names[canonHost(name)] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !adminHost(r.Host, names) {
			http.Error(w, "the admin listener answers requests to an IP address, localhost or its own name only (not "+
				r.Host+"): use one of them\n", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// adminHost reports whether the Host header host (host or host:port) names
// the admin listener: an IP address, a name in names, or nothing at all (a
// client of HTTP/1.0, not a browser).
func adminHost(host string, names map[string]bool) bool {
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = canonHost(host)
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return names[host] || strings.HasSuffix(host, ".localhost")
}
