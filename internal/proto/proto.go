// Package proto holds the frames of docs/protocol.md, their validation and error
// codes. It is shared by the server, the terminal client and the load
// generator, so they all speak the same contract.
package proto

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"chatr/internal/names"
)

// Version is the protocol version this package implements.
const Version = 1

// Limits from docs/protocol.md.
const (
	MaxNameLen     = names.MaxLen // characters of a name once cleaned
	MaxRoomLen     = 64           // characters of a room name
	MaxTextBytes   = 4096         // bytes of a message text
	MaxRefLen      = 64           // characters of a send ref
	DefaultHistory = 50           // messages replayed by a join without since/history
	MaxHistory     = 1000         // most messages a join or an HTTP page returns
	DefaultRoom    = "lobby"
	// MaxSeq is the highest message sequence number: the store keeps
	// sequences as SQLite integers, which are signed 64-bit.
	MaxSeq = math.MaxInt64
)

// Error codes of docs/protocol.md.
const (
	CodeBadRequest    = "bad_request"
	CodeHelloRequired = "hello_required"
	CodeUnauthorized  = "unauthorized"
	CodeNotJoined     = "not_joined"
	CodeTooLarge      = "too_large"
	CodeRateLimited   = "rate_limited"
	CodeUnavailable   = "unavailable"
	CodeInternal      = "internal"
	// CodeConflict answers a send whose ref names an earlier message of the
	// same sender and room with another text (HTTP 422).
	CodeConflict = "conflict"
	// CodeForbidden answers a join or send of a room the token does not
	// allow (HTTP 403); the session stays.
	CodeForbidden = "forbidden"
	// CodeTokenExpired says the token expired: fetch a new one (refresh it
	// on a session; reconnect with it otherwise).
	CodeTokenExpired = "token_expired"
	// CodeTooManyRooms answers a join past the rooms one session may be in
	// (--max-rooms-per-session).
	CodeTooManyRooms = "too_many_rooms"
	// CodeTooManyNewRooms answers a join or post that would bring a room
	// into being past what one address may make a minute
	// (--new-rooms-per-minute; HTTP 429).
	CodeTooManyNewRooms = "too_many_new_rooms"
)

// Close codes of docs/protocol.md.
const (
	CloseGoingAway    = 1001 // node shutting down: reconnect elsewhere
	ClosePolicy       = 1008 // bad origin, unauthorized, abuse
	CloseTooLarge     = 1009 // frame over the read limit
	CloseInternal     = 1011 // internal error
	CloseSlowClient   = 4000 // fell too far behind: reconnect and resume
	CloseTokenExpired = 4001 // the token expired and no refresh came: get a new token, reconnect
)

// Error is a protocol error: a code for programs and a message for people.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Nodes lists the other nodes to go to, when this one is shutting down.
	Nodes []Member `json:"nodes,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf makes an Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// TimeLayout is the RFC 3339 layout with microseconds that every time uses.
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// FormatTime formats a time in microseconds since the Unix epoch.
func FormatTime(us int64) string {
	return time.UnixMicro(us).UTC().Format(TimeLayout)
}

// AppendTime appends FormatTime(us) to dst, digit by digit: a sixth of the
// time AppendFormat takes to read TimeLayout each time.
func AppendTime(dst []byte, us int64) []byte {
	t := time.UnixMicro(us).UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, TimeLayout)
	}
	hour, minute, sec := t.Clock()
	var buf [27]byte // 2006-01-02T15:04:05.000000Z
	put := func(at, v, n int) {
		for i := at + n - 1; i >= at; i-- {
			buf[i] = byte('0' + v%10)
			v /= 10
		}
	}
	put(0, year, 4)
	buf[4] = '-'
	put(5, int(month), 2)
	buf[7] = '-'
	put(8, day, 2)
	buf[10] = 'T'
	put(11, hour, 2)
	buf[13] = ':'
	put(14, minute, 2)
	buf[16] = ':'
	put(17, sec, 2)
	buf[19] = '.'
	put(20, t.Nanosecond()/1000, 6)
	buf[26] = 'Z'
	return append(dst, buf[:]...)
}

// Message is one chat message, as stored and as sent to clients.
type Message struct {
	Origin  string // node id of the node that accepted it
	Seq     uint64 // its number on the origin, 1, 2, 3, ...
	Room    string
	Sender  string
	Text    string
	Created int64 // microseconds since the Unix epoch, UTC
	// Ref is the sender's id for the send that made it, kept (never shown
	// to other clients) so that a send retried after a failover, on any
	// node, is recognised and not posted twice.
	Ref string
	// Hidden marks the later of two copies of one send (same sender, room
	// and ref) stored on different nodes: every node keeps both, lists and
	// delivers only the earlier.
	Hidden bool
	// Replaces is the id of the copy this message hid, if it hid one that
	// may have been shown: clients drop that one.
	Replaces string
	// User is the sender's user id (the token's sub) when auth is on; ""
	// when anyone may use any name.
	User string
}

// ID is the message id of docs/protocol.md: "<origin>-<seq>".
func (m *Message) ID() string { return MessageID(m.Origin, m.Seq) }

// MessageID formats a message id.
func MessageID(origin string, seq uint64) string {
	return origin + "-" + strconv.FormatUint(seq, 10)
}

// ParseMessageID splits a message id into origin and sequence, from 1 to
// MaxSeq.
func ParseMessageID(id string) (origin string, seq uint64, err *Error) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, Errorf(CodeBadRequest, "message id %q is not <node>-<seq>", id)
	}
	origin = id[:i]
	seq, perr := strconv.ParseUint(id[i+1:], 10, 64)
	if perr != nil || seq == 0 || seq > MaxSeq || !ValidNodeID(origin) {
		return "", 0, Errorf(CodeBadRequest, "message id %q is not <node>-<seq>", id)
	}
	return origin, seq, nil
}

// MessageJSON is the JSON shape of a message, in frames and in the HTTP API.
type MessageJSON struct {
	Type    string `json:"type,omitempty"`
	Room    string `json:"room"`
	ID      string `json:"id"`
	Sender  string `json:"sender"`
	Text    string `json:"text"`
	Created string `json:"created"`
	Node    string `json:"node"`
	Cursor  string `json:"cursor,omitempty"`
	// Replaces names a copy of the same send that clients may have shown
	// and should drop (see Message.Replaces).
	Replaces string `json:"replaces,omitempty"`
	// User is the sender's user id when auth is on (Message.User).
	User string `json:"user,omitempty"`
}

// JSON returns the wire shape of m with the given frame type ("" for the
// HTTP API) and cursor.
func (m *Message) JSON(typ, cursor string) MessageJSON {
	return MessageJSON{
		Type: typ, Room: m.Room, ID: m.ID(), Sender: m.Sender, Text: m.Text,
		Created: FormatTime(m.Created), Node: m.Origin, Cursor: cursor, Replaces: m.Replaces, User: m.User,
	}
}

// AppendFrame appends the frame of m (the JSON of m.JSON(typ, cursor),
// field for field) to dst, and the cursor of v in scope when v is not
// empty, without reflection or a string per field: the hub encodes every
// message it fans out this way (BenchmarkMessageFrame). Strings are quoted
// by jsontext (RFC 8785's minimal form: unlike encoding/json, it leaves <,
// > and & as they are); invalid UTF-8, which no input path lets in, would
// be replaced with U+FFFD as encoding/json does.
func (m *Message) AppendFrame(dst []byte, typ string, scope CursorScope, v Vector) []byte {
	start := len(dst)
	field := func(b []byte, name string) []byte {
		if len(b) > start+1 {
			b = append(b, ',')
		}
		return append(append(append(b, '"'), name...), '"', ':')
	}
	str := func(b []byte, name, s string) []byte { return appendQuoted(field(b, name), s) }
	b := append(dst, '{')
	if typ != "" {
		b = str(b, "type", typ)
	}
	b = str(b, "room", m.Room)
	b = str(b, "id", m.Origin)
	b = append(strconv.AppendUint(append(b[:len(b)-1], '-'), m.Seq, 10), '"') // "<origin>-<seq>"
	b = str(b, "sender", m.Sender)
	b = str(b, "text", m.Text)
	b = append(AppendTime(append(field(b, "created"), '"'), m.Created), '"')
	b = str(b, "node", m.Origin)
	if len(v) > 0 {
		b = append(AppendCursor(append(field(b, "cursor"), '"'), scope, v), '"')
	}
	if m.Replaces != "" {
		b = str(b, "replaces", m.Replaces)
	}
	if m.User != "" {
		b = str(b, "user", m.User)
	}
	return append(b, '}')
}

// Frame is AppendFrame into a buffer of about the frame's size.
func (m *Message) Frame(typ string, scope CursorScope, v Vector) []byte {
	n := 160 + len(typ) + len(m.Room) + len(m.Sender) + len(m.Text) + len(m.Replaces) + len(m.User) + 24*len(v)
	return m.AppendFrame(make([]byte, 0, n), typ, scope, v)
}

// NodeIDLen is the length of a node id: 12 lowercase hex digits.
const NodeIDLen = 12

// ValidNodeID reports whether s has the form of a node id.
func ValidNodeID(s string) bool {
	if len(s) != NodeIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CleanName is the form of a new name that chatr keeps (a hello's name, an
// HTTP post's sender), or a bad_request saying why it cannot be one: the
// rules are those of names.Clean (the PRECIS Nickname profile, then 1-32
// characters of letters, digits, space, '_', '-', '.', a script per word).
// Whether it looks like someone else's is for the caller to ask.
func CleanName(name string) (string, *Error) {
	clean, err := names.Clean(name)
	if err != nil {
		return "", Errorf(CodeBadRequest, "%s", err.Error())
	}
	return clean, nil
}

// CheckName checks a name that a node cleaned before: a stored message's
// sender or a peer's presence. It is the looser rule of every release so
// far (1-32 characters of letters, digits, space, '_', '-', '.', with no
// space at either end), which every name CleanName makes passes, so the
// history and the peers of earlier releases are still taken: refusing one
// of their names would stop the link that carries it, again at every
// retry.
func CheckName(name string) *Error {
	switch {
	case name == "":
		return Errorf(CodeBadRequest, "name is empty")
	case !utf8.ValidString(name):
		return Errorf(CodeBadRequest, "name is not valid UTF-8")
	case strings.TrimSpace(name) != name:
		return Errorf(CodeBadRequest, "name has space at an end")
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLen {
		return Errorf(CodeBadRequest, "name has %d characters, at most %d allowed", n, MaxNameLen)
	}
	for _, r := range name {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == ' ' || r == '_' || r == '-' || r == '.') {
			return Errorf(CodeBadRequest, "name may hold letters, digits, space, _ - . only, not %q", r)
		}
	}
	return nil
}

// CheckRoom checks a room name: 1-64 characters of a-z 0-9 _ - .
func CheckRoom(room string) *Error {
	if room == "" {
		return Errorf(CodeBadRequest, "room is empty")
	}
	if len(room) > MaxRoomLen {
		return Errorf(CodeBadRequest, "room name is longer than %d characters", MaxRoomLen)
	}
	for i := 0; i < len(room); i++ {
		c := room[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return Errorf(CodeBadRequest, "room name may hold a-z 0-9 _ - . only")
		}
	}
	return nil
}

// CheckRef checks a send's ref: at most MaxRefLen characters (not bytes)
// of valid UTF-8. Gateways and peer links use this one check, so a ref a
// node accepted from a client is never refused by its peers.
func CheckRef(ref string) *Error {
	if !utf8.ValidString(ref) {
		return Errorf(CodeBadRequest, "ref is not valid UTF-8")
	}
	if utf8.RuneCountInString(ref) > MaxRefLen {
		return Errorf(CodeBadRequest, "ref is longer than %d characters", MaxRefLen)
	}
	return nil
}

// MaxUserLen is the most bytes of a user id (a token's sub).
const MaxUserLen = 128

// CheckUser checks a user id: at most MaxUserLen bytes of valid UTF-8
// without control characters ("" is none: auth off).
func CheckUser(user string) *Error {
	if len(user) > MaxUserLen {
		return Errorf(CodeBadRequest, "user id is over %d bytes", MaxUserLen)
	}
	if !utf8.ValidString(user) {
		return Errorf(CodeBadRequest, "user id is not valid UTF-8")
	}
	for _, r := range user {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return Errorf(CodeBadRequest, "user id holds a control character %q", r)
		}
	}
	return nil
}

// CheckText checks a message text: 1 to 4096 bytes of valid UTF-8.
func CheckText(text string) *Error {
	if text == "" {
		return Errorf(CodeBadRequest, "text is empty")
	}
	if len(text) > MaxTextBytes {
		return Errorf(CodeTooLarge, "text is %d bytes, at most %d allowed", len(text), MaxTextBytes)
	}
	if !utf8.ValidString(text) {
		return Errorf(CodeBadRequest, "text is not valid UTF-8")
	}
	return nil
}

// Encode marshals a frame. Frames are plain structs and maps, so an error
// here is a programming error.
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("proto: encode %T: %v", v, err))
	}
	return b
}
