package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// withHeaders sets what every answer carries: no content sniffing (a JSON
// answer, or a message's text in it, is never run as a script or a page),
// and no Referer to wherever a page links (its URL names the room).
func withHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// page serves h, a page or a file of the web client, with its
// Content-Security-Policy (contentSecurityPolicy).
func (s *Server) page(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", s.contentSecurityPolicy())
		h.ServeHTTP(w, r)
	})
}

// contentSecurityPolicy is the policy of the web client: its scripts and
// styles come from this node only (chatr.js and chatr.css: the page has no
// inline script, style or handler), it connects (WebSocket, and fetch for
// history) to this node and to the members alive now, which its failover
// may move it to, and nobody frames it but --allow-framing. A member that
// joins later is in the policy of pages loaded after it did.
func (s *Server) contentSecurityPolicy() string {
	var b strings.Builder
	b.WriteString("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'")
	for _, src := range s.memberSources() {
		b.WriteString(" " + src)
	}
	if src := s.tokenSource(); src != "" {
		b.WriteString(" " + src) // the page fetches its token there
	}
	b.WriteString("; frame-ancestors " + s.frameAncestors + "; base-uri 'none'; form-action 'self'")
	return b.String()
}

// memberSources are the CSP sources of the alive members' pages, in both
// the forms a page uses to reach them: http(s) for fetch, ws(s) for the
// WebSocket. An address that would not stand in a policy as it is is left
// out (members are authenticated, but a header is no place to find out).
func (s *Server) memberSources() []string {
	if s.opts.KnownHTTP == nil {
		return nil
	}
	var out []string
	for _, m := range s.opts.KnownHTTP() {
		o, ok := memberOrigin(m)
		if !ok || !cspHost(o.host) {
			continue
		}
		hostPort := net.JoinHostPort(o.host, o.port)
		ws := "ws://"
		if o.scheme == "https" {
			ws = "wss://"
		}
		out = append(out, o.scheme+"://"+hostPort, ws+hostPort)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// tokenSource is the CSP source of --auth-token-url, "" for none (or one
// that would not stand in a policy as it is).
func (s *Server) tokenSource() string {
	if s.opts.TokenURL == "" {
		return ""
	}
	o, ok := parseOrigin(s.opts.TokenURL, false)
	if !ok || !cspHost(o.host) {
		return ""
	}
	return o.scheme + "://" + net.JoinHostPort(o.host, o.port)
}

// cspHost reports whether host, as canonHost spells it, is a DNS name or
// an IP address in characters a policy takes as they are.
func cspHost(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	for _, r := range host {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return host != ""
}

// frameAncestors is the CSP frame-ancestors of --allow-framing origins
// (checked by config), or 'none'.
func frameAncestors(origins []string) string {
	if len(origins) == 0 {
		return "'none'"
	}
	return strings.Join(origins, " ")
}
