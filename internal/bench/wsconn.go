package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"chatr/internal/client"
	"chatr/internal/proto"
)

// wsConn is bench's own client connection: gobwas/ws framing over a
// buffered socket. Reading a frame takes no lock, no select and no
// goroutine hand-off, so the load generator spends less CPU per delivery
// than the node it measures (with chatr's general client, whose reads go
// through coder/websocket, bench took more CPU than the node in the fan-out
// scenario; BENCHMARKS.md).
type wsConn struct {
	nc  net.Conn
	br  *bufio.Reader
	msg []byte // the message being read, reused

	wmu  sync.Mutex // one writer at a time: the sender and pong replies
	wbuf []byte
}

// closeError is a close frame from the node.
type closeError struct {
	code   int
	reason string
}

func (e *closeError) Error() string {
	return fmt.Sprintf("closed by the node: %d %s", e.code, e.reason)
}

// closeCode returns the close code of an error from read, or -1.
func closeCode(err error) int {
	var ce *closeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return -1
}

// dialWS opens a WebSocket to rawURL (from local, if not nil), says hello
// as name and waits for the welcome.
func dialWS(ctx context.Context, rawURL, name string, local net.IP) (*wsConn, error) {
	u, err := client.WebSocketURL(rawURL)
	if err != nil {
		return nil, err
	}
	d := ws.Dialer{Timeout: 30 * time.Second}
	if local != nil {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
		d.NetDial = nd.DialContext
	}
	nc, br, _, err := d.Dial(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	c := &wsConn{nc: nc, br: br}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
		defer nc.SetDeadline(time.Time{})
	}
	if err := c.write(proto.Inbound{Type: proto.TypeHello, Name: name}); err != nil {
		nc.Close()
		return nil, fmt.Errorf("hello to %s: %w", u, err)
	}
	data, err := c.read()
	if err == nil {
		switch f := scan(data); f.typ {
		case client.TypeWelcome:
		case client.TypeError:
			err = &proto.Error{Code: f.code, Message: f.message}
		default:
			err = fmt.Errorf("got %q before welcome", f.typ)
		}
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("hello to %s: %w", u, err)
	}
	return c, nil
}

// write sends one client frame (masked, as RFC 6455 wants of clients).
func (c *wsConn) write(in proto.Inbound) error {
	return c.writeFrame(ws.OpText, proto.Encode(in))
}

func (c *wsConn) writeFrame(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload)), Masked: true, Mask: ws.NewMask()}
	w := bytesWriter{b: c.wbuf[:0]}
	if err := ws.WriteHeader(&w, h); err != nil {
		return err
	}
	n := len(w.b)
	c.wbuf = append(w.b, payload...)
	ws.Cipher(c.wbuf[n:], h.Mask, 0)
	_, err := c.nc.Write(c.wbuf)
	return err
}

// bytesWriter appends to b.
type bytesWriter struct{ b []byte }

func (w *bytesWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// maxMessage bounds a message from the node (its frames are far smaller).
const maxMessage = 1 << 20

// read returns the next text message, valid until the next read. It
// answers pings; a close frame ends the connection with a *closeError.
func (c *wsConn) read() ([]byte, error) {
	c.msg = c.msg[:0]
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		if h.OpCode.IsReserved() {
			return nil, fmt.Errorf("frame with reserved op code %d from the node", h.OpCode)
		}
		if h.Length > maxMessage || int64(len(c.msg))+h.Length > maxMessage {
			return nil, fmt.Errorf("frame of %d bytes from the node", h.Length)
		}
		start := len(c.msg)
		c.msg = append(c.msg, make([]byte, h.Length)...)
		payload := c.msg[start:]
		if _, err := io.ReadFull(c.br, payload); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(payload, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			c.msg = c.msg[:start]
			if err := c.writeFrame(ws.OpPong, append([]byte(nil), payload...)); err != nil {
				return nil, err
			}
			continue
		case ws.OpPong:
			c.msg = c.msg[:start]
			continue
		case ws.OpClose:
			code, reason := -1, ""
			if len(payload) >= 2 {
				code, reason = int(payload[0])<<8|int(payload[1]), string(payload[2:])
			}
			c.writeFrame(ws.OpClose, payload[:min(2, len(payload))])
			c.nc.Close()
			return nil, &closeError{code: code, reason: reason}
		case ws.OpBinary:
			return nil, errors.New("read: binary frame from node")
		}
		if h.Fin {
			return c.msg, nil
		}
	}
}

// closeNow drops the connection without a close handshake.
func (c *wsConn) closeNow() { c.nc.Close() }

// sendText sends a message to room with ref.
func (c *wsConn) sendText(room, text string, ref uint64) error {
	return c.write(proto.Inbound{Type: proto.TypeSend, Room: room, Text: text, Ref: strconv.FormatUint(ref, 10)})
}

// resume joins room again with since, or with the most history when since
// is empty (the connection had no message of the room yet).
func (c *wsConn) resume(room, since string) error {
	if since == "" {
		n := proto.MaxHistory
		return c.write(proto.Inbound{Type: proto.TypeJoin, Room: room, History: &n})
	}
	return c.write(proto.Inbound{Type: proto.TypeJoin, Room: room, Since: since})
}

// join joins room without history.
func (c *wsConn) join(room string) error {
	n := 0
	return c.write(proto.Inbound{Type: proto.TypeJoin, Room: room, History: &n})
}
