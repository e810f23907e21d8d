package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"chatr/internal/hub"
	"chatr/internal/proto"
	"chatr/internal/store"
)

// helloTimeout is how long a new connection may take to say hello.
const helloTimeout = 10 * time.Second

// writeTimeout bounds one write to a client; a client that does not read
// for that long is cut off.
const writeTimeout = 10 * time.Second

// maxRateBreaches is how many sends over the rate limit, in a row, close the
// session as abusive.
const maxRateBreaches = 50

// session is one WebSocket client. The reader goroutine handles the
// client's frames; the writer goroutine owns everything sent to it, in
// queue order, including the per-room replay/live merge.
type session struct {
	srv    *Server
	conn   *websocket.Conn
	id     string
	name   string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	// queue holds what the writer sends, in order. Deliver never blocks on
	// it: a full queue means the client is too slow and is closed with 4000.
	queue     chan outItem
	closing   chan struct{} // closed when the session is to end
	closeOnce sync.Once
	code      websocket.StatusCode
	greeted   atomic.Bool // hello was said

	// joined is owned by the reader goroutine.
	joined   map[string]bool
	limiter  *rate.Limiter
	breaches int
}

// outItem is one thing for the writer: a raw frame, a room event, the start
// of a join, the end of its replay, or a leave.
type outItem struct {
	frame []byte
	ev    *hub.Event
	begin string // room whose join starts: buffer its events until sync
	sync  *syncItem
	left  string
}

type syncItem struct {
	room      string
	joined    []byte
	page      store.Page
	truncated bool
}

// roomState is the writer's view of one joined room.
type roomState struct {
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

// Deliver queues a room event for the client. It never blocks.
func (s *session) Deliver(ev *hub.Event) {
	s.enqueue(outItem{ev: ev})
}

func (s *session) enqueue(it outItem) bool {
	select {
	case s.queue <- it:
		return true
	default:
		s.srv.metrics.slowClosed.Inc()
		s.close(proto.CloseSlowClient, "too slow: resume with your last cursor")
		return false
	}
}

// send queues a frame for the client.
func (s *session) send(frame []byte) bool { return s.enqueue(outItem{frame: frame}) }

func (s *session) sendError(ref string, e *proto.Error) {
	s.srv.metrics.errors.WithLabelValues(e.Code).Inc()
	s.send(proto.EncodeError(ref, e))
}

// close ends the session with code; the first call wins. The close
// handshake runs in the background, since a slow client may never answer.
func (s *session) close(code websocket.StatusCode, reason string) {
	s.closeOnce.Do(func() {
		s.code = code
		close(s.closing)
		go func() {
			s.conn.Close(code, reason)
			s.cancel()
		}()
	})
}

// run serves the session until the client goes or the session is closed.
func (s *session) run() {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writer()
	}()
	helloTimer := time.AfterFunc(helloTimeout, func() {
		if !s.greeted.Load() {
			s.close(proto.ClosePolicy, "no hello within 10s")
		}
	})
	err := s.reader()
	helloTimer.Stop()
	if isReadLimit(err) {
		s.srv.metrics.errors.WithLabelValues(proto.CodeTooLarge).Inc()
	}
	s.close(websocket.StatusNormalClosure, "")
	<-writerDone
	for room := range s.joined {
		s.srv.hub.Leave(room, s)
	}
	<-s.ctx.Done()
}

func (s *session) reader() error {
	for {
		typ, data, err := s.conn.Read(s.ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			s.sendError("", proto.Errorf(proto.CodeBadRequest, "frames must be text (JSON), not binary"))
			continue
		}
		s.srv.metrics.framesIn.Inc()
		in, perr := proto.DecodeInbound(data)
		switch {
		case perr != nil:
			s.sendError(in.Ref, perr)
		case !s.greeted.Load() && in.Type != proto.TypeHello:
			s.sendError(in.Ref, proto.Errorf(proto.CodeHelloRequired, "say hello first"))
		case !s.greeted.Load():
			s.name = in.Name
			s.log = s.log.With("name", s.name)
			s.greeted.Store(true)
			s.send(proto.Encode(proto.Welcome{Type: "welcome", Node: s.srv.opts.NodeID, Session: s.id,
				Name: s.name, Nodes: s.srv.members()}))
		default:
			s.handle(in)
		}
		select {
		case <-s.closing:
			return nil
		default:
		}
	}
}

func isReadLimit(err error) bool {
	return err != nil && (errors.Is(err, websocket.ErrMessageTooBig) || websocket.CloseStatus(err) == websocket.StatusMessageTooBig)
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
		if !s.joined[in.Room] {
			s.sendError(in.Ref, proto.Errorf(proto.CodeNotJoined, "room %q is not joined", in.Room))
			return
		}
		delete(s.joined, in.Room)
		s.srv.hub.Leave(in.Room, s)
		s.enqueue(outItem{left: in.Room})
	case proto.TypeSend:
		s.post(in)
	}
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
	if s.joined[in.Room] {
		// A second join of a room is a resync: leave and join again.
		s.srv.hub.Leave(in.Room, s)
		s.enqueue(outItem{left: in.Room, frame: nil})
	}
	s.joined[in.Room] = true
	if !s.enqueue(outItem{begin: in.Room}) {
		return
	}
	people := s.srv.hub.Join(in.Room, s, s.name)
	var page store.Page
	var err error
	if in.Since != "" {
		page, err = s.srv.store.Since(s.ctx, in.Room, cursor, s.srv.cfg.ReplayMax, true)
		page.Vector.Merge(cursor)
	} else {
		n := proto.DefaultHistory
		if in.History != nil {
			n = *in.History
		}
		page, err = s.srv.store.Latest(s.ctx, in.Room, n)
	}
	if err != nil {
		s.log.Error("join replay failed", "room", in.Room, "err", err)
		s.sendError(in.Ref, proto.Errorf(proto.CodeInternal, "could not read the room's history"))
		delete(s.joined, in.Room)
		s.srv.hub.Leave(in.Room, s)
		s.enqueue(outItem{left: in.Room, frame: []byte{}})
		return
	}
	s.enqueue(outItem{sync: &syncItem{room: in.Room, page: page, truncated: page.Truncated,
		joined: proto.Encode(proto.Joined{Type: "joined", Room: in.Room, Presence: people})}})
}

func (s *session) post(in proto.Inbound) {
	if !s.joined[in.Room] {
		s.sendError(in.Ref, proto.Errorf(proto.CodeNotJoined, "join room %q before sending to it", in.Room))
		return
	}
	if !s.limiter.Allow() {
		s.breaches++
		s.srv.metrics.rateLimited.Inc()
		if s.breaches >= maxRateBreaches {
			s.close(proto.ClosePolicy, "too many messages over the rate limit")
			return
		}
		s.sendError(in.Ref, proto.Errorf(proto.CodeRateLimited, "over %v messages per second; slow down", s.srv.cfg.SendRate))
		return
	}
	s.breaches = 0
	ref := in.Ref
	err := s.srv.post.Post(s.ctx, proto.Message{Room: in.Room, Sender: s.name, Text: in.Text, Ref: ref}, func(m proto.Message, err error) {
		if err != nil {
			s.log.Error("send failed", "room", in.Room, "err", err)
			s.sendError(ref, postError(err))
			return
		}
		s.send(proto.Encode(proto.Ack{Type: "ack", Ref: ref, ID: m.ID(), Created: proto.FormatTime(m.Created)}))
	})
	if err != nil {
		s.sendError(ref, postError(err))
	}
}

// postError turns a failed post into what the client is told.
func postError(err error) *proto.Error {
	var perr *proto.Error
	if errors.As(err, &perr) {
		return perr
	}
	if errors.Is(err, store.ErrClosed) || errors.Is(err, context.Canceled) {
		return proto.Errorf(proto.CodeUnavailable, "the node is shutting down; send again on another node")
	}
	return proto.Errorf(proto.CodeInternal, "the message could not be stored; send it again")
}

// writer sends queued items to the client until the session closes.
func (s *session) writer() {
	rooms := map[string]*roomState{}
	for {
		select {
		case <-s.closing:
			return
		case it := <-s.queue:
			if err := s.write(rooms, it); err != nil {
				s.log.Debug("write failed", "err", err)
				s.close(websocket.StatusNormalClosure, "")
				s.cancel()
				return
			}
		}
	}
}

func (s *session) write(rooms map[string]*roomState, it outItem) error {
	switch {
	case it.begin != "":
		rooms[it.begin] = &roomState{syncing: true}
		return nil
	case it.left != "":
		delete(rooms, it.left)
		if it.frame == nil {
			return s.writeFrame(proto.Encode(proto.Left{Type: "left", Room: it.left}))
		}
		return nil
	case it.sync != nil:
		return s.writeSync(rooms, it.sync)
	case it.ev != nil:
		rs := rooms[it.ev.Room]
		if rs == nil {
			return nil // left already
		}
		if rs.syncing {
			if len(rs.pending) >= cap(s.queue) {
				s.srv.metrics.slowClosed.Inc()
				s.close(proto.CloseSlowClient, "too slow: resume with your last cursor")
				return nil
			}
			rs.pending = append(rs.pending, it.ev)
			return nil
		}
		return s.writeEvent(rs, it.ev)
	default:
		return s.writeFrame(it.frame)
	}
}

func (s *session) writeSync(rooms map[string]*roomState, sy *syncItem) error {
	rs := rooms[sy.room]
	if rs == nil {
		return nil
	}
	if err := s.writeFrame(sy.joined); err != nil {
		return err
	}
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
		if err := s.writeFrame(proto.Encode(m.JSON("message", proto.EncodeCursor(scope, seen)))); err != nil {
			return err
		}
	}
	rs.syncing = false
	rs.seen = sy.page.Vector.Clone()
	rs.ahead = true // until a live message shows the node's vector covers it
	if err := s.writeFrame(proto.Encode(proto.Synced{Type: "synced", Room: sy.room,
		Cursor: proto.EncodeCursor(scope, rs.seen), Truncated: sy.truncated})); err != nil {
		return err
	}
	pending := rs.pending
	rs.pending = nil
	for _, ev := range pending {
		if err := s.writeEvent(rs, ev); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) writeEvent(rs *roomState, ev *hub.Event) error {
	if ev.Msg == nil {
		return s.writeFrame(ev.Frame)
	}
	if ev.Msg.Seq <= rs.seen[ev.Msg.Origin] {
		return nil // the client has it from the replay
	}
	if !rs.ahead {
		rs.seen = ev.Vector // shared and never changed: no copy
		return s.writeFrame(ev.Frame)
	}
	v := rs.seen.Clone()
	v[ev.Msg.Origin] = ev.Msg.Seq
	v.Merge(ev.Vector)
	if ev.Vector.Covers(v) {
		rs.ahead = false
		rs.seen = ev.Vector
		return s.writeFrame(ev.Frame)
	}
	rs.seen = v
	return s.writeFrame(proto.Encode(ev.Msg.JSON("message", proto.EncodeCursor(s.srv.hub.Scope(ev.Room), v))))
}

func (s *session) writeFrame(frame []byte) error {
	ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
	defer cancel()
	s.srv.metrics.framesOut.Inc()
	return s.conn.Write(ctx, websocket.MessageText, frame)
}
