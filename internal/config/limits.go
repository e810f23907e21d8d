package config

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"
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

	HTTPReadTimeout  time.Duration // --http-read-timeout: a whole request, header and body
	HTTPWriteTimeout time.Duration // --http-write-timeout: the answer to a plain request
	HTTPIdleTimeout  time.Duration // --http-idle-timeout: a kept-alive connection between requests

	// FrameRate and FrameBurst (--frame-rate, --frame-burst) bound the
	// frames of one session other than sends (which have --send-rate):
	// hello, join, leave, ping, WebSocket pings and bad frames. A web
	// client sends a hello, a join and a ping every 25 s.
	FrameRate  float64
	FrameBurst int

	// ReplayRate (--replay-rate) is the messages a second that one
	// session's joins may replay; the bucket holds --replay-max, one full
	// resume. ReplayBytesRate and ReplayBytesBurst (--replay-bytes-rate,
	// --replay-bytes-burst) bound their bytes the same way. A join over
	// either is refused with rate_limited before anything is read.
	ReplayRate       float64
	ReplayBytesRate  float64
	ReplayBytesBurst int

	// MaxRoomsPerSession (--max-rooms-per-session) caps the rooms one
	// session is in; NewRoomsPerMinute (--new-rooms-per-minute) the rooms
	// one address brings into being (a room is new while it has no message
	// and no one in it).
	MaxRoomsPerSession int
	NewRoomsPerMinute  int

	// GetRate and GetBurst (--get-rate, --get-burst) bound the GET
	// requests of one client address, WebSocket upgrades included (peer
	// links excepted).
	GetRate  float64
	GetBurst int

	// PresenceInterval (--presence-interval) coalesces a room's presence
	// changes into one frame per interval, so a join/leave loop costs the
	// room's members little.
	PresenceInterval time.Duration
}

// maxConnsCeiling is the default of --max-conns where the open-file limit
// is higher or unknown.
const maxConnsCeiling = 50000

// defaultMaxConns is the default of --max-conns for a process that may
// open fileLimit files (0: unknown): the lower of maxConnsCeiling and the
// limit less a reserve for the store, peer links, gossip and the answers
// to refused connections (a tenth, at least 256, at most half). A node
// that ran out of files would stop accepting anyone; over --max-conns it
// refuses new connections and serves the rest.
func defaultMaxConns(fileLimit uint64) int {
	if fileLimit == 0 || fileLimit > 2*maxConnsCeiling {
		return maxConnsCeiling
	}
	n := int(fileLimit)
	reserve := min(max(n/10, 256), n/2)
	return min(maxConnsCeiling, n-reserve)
}

// addFlags defines the flags of l on fs.
func (l *Limits) addFlags(fs *flag.FlagSet) {
	fs.DurationVar(&l.HTTPReadTimeout, "http-read-timeout", 10*time.Second, "longest read of one HTTP request, header and body (a WebSocket then sets its own deadlines)")
	fs.DurationVar(&l.HTTPWriteTimeout, "http-write-timeout", 30*time.Second, "longest write of the answer to one HTTP request (not WebSockets or profiles)")
	fs.Float64Var(&l.FrameRate, "frame-rate", 5, "frames per second one session may send besides messages (join, leave, ping, ...); more are answered rate_limited, and 50 in a row close it with 1008")
	fs.IntVar(&l.FrameBurst, "frame-burst", 50, "frames besides messages one session may send at once before --frame-rate applies")
	fs.Float64Var(&l.ReplayRate, "replay-rate", 1000, "messages per second one session's joins may replay (history and resumes), after a first --replay-max; a join over it is refused with rate_limited")
	fs.Float64Var(&l.ReplayBytesRate, "replay-bytes-rate", 1<<20, "`bytes` per second one session's joins may replay, after a first --replay-bytes-burst; a join while they are spent is refused with rate_limited")
	fs.IntVar(&l.ReplayBytesBurst, "replay-bytes-burst", 8<<20, "`bytes` one session's joins may replay at once before --replay-bytes-rate applies")
	fs.IntVar(&l.MaxRoomsPerSession, "max-rooms-per-session", 100, "rooms one session may be in at once; a join past it is answered too_many_rooms")
	fs.IntVar(&l.NewRoomsPerMinute, "new-rooms-per-minute", 30, "rooms (with no message and no one in them yet) one client IP may join or post to first, a minute; past it too_many_new_rooms (HTTP 429)")
	fs.Float64Var(&l.GetRate, "get-rate", 20, "GET requests per second one client IP may make (pages, API, probes, WebSocket upgrades); more are answered 429 with Retry-After")
	fs.IntVar(&l.GetBurst, "get-burst", 100, "GET requests one client IP may make at once before --get-rate applies")
	fs.DurationVar(&l.PresenceInterval, "presence-interval", 200*time.Millisecond, "a room's presence changes within this interval go out as one presence frame, and a person who came and went within it not at all (0: each at once); a room of over 20 local subscribers waits it per 20 of them, up to 10s")
	fs.DurationVar(&l.HTTPIdleTimeout, "http-idle-timeout", 60*time.Second, "how long a kept-alive HTTP connection may wait for its next request before it is closed")
	fs.Var((*listFlag)(&l.PublicURLs), "public-url", "comma-separated `URLs` the web client is served under (e.g. https://chat.example.com); a page may open WebSockets when its Origin has the scheme and host:port of one (default: http and the listener's own addresses)")
}

// validate checks l, reporting each problem with add.
func (l *Limits) validate(add func(error)) {
	for _, u := range l.PublicURLs {
		add(checkPublicURL(u))
	}
	if l.FrameRate <= 0 {
		add(fmt.Errorf("--frame-rate %v: must be above 0", l.FrameRate))
	}
	if l.FrameBurst < 1 {
		add(fmt.Errorf("--frame-burst %d: must be at least 1", l.FrameBurst))
	}
	if l.ReplayRate <= 0 {
		add(fmt.Errorf("--replay-rate %v: must be above 0", l.ReplayRate))
	}
	if l.ReplayBytesRate <= 0 {
		add(fmt.Errorf("--replay-bytes-rate %v: must be above 0", l.ReplayBytesRate))
	}
	if l.ReplayBytesBurst < 64<<10 {
		add(fmt.Errorf("--replay-bytes-burst %d: must be at least 65536, so a history of a few long messages fits", l.ReplayBytesBurst))
	}
	if l.MaxRoomsPerSession < 1 {
		add(fmt.Errorf("--max-rooms-per-session %d: must be at least 1", l.MaxRoomsPerSession))
	}
	if l.NewRoomsPerMinute < 1 {
		add(fmt.Errorf("--new-rooms-per-minute %d: must be at least 1", l.NewRoomsPerMinute))
	}
	if l.GetRate <= 0 {
		add(fmt.Errorf("--get-rate %v: must be above 0", l.GetRate))
	}
	if l.GetBurst < 1 {
		add(fmt.Errorf("--get-burst %d: must be at least 1", l.GetBurst))
	}
	if l.PresenceInterval < 0 || l.PresenceInterval > 10*time.Second {
		add(fmt.Errorf("--presence-interval %v: must be from 0 to 10s", l.PresenceInterval))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"http-read-timeout", l.HTTPReadTimeout}, {"http-write-timeout", l.HTTPWriteTimeout}, {"http-idle-timeout", l.HTTPIdleTimeout}} {
		if d.v < 100*time.Millisecond {
			add(fmt.Errorf("--%s %v: must be at least 100ms", d.flag, d.v))
		}
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
