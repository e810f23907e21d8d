package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// Client frame types.
const (
	TypeHello   = "hello"
	TypeJoin    = "join"
	TypeLeave   = "leave"
	TypeSend    = "send"
	TypePing    = "ping"
	TypeRefresh = "refresh"
)

// Inbound is a decoded and validated client frame. Only the fields of its
// Type are set; Name is already trimmed.
type Inbound struct {
	Type    string `json:"type"`
	Name    string `json:"name,omitempty"`
	Token   string `json:"token,omitempty"`
	Room    string `json:"room,omitempty"`
	Since   string `json:"since,omitempty"`
	History *int   `json:"history,omitempty"`
	Text    string `json:"text,omitempty"`
	Ref     string `json:"ref,omitempty"`
}

// inboundWire uses raw fields so that a wrong JSON type in one field gives a
// clear error naming that field.
type inboundWire struct {
	Type    json.RawMessage `json:"type"`
	Name    json.RawMessage `json:"name"`
	Token   json.RawMessage `json:"token"`
	Room    json.RawMessage `json:"room"`
	Since   json.RawMessage `json:"since"`
	History json.RawMessage `json:"history"`
	Text    json.RawMessage `json:"text"`
	Ref     json.RawMessage `json:"ref"`
}

// wireDecoder is a JSON decoder and the reader of the frame it decodes.
type wireDecoder struct {
	dec jsontext.Decoder
	in  bytes.Buffer
}

var wireDecoders = sync.Pool{New: func() any { return new(wireDecoder) }}

var errTrailing = errors.New("data after the object")

// decodeWire reads a frame's JSON object into w, as json.Unmarshal does
// (FuzzDecodeInbound compares the two): each member's raw value, matched
// to a field by its name exactly, else regardless of case, the last of
// duplicates winning; other members are skipped. It reads the frame once,
// where encoding/json read it twice and each field again (a third of the
// time: BenchmarkDecodeInbound). w's fields alias data.
func decodeWire(data []byte, w *inboundWire) error {
	wd := wireDecoders.Get().(*wireDecoder)
	defer func() {
		wd.in = bytes.Buffer{}
		wd.dec.Reset(&wd.in) // holds nothing of data
		wireDecoders.Put(wd)
	}()
	wd.in = *bytes.NewBuffer(data)
	wd.dec.Reset(&wd.in, jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(true))
	if tok, err := wd.dec.ReadToken(); err != nil {
		return err
	} else if tok.Kind() != '{' {
		return errors.New("not an object")
	}
	for wd.dec.PeekKind() != '}' {
		name, err := wd.dec.ReadValue()
		if err != nil {
			return err
		}
		if bytes.IndexByte(name, '\\') >= 0 {
			name, _ = jsontext.AppendUnquote(nil, name)
		} else {
			name = name[1 : len(name)-1]
		}
		v, err := wd.dec.ReadValue()
		if err != nil {
			return err
		}
		if f := w.field(name); f != nil {
			*f = json.RawMessage(v)
		}
	}
	if _, err := wd.dec.ReadToken(); err != nil { // the '}'
		return err
	}
	if _, err := wd.dec.ReadToken(); err != io.EOF {
		return errTrailing
	}
	return nil
}

// field is the field of w that a member of that name goes to, or nil.
func (w *inboundWire) field(name []byte) *json.RawMessage {
	fields := [...]struct {
		name string
		raw  *json.RawMessage
	}{{"type", &w.Type}, {"name", &w.Name}, {"token", &w.Token}, {"room", &w.Room},
		{"since", &w.Since}, {"history", &w.History}, {"text", &w.Text}, {"ref", &w.Ref}}
	for _, f := range fields {
		if string(name) == f.name {
			return f.raw
		}
	}
	for _, f := range fields {
		if bytes.EqualFold(name, []byte(f.name)) {
			return f.raw
		}
	}
	return nil
}

// DecodeInbound parses and validates one client frame. On error, the
// returned Inbound still carries the Ref when one could be read, so the
// error can answer it.
func DecodeInbound(data []byte) (Inbound, *Error) {
	var in Inbound
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return in, Errorf(CodeBadRequest, "frame is not a JSON object")
	}
	var w inboundWire
	if err := decodeWire(data, &w); err != nil {
		if !utf8.Valid(data) {
			return in, Errorf(CodeBadRequest, "frame is not valid UTF-8")
		}
		return in, Errorf(CodeBadRequest, "frame is not valid JSON: %v", err)
	}
	var perr *Error
	str := func(field string, raw json.RawMessage, dst *string) {
		if perr != nil || raw == nil || string(raw) == "null" {
			return
		}
		if jsontext.Value(raw).Kind() != '"' {
			perr = Errorf(CodeBadRequest, "%s must be a string", field)
			return
		}
		if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
			*dst = string(inner) // nothing to unquote, the usual case
			return
		}
		// A string decodeWire read: its only possible error is bad
		// UTF-8, replaced with U+FFFD as encoding/json does.
		b, _ := jsontext.AppendUnquote(nil, raw)
		*dst = string(b)
	}
	str("ref", w.Ref, &in.Ref)
	if perr != nil {
		in.Ref = ""
		return in, perr
	}
	if err := CheckRef(in.Ref); err != nil {
		in.Ref = ""
		return in, err
	}
	// JSON decoding turns bad UTF-8 into U+FFFD silently; check the raw
	// frame, after the ref is known so the error can answer it.
	if !utf8.Valid(data) {
		return in, Errorf(CodeBadRequest, "frame is not valid UTF-8")
	}
	str("type", w.Type, &in.Type)
	if perr != nil {
		return in, perr
	}
	if in.Type == "" {
		return in, Errorf(CodeBadRequest, "frame has no type")
	}
	switch in.Type {
	case TypeHello:
		str("name", w.Name, &in.Name)
		str("token", w.Token, &in.Token)
		if perr != nil {
			return in, perr
		}
		if in.Token != "" && strings.TrimSpace(in.Name) == "" {
			break // the token names the person (auth on)
		}
		in.Name, perr = CleanName(in.Name)
	case TypeJoin:
		str("room", w.Room, &in.Room)
		str("since", w.Since, &in.Since)
		if perr != nil {
			return in, perr
		}
		if perr = CheckRoom(in.Room); perr != nil {
			return in, perr
		}
		if w.History != nil && string(w.History) != "null" {
			var h int
			if err := json.Unmarshal(w.History, &h); err != nil || h < 0 {
				return in, Errorf(CodeBadRequest, "history must be a whole number from 0 to %d", MaxHistory)
			}
			if h > MaxHistory {
				h = MaxHistory
			}
			in.History = &h
		}
	case TypeLeave:
		str("room", w.Room, &in.Room)
		if perr == nil {
			perr = CheckRoom(in.Room)
		}
	case TypeSend:
		str("room", w.Room, &in.Room)
		str("text", w.Text, &in.Text)
		if perr != nil {
			return in, perr
		}
		if perr = CheckRoom(in.Room); perr != nil {
			return in, perr
		}
		perr = CheckText(in.Text)
	case TypeRefresh:
		str("token", w.Token, &in.Token)
		if perr == nil && in.Token == "" {
			perr = Errorf(CodeBadRequest, "refresh needs a token")
		}
	case TypePing:
	default:
		return in, Errorf(CodeBadRequest, "unknown frame type %q", in.Type)
	}
	return in, perr
}

// Member is a node as a client sees it in welcome.nodes.
type Member struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	HTTP string `json:"http"`
}

// Person is one entry of a presence list. With auth on, a person is a user
// (User, the token's sub) shown by Name; two people may share a name.
type Person struct {
	Name string `json:"name"`
	Node string `json:"node"`
	User string `json:"user,omitempty"`
}

// Welcome answers hello. With auth on it names the user and when the
// token expires (refresh before then).
type Welcome struct {
	Type    string   `json:"type"`
	Node    string   `json:"node"`
	Session string   `json:"session"`
	Name    string   `json:"name"`
	User    string   `json:"user,omitempty"`
	Expires string   `json:"expires,omitempty"`
	Nodes   []Member `json:"nodes"`
	Engine  string   `json:"engine"` // local or nats: where the node keeps messages
}

// Refreshed answers refresh: the session now runs on the new token.
type Refreshed struct {
	Type    string `json:"type"`
	Ref     string `json:"ref,omitempty"`
	Expires string `json:"expires"`
}

// Joined answers join.
type Joined struct {
	Type     string   `json:"type"`
	Room     string   `json:"room"`
	Presence []Person `json:"presence"`
}

// EncodeJoined is the frame of Joined{"joined", room, people}, made
// without reflection: a join into a room of 200 gets a list of 200
// (BenchmarkEncodeJoined).
func EncodeJoined(room string, people []Person) []byte {
	b := make([]byte, 0, 48+len(room)+len(people)*48)
	b = appendQuoted(append(b, `{"type":"joined","room":`...), room)
	return append(appendPeople(append(b, `,"presence":`...), people), '}')
}

// EncodePresence is the frame of Presence{"presence", room, joined, left}.
func EncodePresence(room string, joined, left []Person) []byte {
	b := make([]byte, 0, 48+len(room)+(len(joined)+len(left))*48)
	b = appendQuoted(append(b, `{"type":"presence","room":`...), room)
	b = appendPeople(append(b, `,"joined":`...), joined)
	return append(appendPeople(append(b, `,"left":`...), left), '}')
}

// appendPeople appends people as a JSON array of Person (null for nil, as
// encoding/json).
func appendPeople(b []byte, people []Person) []byte {
	if people == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, p := range people {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendQuoted(append(b, `{"name":`...), p.Name)
		b = appendQuoted(append(b, `,"node":`...), p.Node)
		if p.User != "" {
			b = appendQuoted(append(b, `,"user":`...), p.User)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendQuoted appends s as a JSON string (invalid UTF-8 becomes U+FFFD, as
// encoding/json does).
func appendQuoted(b []byte, s string) []byte {
	b, _ = jsontext.AppendQuote(b, s)
	return b
}

// Synced ends the replay of a join.
type Synced struct {
	Type      string `json:"type"`
	Room      string `json:"room"`
	Cursor    string `json:"cursor"`
	Truncated bool   `json:"truncated"`
}

// Presence tells who came into and went out of a room.
type Presence struct {
	Type   string   `json:"type"`
	Room   string   `json:"room"`
	Joined []Person `json:"joined"`
	Left   []Person `json:"left"`
}

// Hidden names a hidden copy of a re-sent message (see Message.Hidden): a
// client that shows the message ID drops it. A node sends it whenever the
// client may hold that copy: live, when it learns of the earlier copy, and
// on a resume whose cursor covers the copy.
type Hidden struct {
	Type string `json:"type"`
	Room string `json:"room"`
	ID   string `json:"id"`
}

// EncodeHidden encodes the hidden frame of message id in room.
func EncodeHidden(room, id string) []byte {
	return Encode(Hidden{Type: "hidden", Room: room, ID: id})
}

// Left answers leave.
type Left struct {
	Type string `json:"type"`
	Room string `json:"room"`
}

// Ack answers send once the message is durable.
type Ack struct {
	Type    string `json:"type"`
	Ref     string `json:"ref"`
	ID      string `json:"id"`
	Created string `json:"created"`
}

// ErrorFrame answers a frame that failed.
type ErrorFrame struct {
	Type    string   `json:"type"`
	Ref     string   `json:"ref,omitempty"`
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Nodes   []Member `json:"nodes,omitempty"` // other nodes, when this one is shutting down
}

// Pong answers ping.
var Pong = []byte(`{"type":"pong"}`)

// EncodeError encodes an error frame answering ref.
func EncodeError(ref string, e *Error) []byte {
	return Encode(ErrorFrame{Type: "error", Ref: ref, Code: e.Code, Message: e.Message, Nodes: e.Nodes})
}
