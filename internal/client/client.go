// Package client is a small Go client of the chatr WebSocket protocol
// (docs/protocol.md). It is used by `chatr chat`, `chatr bench` and tests.
//
// A Conn is made by Dial, which does the WebSocket handshake and the
// hello/welcome exchange. Frames are then sent with Join, Send, Leave and Ping
// (safe from several goroutines) and received with Read or ReadRaw (from one
// goroutine at a time). The Conn keeps the newest cursor of each room from the
// frames that Read decodes, so a client can resume after a reconnect:
//
//	c, err := client.Dial(ctx, "ws://127.0.0.1:5080/chatr/ws", "alice", nil)
//	...
//	err = c.Join(ctx, "lobby", "")
//	frames, err := c.ReadUntil(ctx, client.IsType(client.TypeSynced, "lobby"))
//	...
//	// later, on another connection:
//	err = c2.Join(ctx, "lobby", c.Cursor("lobby"))
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/proto"
)

// Path is the WebSocket path of a chatr node.
const Path = "/chatr/ws"

// DefaultReadLimit is the largest incoming frame a Conn accepts unless
// Options.ReadLimit says otherwise. Frames are small, but a joined or welcome
// frame lists every person of a room or every node.
const DefaultReadLimit = 4 << 20

// Options tune Dial. The zero value (or nil) is ready to use.
type Options struct {
	// Token is sent in hello where the node requires auth.
	Token string
	// Header holds extra handshake headers, e.g. Origin to act as a browser.
	Header http.Header
	// HTTPClient makes the handshake request; nil means http.DefaultClient.
	// See LocalAddrClient to choose the source address.
	HTTPClient *http.Client
	// ReadLimit is the largest frame accepted, in bytes; 0 means
	// DefaultReadLimit.
	ReadLimit int64
}

// Server frame types (the client frame types are in package proto).
const (
	TypeWelcome   = "welcome"
	TypeJoined    = "joined"
	TypeMessage   = "message"
	TypeSynced    = "synced"
	TypePresence  = "presence"
	TypeLeft      = "left"
	TypeHidden    = "hidden" // ID names a hidden copy of a re-sent message: drop it
	TypeAck       = "ack"
	TypeError     = "error"
	TypePong      = "pong"
	TypeRefreshed = "refreshed"
)

// Frame is any server frame, decoded. Only the fields of its Type are set.
type Frame struct {
	Type string `json:"type"`

	// welcome: Node is this node's id; message: Node is the origin node.
	Node    string `json:"node,omitempty"`
	Session string `json:"session,omitempty"` // welcome
	Name    string `json:"name,omitempty"`    // welcome
	// welcome and message: the user id when auth is on
	User string `json:"user,omitempty"`
	// welcome, refreshed: when the session's token expires
	Expires string         `json:"expires,omitempty"`
	Nodes   []proto.Member `json:"nodes,omitempty"` // welcome

	// joined, message, synced, presence, left
	Room     string         `json:"room,omitempty"`
	Presence []proto.Person `json:"presence,omitempty"` // joined
	Joined   []proto.Person `json:"joined,omitempty"`   // presence
	Left     []proto.Person `json:"left,omitempty"`     // presence

	// message, hidden (and ack: ID, Created)
	ID      string `json:"id,omitempty"`
	Sender  string `json:"sender,omitempty"`
	Text    string `json:"text,omitempty"`
	Created string `json:"created,omitempty"`
	// Replaces names another copy of the same send that this message hid:
	// a client drops it if it shows it.
	Replaces string `json:"replaces,omitempty"`
	// message, synced
	Cursor    string `json:"cursor,omitempty"`
	Truncated bool   `json:"truncated,omitempty"` // synced

	// ack, error
	Ref     string `json:"ref,omitempty"`
	Code    string `json:"code,omitempty"`    // error
	Message string `json:"message,omitempty"` // error
}

// Err returns the error an error frame carries, as a *proto.Error, and nil
// for any other frame.
func (f *Frame) Err() error {
	if f.Type != TypeError {
		return nil
	}
	return &proto.Error{Code: f.Code, Message: f.Message}
}

// CreatedTime parses Created.
func (f *Frame) CreatedTime() (time.Time, error) {
	return time.Parse(time.RFC3339Nano, f.Created)
}

// Decode decodes one server frame.
func Decode(data []byte) (Frame, error) {
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return Frame{}, fmt.Errorf("decode frame: %w", err)
	}
	if f.Type == "" {
		return Frame{}, errors.New("decode frame: no type")
	}
	return f, nil
}

// Conn is one session with a chatr node.
type Conn struct {
	ws      *websocket.Conn
	welcome Frame
	buf     bytes.Buffer // owned by the reader

	mu      sync.Mutex
	cursors map[string]string
}

// Dial connects to a node's WebSocket URL (see WebSocketURL for the forms it
// takes), says hello as name and waits for the welcome. ctx bounds the whole
// handshake. An error frame in answer to hello (e.g. unauthorized) is returned
// as an error that wraps a *proto.Error.
func Dial(ctx context.Context, rawURL, name string, opts *Options) (*Conn, error) {
	if opts == nil {
		opts = &Options{}
	}
	u, err := WebSocketURL(rawURL)
	if err != nil {
		return nil, err
	}
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: opts.HTTPClient,
		HTTPHeader: opts.Header,
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %s: %w", u, resp.Status, err)
		}
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	limit := opts.ReadLimit
	if limit == 0 {
		limit = DefaultReadLimit
	}
	ws.SetReadLimit(limit)
	c := &Conn{ws: ws, cursors: map[string]string{}}
	if err := c.write(ctx, proto.Inbound{Type: proto.TypeHello, Name: name, Token: opts.Token}); err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("hello to %s: %w", u, err)
	}
	f, err := c.Read(ctx)
	if err == nil && f.Type == TypeError {
		err = f.Err()
	} else if err == nil && f.Type != TypeWelcome {
		err = fmt.Errorf("got %q before welcome", f.Type)
	}
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("hello to %s: %w", u, err)
	}
	c.welcome = f
	return c, nil
}

// Welcome returns the welcome frame of this session: the node, the session
// id, the name as the node cleaned it, and the alive members.
func (c *Conn) Welcome() Frame { return c.welcome }

// Join joins room. With a non-empty since (a cursor from an earlier session)
// the node replays what came after it; with an empty one it sends the
// default history. The answers (joined, messages, synced) come through Read.
func (c *Conn) Join(ctx context.Context, room, since string) error {
	return c.write(ctx, proto.Inbound{Type: proto.TypeJoin, Room: room, Since: since})
}

// JoinHistory joins room asking for its n most recent messages (0 for none).
func (c *Conn) JoinHistory(ctx context.Context, room string, n int) error {
	return c.write(ctx, proto.Inbound{Type: proto.TypeJoin, Room: room, History: &n})
}

// Leave leaves room.
func (c *Conn) Leave(ctx context.Context, room string) error {
	return c.write(ctx, proto.Inbound{Type: proto.TypeLeave, Room: room})
}

// Send sends text to a joined room. ref comes back in the ack or error
// that answers it. Make it unique per message (a random prefix and a
// counter): a node answers a send repeated with the same ref, by the same
// name in the same room, with the ack of the first one and stores nothing,
// so a message not acked before a disconnect can be sent again safely.
func (c *Conn) Send(ctx context.Context, room, text, ref string) error {
	return c.write(ctx, proto.Inbound{Type: proto.TypeSend, Room: room, Text: text, Ref: ref})
}

// Refresh moves the session onto a new token of the same user (auth on);
// the node answers refreshed, with when it expires, or an error.
func (c *Conn) Refresh(ctx context.Context, token string) error {
	return c.write(ctx, proto.Inbound{Type: proto.TypeRefresh, Token: token})
}

// FetchToken gets a token from a sign-in service that answers GET url with
// {"token": "..."} (a node's --auth-token-url), the way the web client
// does. hc nil means http.DefaultClient.
func FetchToken(ctx context.Context, hc *http.Client, url string) (string, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("token URL %q: %w", url, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch a token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch a token: %s answered %s", url, resp.Status)
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil || body.Token == "" {
		return "", fmt.Errorf("fetch a token: %s gave no token", url)
	}
	return body.Token, nil
}

// Ping sends a ping frame; the node answers pong.
func (c *Conn) Ping(ctx context.Context) error {
	return c.write(ctx, proto.Inbound{Type: proto.TypePing})
}

// WriteRaw sends one already encoded client frame.
func (c *Conn) WriteRaw(ctx context.Context, frame []byte) error {
	return c.ws.Write(ctx, websocket.MessageText, frame)
}

func (c *Conn) write(ctx context.Context, in proto.Inbound) error {
	return c.WriteRaw(ctx, proto.Encode(in))
}

// ReadRaw reads the next frame without decoding it. The returned bytes are
// valid until the next read. Unlike Read, it does not track cursors. A
// context that can be cancelled costs a timer per read; readers that care
// pass context.Background and end a read with Close or CloseNow.
func (c *Conn) ReadRaw(ctx context.Context) ([]byte, error) {
	typ, r, err := c.ws.Reader(ctx)
	if err != nil {
		return nil, err
	}
	c.buf.Reset()
	if _, err := c.buf.ReadFrom(r); err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, errors.New("read: binary frame from node")
	}
	return c.buf.Bytes(), nil
}

// Read reads and decodes the next frame, and adopts the cursor of every
// message and synced frame.
func (c *Conn) Read(ctx context.Context) (Frame, error) {
	data, err := c.ReadRaw(ctx)
	if err != nil {
		return Frame{}, err
	}
	f, err := Decode(data)
	if err != nil {
		return Frame{}, err
	}
	if (f.Type == TypeMessage || f.Type == TypeSynced) && f.Cursor != "" {
		c.mu.Lock()
		c.cursors[f.Room] = f.Cursor
		c.mu.Unlock()
	}
	return f, nil
}

// ReadUntil reads frames until stop returns true for one, and returns all
// of them, that one included.
func (c *Conn) ReadUntil(ctx context.Context, stop func(Frame) bool) ([]Frame, error) {
	var frames []Frame
	for {
		f, err := c.Read(ctx)
		if err != nil {
			return frames, err
		}
		frames = append(frames, f)
		if stop(f) {
			return frames, nil
		}
	}
}

// IsType returns a ReadUntil stop function that matches a frame of type
// typ, and of room when room is not empty.
func IsType(typ, room string) func(Frame) bool {
	return func(f Frame) bool { return f.Type == typ && (room == "" || f.Room == room) }
}

// Cursor returns the newest cursor Read has seen for room ("" for none).
func (c *Conn) Cursor(room string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursors[room]
}

// Close closes the session with a normal closure and waits (a few seconds
// at most) for the node to answer it.
func (c *Conn) Close() error {
	return c.ws.Close(websocket.StatusNormalClosure, "")
}

// CloseNow closes the connection at once, without the closing handshake.
// A blocked Read or write returns.
func (c *Conn) CloseNow() error {
	return c.ws.CloseNow()
}

// CloseStatus returns the WebSocket close code the node sent if err came
// from a closed connection (e.g. 1001 shutting down, 4000 too slow), and -1
// otherwise.
func CloseStatus(err error) int {
	return int(websocket.CloseStatus(err))
}

// WebSocketURL turns what a user may give for a node into its WebSocket URL:
// ws:// and wss:// URLs as they are, http:// and https:// URLs as ws:// and
// wss://, and a bare host:port as ws://host:port. An empty path or "/"
// becomes Path.
func WebSocketURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "ws://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("node URL %q: %w", s, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("node URL %q: scheme must be ws, wss, http or https", s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("node URL %q has no host", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = Path
	}
	return u.String(), nil
}

// LocalAddrClient returns an HTTP client for Options.HTTPClient whose
// connections leave from the IP address ip, e.g. 127.0.0.2 to use another
// range of source ports towards a loopback node.
func LocalAddrClient(ip net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	// No proxy and no idle connections: each handshake gets its own socket.
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: -1}}
}
