package clienttest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/client"
)

// DefaultTimeout bounds a Raw's dial and each of its reads and writes
// unless RawOptions.Timeout says otherwise: a test never hangs longer.
const DefaultTimeout = 10 * time.Second

// closeWait bounds CloseStatus's wait for the end of the connection: longer
// than a node's 10 s hello timeout and the 1 s tick that enforces it.
const closeWait = 15 * time.Second

// RawOptions tune DialRaw. The zero value (or nil) is ready to use.
type RawOptions struct {
	// Header holds the handshake's headers, e.g. Origin.
	Header http.Header
	// HTTPClient makes the handshake; nil means http.DefaultClient. Give
	// one with its own DialContext to change the client's socket.
	HTTPClient *http.Client
	// Timeout bounds the dial and each read and write; 0 means
	// DefaultTimeout.
	Timeout time.Duration
}

// Raw is a test's WebSocket session with a chatr node, frame by frame:
// unlike client.Conn it says no hello of its own and sends whatever the test
// gives it, bad frames included, so that tests can check the protocol
// itself. Its methods fail the test on an unexpected frame, an error or a
// timeout, and so belong to the test's goroutine; Read and ReadWithin only
// return errors, and may be called from another goroutine (one at a time).
type Raw struct {
	// Conn is the WebSocket, for what the methods do not do: a write whose
	// error the test expects, a close.
	Conn *websocket.Conn

	t       testing.TB
	timeout time.Duration
}

// DialRaw opens a WebSocket to url (any form client.WebSocketURL takes,
// e.g. "127.0.0.1:5080" or "http://127.0.0.1:5080") and closes it when the
// test ends. It fails the test if the handshake fails; a test of refused
// handshakes dials with websocket.Dial and wraps what it gets in NewRaw.
func DialRaw(t testing.TB, url string, opts *RawOptions) *Raw {
	t.Helper()
	if opts == nil {
		opts = &RawOptions{}
	}
	timeout := cmp.Or(opts.Timeout, DefaultTimeout)
	u, err := client.WebSocketURL(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: opts.Header, HTTPClient: opts.HTTPClient})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	c := NewRaw(t, conn)
	c.timeout = timeout
	return c
}

// NewRaw makes a Raw of a WebSocket the test dialed itself, and closes it
// when the test ends.
func NewRaw(t testing.TB, conn *websocket.Conn) *Raw {
	conn.SetReadLimit(client.DefaultReadLimit)
	t.Cleanup(func() { conn.CloseNow() })
	return &Raw{Conn: conn, t: t, timeout: DefaultTimeout}
}

// For returns the same session failing t instead, for a subtest.
func (c *Raw) For(t testing.TB) *Raw {
	d := *c
	d.t = t
	return &d
}

// Frame is a frame the node sent: decoded, and as it came.
type Frame struct {
	client.Frame
	Raw []byte
}

// String returns the frame as it came, cut at 300 bytes.
func (f Frame) String() string {
	if len(f.Raw) > 300 {
		return string(f.Raw[:300]) + "..."
	}
	return string(f.Raw)
}

// Keys lists the JSON keys of the frame as it came, sorted.
func (f Frame) Keys() []string {
	var m map[string]json.RawMessage
	json.Unmarshal(f.Raw, &m)
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Send sends v as one text frame: a string or []byte as it is, anything
// else encoded as JSON.
func (c *Raw) Send(v any) {
	c.t.Helper()
	var data []byte
	switch v := v.(type) {
	case string:
		data = []byte(v)
	case []byte:
		data = v
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			c.t.Fatalf("marshal %v: %v", v, err)
		}
	}
	c.Write(websocket.MessageText, data)
}

// Write sends one frame of type typ.
func (c *Raw) Write(typ websocket.MessageType, data []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := c.Conn.Write(ctx, typ, data); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Read returns the next frame, or the error that ended the wait for it: a
// read error (websocket.CloseStatus tells a close), the timeout, or a frame
// that is binary or not JSON.
func (c *Raw) Read() (Frame, error) { return c.ReadWithin(c.timeout) }

// ReadWithin is Read with a timeout of d.
func (c *Raw) ReadWithin(d time.Duration) (Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	typ, data, err := c.Conn.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	if typ != websocket.MessageText {
		return Frame{}, errors.New("the node sent a binary frame")
	}
	f := Frame{Raw: data}
	if err := json.Unmarshal(data, &f.Frame); err != nil {
		return Frame{}, errors.New("the node sent a frame that is not JSON: " + string(data))
	}
	return f, nil
}

// Next returns the next frame.
func (c *Raw) Next() Frame {
	c.t.Helper()
	f, err := c.Read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// Expect reads the next frame, which must be of type typ.
func (c *Raw) Expect(typ string) Frame {
	c.t.Helper()
	f := c.Next()
	if f.Type != typ {
		c.t.Fatalf("got frame %s, want type %q", f, typ)
	}
	return f
}

// Until reads frames until one of type typ, and returns it and the frames
// before it. An error frame before it fails the test.
func (c *Raw) Until(typ string) (Frame, []Frame) {
	c.t.Helper()
	var before []Frame
	for {
		f := c.Next()
		switch f.Type {
		case typ:
			return f, before
		case client.TypeError:
			c.t.Fatalf("waiting for %s: got %s", typ, f)
		}
		before = append(before, f)
	}
}

// ExpectError reads the next frame, which must be an error with code and
// ref, and a message for people.
func (c *Raw) ExpectError(code, ref string) Frame {
	c.t.Helper()
	f := c.Expect(client.TypeError)
	if f.Code != code || f.Ref != ref {
		c.t.Fatalf("got error %s, want code %q ref %q", f, code, ref)
	}
	if f.Message == "" {
		c.t.Fatalf("error %s has no message for people", f)
	}
	return f
}

// Hello says hello as name and returns the welcome, which must come next.
func (c *Raw) Hello(name string) Frame {
	c.t.Helper()
	c.Send(map[string]any{"type": "hello", "name": name})
	return c.Expect(client.TypeWelcome)
}

// PingPong checks the session still answers, and returns the frames that
// came before the pong.
func (c *Raw) PingPong() []Frame {
	c.t.Helper()
	c.Send(`{"type":"ping"}`)
	_, before := c.Until(client.TypePong)
	return before
}

// Quiet checks that nothing but the pong comes back to a ping.
func (c *Raw) Quiet() {
	c.t.Helper()
	if before := c.PingPong(); len(before) > 0 {
		c.t.Fatalf("unexpected frames before pong: %v", before)
	}
}

// Join joins room with the extra fields of the join frame (history, since)
// and returns the joined frame, the replayed messages and the synced frame;
// any other frame in between fails the test.
func (c *Raw) Join(room string, extra map[string]any) (joined Frame, msgs []Frame, synced Frame) {
	c.t.Helper()
	m := map[string]any{"type": "join", "room": room}
	for k, v := range extra {
		m[k] = v
	}
	c.Send(m)
	joined = c.Expect(client.TypeJoined)
	if joined.Room != room {
		c.t.Fatalf("joined %s, want room %q", joined, room)
	}
	for {
		f := c.Next()
		switch f.Type {
		case client.TypeMessage:
			msgs = append(msgs, f)
		case client.TypeSynced:
			if f.Room != room {
				c.t.Fatalf("synced %s, want room %q", f, room)
			}
			return joined, msgs, f
		default:
			c.t.Fatalf("during the replay of %s: unexpected frame %s", room, f)
		}
	}
}

// Say sends text to room with ref and reads until both its ack and its own
// message came back; it returns them and the other frames read meanwhile.
func (c *Raw) Say(room, text, ref string) (ack, msg Frame, other []Frame) {
	c.t.Helper()
	c.Send(map[string]any{"type": "send", "room": room, "text": text, "ref": ref})
	for ack.Type == "" || msg.Type == "" {
		f := c.Next()
		switch {
		case f.Type == client.TypeAck && f.Ref == ref:
			ack = f
		case f.Type == client.TypeError && f.Ref == ref:
			c.t.Fatalf("send %q: %s", ref, f)
		case f.Type == client.TypeMessage && f.Text == text && f.Room == room && msg.Type == "":
			msg = f
		default:
			other = append(other, f)
		}
	}
	if ack.ID != msg.ID {
		c.t.Fatalf("ack %s and message %s differ", ack, msg)
	}
	return ack, msg, other
}

// CloseStatus reads, skipping frames, until the connection ends and
// returns its close code (-1 when it ended without one).
func (c *Raw) CloseStatus() websocket.StatusCode {
	c.t.Helper()
	for {
		if _, err := c.ReadWithin(closeWait); err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

// ExpectClose reads, skipping frames, until the node closes the connection,
// which it must do with code.
func (c *Raw) ExpectClose(code websocket.StatusCode) {
	c.t.Helper()
	if got := c.CloseStatus(); got != code {
		c.t.Fatalf("connection closed with %d, want %d", got, code)
	}
}
