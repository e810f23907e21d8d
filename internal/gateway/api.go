package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"chatr/internal/proto"
	"chatr/internal/store"
)

// maxBodyBytes bounds an HTTP request body: a 4096-byte text, escaped, and
// a name fit with room to spare.
const maxBodyBytes = 32 << 10

func (s *Server) apiRoutes() {
	s.mux.HandleFunc("POST /chatr/api/rooms/{room}/messages", s.postMessage)
	s.mux.HandleFunc("GET /chatr/api/rooms/{room}/messages", s.readable(s.getMessages))
	s.mux.HandleFunc("GET /chatr/api/rooms", s.readable(s.getRooms))
	s.mux.HandleFunc("GET /chatr/api/cluster", s.readable(s.getCluster(false)))
}

// readable lets the pages of allowed origins (this node, the cluster's
// members, --allowed-origins) read a GET route from script: a client that
// failed over pages back through history on the node it is connected to.
func (s *Server) readable(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" && s.originAllowed(r) {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Add("Vary", "Origin")
		}
		h(w, r)
	}
}

type errorBody struct {
	Error *proto.Error `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(proto.Encode(v), '\n'))
}

func writeError(w http.ResponseWriter, status int, e *proto.Error) {
	writeJSON(w, status, errorBody{Error: e})
}

// statusOf maps an error code to its HTTP status.
func statusOf(e *proto.Error) int {
	switch e.Code {
	case proto.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case proto.CodeRateLimited, proto.CodeTooManyNewRooms:
		return http.StatusTooManyRequests
	case proto.CodeUnauthorized:
		return http.StatusUnauthorized
	case proto.CodeUnavailable:
		return http.StatusServiceUnavailable
	case proto.CodeInternal:
		return http.StatusInternalServerError
	case proto.CodeConflict:
		return http.StatusUnprocessableEntity
	case proto.CodeForbidden:
		return http.StatusForbidden
	case proto.CodeTokenExpired:
		return http.StatusUnauthorized
	default:
		return http.StatusBadRequest
	}
}

// PostBody is the body of POST /chatr/api/rooms/{room}/messages.
type PostBody struct {
	Sender string `json:"sender"`
	Text   string `json:"text"`
	// Ref is the idempotency key of the post, like a WebSocket send's ref;
	// the Idempotency-Key header may carry it instead.
	Ref string `json:"ref,omitempty"`

	user string // who posts, with auth on (postAs)
}

// postAs settles who a post is from. With auth off, the body's sender.
// With a user's token, that user, under the token's name (a sender in the
// body must be it). With an API key, a program: any sender, and the user
// id "key:<name of the key>".
func (s *Server) postAs(who *caller, room string, body *PostBody) (int, *proto.Error) {
	switch {
	case who == nil || who.Key != "":
		if body.Sender == "" {
			return http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "sender: name is empty")
		}
		if who != nil {
			body.user = "key:" + who.Key
			// Who posted as whom, by the key's name (never the key).
			s.logLimited(slog.LevelInfo, "post with an API key", "key", who.Key, "room", room, "sender", body.Sender)
		}
	case body.Sender != "" && body.Sender != who.ID.Name:
		return http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "sender %q is not your token's name %q: leave it out", body.Sender, who.ID.Name)
	case !who.ID.canSend(room):
		return http.StatusForbidden, proto.Errorf(proto.CodeForbidden, "your token does not let you send to room %q", room)
	default:
		name, perr := proto.CleanName(who.ID.Name)
		if perr != nil {
			return http.StatusUnauthorized, proto.Errorf(proto.CodeUnauthorized, "the token's name cannot be shown: %s", perr.Message)
		}
		body.Sender, body.user = name, who.ID.User
	}
	return 0, nil
}

// decodePost reads and checks a POST body. It is the HTTP twin of
// proto.DecodeInbound, and is fuzzed like it.
func decodePost(contentType string, body io.Reader) (PostBody, int, *proto.Error) {
	var p PostBody
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return p, http.StatusUnsupportedMediaType, proto.Errorf(proto.CodeBadRequest, "send the body as application/json")
	}
	data, err := io.ReadAll(io.LimitReader(body, maxBodyBytes+1))
	if err != nil {
		return p, http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "could not read the body: %v", err)
	}
	if len(data) > maxBodyBytes {
		return p, http.StatusRequestEntityTooLarge, proto.Errorf(proto.CodeTooLarge, "body is over %d bytes", maxBodyBytes)
	}
	// JSON decoding turns bad UTF-8 into U+FFFD silently; refuse it instead.
	if !utf8.Valid(data) {
		return p, http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "body is not a JSON object {\"sender\", \"text\", \"ref\"}: %v", err)
	}
	if dec.More() {
		return p, http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "body holds more than one JSON value")
	}
	var perr *proto.Error
	if strings.TrimSpace(p.Sender) == "" {
		p.Sender = "" // the token's name, with auth on; postMessage decides
	} else if p.Sender, perr = proto.CleanName(p.Sender); perr != nil {
		perr.Message = "sender: " + perr.Message
		return p, statusOf(perr), perr
	}
	if perr = proto.CheckText(p.Text); perr != nil {
		return p, statusOf(perr), perr
	}
	if perr = proto.CheckRef(p.Ref); perr != nil {
		return p, statusOf(perr), perr
	}
	return p, 0, nil
}

// idempotencyKey reads the Idempotency-Key header (IETF httpapi draft
// "The Idempotency-Key HTTP Header Field"): a structured-field string,
// "...", or, as many APIs send it, the bare key. "" when absent.
func idempotencyKey(h http.Header) (string, *proto.Error) {
	vs := h.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs) > 1 {
		return "", proto.Errorf(proto.CodeBadRequest, "give one Idempotency-Key header")
	}
	v := strings.TrimSpace(vs[0])
	if strings.HasPrefix(v, `"`) {
		var b strings.Builder
		closed := false
		for i := 1; i < len(v); i++ {
			c := v[i]
			switch {
			case closed:
				return "", proto.Errorf(proto.CodeBadRequest, "Idempotency-Key: characters after the closing quote")
			case c == '\\' && i+1 < len(v) && (v[i+1] == '"' || v[i+1] == '\\'):
				b.WriteByte(v[i+1])
				i++
			case c == '"':
				closed = true
			case c < 0x20 || c > 0x7e || c == '\\':
				return "", proto.Errorf(proto.CodeBadRequest, "Idempotency-Key: not a valid structured-field string")
			default:
				b.WriteByte(c)
			}
		}
		if !closed {
			return "", proto.Errorf(proto.CodeBadRequest, "Idempotency-Key: no closing quote")
		}
		v = b.String()
	}
	if v == "" {
		return "", proto.Errorf(proto.CodeBadRequest, "Idempotency-Key is empty")
	}
	if perr := proto.CheckRef(v); perr != nil {
		perr.Message = "Idempotency-Key: " + perr.Message
		return "", perr
	}
	return v, nil
}

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	if perr := proto.CheckRoom(room); perr != nil {
		writeError(w, http.StatusBadRequest, perr)
		return
	}
	who, ok := s.authorize(w, r)
	if !ok {
		return
	}
	body, status, perr := decodePost(r.Header.Get("Content-Type"), r.Body)
	if perr == nil {
		status, perr = s.postAs(who, room, &body)
	}
	if perr == nil {
		var key string
		key, perr = idempotencyKey(r.Header)
		switch {
		case perr != nil:
			status = http.StatusBadRequest
		case key != "" && body.Ref != "" && key != body.Ref:
			status, perr = http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "the Idempotency-Key header and the body's ref differ")
		case key != "":
			body.Ref = key
		}
	}
	if perr == nil {
		if perr = s.reservedName(body.Sender); perr == nil {
			perr = s.lookalikeName(room, body.Sender)
		}
		if perr != nil {
			perr.Message = "sender: " + perr.Message
			status = http.StatusBadRequest
		}
	}
	if perr != nil {
		s.metrics.errors.WithLabelValues(perr.Code).Inc()
		writeError(w, status, perr)
		return
	}
	if ok, wait := s.ipLimits.allow(ipKey(r.RemoteAddr)); !ok {
		s.metrics.rateLimited.Inc()
		s.metrics.limitRefused.WithLabelValues(limitSendRate).Inc()
		w.Header().Set("Retry-After", retryAfter(wait))
		writeError(w, http.StatusTooManyRequests, proto.Errorf(proto.CodeRateLimited, "over %v messages per second from your address; slow down", s.cfg.SendRate))
		return
	}
	if perr, wait := s.admitNewRoom(room, ipKey(r.RemoteAddr)); perr != nil {
		w.Header().Set("Retry-After", retryAfter(wait))
		writeError(w, http.StatusTooManyRequests, perr)
		return
	}
	type result struct {
		m   proto.Message
		err error
	}
	if !s.admitSend() {
		perr = s.shuttingDown()
		writeError(w, statusOf(perr), perr)
		return
	}
	ch := make(chan result, 1)
	err := s.post.Post(r.Context(), proto.Message{Room: room, Sender: body.Sender, User: body.user, Text: body.Text, Ref: body.Ref}, func(m proto.Message, err error) {
		ch <- result{m, err}
	})
	s.sendGate.RUnlock()
	if err == nil {
		select {
		case res := <-ch:
			err = res.err
			switch {
			case err != nil:
			case res.m.Text != body.Text:
				err = refReused(body.Ref, res.m)
			default:
				writeJSON(w, http.StatusCreated, res.m.JSON("", ""))
				return
			}
		case <-r.Context().Done():
			return // the client went away; the post goes on without it
		}
	}
	perr = s.postError(err)
	writeError(w, statusOf(perr), perr)
}

func (s *Server) getMessages(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	if perr := proto.CheckRoom(room); perr != nil {
		writeError(w, http.StatusBadRequest, perr)
		return
	}
	who, ok := s.authorize(w, r)
	if !ok {
		return
	}
	if who != nil && who.ID != nil && !who.ID.canJoin(room) {
		writeError(w, http.StatusForbidden, proto.Errorf(proto.CodeForbidden, "your token does not let you into room %q", room))
		return
	}
	q := r.URL.Query()
	limit := proto.DefaultHistory
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "limit must be a whole number from 1 to %d", proto.MaxHistory))
			return
		}
		limit = min(n, proto.MaxHistory)
	}
	before, since := q.Get("before"), q.Get("since")
	if before != "" && since != "" {
		writeError(w, http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "give before or since, not both"))
		return
	}
	var page store.Page
	var err error
	switch {
	case before != "":
		origin, seq, perr := proto.ParseMessageID(before)
		if perr != nil {
			writeError(w, http.StatusBadRequest, perr)
			return
		}
		page, err = s.store.Before(r.Context(), room, origin, seq, limit)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, proto.Errorf(proto.CodeBadRequest, "message %s is not in room %s", before, room))
			return
		}
	case since != "":
		cursor, perr := proto.DecodeCursor(s.hub.Scope(room), since)
		if perr != nil {
			writeError(w, http.StatusBadRequest, perr)
			return
		}
		page, err = s.store.Since(r.Context(), room, cursor, limit, false)
	default:
		page, err = s.store.Latest(r.Context(), room, limit)
	}
	if err != nil && r.Context().Err() != nil {
		return // the client went away mid-read: nothing to answer, nothing wrong here
	}
	if err != nil {
		s.logLimited(slog.LevelError, "read messages failed", "room", room, "err", err)
		writeError(w, s.readStatus(err), s.readError(err, "could not read the room"))
		return
	}
	msgs := make([]proto.MessageJSON, len(page.Messages))
	for i := range page.Messages {
		msgs[i] = page.Messages[i].JSON("", "")
	}
	cursor := ""
	if page.Vector != nil {
		cursor = proto.EncodeCursor(s.hub.Scope(room), page.Vector)
	}
	answer := map[string]any{"messages": msgs, "cursor": cursor}
	if len(page.Hidden) > 0 {
		answer["hidden"] = page.Hidden // hidden copies the since cursor covers: drop them
	}
	writeJSON(w, http.StatusOK, answer)
}

// Pages of GET /chatr/api/rooms: a node may hold many thousands of rooms.
const (
	defaultRoomsPage = 100
	maxRoomsPage     = 1000
)

// getRooms lists the rooms with messages, by name, a page at a time:
// limit rooms after the room named by after; next names the last room
// listed while more follow.
func (s *Server) getRooms(w http.ResponseWriter, r *http.Request) {
	who, ok := s.authorize(w, r)
	if !ok {
		return
	}
	type roomJSON struct {
		Room     string `json:"room"`
		Messages int64  `json:"messages"`
		Last     string `json:"last"`
	}
	q := r.URL.Query()
	limit := defaultRoomsPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, proto.Errorf(proto.CodeBadRequest, "limit must be a whole number from 1 to %d", maxRoomsPage))
			return
		}
		limit = min(n, maxRoomsPage)
	}
	after := q.Get("after")
	if after != "" {
		if perr := proto.CheckRoom(after); perr != nil {
			perr.Message = "after: " + perr.Message
			writeError(w, http.StatusBadRequest, perr)
			return
		}
	}
	page, more, err := s.store.RoomsAfter(r.Context(), after, limit)
	if err != nil {
		s.logLimited(slog.LevelError, "list rooms failed", "err", err)
		writeError(w, s.readStatus(err), s.readError(err, "could not list the rooms"))
		return
	}
	rooms := make([]roomJSON, 0, len(page))
	for _, ri := range page {
		// A user sees the rooms their token lets them into (the page may then
		// be short; next still goes on from where it ended).
		if who == nil || who.ID.canJoin(ri.Room) {
			rooms = append(rooms, roomJSON{Room: ri.Room, Messages: ri.Messages, Last: proto.FormatTime(ri.Last)})
		}
	}
	answer := struct {
		Rooms []roomJSON `json:"rooms"`
		Next  string     `json:"next,omitempty"`
	}{Rooms: rooms}
	if more {
		answer.Next = page[len(page)-1].Room
	}
	writeJSON(w, http.StatusOK, answer)
}

// getCluster answers GET /chatr/api/cluster: the whole view on the admin
// listener (full) and to an admin (Options.IsAdmin), the public one
// (proto.ClusterView.Public: no internal address) to everyone else.
func (s *Server) getCluster(full bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := s.clusterView()
		if !full && (s.opts.IsAdmin == nil || !s.opts.IsAdmin(r)) {
			v = v.Public()
		}
		// The answer depends on who asks: no cache may keep it for another.
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) clusterView() proto.ClusterView {
	if s.opts.ClusterView != nil {
		return s.opts.ClusterView()
	}
	return proto.ClusterView{Self: s.opts.NodeID, Cluster: s.cfg.ClusterName,
		Members: []proto.MemberView{{ID: s.opts.NodeID, Name: s.cfg.NodeName, HTTP: s.opts.HTTPAddr,
			State: "alive", Since: proto.FormatTime(s.started.UnixMicro())}}}
}

// postError turns a failed post into what the client is told.
func (s *Server) postError(err error) *proto.Error {
	var perr *proto.Error
	if errors.As(err, &perr) {
		return perr
	}
	if errors.Is(err, store.ErrClosed) || errors.Is(err, context.Canceled) {
		return s.shuttingDown()
	}
	return proto.Errorf(proto.CodeInternal, "the message could not be stored; send it again")
}

// readError is what a client is told of a failed read: the engine's own
// error when it is one for clients (unavailable), else internal with what.
func (s *Server) readError(err error, what string) *proto.Error {
	var perr *proto.Error
	if errors.As(err, &perr) {
		return perr
	}
	return proto.Errorf(proto.CodeInternal, "%s", what)
}

// readStatus is the HTTP status of a failed read.
func (s *Server) readStatus(err error) int {
	if perr := (*proto.Error)(nil); errors.As(err, &perr) && perr.Code == proto.CodeUnavailable {
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// refReused is the error of a send whose ref names an earlier message of
// the same sender and room with another text: a client bug that acking
// the earlier message would hide (the new text would be lost).
func refReused(ref string, first proto.Message) *proto.Error {
	return proto.Errorf(proto.CodeConflict, "ref %q already names message %s, with another text; use a new ref for a new message", ref, first.ID())
}

// ipLimiter is a token bucket per client IP for the HTTP API, forgetting
// addresses idle for a while so it stays small.
type ipLimiter struct {
	mu    sync.Mutex
	r     rate.Limit
	burst int
	ips   map[string]*ipEntry
	sweep time.Time
}

type ipEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(r rate.Limit, burst int) *ipLimiter {
	return &ipLimiter{r: r, burst: burst, ips: map[string]*ipEntry{}, sweep: time.Now()}
}

func (l *ipLimiter) allow(ip string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.sweep) > time.Minute {
		for k, e := range l.ips {
			if now.Sub(e.seen) > time.Minute {
				delete(l.ips, k)
			}
		}
		l.sweep = now
	}
	e := l.ips[ip]
	if e == nil {
		e = &ipEntry{lim: rate.NewLimiter(l.r, l.burst)}
		l.ips[ip] = e
	}
	e.seen = now
	res := e.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// StorePoster posts straight to the store: the single-node write path.
type StorePoster struct{ Store *store.Store }

// Post implements Poster.
func (p StorePoster) Post(ctx context.Context, draft proto.Message, done func(proto.Message, error)) error {
	return p.Store.AppendAsync(ctx, draft, done)
}
