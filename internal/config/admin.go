package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// AdminPortOffset is how far the admin listener's default port is from the
// --http port: two nodes of one machine on 5080 and 5081 get 5090 and
// 5091, and never meet (NATS and Centrifugo keep monitoring on a port of
// its own the same way).
const AdminPortOffset = 10

// adminAddr resolves --admin-http: off turns the admin listener off (""),
// nothing gives adminDefault, anything else must be host:port.
func (c *Config) adminAddr() error {
	switch c.AdminHTTPAddr {
	case "off":
		c.AdminHTTPAddr = ""
		return nil
	case "":
		if checkHostPort("http", c.HTTPAddr) != nil {
			return nil // --http says what is wrong
		}
		addr, err := adminDefault(c.HTTPAddr)
		if err != nil {
			return err
		}
		c.AdminHTTPAddr = addr
		return nil
	}
	return checkHostPort("admin-http", c.AdminHTTPAddr)
}

// adminDefault is the admin address for the HTTP listener httpAddr: the
// loopback address, whatever --http binds (the admin routes are trusted by
// their binding), with the port AdminPortOffset above --http's; port 0
// (any free port) stays 0.
func adminDefault(httpAddr string) (string, error) {
	_, p, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return "", err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", err
	}
	if port != 0 {
		port += AdminPortOffset
	}
	if port > 65535 {
		return "", fmt.Errorf("--admin-http: the default, the --http port + %d, is past 65535: give --admin-http 127.0.0.1:PORT, or off", AdminPortOffset)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// checkOrigin checks that s is a web origin, scheme://host[:port] of http
// or https and nothing else, in characters that can stand in a
// Content-Security-Policy as they are.
func checkOrigin(flagName, s string) error {
	u, err := url.Parse(strings.TrimSuffix(s, "/"))
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || !originHost(u.Hostname()) {
		return fmt.Errorf("--%s %q: want an origin, scheme://host[:port] (e.g. https://intranet.example.com)", flagName, s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("--%s %q: port must be a number from 1 to 65535", flagName, s)
		}
	}
	return nil
}

// originHost reports whether h is a DNS name (letters, digits, '-' and
// '.'; a leading "*." is a CSP wildcard) or an IP address.
func originHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	h = strings.TrimPrefix(h, "*.")
	if h == "" {
		return false
	}
	for _, r := range h {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
