package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"chatr/internal/hub"
	"chatr/internal/netpoll"
	"chatr/internal/proto"
	"chatr/internal/store"
)

const (
	// helloTimeout is how long a new connection may take to say hello.
	helloTimeout = 10 * time.Second
	// writeTimeout bounds one write to a client; a client that does not
	// read for that long is cut off.
	writeTimeout = 10 * time.Second
	// frameTimeout bounds the read of one frame once its first byte came,
	// so a client trickling a frame holds a goroutine only that long.
	frameTimeout = 10 * time.Second
	// closeTimeout is how long a closing session waits for the client's
	// close frame before dropping the connection.
	closeTimeout = 2 * time.Second
	// stallTimeout is how long a client's socket may take nothing while
	// --send-queue frames wait, before the client is cut off as too slow.
	stallTimeout = time.Second
	// maxRateBreaches is how many frames over a rate limit (--send-rate,
	// --frame-rate), in a row, close the session as abusive.
	maxRateBreaches = 50
)

// session is one WebSocket client. It owns no goroutine while idle: the
// poller starts a reader when the client sends something, and enqueue starts
// a flusher when there is something to send. One reader and one flusher run
// at a time.
type session struct {
	srv  *Server
	ws   wsConn
	desc *netpoll.Desc // nil when the connection cannot be polled
	id   string
	ip   string
	key  string // the address per-address limits count it under (ipKey)

	// Reader side: held by the one reader at a time. (The poller already
	// runs one reader at a time; the mutex makes that visible to the race
	// detector, which cannot see through epoll.)
	readMu   sync.Mutex
	name     string
	user     string        // with auth on, the token's sub
	ident    *Identity     // with auth on, who the token says the client is
	limiter  *rate.Limiter // --send-rate; made at the first send
	frames   *rate.Limiter // --frame-rate: every other frame
	breaches int           // frames over a rate limit in a row
	// replayed and replayedBytes are the replay budget of the session's
	// joins (--replay-rate, --replay-bytes-rate); made at the first join.
	replayed, replayedBytes *budget
	fragments               []byte // a fragmented message being put together
	greeted                 atomic.Bool

	mu sync.Mutex
	// joined is the rooms joined, at most --max-rooms-per-session: a slice,
	// as most sessions are in one room, which a map would pay a table for.
	joined   []string
	queue    []outItem // what the flusher sends next, in order
	queued   int       // frames in queue (a join's replay counts each message)
	writing  time.Time // when the write in progress began; zero when none
	flushing bool
	closed   bool // nothing more is queued; the close frame comes next
	torn     bool // the connection is gone
	code     int
	reason   string

	// Flusher side: touched only by the one flusher at a time.
	rooms     []*roomState // as joined is, but the flusher's
	closeRcv  bool         // the client sent its close frame
	closeSent bool         // our close frame is written

	tornDown sync.Once
}

// outItem is one thing for the flusher: a frame, a room event, the start
// of a join, the end of its replay, or a leave.
type outItem struct {
	frame []byte
	ctrl  ws.OpCode    // a control frame (pong) when set, with frame as payload
	evs   []*hub.Event // room events, in order
	begin string       // room whose join starts: hold its events until sync
	sync  *syncItem
	left  string // room left; notify sends the client a `left` frame
	quiet bool
}

type syncItem struct {
	room   string
	joined []byte
	page   store.Page
}

// frames is how many frames it turns into, about: what the slow-consumer
// bound counts, so a join's replay of thousands of messages weighs as many.
func (it *outItem) frames() int {
	switch {
	case it.evs != nil:
		return len(it.evs)
	case it.sync != nil:
		return len(it.sync.page.Messages) + 2 // joined, messages, synced
	}
	return 1
}

// roomState is the flusher's view of one joined room.
type roomState struct {
	name    string
	syncing bool
	pending []*hub.Event // live events that came during the replay
	// seen is what the client holds: every message of the room up to seen,
	// origin by origin. Live messages at or below it are dropped as repeats.
	seen proto.Vector
	// ahead is set while seen holds more than this node's room vector, as
	// after a failover from a node that was further along; frames then carry
	// a cursor made for this session instead of the shared one.
	ahead bool
}

func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// start begins serving the session: reads are driven by the poller, or by
// a goroutine when the connection cannot be polled.
func (s *session) start(buffered bool) {
	// Frames that came with the handshake are read first: the socket may
	// have nothing more to say, so the poller would not wake for them.
	s.readMu.Lock()
	defer s.readMu.Unlock()
	for buffered && s.ws.buffered() {
		s.ws.conn.SetReadDeadline(time.Now().Add(frameTimeout))
		if !s.readOne() {
			return
		}
	}
	s.ws.conn.SetReadDeadline(time.Time{})
	s.ws.release()
	if s.srv.poller == nil {
		go s.readLoop() // waits for readMu until start returns
		return
	}
	d, err := s.srv.poller.Add(s.ws.conn, s.onReadable)
	if err != nil {
		go s.readLoop()
		return
	}
	s.mu.Lock()
	s.desc = d
	torn := s.torn
	s.mu.Unlock()
	if torn {
		d.Remove()
	}
}

// onReadable reads every frame the client has sent, then waits for the
// poller again.
func (s *session) onReadable() {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	for {
		s.ws.conn.SetReadDeadline(time.Now().Add(frameTimeout))
		if !s.readOne() {
			return
		}
		if !s.ws.buffered() {
			break
		}
	}
	s.ws.conn.SetReadDeadline(time.Time{})
	s.ws.release()
	s.mu.Lock()
	desc, torn := s.desc, s.torn
	s.mu.Unlock()
	if !torn && desc.Resume() != nil {
		s.teardown()
	}
}

// readLoop serves a connection the poller cannot watch.
func (s *session) readLoop() {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	for s.readOne() {
		if !s.ws.buffered() {
			s.ws.release()
		}
	}
}

// readOne reads and handles one frame; false means the session is over.
func (s *session) readOne() bool {
	f, err := s.ws.readFrame(s.srv.cfg.ReadLimit - int64(len(s.fragments)))
	if err != nil {
		s.readFailed(err)
		return false
	}
	switch f.op {
	case ws.OpPing:
		if s.allowFrame("", false) {
			s.enqueue(outItem{ctrl: ws.OpPong, frame: f.payload})
		}
	case ws.OpPong:
	case ws.OpClose:
		s.clientClosed(closeAnswer(f.payload))
		return false
	case ws.OpBinary:
		if s.allowFrame("", true) {
			s.sendError("", proto.Errorf(proto.CodeBadRequest, "frames must be text (JSON), not binary"))
		}
	case ws.OpText, ws.OpContinuation:
		if s.isClosed() {
			return true // closing: only the client's close frame matters
		}
		if f.op == ws.OpContinuation && s.fragments == nil || f.op == ws.OpText && s.fragments != nil {
			s.readFailed(errProtocol("bad fragment sequence"))
			return false
		}
		if !f.fin {
			s.fragments = append(s.fragments[:len(s.fragments):len(s.fragments)], f.payload...)
			return true
		}
		data := f.payload
		if s.fragments != nil {
			data, s.fragments = append(s.fragments, f.payload...), nil
		}
		s.handleText(data)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.torn
}

func (s *session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *session) readFailed(err error) {
	var perr errProtocol
	switch {
	case errors.Is(err, errFrameTooLarge):
		s.srv.metrics.errors.WithLabelValues(proto.CodeTooLarge).Inc()
		s.close(proto.CloseTooLarge, "frame over the read limit")
	case errors.As(err, &perr):
		s.close(1002, perr.Error())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		s.teardown()
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.close(proto.ClosePolicy, "frame not finished in time")
			return
		}
		s.teardown()
	}
}

// handleText handles one text message of the protocol.
func (s *session) handleText(data []byte) {
	s.srv.metrics.framesIn.Inc()
	in, perr := proto.DecodeInbound(data)
	if (perr != nil || in.Type != proto.TypeSend) && !s.allowFrame(in.Ref, true) {
		return
	}
	switch {
	case perr != nil:
		s.sendError(in.Ref, perr)
	case !s.greeted.Load() && in.Type != proto.TypeHello:
		s.sendError(in.Ref, proto.Errorf(proto.CodeHelloRequired, "say hello first"))
	case !s.greeted.Load():
		s.hello(in)
	default:
		s.handle(in)
	}
}

// hello admits the client: with auth on by its token (the token names it;
// a missing or bad token closes with 1008, an expired one with 4001 so the
// client fetches a new one), else by the name it says.
func (s *session) hello(in proto.Inbound) {
	w := proto.Welcome{Type: "welcome", Node: s.srv.opts.NodeID, Session: s.id, Name: in.Name, Nodes: s.srv.members(), Engine: s.srv.cfg.Kind}
	if s.srv.opts.Tokens != nil {
		id, perr := s.verify(in.Token)
		if perr != nil {
			s.sendError(in.Ref, perr)
			code := proto.ClosePolicy
			switch perr.Code {
			case proto.CodeTokenExpired:
				code = proto.CloseTokenExpired
			case proto.CodeUnavailable:
				code = proto.CloseGoingAway // try again, or on another node
			}
			s.closeAfterQueued(code, perr.Code)
			return
		}
		s.ident = id
		w.Name, w.User, w.Expires = id.Name, id.User, proto.FormatTime(id.Expires.UnixMicro())
		s.srv.watchToken(s, id.Expires)
	} else if perr := s.srv.reservedName(in.Name); perr != nil {
		// With auth off anyone may take any name but the reserved ones;
		// with auth on the site that signs the token names its users.
		s.sendError(in.Ref, perr)
		return
	}
	s.name, s.user = w.Name, w.User
	s.greeted.Store(true)
	s.srv.greeted(s)
	s.send(proto.Encode(w))
}

// verify checks a token of a hello or refresh: a user chatr can show.
func (s *session) verify(token string) (*Identity, *proto.Error) {
	if token == "" {
		return nil, proto.Errorf(proto.CodeUnauthorized, "sign-in required: this node takes a token in hello")
	}
	id, err := s.srv.opts.Tokens.Verify(token)
	if err != nil {
		return nil, tokenError(err)
	}
	name, perr := proto.CleanName(id.Name)
	if perr != nil {
		return nil, proto.Errorf(proto.CodeUnauthorized, "the token's name cannot be shown: %s", perr.Message)
	}
	id.Name = name
	return &id, nil
}

// refresh moves the session onto a new token of the same user, before or
// after the old one expired (until the session is closed for it).
func (s *session) refresh(in proto.Inbound) {
	if s.ident == nil {
		s.sendError(in.Ref, proto.Errorf(proto.CodeBadRequest, "this node takes no tokens: nothing to refresh"))
		return
	}
	id, perr := s.verify(in.Token)
	switch {
	case perr != nil:
		s.sendError(in.Ref, perr)
		return
	case id.User != s.ident.User:
		s.sendError(in.Ref, proto.Errorf(proto.CodeUnauthorized, "a refresh cannot change who you are (%s)", s.ident.User))
		return
	}
	s.ident = id
	s.srv.watchToken(s, id.Expires)
	// Rooms the new token does not allow are left.
	for _, room := range s.joinedList() {
		if !id.canJoin(room) {
			s.leave(room, false)
		}
	}
	s.send(proto.Encode(proto.Refreshed{Type: "refreshed", Ref: in.Ref, Expires: proto.FormatTime(id.Expires.UnixMicro())}))
}

// allowFrame takes a frame from the session's --frame-rate budget. Over
// it, the frame is dropped, answered rate_limited when answer is set, and
// maxRateBreaches of them in a row close the session with 1008.
func (s *session) allowFrame(ref string, answer bool) bool {
	if s.frames == nil {
		s.frames = rate.NewLimiter(rate.Limit(s.srv.cfg.FrameRate), s.srv.cfg.FrameBurst)
	}
	if s.frames.Allow() {
		s.breaches = 0
		return true
	}
	s.overLimit(limitFrameRate, ref, answer, proto.Errorf(proto.CodeRateLimited,
		"over %v frames per second besides messages; slow down", s.srv.cfg.FrameRate))
	return false
}

// overLimit counts a frame refused by the rate limit named limit, answers
// it with e when answer is set, and closes the session with 1008 once
// maxRateBreaches came in a row.
func (s *session) overLimit(limit, ref string, answer bool, e *proto.Error) {
	s.breaches++
	s.srv.metrics.limitRefused.WithLabelValues(limit).Inc()
	if s.breaches >= maxRateBreaches {
		s.close(proto.ClosePolicy, "too many frames over the rate limit")
		return
	}
	if answer {
		s.sendError(ref, e)
	}
}

func (s *session) handle(in proto.Inbound) {
	switch in.Type {
	case proto.TypeHello:
		s.sendError(in.Ref, proto.Errorf(proto.CodeBadRequest, "hello was already said"))
	case proto.TypePing:
		s.send(proto.Pong)
	case proto.TypeJoin:
		s.join(in)
	case proto.TypeLeave:
		if !s.isJoined(in.Room) {
			s.sendError(in.Ref, proto.Errorf(proto.CodeNotJoined, "room %q is not joined", in.Room))
			return
		}
		s.leave(in.Room, false)
	case proto.TypeSend:
		s.post(in)
	case proto.TypeRefresh:
		s.refresh(in)
	}
}

func (s *session) isJoined(room string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.joined, room)
}

func (s *session) joinedRooms() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.joined)
}

// joinedList is the rooms joined.
func (s *session) joinedList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.joined)
}

func (s *session) setJoined(room string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.joined, room)
	switch {
	case on && i < 0:
		s.joined = append(s.joined, room)
	case !on && i >= 0:
		s.joined = slices.Delete(s.joined, i, i+1)
	}
}

// room is the flusher's state of a joined room, or nil.
func (s *session) room(name string) *roomState {
	if i := s.roomIndex(name); i >= 0 {
		return s.rooms[i]
	}
	return nil
}

func (s *session) roomIndex(name string) int {
	return slices.IndexFunc(s.rooms, func(rs *roomState) bool { return rs.name == name })
}

func (s *session) leave(room string, quiet bool) {
	s.setJoined(room, false)
	s.srv.hub.Leave(room, s)
	s.enqueue(outItem{left: room, quiet: quiet})
}

func (s *session) join(in proto.Inbound) {
	var cursor proto.Vector
	if in.Since != "" {
		var perr *proto.Error
		if cursor, perr = proto.DecodeCursor(s.srv.hub.Scope(in.Room), in.Since); perr != nil {
			s.sendError(in.Ref, perr)
			return
		}
	}
	if !s.ident.canJoin(in.Room) {
		s.sendError(in.Ref, proto.Errorf(proto.CodeForbidden, "your token does not let you into room %q", in.Room))
		return
	}
	if perr := s.srv.lookalikeName(in.Room, s.name); perr != nil {
		s.sendError(in.Ref, perr)
		return
	}
	if !s.isJoined(in.Room) && s.joinedRooms() >= s.srv.cfg.MaxRoomsPerSession {
		s.srv.metrics.limitRefused.WithLabelValues(limitRoomsPerSess).Inc()
		s.sendError(in.Ref, proto.Errorf(proto.CodeTooManyRooms, "a session may be in %d rooms at once; leave one first", s.srv.cfg.MaxRoomsPerSession))
		return
	}
	n := proto.DefaultHistory // what the replay reads at most
	if in.History != nil {
		n = *in.History
	}
	if in.Since != "" {
		n = s.srv.cfg.ReplayMax
	}
	// The replay budget: a join reads no more than the session may be
	// sent. A resume reads what is left of it (and is refused below if
	// that cuts it short, while a full bucket would not); a history must
	// fit whole.
	now := time.Now()
	if s.replayed == nil {
		// It holds a full resume, or the longest history.
		s.replayed = newBudget(s.srv.cfg.ReplayRate, float64(max(s.srv.cfg.ReplayMax, proto.MaxHistory)), now)
		s.replayedBytes = newBudget(s.srv.cfg.ReplayBytesRate, float64(s.srv.cfg.ReplayBytesBurst), now)
	}
	left := int(s.replayed.available(now))
	switch {
	case s.replayedBytes.available(now) <= 0 && n > 0:
		s.replayRefused(in, limitReplayBytes)
		return
	case in.Since != "" && left < 1, in.Since == "" && left < n:
		s.replayRefused(in, limitReplayRate)
		return
	}
	n = min(n, left)
	if perr, _ := s.srv.admitNewRoom(in.Room, s.key); perr != nil {
		s.sendError(in.Ref, perr)
		return
	}
	if s.isJoined(in.Room) {
		s.leave(in.Room, true) // a second join of a room starts it over
	}
	s.setJoined(in.Room, true)
	// Events of the room are held from here until the replay is sent, so
	// none is lost between the store read and the live stream; repeats are
	// dropped by the room's seen vector.
	if !s.enqueue(outItem{begin: in.Room}) {
		return
	}
	people := s.srv.hub.Join(in.Room, s, s.name, s.user)
	var page store.Page
	var err error
	if in.Since != "" {
		page, err = s.srv.store.Since(s.srv.ctx, in.Room, cursor, n, true)
		page.Vector.Merge(cursor)
	} else {
		page, err = s.srv.store.Latest(s.srv.ctx, in.Room, n)
	}
	if err != nil {
		if s.srv.ctx.Err() == nil {
			s.srv.logLimited(slog.LevelError, "join replay failed", "session", s.id, "ip", s.ip, "room", in.Room, "err", err)
		}
		s.sendError(in.Ref, s.srv.readError(err, "could not read the room's history"))
		s.leave(in.Room, true)
		return
	}
	s.replayed.take(float64(len(page.Messages)), now)
	s.replayedBytes.take(float64(replayBytes(page)), now)
	if in.Since != "" && page.Truncated && n < s.srv.cfg.ReplayMax {
		// Cut short by the budget, not by --replay-max: no gap for the
		// client, which joins again once the budget has refilled.
		s.leave(in.Room, true)
		s.replayRefused(in, limitReplayRate)
		return
	}
	s.enqueue(outItem{sync: &syncItem{room: in.Room, page: page,
		joined: proto.EncodeJoined(in.Room, people)}})
}

// replayRefused answers a join over the replay budget named limit.
func (s *session) replayRefused(in proto.Inbound, limit string) {
	s.srv.metrics.limitRefused.WithLabelValues(limit).Inc()
	s.sendError(in.Ref, proto.Errorf(proto.CodeRateLimited,
		"joins replayed more than %v messages or %d bytes a second; join %s again in a few seconds",
		s.srv.cfg.ReplayRate, int64(s.srv.cfg.ReplayBytesRate), in.Room))
}

// replayOverhead is about what a message frame adds to its sender and
// text: type, room, id, created, node and cursor.
const replayOverhead = 200

// replayBytes is about how many bytes the replay of page sends.
func replayBytes(page store.Page) int {
	n := 0
	for i := range page.Messages {
		m := &page.Messages[i]
		n += len(m.Sender) + len(m.Text) + len(m.Room) + replayOverhead
	}
	return n
}

func (s *session) post(in proto.Inbound) {
	if !s.isJoined(in.Room) {
		s.sendError(in.Ref, proto.Errorf(proto.CodeNotJoined, "join room %q before sending to it", in.Room))
		return
	}
	if !s.ident.canSend(in.Room) {
		s.sendError(in.Ref, proto.Errorf(proto.CodeForbidden, "your token lets you read room %q, not send to it", in.Room))
		return
	}
	if s.limiter == nil {
		s.limiter = rate.NewLimiter(rate.Limit(s.srv.cfg.SendRate), s.srv.cfg.SendBurst)
	}
	if !s.limiter.Allow() {
		s.srv.metrics.rateLimited.Inc()
		s.overLimit(limitSendRate, in.Ref, true, proto.Errorf(proto.CodeRateLimited, "over %v messages per second; slow down", s.srv.cfg.SendRate))
		return
	}
	s.breaches = 0
	ref, room := in.Ref, in.Room
	if !s.srv.admitSend() {
		s.sendError(ref, s.srv.shuttingDown())
		return
	}
	defer s.srv.sendGate.RUnlock()
	text := in.Text
	err := s.srv.post.Post(s.srv.ctx, proto.Message{Room: room, Sender: s.name, User: s.user, Text: text, Ref: ref}, func(m proto.Message, err error) {
		if err != nil {
			if s.srv.ctx.Err() == nil {
				s.srv.logLimited(slog.LevelError, "send failed", "session", s.id, "ip", s.ip, "room", room, "err", err)
			}
			s.sendError(ref, s.srv.postError(err))
			return
		}
		if m.Text != text {
			s.sendError(ref, refReused(ref, m))
			return
		}
		s.send(proto.Encode(proto.Ack{Type: "ack", Ref: ref, ID: m.ID(), Created: proto.FormatTime(m.Created)}))
	})
	if err != nil {
		s.sendError(ref, s.srv.postError(err))
	}
}

// Deliver queues room events for the client. It never blocks.
func (s *session) Deliver(evs []*hub.Event) { s.enqueue(outItem{evs: evs}) }

// send queues a frame for the client.
func (s *session) send(frame []byte) bool { return s.enqueue(outItem{frame: frame}) }

func (s *session) sendError(ref string, e *proto.Error) {
	s.srv.metrics.errors.WithLabelValues(e.Code).Inc()
	if e.Code == proto.CodeBadRequest || e.Code == proto.CodeTooLarge {
		s.srv.logLimited(slog.LevelDebug, "bad frame", "session", s.id, "ip", s.ip, "err", e.Message)
	}
	s.send(proto.EncodeError(ref, e))
}

// enqueue adds an item for the flusher, starting one if none runs.
//
// A client is too slow when --send-queue frames wait for it while its
// socket has taken nothing for stallTimeout, or when 64 times that many
// wait at all: it is closed with 4000 and resumes from its cursor, and
// nobody else waits for it. A burst to a client that reads is not cut off.
func (s *session) enqueue(it outItem) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	if limit := s.srv.cfg.SendQueue; s.queued >= limit &&
		(s.queued >= 64*limit || !s.writing.IsZero() && time.Since(s.writing) > stallTimeout) {
		s.mu.Unlock()
		s.slow()
		return false
	}
	s.queue = append(s.queue, it)
	n := it.frames()
	s.queued += n
	s.srv.queuedFrames.Add(int64(n))
	start := !s.flushing
	s.flushing = true
	s.mu.Unlock()
	if start {
		s.startFlush()
	}
	return true
}

// startFlush gives the session to a flusher: to the pool when its writes
// need not wait (see flushQueue), else to a goroutine of its own.
func (s *session) startFlush() {
	if s.ws.raw != nil && s.srv.cfg.WriteDelay == 0 {
		flushers.push(s)
		return
	}
	go s.flush()
}

// takeQueue empties the queue and returns what it held. s.mu is held.
func (s *session) takeQueue() []outItem {
	items := s.queue
	s.srv.queuedFrames.Add(-int64(s.queued))
	s.queue, s.queued = nil, 0
	return items
}

func (s *session) slow() {
	s.srv.metrics.slowClosed.Inc()
	s.close(proto.CloseSlowClient, "too slow: resume with your last cursor")
}

// close ends the session with code: what is queued is dropped, the close
// frame is sent, and the connection is dropped once the client answers or
// after closeTimeout. The first call wins.
func (s *session) close(code int, reason string) { s.closeWith(code, reason, false) }

// closeAfterQueued is close that first writes what is queued (the error
// frame that says why, say).
func (s *session) closeAfterQueued(code int, reason string) { s.closeWith(code, reason, true) }

func (s *session) closeWith(code int, reason string, keepQueue bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed, s.code, s.reason = true, code, reason
	if !keepQueue {
		s.takeQueue()
	}
	start := !s.flushing
	s.flushing = true
	s.mu.Unlock()
	if start {
		s.startFlush()
	}
}

// closeAnswer is the code that answers a client's close frame body: its
// own code when a client may send it (RFC 6455 7.4.1 and 7.4.2:
// 1000-1003, 1007-1011, 3000-4999), 1000 for an empty body, 1002 for
// anything else (a one-byte body, a reserved code, 1005, 1006 and 1015,
// which are never sent) and 1007 for a reason that is not UTF-8.
func closeAnswer(payload []byte) int {
	if len(payload) == 0 {
		return int(ws.StatusNormalClosure)
	}
	if len(payload) < 2 {
		return int(ws.StatusProtocolError)
	}
	code, reason := ws.ParseCloseFrameData(payload)
	switch {
	case 1000 <= code && code <= 1003, 1007 <= code && code <= 1011, 3000 <= code && code <= 4999:
	default:
		return int(ws.StatusProtocolError)
	}
	if !utf8.ValidString(reason) {
		return int(ws.StatusInvalidFramePayloadData)
	}
	return int(code)
}

// clientClosed handles the client's close frame, answered with code (see
// closeAnswer): the answer to ours ends the connection at once; a close of
// its own is answered.
func (s *session) clientClosed(code int) {
	s.mu.Lock()
	s.closeRcv = true
	answer := s.closed && s.closeSent
	s.mu.Unlock()
	if answer {
		s.teardown()
		return
	}
	s.close(code, "")
}

// flush writes queued items until the queue is empty, in one vectored write
// per batch, on a goroutine of its own whose writes may wait; after a
// close, it writes the close frame.
func (s *session) flush() {
	if d := s.srv.cfg.WriteDelay; d > 0 {
		// Let more frames gather, so one write carries them all: fewer
		// system calls per delivery under load, for a little latency.
		time.Sleep(d)
	}
	for s.flushBatch(false) {
	}
}

// flushPooled is a turn of a flusher of the pool: one batch, written as
// far as the socket takes it at once. A session with more to send goes to
// the back of the queue, so a busy one takes no more turns than the rest;
// one whose socket is full goes on in a goroutine of its own.
func (s *session) flushPooled() {
	if s.flushBatch(true) {
		flushers.push(s)
	}
}

// flushBatch takes what is queued and writes it; it returns whether there
// is more to flush. When it returns false the session's flush is over, or
// handed to a goroutine of its own.
func (s *session) flushBatch(pooled bool) bool {
	s.mu.Lock()
	items := s.takeQueue()
	if len(items) == 0 {
		closed, code, reason, answered := s.closed, s.code, s.reason, s.closeRcv
		if !closed {
			s.flushing = false
			s.mu.Unlock()
			return false
		}
		s.mu.Unlock()
		if pooled {
			go s.flush() // the close handshake waits
			return false
		}
		s.ws.writeFrames([]outFrame{{op: ws.OpClose, payload: closePayload(code, reason)}}, time.Second)
		s.mu.Lock()
		s.closeSent = true
		answered = answered || s.closeRcv
		s.mu.Unlock()
		if answered {
			s.teardown()
		} else {
			time.AfterFunc(closeTimeout, s.teardown)
		}
		return false
	}
	s.mu.Unlock()
	fp := framesPool.Get().(*[]outFrame)
	frames := (*fp)[:0]
	for _, it := range items {
		frames = s.process(frames, it)
	}
	s.srv.metrics.framesOut.Add(float64(len(frames)))
	s.srv.metrics.writes.Inc()
	var err error
	if pooled {
		var p *pendingWrite
		if p, err = s.ws.tryWriteFrames(frames); p != nil {
			s.setWriting(time.Now())
			go s.finishFlush(p)
		}
		s.putFrames(fp, frames)
		if err == nil && p != nil {
			return false
		}
	} else {
		s.setWriting(time.Now())
		err = s.ws.writeFrames(frames, writeTimeout)
		s.setWriting(time.Time{})
		s.putFrames(fp, frames)
	}
	if err != nil {
		s.writeFailed()
		return false
	}
	return s.more()
}

// finishFlush writes the rest of a write the socket did not take at once,
// then goes on flushing on this goroutine.
func (s *session) finishFlush(p *pendingWrite) {
	err := s.ws.finishWrite(p, writeTimeout)
	s.setWriting(time.Time{})
	if err != nil {
		s.writeFailed()
		return
	}
	for more := s.more(); more; more = s.flushBatch(false) {
	}
}

// more reports whether something waits to be flushed (the close frame
// counts); if not, the flush is over.
func (s *session) more() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 || s.closed {
		return true
	}
	s.flushing = false
	return false
}

// setWriting records when the write under way began (zero: none), for the
// slow-consumer rule of enqueue.
func (s *session) setWriting(t time.Time) {
	s.mu.Lock()
	s.writing = t
	s.mu.Unlock()
}

func (s *session) writeFailed() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.teardown()
}

var framesPool = sync.Pool{New: func() any { return new([]outFrame) }}

// putFrames gives a batch's frames back, without their payloads.
func (s *session) putFrames(fp *[]outFrame, frames []outFrame) {
	clear(frames)
	if cap(frames) > 4096 {
		frames = nil // a replay's is not kept
	}
	*fp = frames[:0]
	framesPool.Put(fp)
}

// process turns one queued item into the frames to send.
func (s *session) process(frames []outFrame, it outItem) []outFrame {
	text := func(b []byte) { frames = append(frames, outFrame{op: ws.OpText, payload: b}) }
	switch {
	case it.begin != "":
		rs := &roomState{name: it.begin, syncing: true}
		if i := s.roomIndex(it.begin); i >= 0 {
			s.rooms[i] = rs
		} else {
			s.rooms = append(s.rooms, rs)
		}
	case it.left != "":
		if i := s.roomIndex(it.left); i >= 0 {
			s.rooms = slices.Delete(s.rooms, i, i+1)
		}
		if !it.quiet {
			text(proto.Encode(proto.Left{Type: "left", Room: it.left}))
		}
	case it.sync != nil:
		frames = s.processSync(frames, it.sync)
	case it.evs != nil:
		rs := s.room(it.evs[0].Room)
		switch {
		case rs == nil: // left already
		case rs.syncing:
			if len(rs.pending) >= s.srv.cfg.ReplayMax+s.srv.cfg.SendQueue {
				s.slow()
				return frames
			}
			rs.pending = append(rs.pending, it.evs...)
		default:
			for _, ev := range it.evs {
				frames = s.processEvent(frames, rs, ev)
			}
		}
	case it.ctrl != 0:
		frames = append(frames, outFrame{op: it.ctrl, payload: it.frame})
	default:
		text(it.frame)
	}
	return frames
}

func (s *session) processSync(frames []outFrame, sy *syncItem) []outFrame {
	rs := s.room(sy.room)
	if rs == nil {
		return frames
	}
	frames = append(frames, outFrame{op: ws.OpText, payload: sy.joined})
	scope := s.srv.hub.Scope(sy.room)
	// Each replayed message carries the cursor of a client that has it and
	// everything before it: the page's vector with every origin in the page
	// set back to just before its first message there, then raised message
	// by message. (Sequences are per origin, not per room, so seq-1 is the
	// highest value that still lacks that message.)
	seen := sy.page.Vector.Clone()
	first := map[string]bool{}
	for _, m := range sy.page.Messages {
		if !first[m.Origin] {
			first[m.Origin] = true
			seen[m.Origin] = m.Seq - 1
		}
	}
	for i := range sy.page.Messages {
		m := &sy.page.Messages[i]
		seen[m.Origin] = m.Seq
		frames = append(frames, outFrame{op: ws.OpText, payload: m.Frame("message", scope, seen)})
	}
	for _, id := range sy.page.Hidden {
		frames = append(frames, outFrame{op: ws.OpText, payload: proto.EncodeHidden(sy.room, id)})
	}
	rs.syncing = false
	rs.seen = sy.page.Vector // the page's own, changed by no one
	rs.ahead = true          // until a live message shows the node's vector covers it
	frames = append(frames, outFrame{op: ws.OpText, payload: proto.Encode(proto.Synced{Type: "synced", Room: sy.room,
		Cursor: proto.EncodeCursor(scope, rs.seen), Truncated: sy.page.Truncated})})
	pending := rs.pending
	rs.pending = nil
	for _, ev := range pending {
		frames = s.processEvent(frames, rs, ev)
	}
	return frames
}

func (s *session) processEvent(frames []outFrame, rs *roomState, ev *hub.Event) []outFrame {
	if ev.Msg == nil {
		return append(frames, outFrame{op: ws.OpText, payload: ev.Frame})
	}
	held := ev.Msg.Seq <= rs.seen[ev.Msg.Origin] // from the replay, or from another node
	switch {
	case ev.Msg.Hidden:
		if held {
			frames = append(frames, outFrame{op: ws.OpText, payload: ev.Frame})
		}
		return frames
	case held:
		// It hid a copy the client may hold too (shown to it on a node that
		// did not know this one yet): the message frame, which says so,
		// does not go, so the notice does.
		if ev.Notice != nil && covers(rs.seen, ev.Msg.Replaces) {
			frames = append(frames, outFrame{op: ws.OpText, payload: ev.Notice})
		}
		return frames
	}
	if !rs.ahead {
		rs.seen = ev.Vector // shared and never changed: no copy
		return append(frames, outFrame{op: ws.OpText, payload: ev.Frame})
	}
	v := rs.seen.Clone()
	v[ev.Msg.Origin] = ev.Msg.Seq
	v.Merge(ev.Vector)
	if ev.Vector.Covers(v) {
		rs.ahead = false
		rs.seen = ev.Vector
		return append(frames, outFrame{op: ws.OpText, payload: ev.Frame})
	}
	rs.seen = v
	return append(frames, outFrame{op: ws.OpText,
		payload: ev.Msg.Frame("message", s.srv.hub.Scope(ev.Room), v)})
}

// covers reports whether v covers the message id.
func covers(v proto.Vector, id string) bool {
	origin, seq, err := proto.ParseMessageID(id)
	return err == nil && seq <= v[origin]
}

// teardown drops the connection and everything the session holds. It runs
// once, from whichever side noticed the end.
func (s *session) teardown() {
	s.tornDown.Do(func() {
		s.mu.Lock()
		s.closed, s.torn = true, true
		joined, desc := s.joined, s.desc
		s.joined = nil
		s.takeQueue()
		s.mu.Unlock()
		s.srv.greeted(s)
		if desc != nil {
			desc.Remove()
		}
		s.ws.conn.Close()
		for _, room := range joined {
			s.srv.hub.Leave(room, s)
		}
		s.srv.ended(s)
	})
}
