package config

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
)

// Limits are the settings that keep strangers from exhausting a node: who
// may open WebSockets, and the caps on what one connection, session or
// address may cost. Each cap has a flag, an error code (or HTTP status) and
// a counter in /metrics.
type Limits struct {
	// PublicURLs (--public-url) are the URLs the node's pages are served
	// under, e.g. https://chat.example.com behind a proxy: a page's Origin
	// must match one, scheme and host:port. Without them, the names of the
	// listener's own address, over http.
	PublicURLs []string
}

// addFlags defines the flags of l on fs.
func (l *Limits) addFlags(fs *flag.FlagSet) {
	fs.Var((*listFlag)(&l.PublicURLs), "public-url", "comma-separated `URLs` the web client is served under (e.g. https://chat.example.com); a page may open WebSockets when its Origin has the scheme and host:port of one (default: http and the listener's own addresses)")
}

// validate checks l, reporting each problem with add.
func (l *Limits) validate(add func(error)) {
	for _, u := range l.PublicURLs {
		add(checkPublicURL(u))
	}
}

func checkPublicURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("--public-url %q: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("--public-url %q: want an http:// or https:// URL, e.g. https://chat.example.com", s)
	case u.Hostname() == "" || u.User != nil:
		return fmt.Errorf("--public-url %q: want scheme://host[:port], e.g. https://chat.example.com", s)
	}
	return nil
}

// listFlag is a comma-separated list; empty items are dropped.
type listFlag []string

func (f *listFlag) String() string { return strings.Join(*f, ",") }

func (f *listFlag) Set(s string) error {
	*f = splitList(s)
	return nil
}
