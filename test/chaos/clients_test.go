package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"chatr/internal/client"
	"chatr/internal/clustertest"
	"chatr/internal/proto"
)

// Pace and patience of the clients. About 5 sends a second per client
// keeps the nodes busy without making the machine, not chatr, the limit.
const (
	sendEvery = 200 * time.Millisecond // mean gap between two sends of one client
	pingEvery = time.Second
	// silentLimit: a session that shows nothing this long is dead (its
	// node paused or cut off); the client fails over.
	silentLimit = 5 * time.Second
	// ackLimit: a send not acked this long means a stuck session; the
	// client fails over.
	ackLimit     = 3 * time.Second
	dialTimeout  = 3 * time.Second // one handshake, hello and welcome included
	writeTimeout = 2 * time.Second
	postTimeout  = 3 * time.Second // one HTTP try; a paused node answers none
	// sessionMean is how long a client stays on a node before it leaves
	// and resumes on another, on average: often enough that several
	// clients cross the sides of a partition while it lasts, which is
	// what makes two copies of one send and shows both to a client.
	sessionMean = 4 * time.Second
	historyJoin = 1000 // what a client with no cursor yet asks for
)

// jitter is d give or take half.
func jitter(rng *rand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(rng.Int64N(int64(d)))
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// crowd is every client of a run.
type crowd struct {
	ws   []*wsClient
	http []*httpClient

	// settled stops new sends and the clients' own departures: the end
	// of the fault phase. Sends not acked yet are still retried.
	settled atomic.Bool

	wsCancel, httpCancel context.CancelFunc
	wsDone, httpDone     sync.WaitGroup
}

// startCrowd starts nws WebSocket and nhttp HTTP clients, each with its
// own random stream drawn from seed. WebSocket client k joins lobby, and
// dev too when k is odd; HTTP clients post to both rooms.
func startCrowd(cl *cluster, seed uint64, nws, nhttp int) *crowd {
	c := &crowd{}
	wsCtx, wsCancel := context.WithCancel(context.Background())
	httpCtx, httpCancel := context.WithCancel(context.Background())
	c.wsCancel, c.httpCancel = wsCancel, httpCancel
	for k := range nws {
		rooms := []string{"lobby"}
		if k%2 == 1 {
			rooms = append(rooms, "dev")
		}
		w := &wsClient{name: fmt.Sprintf("ws%d", k), rooms: rooms, cl: cl, crowd: c,
			rng: rand.New(rand.NewPCG(seed, uint64(100+k))), view: clustertest.NewView(),
			cursor: map[string]string{}, sends: map[string]*wsSend{}}
		c.ws = append(c.ws, w)
		c.wsDone.Go(func() { w.run(wsCtx) })
	}
	for k := range nhttp {
		h := &httpClient{name: fmt.Sprintf("http%d", k), rooms: allRooms, cl: cl, crowd: c,
			rng: rand.New(rand.NewPCG(seed, uint64(200+k)))}
		c.http = append(c.http, h)
		c.httpDone.Go(func() { h.run(httpCtx) })
	}
	return c
}

// stopHTTP waits until every HTTP client has got a 201 for its last post
// and ended, for at most timeout; then it stops them anyway.
func (c *crowd) stopHTTP(timeout time.Duration) {
	done := make(chan struct{})
	go func() { c.httpDone.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		c.httpCancel()
		<-done
	}
	c.httpCancel()
}

// stopWS closes every WebSocket session cleanly and waits for the
// clients to end.
func (c *crowd) stopWS() {
	c.wsCancel()
	c.wsDone.Wait()
}

// stop ends every client; the test's cleanup calls it.
func (c *crowd) stop() {
	c.httpCancel()
	c.wsCancel()
	c.httpDone.Wait()
	c.wsDone.Wait()
}

// ackedSend is a send some node acknowledged: a WebSocket ack or an
// HTTP 201.
type ackedSend struct {
	client, room, text string
	id                 string    // the acked message
	created            time.Time // the acked message's
	by                 int       // the node that acknowledged it
	http               bool
}

// acked lists every send acknowledged so far.
func (c *crowd) acked() []ackedSend {
	var out []ackedSend
	for _, w := range c.ws {
		w.mu.Lock()
		for _, ref := range w.refs {
			if s := w.sends[ref]; s.id != "" {
				out = append(out, ackedSend{client: w.name, room: s.room, text: s.text, id: s.id, created: s.created, by: s.ackedBy})
			}
		}
		w.mu.Unlock()
	}
	for _, h := range c.http {
		h.mu.Lock()
		for _, p := range h.posts {
			if p.id != "" {
				out = append(out, ackedSend{client: h.name, room: p.room, text: p.text, id: p.id, created: p.created, by: p.by, http: true})
			}
		}
		h.mu.Unlock()
	}
	return out
}

// unacked describes the sends no node has acknowledged yet.
func (c *crowd) unacked() []string {
	var out []string
	for _, w := range c.ws {
		w.mu.Lock()
		for _, ref := range w.refs {
			if s := w.sends[ref]; s.id == "" {
				out = append(out, fmt.Sprintf("%s ref %s (%d tries, on %v)", w.name, ref, s.tries, c.nodeNames(w.cl, s.nodes)))
			}
		}
		w.mu.Unlock()
	}
	for _, h := range c.http {
		h.mu.Lock()
		for _, p := range h.posts {
			if p.id == "" {
				out = append(out, fmt.Sprintf("%s key %s (%d tries: %s)", h.name, p.key, p.tries, strings.Join(p.errs, "; ")))
			}
		}
		h.mu.Unlock()
	}
	return out
}

func (c *crowd) nodeNames(cl *cluster, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, cl.nodes[i].name)
	}
	return out
}

// failures lists what the clients saw that no correct node sends.
func (c *crowd) failures() []string {
	var out []string
	for _, w := range c.ws {
		w.mu.Lock()
		out = append(out, w.failures...)
		w.mu.Unlock()
	}
	for _, h := range c.http {
		h.mu.Lock()
		out = append(out, h.failures...)
		h.mu.Unlock()
	}
	return out
}

// wsClient is one WebSocket chat client, as a careful real one behaves:
// it sends with a unique ref and keeps each send until it is acked,
// sending it again with the same ref on each new session; when its session
// drops, the node closes it, it goes silent, or a send is answered
// unavailable, it resumes on another node, joining with the newest cursor
// of each room; now and then it leaves and resumes on its own. It keeps
// what it was shown, over all its sessions, in its View.
type wsClient struct {
	name  string
	rooms []string
	cl    *cluster
	crowd *crowd
	rng   *rand.Rand // only run's goroutine uses it
	view  *clustertest.View

	mu       sync.Mutex
	cursor   map[string]string  // room -> newest cursor, kept across sessions
	sends    map[string]*wsSend // ref -> send
	refs     []string           // in the order sent
	failures []string
	ends     []string // how each session ended
	sessions int
	replaces int  // message frames that named a copy to drop
	hidden   int  // hidden frames
	live     bool // the current session has synced every room
}

// wsSend is one message sent over the WebSocket.
type wsSend struct {
	room, text string
	id         string // from its ack; "" until acked
	created    time.Time
	ackedBy    int
	tries      int
	nodes      []int     // where each try went
	sentAt     time.Time // of the latest try
}

// wsSession is one session of a wsClient, read by its own goroutine.
type wsSession struct {
	conn     *client.Conn
	node     int
	lastSeen atomic.Int64 // UnixNano of the last frame read
	failover chan int     // a send answered unavailable: the node to go to (-1: any other)
	synced   map[string]bool
	err      error // why the reader ended; set before done closes
}

func (w *wsClient) failf(format string, args ...any) {
	w.failures = append(w.failures, w.name+": "+fmt.Sprintf(format, args...))
}

// isLive reports whether the client has a session that has synced every
// room.
func (w *wsClient) isLive() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.live
}

// oldestUnacked is how long the oldest send not acked yet has waited
// since its latest try (0 when all are acked).
func (w *wsClient) oldestUnacked() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var oldest time.Duration
	for _, s := range w.sends {
		if s.id == "" {
			oldest = max(oldest, time.Since(s.sentAt))
		}
	}
	return oldest
}

// run holds one session after another until ctx ends.
func (w *wsClient) run(ctx context.Context) {
	n := len(w.cl.nodes)
	next := w.rng.IntN(n)
	for ctx.Err() == nil {
		from := next
		if hint := w.session(ctx, from); hint >= 0 {
			next = hint
		} else {
			next = (from + 1 + w.rng.IntN(n-1)) % n
		}
		sleepCtx(ctx, jitter(w.rng, 100*time.Millisecond))
	}
}

// session opens a session on node i, joins every room, sends again what
// is not acked, then sends and pings until the session ends. It returns
// the node a failover should go to, or -1.
func (w *wsClient) session(ctx context.Context, i int) int {
	n := w.cl.nodes[i]
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := client.Dial(dctx, n.base(), w.name, &client.Options{HTTPClient: w.cl.wsHTTP})
	if err != nil {
		w.ended(n, "dial failed")
		return -1
	}
	s := &wsSession{conn: conn, node: i, failover: make(chan int, 1), synced: map[string]bool{}}
	s.lastSeen.Store(time.Now().UnixNano())
	w.mu.Lock()
	w.sessions++
	cursors := make([]string, len(w.rooms))
	for k, room := range w.rooms {
		cursors[k] = w.cursor[room]
	}
	w.mu.Unlock()
	done := make(chan struct{})
	go w.read(s, done)
	how, hint := w.drive(ctx, s, done, cursors)
	conn.CloseNow()
	<-done
	// The reader has ended: the cursors are those of the last frames it
	// took, which the view holds.
	w.mu.Lock()
	for _, room := range w.rooms {
		if cur := conn.Cursor(room); cur != "" {
			w.cursor[room] = cur
		}
	}
	w.live = false
	w.mu.Unlock()
	if how == "" {
		how = fmt.Sprintf("the node closed it (%d)", client.CloseStatus(s.err))
	}
	w.ended(n, how)
	return hint
}

func (w *wsClient) ended(n *chaosNode, how string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.ends) < 200 {
		w.ends = append(w.ends, n.name+": "+how)
	}
}

// drive runs session s until it ends, and says how ("" when the node
// ended it) and where to fail over to.
func (w *wsClient) drive(ctx context.Context, s *wsSession, done <-chan struct{}, cursors []string) (string, int) {
	write := func(f func(context.Context) error) error {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		return f(wctx)
	}
	for k, room := range w.rooms {
		err := write(func(ctx context.Context) error {
			if cursors[k] == "" {
				return s.conn.JoinHistory(ctx, room, historyJoin)
			}
			return s.conn.Join(ctx, room, cursors[k])
		})
		if err != nil {
			return "join failed", -1
		}
	}
	// Every send not acked yet goes again, with its ref, in order.
	w.mu.Lock()
	var again []string
	for _, ref := range w.refs {
		if snd := w.sends[ref]; snd.id == "" {
			snd.tries++
			snd.nodes = append(snd.nodes, s.node)
			snd.sentAt = time.Now()
			again = append(again, ref)
		}
	}
	w.mu.Unlock()
	for _, ref := range again {
		w.mu.Lock()
		snd := w.sends[ref]
		w.mu.Unlock()
		if err := write(func(ctx context.Context) error { return s.conn.Send(ctx, snd.room, snd.text, ref) }); err != nil {
			return "re-send failed", -1
		}
	}
	lifetime := time.Duration(w.rng.ExpFloat64() * float64(sessionMean))
	born := time.Now()
	sendT := time.NewTimer(jitter(w.rng, sendEvery))
	defer sendT.Stop()
	pingT := time.NewTicker(pingEvery)
	defer pingT.Stop()
	for {
		select {
		case <-ctx.Done():
			s.conn.Close() // a clean goodbye: the end of the run
			return "closed at the end", -1
		case <-done:
			return "", -1
		case hint := <-s.failover:
			return "a send was answered unavailable", hint
		case <-pingT.C:
			if quiet := time.Since(time.Unix(0, s.lastSeen.Load())); quiet > silentLimit {
				return fmt.Sprintf("silent for %v", quiet.Round(time.Second)), -1
			}
			if w.oldestUnacked() > ackLimit {
				return fmt.Sprintf("a send not acked within %v", ackLimit), -1
			}
			if write(s.conn.Ping) != nil {
				return "ping failed", -1
			}
		case <-sendT.C:
			sendT.Reset(jitter(w.rng, sendEvery))
			if w.crowd.settled.Load() {
				continue
			}
			leave := time.Since(born) > lifetime
			if leave && w.rng.IntN(4) == 0 {
				s.conn.Close()
				return "left (clean close)", -1
			}
			room := w.rooms[w.rng.IntN(len(w.rooms))]
			w.mu.Lock()
			ref := fmt.Sprintf("%s-%d", w.name, len(w.refs))
			snd := &wsSend{room: room, text: fmt.Sprintf("%s says %d", w.name, len(w.refs)), tries: 1,
				nodes: []int{s.node}, sentAt: time.Now()}
			w.sends[ref] = snd
			w.refs = append(w.refs, ref)
			w.mu.Unlock()
			if write(func(ctx context.Context) error { return s.conn.Send(ctx, room, snd.text, ref) }) != nil {
				return "send failed", -1
			}
			if leave {
				// Gone right after a send, before its ack: the send is
				// re-sent on the next node, which may not hold it yet.
				return "left right after a send (dropped)", -1
			}
		}
	}
}

// read takes every frame of session s until it ends.
func (w *wsClient) read(s *wsSession, done chan struct{}) {
	defer close(done)
	for {
		f, err := s.conn.Read(context.Background())
		if err != nil {
			s.err = err
			return
		}
		s.lastSeen.Store(time.Now().UnixNano())
		w.take(s, f)
	}
}

func (w *wsClient) take(s *wsSession, f client.Frame) {
	w.mu.Lock()
	defer w.mu.Unlock()
	node := w.cl.nodes[s.node].name
	switch f.Type {
	case client.TypeMessage:
		if !slices.Contains(w.rooms, f.Room) {
			w.failf("%s sent %s of room %s, which it never joined", node, f.ID, f.Room)
		}
		if f.Replaces != "" {
			w.replaces++
		}
		w.view.Take(f)
	case client.TypeHidden:
		w.hidden++
		w.view.Take(f)
	case client.TypeSynced:
		if f.Truncated {
			w.failf("%s truncated the replay of %s: the client shows a gap", node, f.Room)
		}
		s.synced[f.Room] = true
		w.live = len(s.synced) == len(w.rooms)
	case client.TypeAck:
		snd := w.sends[f.Ref]
		switch {
		case snd == nil:
			w.failf("%s acked ref %q, which it never sent", node, f.Ref)
		case snd.id != "" && snd.id != f.ID:
			w.failf("ref %s acked as %s, then as %s by %s", f.Ref, snd.id, f.ID, node)
		default:
			snd.id, snd.ackedBy = f.ID, s.node
			snd.created, _ = f.CreatedTime()
		}
	case client.TypeError:
		if f.Code != proto.CodeUnavailable {
			w.failf("%s answered %s %q (ref %q)", node, f.Code, f.Message, f.Ref)
			return
		}
		// The node cannot take it (it is draining): go where it says.
		hint := -1
		for _, m := range f.Nodes {
			if o := w.cl.nodeOf(m.ID); o != nil && o.index != s.node {
				hint = o.index
				break
			}
		}
		select {
		case s.failover <- hint:
		default:
		}
	}
}

// allRooms are the rooms of a run.
var allRooms = []string{"lobby", "dev"}

// httpClient posts over the HTTP API, one message at a time, each with
// an Idempotency-Key, retried with the same key on a 503, a timeout or a
// connection error, on the same node or another, until a 201.
type httpClient struct {
	name  string
	rooms []string
	cl    *cluster
	crowd *crowd
	rng   *rand.Rand // only run's goroutine uses it

	mu       sync.Mutex
	posts    []*httpPost
	failures []string
}

// httpPost is one message posted over HTTP.
type httpPost struct {
	room, text, key string
	id              string // from the 201; "" until then
	created         time.Time
	by              int
	tries           int
	errs            []string // why earlier tries failed (the first few)
}

// run posts until the crowd settles, and delivers its last post.
func (h *httpClient) run(ctx context.Context) {
	for k := 0; !h.crowd.settled.Load() && ctx.Err() == nil; k++ {
		p := &httpPost{room: h.rooms[h.rng.IntN(len(h.rooms))], text: fmt.Sprintf("%s posts %d", h.name, k),
			key: fmt.Sprintf("%s-%d", h.name, k)}
		h.mu.Lock()
		h.posts = append(h.posts, p)
		h.mu.Unlock()
		h.deliver(ctx, p)
		sleepCtx(ctx, jitter(h.rng, sendEvery))
	}
}

// deliver posts p until a node answers 201, or ctx ends.
func (h *httpClient) deliver(ctx context.Context, p *httpPost) {
	n := len(h.cl.nodes)
	i := h.rng.IntN(n)
	for ctx.Err() == nil {
		m, status, body, err := h.post(ctx, i, p)
		h.mu.Lock()
		p.tries++
		retry := err != nil || status == http.StatusServiceUnavailable
		switch {
		case err == nil && status == http.StatusCreated:
			p.id, p.by = m.ID, i
			p.created, _ = time.Parse(time.RFC3339Nano, m.Created)
		case retry:
			if len(p.errs) < 5 {
				why := fmt.Sprintf("%s: %d", h.cl.nodes[i].name, status)
				if err != nil {
					why = fmt.Sprintf("%s: %v", h.cl.nodes[i].name, err)
				}
				p.errs = append(p.errs, why)
			}
		default:
			h.failures = append(h.failures, fmt.Sprintf("%s: POST of key %s to %s answered %d %s", h.name, p.key, h.cl.nodes[i].name, status, body))
		}
		h.mu.Unlock()
		if !retry {
			return
		}
		if h.rng.IntN(2) == 0 {
			i = (i + 1 + h.rng.IntN(n-1)) % n
		}
		sleepCtx(ctx, jitter(h.rng, 200*time.Millisecond))
	}
}

// post makes one try; body is the answer's when it is not a 201.
func (h *httpClient) post(ctx context.Context, i int, p *httpPost) (m proto.MessageJSON, status int, body string, err error) {
	// The key goes in the header only: today's server refuses unknown
	// body fields, so "ref" in the body waits until the server takes it.
	b, _ := json.Marshal(map[string]string{"sender": h.name, "text": p.text})
	ctx, cancel := context.WithTimeout(ctx, postTimeout)
	defer cancel()
	u := h.cl.nodes[i].base() + "/chatr/api/rooms/" + url.PathEscape(p.room) + "/messages"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return m, 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", p.key)
	resp, err := h.cl.hc.Do(req)
	if err != nil {
		return m, 0, "", err
	}
	defer resp.Body.Close()
	if b, err = io.ReadAll(resp.Body); err != nil {
		return m, 0, "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return m, resp.StatusCode, strings.TrimSpace(string(b)), nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, 0, "", fmt.Errorf("decode the 201: %w: %s", err, b)
	}
	return m, resp.StatusCode, "", nil
}
