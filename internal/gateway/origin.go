package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
)

// origin is a web origin: scheme, host (lower case; an IP in its canonical
// form) and port (the scheme's default when the URL names none).
type origin struct{ scheme, host, port string }

// parseOrigin parses an Origin header (scheme://host[:port], nothing
// else) or a URL of --public-url (its path is ignored).
func parseOrigin(s string, strict bool) (origin, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "" || u.User != nil || u.Opaque != "" {
		return origin{}, false
	}
	if strict && (u.Path != "" || u.RawQuery != "" || u.Fragment != "") {
		return origin{}, false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return origin{scheme: u.Scheme, host: canonHost(u.Hostname()), port: port}, true
}

// canonHost spells a host name or IP one way.
func canonHost(h string) string {
	h = strings.Trim(h, "[]")
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap().WithZone("").String()
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// is reports whether o and p are the same origin; loopback names
// (localhost, 127.0.0.0/8, ::1) are one host, since a page on localhost
// reaches a node on 127.0.0.1.
func (o origin) is(p origin) bool {
	return o.scheme == p.scheme && o.port == p.port && (o.host == p.host || isLoopback(o.host) && isLoopback(p.host))
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// pageOrigins are the origins of this node's own pages: those of
// --public-url, or else, over http, the names of the listener's address
// (every address of the machine, its host name and localhost when the
// listener is bound to all of them). Never the request's Host header: a
// page of any DNS name rebound to this node would pass.
func pageOrigins(publicURLs []string, listenAddr, scheme string) []origin {
	var out []origin
	for _, u := range publicURLs {
		if o, ok := parseOrigin(u, false); ok {
			out = append(out, o)
		}
	}
	if len(publicURLs) > 0 {
		return out
	}
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return nil
	}
	names := []string{host}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); host == "" || err == nil && ip.IsUnspecified() {
		names = []string{"localhost"}
		if name, err := os.Hostname(); err == nil {
			names = append(names, name)
		}
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				names = append(names, n.IP.String())
			}
		}
	}
	for _, n := range names {
		out = append(out, origin{scheme: scheme, host: canonHost(n), port: port})
	}
	return out
}

// memberOrigin is the origin of a cluster member's pages from its HTTP
// address (host:port, served over http) or URL.
func memberOrigin(addr string) (origin, bool) {
	if strings.Contains(addr, "://") {
		return parseOrigin(addr, false)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return origin{}, false
	}
	return origin{scheme: "http", host: canonHost(host), port: port}, true
}

// originAllowed checks the Origin header: none (a program), one of this
// node's pages (pageOrigins), a cluster member's page, or one of
// --allowed-origins (host or host:port, any scheme; * for any).
func (s *Server) originAllowed(r *http.Request) bool {
	header := r.Header.Get("Origin")
	if header == "" {
		return true
	}
	o, ok := parseOrigin(header, true)
	if !ok {
		return false
	}
	for _, p := range s.pageOrigins {
		if o.is(p) {
			return true
		}
	}
	if s.opts.KnownHTTP != nil {
		for _, m := range s.opts.KnownHTTP() {
			if p, ok := memberOrigin(m); ok && o.is(p) {
				return true
			}
		}
	}
	for _, a := range s.cfg.AllowedOrigins {
		if a == "*" {
			return true
		}
		if h, port, err := net.SplitHostPort(a); err == nil {
			if canonHost(h) == o.host && port == o.port {
				return true
			}
		} else if canonHost(a) == o.host {
			return true
		}
	}
	return false
}
