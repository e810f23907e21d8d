// Package chat is `chatr chat`, the terminal client: it shows a room's
// history, presence and live messages, sends each line of its input, and
// reconnects with backoff, resuming with its cursor so that nothing is
// missed or shown twice.
//
// Messages are printed as lines "HH:MM:SS sender: text" on the output.
// Status and presence lines start with "* "; they go to the output too when
// a person types (Interactive), and to the error output in a pipe, so that a
// script reads messages only.
//
// A sent line is done when its ack comes. If the connection drops first,
// the line is sent again, with the same ref, after the reconnect unless the
// room's replay shows it was stored. At the end of the input Run returns once every line is
// acked, or fails after AckTimeout.
package chat

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"chatr/internal/client"
	"chatr/internal/proto"
)

// Config is one chat session.
type Config struct {
	URL         string        // node: ws://, http:// or host:port
	Name        string        // who we are
	Room        string        // the room to join
	Token       string        // for nodes where auth is on
	TokenURL    string        // or where to fetch one (and fresh ones before it expires)
	History     int           // messages shown on the first join, 0 to 1000
	AckTimeout  time.Duration // at the end of the input, how long to wait for acks
	Interactive bool          // a person types: status to the output, /commands
}

// Defaults of Config, used by the flags of `chatr chat`.
const (
	DefaultHistory    = proto.DefaultHistory
	DefaultAckTimeout = 10 * time.Second
)

// Tuning that users need not see.
const (
	window      = 32 // lines sent and not yet acked
	minBackoff  = 250 * time.Millisecond
	maxBackoff  = 10 * time.Second
	dialTimeout = 10 * time.Second
	sendTimeout = 10 * time.Second
	ratePause   = time.Second // after a rate_limited answer
)

// Validate checks c.
func (c *Config) Validate() error {
	if _, err := client.WebSocketURL(c.URL); err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	if c.Token != "" && c.TokenURL != "" {
		return errors.New("--token and --token-url: give one")
	}
	if _, perr := proto.CleanName(c.Name); perr != nil && c.Token == "" && c.TokenURL == "" {
		return fmt.Errorf("--name %q: %s", c.Name, perr.Message)
	}
	if perr := proto.CheckRoom(c.Room); perr != nil {
		return fmt.Errorf("--room %q: %s", c.Room, perr.Message)
	}
	if c.History < 0 || c.History > proto.MaxHistory {
		return fmt.Errorf("--history %d: must be from 0 to %d", c.History, proto.MaxHistory)
	}
	if c.AckTimeout <= 0 {
		return fmt.Errorf("--ack-timeout %s: must be above 0", c.AckTimeout)
	}
	return nil
}

// Run chats until the input ends (and every line is acked), ctx ends, or
// the node refuses us. It returns an error when a line was not sent.
func Run(ctx context.Context, cfg Config, in io.Reader, out, errOut io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c := &chat{cfg: cfg, out: out, info: errOut, urls: []string{cfg.URL}, members: map[proto.Person]bool{},
		refPrefix: strconv.FormatUint(rand.Uint64()>>16, 36) + "-"}
	if cfg.Interactive {
		c.info = out
	}
	lines := make(chan line)
	go readLines(in, lines)
	defer c.drop()

	if err := c.connect(ctx); err != nil {
		return err
	}
	if cfg.Interactive {
		c.status("connected to node %s as %s; type a line to send it, /who, /quit", c.node, c.name)
	}
	retry := time.NewTimer(0)
	retry.Stop()
	c.refresh = time.NewTimer(0)
	c.refresh.Stop()
	pause := time.NewTimer(0)
	pause.Stop()
	var deadline <-chan time.Time
	backoff := minBackoff
	for {
		if c.eof && c.everSynced && len(c.queue) == 0 && len(c.pending) == 0 {
			if c.failed > 0 {
				return fmt.Errorf("%d lines were not sent", c.failed)
			}
			return nil
		}
		var linesCh chan line
		if !c.eof && len(c.queue)+len(c.pending) < window {
			linesCh = lines
		}
		select {
		case <-ctx.Done():
			if n := len(c.queue) + len(c.pending); n > 0 {
				return fmt.Errorf("stopped with %d lines not acked", n)
			}
			return nil
		case l, ok := <-linesCh:
			if !ok {
				c.eof = true
				break
			}
			c.input(l)
		case r := <-c.frames:
			if r.err != nil {
				if err := c.lost(r.err); err != nil {
					return err
				}
				retry.Reset(jitter(backoff))
				continue
			}
			if err := c.handle(ctx, r.f); err != nil {
				return err
			}
		case <-retry.C:
			if err := c.connect(ctx); err != nil {
				backoff = min(backoff*2, maxBackoff)
				c.status("reconnect failed: %v; next try in %s", err, backoff)
				retry.Reset(jitter(backoff))
				continue
			}
			backoff = minBackoff
		case <-pause.C:
			c.pausedUntil = time.Time{}
		case <-c.refresh.C:
			c.refreshToken(ctx)
		case <-deadline:
			return fmt.Errorf("%d lines not acked within %s", len(c.queue)+len(c.pending), cfg.AckTimeout)
		}
		if c.eof && deadline == nil {
			deadline = time.After(cfg.AckTimeout)
		}
		if !c.pausedUntil.IsZero() && len(c.queue) > 0 {
			pause.Reset(time.Until(c.pausedUntil))
		}
		c.flush(ctx)
	}
}

// chat is the state of Run, owned by its goroutine.
type chat struct {
	cfg       Config
	out, info io.Writer

	urls []string // nodes to try: the configured one, then welcome.nodes
	next int      // index in urls of the next node to try

	conn       *client.Conn
	frames     chan result // from conn's reader; nil without conn
	stopReader chan struct{}
	node, name string // from welcome
	synced     bool   // the join on conn is synced
	everSynced bool
	cursor     string
	members    map[proto.Person]bool

	queue       []*outgoing // lines to send (again), oldest first
	pending     []*outgoing // lines sent and not acked, oldest first
	ackedIDs    map[string]bool
	refPrefix   string // random, so that refs are unique across runs
	refs        int
	lineNo      int
	failed      int
	pausedUntil time.Time
	eof         bool
	refresh     *time.Timer // fires a minute before the token expires (--token-url)
	// shown is the newest messages printed (id -> "sender: text"), so that
	// a copy withdrawn later can be named; recent keeps their order.
	shown  map[string]string
	recent []string
}

// maxShown bounds the messages remembered for naming withdrawn copies.
const maxShown = 1000

// outgoing is a line sent and not yet acked.
type outgoing struct {
	ref, text string
	echoed    bool // its message came back: the node stored it
	stale     bool // sent on a connection since lost
}

type result struct {
	f   client.Frame
	err error
}

type line struct {
	text string
	err  error
}

// readLines sends the lines of in, then closes lines.
func readLines(in io.Reader, lines chan<- line) {
	defer close(lines)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines <- line{text: strings.TrimSuffix(sc.Text(), "\r")}
	}
	if err := sc.Err(); err != nil {
		lines <- line{err: err}
	}
}

// connect dials the next node, joins the room (resuming from the cursor
// if there is one) and starts reading.
func (c *chat) connect(ctx context.Context) error {
	u := c.urls[c.next%len(c.urls)]
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	token := c.cfg.Token
	if c.cfg.TokenURL != "" {
		var err error
		if token, err = client.FetchToken(dctx, nil, c.cfg.TokenURL); err != nil {
			return err
		}
	}
	conn, err := client.Dial(dctx, u, c.cfg.Name, &client.Options{Token: token})
	if err == nil {
		if c.cursor != "" {
			err = conn.Join(dctx, c.cfg.Room, c.cursor)
		} else {
			err = conn.JoinHistory(dctx, c.cfg.Room, c.cfg.History)
		}
		if err != nil {
			conn.CloseNow()
		}
	}
	if err != nil {
		c.next++
		return err
	}
	w := conn.Welcome()
	c.conn, c.node, c.name, c.synced = conn, w.Node, w.Name, false
	c.scheduleRefresh(w.Expires)
	c.learnNodes(u, w.Nodes)
	c.frames, c.stopReader = make(chan result, 64), make(chan struct{})
	go func(frames chan<- result, stop <-chan struct{}) {
		for {
			f, err := conn.Read(context.Background())
			select {
			case frames <- result{f, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}(c.frames, c.stopReader)
	return nil
}

// learnNodes puts the nodes of a welcome after the one we reached, so a
// reconnect can go to another node when this one is gone.
func (c *chat) learnNodes(reached string, nodes []proto.Member) {
	urls := []string{reached}
	for _, m := range nodes {
		if u, ok := nodeURL(reached, m.HTTP); ok && !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	c.urls, c.next = urls, 0
}

// nodeURL makes the WebSocket URL of a member from its HTTP address, as
// seen from the URL we reached: an address without a host, or with an
// unspecified one, is on the same host.
func nodeURL(reached, httpAddr string) (string, bool) {
	ru, err := url.Parse(reached)
	if err != nil || httpAddr == "" {
		return "", false
	}
	addr := httpAddr
	if i := strings.Index(addr, "://"); i >= 0 {
		addr = addr[i+3:]
	}
	addr, _, _ = strings.Cut(addr, "/")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = ru.Hostname()
	}
	u := url.URL{Scheme: ru.Scheme, Host: net.JoinHostPort(host, port), Path: client.Path}
	return u.String(), true
}

// drop abandons the connection, if any.
func (c *chat) drop() {
	if c.conn == nil {
		return
	}
	close(c.stopReader)
	conn := c.conn
	c.conn, c.frames, c.synced = nil, nil, false
	if c.eof && len(c.queue) == 0 && len(c.pending) == 0 {
		conn.Close()
	} else {
		conn.CloseNow()
	}
}

// lost handles the end of the connection. It returns an error when
// reconnecting would not help.
func (c *chat) lost(err error) error {
	code := client.CloseStatus(err)
	c.drop()
	for _, o := range c.pending {
		o.stale = true
	}
	c.ackedIDs = nil
	switch code {
	case proto.ClosePolicy, proto.CloseTooLarge:
		return fmt.Errorf("the node closed the connection (%d): %w", code, err)
	case proto.CloseTokenExpired:
		if c.cfg.TokenURL == "" {
			return fmt.Errorf("the token expired (4001): start again with a new --token, or use --token-url")
		}
	case proto.CloseGoingAway:
		c.next++ // that node is shutting down: try another
	}
	c.status("connection lost: %v; reconnecting", err)
	return nil
}

// input takes one line of the input.
func (c *chat) input(l line) {
	c.lineNo++
	if l.err != nil {
		c.status("reading input: %v", l.err)
		c.failed++
		c.eof = true
		return
	}
	text := l.text
	if c.cfg.Interactive && strings.HasPrefix(text, "/") {
		switch strings.TrimSpace(text) {
		case "/quit":
			c.eof = true
		case "/who":
			c.status("here: %s", c.who())
		default:
			c.status("commands: /who, /quit; other lines are sent")
		}
		return
	}
	switch {
	case strings.TrimSpace(text) == "":
	case len(text) > proto.MaxTextBytes:
		c.status("line %d is %d bytes, at most %d are allowed: not sent", c.lineNo, len(text), proto.MaxTextBytes)
		c.failed++
	default:
		c.refs++
		c.queue = append(c.queue, &outgoing{ref: c.refPrefix + strconv.Itoa(c.refs), text: text})
	}
}

// flush sends queued lines while the window allows.
func (c *chat) flush(ctx context.Context) {
	if c.conn == nil || !c.synced || time.Now().Before(c.pausedUntil) {
		return
	}
	for len(c.queue) > 0 && c.inFlight() < window {
		o := c.queue[0]
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		err := c.conn.Send(sctx, c.cfg.Room, o.text, o.ref)
		cancel()
		if err != nil {
			// The reader sees the broken connection too and reports it.
			c.status("send: %v", err)
			return
		}
		c.queue = c.queue[1:]
		o.echoed, o.stale = false, false
		c.pending = append(c.pending, o)
	}
}

// inFlight counts the lines sent on this connection and not acked.
func (c *chat) inFlight() int {
	n := 0
	for _, o := range c.pending {
		if !o.stale {
			n++
		}
	}
	return n
}

// handle handles one frame. It returns an error when the chat cannot go on.
func (c *chat) handle(ctx context.Context, f client.Frame) error {
	switch f.Type {
	case client.TypeJoined:
		clear(c.members)
		for _, p := range f.Presence {
			c.members[p] = true
		}
		if c.everSynced {
			c.status("rejoined %s on node %s", f.Room, c.node)
		} else {
			c.status("joined %s; here: %s", f.Room, c.who())
		}
	case client.TypeMessage:
		if f.Room != c.cfg.Room {
			return nil
		}
		c.cursor = f.Cursor
		c.echo(f)
		c.show(f)
	case client.TypeSynced:
		if f.Room != c.cfg.Room {
			return nil
		}
		if f.Cursor != "" {
			c.cursor = f.Cursor
		}
		if f.Truncated {
			c.status("older messages are missing here")
		}
		c.synced, c.everSynced = true, true
		c.resend()
	case client.TypePresence:
		for _, p := range f.Joined {
			c.members[p] = true
			c.status("%s joined", clean(p.Name))
		}
		for _, p := range f.Left {
			delete(c.members, p)
			c.status("%s left", clean(p.Name))
		}
	case client.TypeAck:
		i := slices.IndexFunc(c.pending, func(o *outgoing) bool { return o.ref == f.Ref })
		if i < 0 {
			return nil
		}
		if !c.pending[i].echoed {
			if c.ackedIDs == nil {
				c.ackedIDs = map[string]bool{}
			}
			c.ackedIDs[f.ID] = true
		}
		c.pending = slices.Delete(c.pending, i, i+1)
	case client.TypeHidden:
		if what, ok := c.shown[f.ID]; ok && f.Room == c.cfg.Room {
			delete(c.shown, f.ID)
			c.status("ignore %q: it repeated an earlier copy of the same message", what)
		}
	case client.TypeRefreshed:
		c.scheduleRefresh(f.Expires)
	case client.TypeError:
		if f.Code == proto.CodeTokenExpired && f.Ref == "" {
			c.refreshToken(ctx) // the node closes the session after a grace
			return nil
		}
		return c.refused(ctx, f)
	}
	return nil
}

// refreshEarly is how long before a token expires a fresh one is sent.
const refreshEarly = time.Minute

// scheduleRefresh sets the refresh of a token that expires at expires
// (RFC 3339), when there is a --token-url to get fresh ones from.
func (c *chat) scheduleRefresh(expires string) {
	t, err := time.Parse(time.RFC3339Nano, expires)
	if c.cfg.TokenURL == "" || err != nil || c.refresh == nil {
		return
	}
	c.refresh.Reset(max(time.Second, time.Until(t)-refreshEarly))
}

// refreshToken fetches a fresh token and moves the session onto it.
func (c *chat) refreshToken(ctx context.Context) {
	if c.conn == nil || c.cfg.TokenURL == "" {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	token, err := client.FetchToken(fctx, nil, c.cfg.TokenURL)
	if err == nil {
		err = c.conn.Refresh(fctx, token)
	}
	if err != nil {
		c.status("could not refresh the token: %v", err)
	}
}

// echo notes that a line of ours came back as a message.
func (c *chat) echo(f client.Frame) {
	if f.Sender != c.name {
		return
	}
	if c.ackedIDs[f.ID] {
		delete(c.ackedIDs, f.ID)
		return
	}
	for _, o := range c.pending {
		if !o.echoed && o.text == f.Text {
			o.echoed = true
			return
		}
	}
}

// resend, after a resumed join, drops the lines sent on a lost connection
// that the replay showed stored and queues the others again. They keep
// their refs: a node answers a repeated ref with the first ack and stores
// nothing, in case one was stored where the replay could not show it yet.
func (c *chat) resend() {
	var again []*outgoing
	pending := c.pending[:0]
	for _, o := range c.pending {
		switch {
		case !o.stale:
			pending = append(pending, o)
		case !o.echoed:
			again = append(again, o)
		}
	}
	c.pending = pending
	c.queue = append(again, c.queue...)
}

// errShuttingDown ends a session whose node said it is shutting down.
var errShuttingDown = errors.New("the node is shutting down")

// refused handles an error frame.
func (c *chat) refused(ctx context.Context, f client.Frame) error {
	if f.Ref == "" && !c.synced && c.conn != nil {
		// The join failed. A cursor this node cannot read (another cluster,
		// another key or an earlier release, a damaged one) is dropped:
		// better a gap than no chat.
		if c.cursor == "" {
			return fmt.Errorf("join %s: %s", c.cfg.Room, f.Message)
		}
		c.status("the node refused our cursor (%s); joining with the recent history, some messages may be missing or shown twice", f.Message)
		c.cursor = ""
		jctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		c.conn.JoinHistory(jctx, c.cfg.Room, c.cfg.History)
		return nil
	}
	i := slices.IndexFunc(c.pending, func(o *outgoing) bool { return f.Ref != "" && o.ref == f.Ref })
	if i < 0 {
		c.status("error from the node: %s: %s", f.Code, f.Message)
		return nil
	}
	o := c.pending[i]
	c.pending = slices.Delete(c.pending, i, i+1)
	switch {
	case f.Code == proto.CodeUnavailable && len(f.Nodes) > 0:
		// The node is shutting down and names the others: the line goes
		// again, with its ref, on the next node.
		c.queue = append([]*outgoing{o}, c.queue...)
		c.status("node %s is shutting down; going to another node", c.node)
		c.lost(errShuttingDown)
		c.next++
		return nil
	case f.Code == proto.CodeRateLimited || f.Code == proto.CodeUnavailable:
		// Later, with the same ref: stored once whatever happened.
		c.queue = append([]*outgoing{o}, c.queue...)
		c.pausedUntil = time.Now().Add(ratePause)
		return nil
	}
	c.status("not sent: %q: %s", o.text, f.Message)
	c.failed++
	return nil
}

// show prints a message as "HH:MM:SS sender: text".
func (c *chat) show(f client.Frame) {
	t, err := f.CreatedTime()
	if err != nil {
		t = time.Now()
	}
	fmt.Fprintf(c.out, "%s %s: %s\n", t.Local().Format(time.TimeOnly), clean(f.Sender), clean(f.Text))
	if f.Replaces != "" {
		if what, ok := c.shown[f.Replaces]; ok {
			delete(c.shown, f.Replaces)
			c.status("ignore %q: it repeated this message", what)
		}
	}
	if c.shown == nil {
		c.shown = map[string]string{}
	}
	c.shown[f.ID] = clean(f.Sender) + ": " + clean(f.Text)
	c.recent = append(c.recent, f.ID)
	if len(c.recent) > maxShown {
		delete(c.shown, c.recent[0])
		c.recent = c.recent[1:]
	}
}

// status prints a status line.
func (c *chat) status(format string, args ...any) {
	fmt.Fprintf(c.info, "* "+format+"\n", args...)
}

// who lists the people in the room.
func (c *chat) who() string {
	seen := map[string]bool{}
	var names []string
	for p := range c.members {
		if !seen[p.Name] {
			seen[p.Name] = true
			names = append(names, clean(p.Name))
		}
	}
	if len(names) == 0 {
		return "nobody else"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// clean replaces control characters, so that a message cannot move the
// cursor of a terminal, change its colours or fake a line of its own. It
// drops the explicit bidi formatting characters (Unicode's Bidi_Control:
// embeddings, overrides, isolates, LRM, RLM, ALM), paired or not: whether a
// terminal reorders text at all varies, and where it does, one override
// makes "invoice_\u202efdp.exe" read "invoice_exe.pdf" whether or not a
// PDF closes it. Dropped, the text reads as it was typed.
func clean(s string) string {
	if !strings.ContainsFunc(s, isControl) && !strings.ContainsFunc(s, isBidiControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case isControl(r):
			return ' '
		case isBidiControl(r):
			return -1
		}
		return r
	}, s)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

func isBidiControl(r rune) bool { return unicode.Is(unicode.Bidi_Control, r) }

// jitter spreads reconnects of many clients: d plus or minus 20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}
