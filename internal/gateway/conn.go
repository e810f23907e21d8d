package gateway

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// wsConn is the WebSocket framing over one hijacked connection: it reads
// one client frame at a time and writes many server frames in one call.
// It holds no buffer while idle: readers come from a pool while a frame is
// being read, and frames are written straight from their shared payloads.
type wsConn struct {
	conn net.Conn
	br   *bufio.Reader // nil while idle
	// tcp is the *net.TCPConn under conn when there is one (no TLS): only
	// it makes net.Buffers one writev; through a wrapper, each buffer
	// would be a write of its own.
	tcp *net.TCPConn
	// raw is tcp's, for writes that do not wait (writeNow); nil where
	// there are none.
	raw syscall.RawConn
}

// newWSConn frames conn, whose first bytes br may hold already.
func newWSConn(conn net.Conn, br *bufio.Reader) wsConn {
	c := wsConn{conn: conn, br: br}
	raw := conn
	for {
		u, ok := raw.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		if _, isTLS := raw.(*tls.Conn); isTLS {
			break // written through TLS, never under it
		}
		raw = u.NetConn()
	}
	c.tcp, _ = raw.(*net.TCPConn)
	if c.tcp != nil && canWriteNow {
		c.raw, _ = c.tcp.SyscallConn()
	}
	return c
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// writeScratch holds the frame headers and the vector of one write.
type writeScratch struct {
	hdr  []byte
	bufs net.Buffers
	flat []byte // the frames in one piece, for a conn without writev (TLS)
}

var scratchPool = sync.Pool{New: func() any { return new(writeScratch) }}

// errFrameTooLarge is a frame (or fragmented message) over the read limit.
var errFrameTooLarge = errors.New("frame over the read limit")

// errProtocol is a frame that breaks RFC 6455 (unmasked, bad opcode, ...).
type errProtocol string

func (e errProtocol) Error() string { return "websocket protocol error: " + string(e) }

// wsFrame is one frame read from the client, unmasked.
type wsFrame struct {
	op      ws.OpCode
	fin     bool
	payload []byte
}

// reader returns the connection's buffered reader, taking one from the
// pool if it has none.
func (c *wsConn) reader() *bufio.Reader {
	if c.br == nil {
		c.br = readerPool.Get().(*bufio.Reader)
		c.br.Reset(c.conn)
	}
	return c.br
}

// release gives the reader back to the pool unless it holds bytes of the
// next frame.
func (c *wsConn) release() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
}

// buffered reports whether a read could proceed without the network.
func (c *wsConn) buffered() bool { return c.br != nil && c.br.Buffered() > 0 }

// readFrame reads one frame of at most limit payload bytes.
func (c *wsConn) readFrame(limit int64) (wsFrame, error) {
	r := c.reader()
	h, err := ws.ReadHeader(r)
	if err != nil {
		return wsFrame{}, err
	}
	switch {
	case !h.Masked:
		return wsFrame{}, errProtocol("client frames must be masked")
	case h.Rsv != 0:
		return wsFrame{}, errProtocol("reserved bits set without an extension")
	case h.OpCode.IsReserved():
		return wsFrame{}, errProtocol(fmt.Sprintf("reserved opcode %d", h.OpCode))
	case h.OpCode.IsControl() && (h.Length > 125 || !h.Fin):
		return wsFrame{}, errProtocol("control frames must be whole and at most 125 bytes")
	case h.Length > limit:
		return wsFrame{}, errFrameTooLarge
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return wsFrame{}, err
	}
	ws.Cipher(p, h.Mask, 0)
	return wsFrame{op: h.OpCode, fin: h.Fin, payload: p}, nil
}

// appendHeader appends an unmasked server frame header.
func appendHeader(b []byte, op ws.OpCode, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// outFrame is one frame to write: a shared payload, never modified.
type outFrame struct {
	op      ws.OpCode
	payload []byte
}

// writeFrames writes frames with one vectored write (writev): the way the
// leading servers batch, without copying the shared payloads. It waits up
// to timeout for the socket to take them.
func (c *wsConn) writeFrames(frames []outFrame, timeout time.Duration) error {
	if len(frames) == 0 {
		return nil
	}
	sc := c.vector(frames)
	return c.finishWrite(&pendingWrite{sc: sc, rest: sc.bufs}, timeout)
}

// pendingWrite is a write under way: the buffers left to write, in the
// scratch that holds their headers.
type pendingWrite struct {
	sc   *writeScratch
	rest net.Buffers
}

// tryWriteFrames writes frames as far as the socket takes them at once,
// without waiting: nil when they all went, or the write to finish with
// finishWrite, on a goroutine that may wait. Only for c.raw != nil.
func (c *wsConn) tryWriteFrames(frames []outFrame) (*pendingWrite, error) {
	if len(frames) == 0 {
		return nil, nil
	}
	sc := c.vector(frames)
	rest, err := writeNow(c.raw, sc.bufs)
	if err != nil || len(rest) == 0 {
		sc.release()
		return nil, err
	}
	return &pendingWrite{sc: sc, rest: rest}, nil
}

// vector lays frames out as one vector of buffers: each header, then its
// payload.
func (c *wsConn) vector(frames []outFrame) *writeScratch {
	sc := scratchPool.Get().(*writeScratch)
	if need := len(frames) * ws.MaxHeaderSize; cap(sc.hdr) < need {
		sc.hdr = make([]byte, 0, need) // never grown below, so slices of it stay valid
	}
	hdr, bufs := sc.hdr[:0], sc.bufs[:0]
	for _, f := range frames {
		start := len(hdr)
		hdr = appendHeader(hdr, f.op, len(f.payload))
		bufs = append(bufs, hdr[start:len(hdr):len(hdr)])
		if len(f.payload) > 0 {
			bufs = append(bufs, f.payload)
		}
	}
	sc.bufs = bufs
	return sc
}

// finishWrite writes what is left of p, waiting up to timeout.
func (c *wsConn) finishWrite(p *pendingWrite, timeout time.Duration) error {
	defer p.sc.release()
	c.conn.SetWriteDeadline(time.Now().Add(timeout))
	if c.tcp != nil {
		_, err := p.rest.WriteTo(c.tcp) // consumes p.rest, not sc.bufs
		return err
	}
	// One write, so TLS seals the frames in as few records as fit rather
	// than one or two records (and system calls) per frame.
	sc := p.sc
	sc.flat = sc.flat[:0]
	for _, b := range p.rest {
		sc.flat = append(sc.flat, b...)
	}
	_, err := c.conn.Write(sc.flat)
	if cap(sc.flat) > 64<<10 {
		sc.flat = nil // a burst's buffer is not kept in the pool
	}
	return err
}

// release drops the payload references and gives the scratch back.
func (sc *writeScratch) release() {
	clear(sc.bufs)
	sc.bufs = sc.bufs[:0]
	scratchPool.Put(sc)
}

// consume drops the first n bytes of bufs.
func consume(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}

// size is the bytes in bufs.
func size(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// closePayload is the body of a close frame.
func closePayload(code int, reason string) []byte {
	for len(reason) > 123 { // a close frame body is at most 125 bytes
		_, size := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-size]
	}
	return ws.NewCloseFrameBody(ws.StatusCode(code), reason)
}
