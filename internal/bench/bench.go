// Package bench is chatr's load generator: it drives nodes through the
// public WebSocket protocol only, like real clients, measures send-to-
// delivery latency and checks that every receiver gets every message of its
// room exactly once.
//
// CPU matters: the generator shares the machine with the nodes it measures.
// Each connection has one reading goroutine (and one more if it sends);
// frames are recognized by scanning for the few fields needed rather than
// decoded; counters live in each connection's own struct and are summed only
// by the progress line and the end of the run.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"chatr/internal/client"
	"chatr/internal/proto"
)

// maxDialing bounds the handshakes in progress, so that a run without ramp
// does not overflow the node's accept queue.
const maxDialing = 256

// latencyBatch is how many latencies a receiver collects before it takes a
// histogram's lock.
const latencyBatch = 64

// Run runs one bench and returns its report. It stops by itself at
// cfg.Duration, plus at most the drain time for deliveries in flight; a
// cancelled ctx ends it sooner. The error is for a bad configuration only:
// failures during the run are counted in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	urls, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	if cfg.Drain == 0 {
		cfg.Drain = DefaultDrain
	}
	r := newRun(cfg, urls)
	return r.run(ctx), nil
}

// run is the state of one Run.
type run struct {
	cfg     Config
	urls    []string
	rooms   []string
	sources []net.IP // by source address group; nil for the default
	group   int      // connections per source address group

	ledger  *Ledger
	lat     *recorder
	ackLat  *recorder
	failed  atomic.Int64
	dropped atomic.Int64

	// With Failover: stopped ends resumes in progress when the run closes;
	// resumed counts resumes that reached synced, truncated those whose
	// replay had a gap; firstDrop and lastResume are unix nanos.
	stopped               context.Context
	stop                  context.CancelFunc
	resumed, truncated    atomic.Int64
	firstDrop, lastResume atomic.Int64

	mu       sync.Mutex
	conns    []*conn
	closing  bool
	errors   map[string]int64
	examples map[string]string // the first error of each kind
}

// conn is one bench connection. Its counters are written by its own
// goroutines and read by anyone.
type conn struct {
	i, room int
	ws      atomic.Pointer[wsConn] // the connection being read
	ready   atomic.Pointer[wsConn] // the connection to send on: ws once it is in its room
	recv    *ReceiverLog
	send    *SenderLog // nil unless it sends

	sent, acked, answered atomic.Int64  // answered: sends that got an error
	answers               chan struct{} // a send was acked or answered (for --window)
	delivered, fresh      atomic.Int64  // fresh: first deliveries
	dropped               atomic.Bool

	// owned by the reading goroutine
	last        int64 // unix nanos of the last delivery
	lat, ackLat []int64
	url         string // the node of ws
	cursor      []byte // with Failover: the newest cursor of the room
	resuming    bool   // with Failover: ws is joining the room again
}

func newRun(cfg Config, urls []string) *run {
	id := make([]byte, 3)
	rand.Read(id)
	r := &run{
		cfg:      cfg,
		urls:     urls,
		lat:      newRecorder(),
		ackLat:   newRecorder(),
		errors:   map[string]int64{},
		examples: map[string]string{},
	}
	// Rooms of their own keep one run's messages out of another's.
	for k := range cfg.Rooms {
		r.rooms = append(r.rooms, fmt.Sprintf("bench-%s-%d", hex.EncodeToString(id), k))
	}
	senderRooms := make([]int, cfg.Senders)
	for i := range senderRooms {
		senderRooms[i] = i % cfg.Rooms
	}
	r.ledger = NewLedger(senderRooms)
	r.sources, r.group = sourceAddrs(urls, cfg.Conns)
	r.stopped, r.stop = context.WithCancel(context.Background())
	return r
}

func (r *run) run(ctx context.Context) *Report {
	start := time.Now()
	runCtx, cancel := context.WithDeadline(ctx, start.Add(r.cfg.Duration))
	defer cancel()
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		r.progress(runCtx, start)
	}()

	// Open the connections, evenly over the ramp.
	var setup, readers, senders sync.WaitGroup
	sem := make(chan struct{}, maxDialing)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; i < r.cfg.Conns; i++ {
		ok := sleepUntil(runCtx, timer, start.Add(r.cfg.Ramp*time.Duration(i)/time.Duration(r.cfg.Conns)))
		if ok {
			select {
			case sem <- struct{}{}:
			case <-runCtx.Done():
				ok = false
			}
		}
		if !ok {
			r.fail("not started", int64(r.cfg.Conns-i), nil)
			break
		}
		setup.Add(1)
		go func() {
			defer setup.Done()
			c := r.connect(runCtx, i)
			<-sem
			if c != nil {
				readers.Add(1)
				go func() {
					defer readers.Done()
					r.read(c)
				}()
			}
		}()
	}
	setup.Wait()

	// Send until the end of the run.
	sendStart := time.Now()
	r.mu.Lock()
	conns := r.conns
	r.mu.Unlock()
	var senderConns []*conn
	for _, c := range conns {
		if c.send != nil {
			senderConns = append(senderConns, c)
		}
	}
	if runCtx.Err() == nil && r.cfg.Rate > 0 && len(senderConns) > 0 {
		each := r.cfg.Rate / float64(len(senderConns))
		for k, c := range senderConns {
			// Stagger the senders so that they do not send in step.
			offset := time.Duration(float64(time.Second) / each * float64(k) / float64(len(senderConns)))
			senders.Add(1)
			go func() {
				defer senders.Done()
				r.sendLoop(runCtx, c, each, sendStart.Add(offset))
			}()
		}
	}
	<-runCtx.Done()
	sendEnd := time.Now()
	// A sender may be writing its last message as the run ends: let it
	// finish (and count it) before the drain decides what is missing.
	sendersDone := make(chan struct{})
	go func() {
		senders.Wait()
		close(sendersDone)
	}()
	select {
	case <-sendersDone:
	case <-time.After(r.cfg.Drain):
	}

	// Wait a little for deliveries in flight, then close everything.
	flowing := false
	if ctx.Err() == nil {
		flowing = r.drain(conns, sendEnd.Add(r.cfg.Drain))
	}
	r.closeAll()
	senders.Wait()
	readers.Wait()
	<-progressDone
	return r.report(conns, sendStart, sendEnd, flowing)
}

// sleepUntil waits for t and reports false if ctx ends first.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect opens connection i, joins its room and waits for synced. It
// returns nil if that fails.
func (r *run) connect(ctx context.Context, i int) *conn {
	c := &conn{i: i, room: i % r.cfg.Rooms, url: r.urls[(i/r.cfg.Rooms)%len(r.urls)]}
	cc, err := dialWS(ctx, c.url, c.name(), r.local(i))
	if err != nil {
		reason := "dial"
		if perr := (*proto.Error)(nil); errors.As(err, &perr) {
			reason = "hello: " + perr.Code
		}
		r.fail(reason, 1, err)
		return nil
	}
	room := r.rooms[c.room]
	if dl, ok := ctx.Deadline(); ok {
		cc.nc.SetDeadline(dl)
	}
	if err := cc.join(room); err != nil {
		cc.closeNow()
		r.fail("join", 1, err)
		return nil
	}
	for {
		data, err := cc.read()
		if err != nil {
			cc.closeNow()
			r.fail("join", 1, err)
			return nil
		}
		f := scan(data)
		if f.typ == client.TypeError {
			cc.closeNow()
			r.fail("join: "+f.code, 1, fmt.Errorf("%s", f.message))
			return nil
		}
		if f.typ == client.TypeSynced {
			c.keepCursor(r, data)
			break
		}
	}
	cc.nc.SetDeadline(time.Time{})
	c.ws.Store(cc)
	c.ready.Store(cc)
	c.recv = r.ledger.AddReceiver(c.room)
	if i < r.cfg.Senders {
		c.send = r.ledger.Sender(i)
		c.answers = make(chan struct{}, 1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		cc.closeNow()
		return nil
	}
	r.conns = append(r.conns, c)
	return c
}

// read handles the frames of c until its connection closes.
func (r *run) read(c *conn) {
	defer r.flush(c)
	for {
		data, err := c.ws.Load().read()
		if err != nil {
			if r.isClosing() {
				return
			}
			if code := closeCode(err); code >= 0 {
				r.count("closed "+strconv.Itoa(code), err)
			} else {
				r.count("disconnected", err)
			}
			c.ws.Load().closeNow() // its file, for the next connection
			if r.cfg.Failover && r.resume(c) {
				continue
			}
			c.drop()
			r.dropped.Add(1)
			return
		}
		f := scan(data)
		if f.typ == client.TypeMessage || f.typ == client.TypeSynced {
			c.keepCursor(r, data)
		}
		switch f.typ {
		case client.TypeMessage:
			now := time.Now().UnixNano()
			c.delivered.Add(1)
			sender, seq, nanos, ok := parseText(f.text)
			if !ok {
				c.recv.Deliver(-1, 0)
				continue
			}
			if c.recv.Deliver(sender, seq) {
				c.fresh.Add(1)
			}
			c.last = now
			c.lat = append(c.lat, (now-nanos)/1000)
			if len(c.lat) == latencyBatch {
				r.lat.record(c.i, c.lat...)
				c.lat = c.lat[:0]
			}
		case client.TypeAck:
			seq, err := strconv.ParseUint(string(f.ref), 10, 64)
			if err != nil || c.send == nil {
				r.count("unknown ack", fmt.Errorf("ack with ref %q", f.ref))
				continue
			}
			if at, ok := c.send.Ack(seq); ok {
				c.acked.Add(1)
				c.answer()
				c.ackLat = append(c.ackLat, (time.Now().UnixNano()-at)/1000)
				if len(c.ackLat) == latencyBatch {
					r.ackLat.record(c.i, c.ackLat...)
					c.ackLat = c.ackLat[:0]
				}
			}
		case client.TypeSynced:
			if c.resuming {
				r.resumedIn(c, data)
			}
		case client.TypeError:
			if r.cfg.Failover && f.code == proto.CodeUnavailable && c.send != nil && len(f.ref) > 0 {
				// "Send again on another node": as a client that fails
				// over does, a moment later, on the connection it has
				// then, with the same ref.
				if seq, err := strconv.ParseUint(string(f.ref), 10, 64); err == nil {
					r.count(f.code, fmt.Errorf("%s", f.message))
					time.AfterFunc(200*time.Millisecond, func() { r.sendAgain(c, seq) })
					continue
				}
			}
			if len(f.ref) > 0 {
				c.answered.Add(1)
				c.answer()
			}
			r.count(f.code, fmt.Errorf("%s", f.message))
			if c.resuming && len(f.ref) == 0 && !r.rejoin(c, f.code) {
				c.drop()
				r.dropped.Add(1)
				return
			}
		}
	}
}

// name is the name connection c says hello with.
func (c *conn) name() string { return "bench-" + strconv.Itoa(c.i) }

// local is the source address of connection i, nil for the default.
func (r *run) local(i int) net.IP {
	if r.sources == nil {
		return nil
	}
	return r.sources[min(i/r.group, len(r.sources)-1)]
}

// isClosing reports whether closeAll has begun.
func (r *run) isClosing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closing
}

// drop records that c lost its node for good: what is sent from now on is
// not expected from it, and a sender waiting for it gives up.
func (c *conn) drop() {
	c.recv.Stop(time.Now().UnixNano())
	c.dropped.Store(true)
}

// keepCursor keeps the cursor of a message or synced frame, with Failover.
func (c *conn) keepCursor(r *run, data []byte) {
	if !r.cfg.Failover {
		return
	}
	if cur, ok := stringField(data, "cursor"); ok {
		c.cursor = append(c.cursor[:0], cur...)
	}
}

// resume connects c again after its node dropped it, as a client that
// fails over does: it says hello to another node of the list (the nodes
// other than the one it was on, taken in turn from one that depends on c,
// so that the connections of a dead node spread over the others) and joins
// its room with since set to the newest cursor it holds, so that the node
// replays what c missed (with no cursor yet, c had no message, and it joins
// with the most history instead). It keeps trying, backing off, until it is
// in or the run closes, and then reports false. The synced that follows
// completes the resume (resumedIn).
func (r *run) resume(c *conn) bool {
	r.firstDrop.CompareAndSwap(0, time.Now().UnixNano())
	var others []string
	for _, u := range r.urls {
		if u != c.url && !slices.Contains(others, u) {
			others = append(others, u)
		}
	}
	if len(others) == 0 {
		others = []string{c.url}
	}
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		url := others[(c.i+attempt)%len(others)]
		ws, err := dialWS(r.stopped, url, c.name(), r.local(c.i))
		if err == nil {
			if err = ws.resume(r.rooms[c.room], string(c.cursor)); err != nil {
				ws.closeNow()
			}
		}
		if err == nil {
			c.url, c.resuming = url, true
			c.ws.Store(ws)
			if r.isClosing() { // closeAll may have closed the connection before
				ws.closeNow()
				return false
			}
			return true
		}
		if r.stopped.Err() != nil {
			return false
		}
		r.count("resume", err)
		if !sleepFor(r.stopped, backoff+time.Duration(mrand.Int64N(int64(backoff)))) {
			return false
		}
		backoff = min(2*backoff, time.Second)
	}
}

// rejoin handles an error that answered the join of a resume: a join over
// the node's replay budget is made again a second later; any other error
// ends the resume and rejoin reports false.
func (r *run) rejoin(c *conn, code string) bool {
	if code != proto.CodeRateLimited || !sleepFor(r.stopped, time.Second) {
		return false
	}
	return c.ws.Load().resume(r.rooms[c.room], string(c.cursor)) == nil
}

// resumedIn completes the resume of c at its synced: it counts it, lets
// its sender use the new connection and, if c sends, sends again every
// message not yet acked, with the same ref, so that what its dead node took
// without answering is stored once (the nodes drop a repeat by its ref).
func (r *run) resumedIn(c *conn, synced []byte) {
	c.resuming = false
	if bytes.Contains(synced, []byte(`"truncated":true`)) {
		r.truncated.Add(1)
	}
	r.resumed.Add(1)
	now := time.Now().UnixNano()
	for last := r.lastResume.Load(); now > last && !r.lastResume.CompareAndSwap(last, now); last = r.lastResume.Load() {
	}
	ws := c.ws.Load()
	c.ready.Store(ws)
	if c.send == nil {
		return
	}
	var buf []byte
	for _, s := range c.send.Unacked() {
		buf = appendText(buf[:0], c.i, s.seq, s.nanos, r.cfg.Size)
		if ws.sendText(r.rooms[c.room], string(buf), s.seq) != nil {
			return // dropped again: the next resume sends them
		}
	}
}

// sendAgain sends message seq of c again, unless it was acked meanwhile or
// the run is over.
func (r *run) sendAgain(c *conn, seq uint64) {
	at, ok := c.send.SentAt(seq)
	if !ok || r.isClosing() {
		return
	}
	text := appendText(nil, c.i, seq, at, r.cfg.Size)
	c.ready.Load().sendText(r.rooms[c.room], string(text), seq) // a failed write: the resume sends it
}

// waitReady waits until c has a connection to send on other than old and
// returns it, or nil when the run ends or c lost its node for good first.
func (c *conn) waitReady(ctx context.Context, old *wsConn) *wsConn {
	for {
		if ws := c.ready.Load(); ws != old {
			return ws
		}
		if c.dropped.Load() || !sleepFor(ctx, 10*time.Millisecond) {
			return nil
		}
	}
}

// sleepFor waits d and reports false if ctx ends first.
func sleepFor(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// answer wakes a sender waiting for room in its window.
func (c *conn) answer() {
	select {
	case c.answers <- struct{}{}:
	default:
	}
}

// waitWindow waits until c has fewer than window sends unanswered (window
// 0: no limit). It returns false when ctx ends first.
func (c *conn) waitWindow(ctx context.Context, window int) bool {
	for window > 0 && c.sent.Load()-c.acked.Load()-c.answered.Load() >= int64(window) {
		select {
		case <-c.answers:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// flush records the latencies c still holds.
func (r *run) flush(c *conn) {
	r.lat.record(c.i, c.lat...)
	r.ackLat.record(c.i, c.ackLat...)
	c.lat, c.ackLat = nil, nil
}

// sendLoop sends perSec messages a second on c from start until ctx ends.
// When it falls behind (the node or the socket is slow) it sends back to
// back until it has caught up. With a window, it also waits whenever that
// many of its sends are unanswered: a rate above what the nodes take then
// measures their throughput without flooding them (closed loop).
func (r *run) sendLoop(ctx context.Context, c *conn, perSec float64, start time.Time) {
	interval := float64(time.Second) / perSec
	room := r.rooms[c.room]
	buf := make([]byte, 0, r.cfg.Size+64)
	timer := time.NewTimer(0)
	defer timer.Stop()
	n := 0
	for sleepUntil(ctx, timer, start.Add(time.Duration(float64(n)*interval))) {
		due := int(float64(time.Since(start))/interval) + 1
		for ; n < due && ctx.Err() == nil; n++ {
			if !c.waitWindow(ctx, r.cfg.Window) {
				return
			}
			now := time.Now().UnixNano()
			seq := c.send.Next(now)
			buf = appendText(buf[:0], c.i, seq, now, r.cfg.Size)
			// The ref is the sequence number: unique per message, since
			// sender names and rooms are unique to the run. closeAll ends
			// a blocked write.
			ws := c.ready.Load()
			err := ws.sendText(room, string(buf), seq)
			for err != nil && r.cfg.Failover {
				// Its node dropped c: send again once it has resumed on
				// another (which sends what is unacked too; the node
				// drops the repeat by its ref).
				if ws = c.waitReady(ctx, ws); ws == nil {
					return
				}
				err = ws.sendText(room, string(buf), seq)
			}
			if err != nil {
				if ctx.Err() == nil && !c.dropped.Load() {
					r.count("send", err)
				}
				return
			}
			c.sent.Add(1)
		}
	}
}

// totals sums the counters of conns.
type totals struct {
	live, sent, acked, answered, delivered, fresh, expected int64
}

func sum(conns []*conn, rooms int) totals {
	var t totals
	ackedIn := make([]int64, rooms)
	liveIn := make([]int64, rooms)
	for _, c := range conns {
		t.sent += c.sent.Load()
		a := c.acked.Load()
		t.acked += a
		ackedIn[c.room] += a
		t.answered += c.answered.Load()
		t.delivered += c.delivered.Load()
		t.fresh += c.fresh.Load()
		if !c.dropped.Load() {
			t.live++
			liveIn[c.room]++
		}
	}
	for k := range rooms {
		t.expected += ackedIn[k] * liveIn[k]
	}
	return t
}

// drain waits until every send is answered and every acked message has
// reached every live member of its room, or until deadline. It reports
// whether deliveries were still arriving when it gave up.
func (r *run) drain(conns []*conn, deadline time.Time) (flowing bool) {
	const step = 10 * time.Millisecond
	var last totals
	lastChange := time.Now()
	for time.Now().Before(deadline) {
		t := sum(conns, r.cfg.Rooms)
		if t.acked+t.answered >= t.sent && t.fresh >= t.expected {
			return false
		}
		if t != last {
			last, lastChange = t, time.Now()
		}
		time.Sleep(step)
	}
	return time.Since(lastChange) < 500*time.Millisecond
}

// closeAll closes every connection at once, which ends their goroutines.
func (r *run) closeAll() {
	r.mu.Lock()
	r.closing = true
	conns := r.conns
	r.mu.Unlock()
	r.stop()
	for _, c := range conns {
		c.ws.Load().closeNow()
	}
}

// progress prints a line each second until ctx ends.
func (r *run) progress(ctx context.Context, start time.Time) {
	if r.cfg.Progress == nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			r.mu.Lock()
			conns := r.conns
			errs := int64(0)
			for _, n := range r.errors {
				errs += n
			}
			r.mu.Unlock()
			t := sum(conns, r.cfg.Rooms)
			resumed := ""
			if r.cfg.Failover {
				resumed = fmt.Sprintf(", resumed %d", r.resumed.Load())
			}
			fmt.Fprintf(r.cfg.Progress, "%4.0fs  conns %d (failed %d, dropped %d%s)  sent %d  acked %d  delivered %d  errors %d\n",
				now.Sub(start).Seconds(), t.live, r.failed.Load(), r.dropped.Load(), resumed, t.sent, t.acked, t.delivered, errs)
		}
	}
}

// fail counts n connections that did not open, for reason.
func (r *run) fail(reason string, n int64, example error) {
	r.failed.Add(n)
	r.countN(reason, n, example)
}

// count counts one error of kind code; example (may be nil) tells more.
func (r *run) count(code string, example error) { r.countN(code, 1, example) }

func (r *run) countN(code string, n int64, example error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[code] += n
	if _, ok := r.examples[code]; !ok && example != nil {
		r.examples[code] = example.Error()
	}
}

// report builds the report once every goroutine has stopped.
func (r *run) report(conns []*conn, sendStart, sendEnd time.Time, flowing bool) *Report {
	c := r.cfg
	rep := &Report{
		Config: ReportConfig{
			URLs: r.urls, Conns: c.Conns, Rooms: c.Rooms, Senders: c.Senders, Rate: c.Rate, Window: c.Window,
			Size: c.Size, Duration: c.Duration.String(), Ramp: c.Ramp.String(),
		},
		ConnsEstablished: int64(len(conns)),
		ConnsFailed:      r.failed.Load(),
		ConnsDropped:     r.dropped.Load(),
		Errors:           r.errors,
		ErrorExamples:    r.examples,
		Latency:          summarize(r.lat.merged()),
		AckLatency:       summarize(r.ackLat.merged()),
		Check:            r.ledger.Check(flowing),
	}
	if c.Failover {
		rep.Config.Failover = true
		rep.Resumed, rep.Truncated = r.resumed.Load(), r.truncated.Load()
		if first, last := r.firstDrop.Load(), r.lastResume.Load(); first > 0 && last > first {
			rep.ResumeSeconds = float64(last-first) / 1e9
		}
	}
	t := sum(conns, c.Rooms)
	rep.Sent, rep.Acked, rep.Deliveries = t.sent, t.acked, t.delivered
	rep.Unanswered = max(t.sent-t.acked-t.answered, 0)
	if t.sent > 0 {
		last := sendEnd.UnixNano()
		for _, c := range conns {
			last = max(last, c.last)
		}
		rep.SendSeconds = sendEnd.Sub(sendStart).Seconds()
		rep.DeliverySeconds = float64(last-sendStart.UnixNano()) / 1e9
	}
	rep.finish()
	return rep
}
