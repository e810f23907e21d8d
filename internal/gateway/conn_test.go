package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// tcpPair is a connected pair of TCP connections on the loopback.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// The writer finds the TCP connection under the connection count, so a
// batch of frames is one writev (through the wrapper, net.Buffers would
// write each header and payload on its own), and never goes under TLS.
func TestWSConnWritesUnderTheCount(t *testing.T) {
	client, server := tcpPair(t)
	counted := &countedConn{Conn: server, conns: &conns{}}
	if c := newWSConn(counted, nil); c.tcp != server {
		t.Fatalf("under a countedConn: tcp = %v, want the TCP connection", c.tcp)
	}
	if c := newWSConn(tls.Server(counted, &tls.Config{}), nil); c.tcp != nil {
		t.Fatal("under TLS the writer must write through TLS")
	}

	c := newWSConn(counted, nil)
	frames := []outFrame{{op: ws.OpText, payload: []byte("one")}, {op: ws.OpText, payload: []byte("two")}, {op: ws.OpPing}}
	if err := c.writeFrames(frames, time.Second); err != nil {
		t.Fatal(err)
	}
	readFrames(t, client, "one", "two", "")
}

// Without writev (a wrapper that is not TCP), the frames go in one write,
// whole and in order.
func TestWSConnWritesFlat(t *testing.T) {
	client, server := tcpPair(t)
	c := newWSConn(struct{ net.Conn }{server}, nil)
	if c.tcp != nil {
		t.Fatal("an opaque wrapper has no TCP connection to write to")
	}
	big := make([]byte, 70<<10) // over the kept-buffer bound
	for i := range big {
		big[i] = 'x'
	}
	frames := []outFrame{{op: ws.OpText, payload: []byte("one")}, {op: ws.OpText, payload: big}}
	go func() {
		if err := c.writeFrames(frames, 5*time.Second); err != nil {
			t.Error(err)
		}
	}()
	readFrames(t, client, "one", string(big))
}

// readFrames reads len(want) server frames and checks their payloads.
func readFrames(t *testing.T, conn net.Conn, want ...string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	for _, w := range want {
		h, err := ws.ReadHeader(r)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			t.Fatal(err)
		}
		if string(p) != w {
			t.Fatalf("payload %.20q..., want %.20q...", p, w)
		}
	}
}

// A write that does not wait takes what the socket takes; the rest, handed
// on, is written whole and in order once the client reads: 3,000 frames
// (more buffers than one writev takes), over a socket of 16 KB that the
// client does not read at first.
func TestWSConnWriteNowThenFinish(t *testing.T) {
	if !canWriteNow {
		t.Skip("no non-blocking writev here")
	}
	client, server := tcpPair(t)
	server.SetWriteBuffer(16 << 10)
	client.SetReadBuffer(16 << 10)
	c := newWSConn(server, nil)
	if c.raw == nil {
		t.Fatal("a TCP connection has no raw connection to write to")
	}
	var frames []outFrame
	var want []string
	for i := range 3000 {
		p := fmt.Sprintf("frame %d %s", i, strings.Repeat("y", i%200))
		frames = append(frames, outFrame{op: ws.OpText, payload: []byte(p)})
		want = append(want, p)
	}
	p, err := c.tryWriteFrames(frames)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		t.Fatal("350 KB went into a socket of 16 KB that nobody reads")
	}
	done := make(chan error, 1)
	go func() { done <- c.finishWrite(p, 5*time.Second) }()
	readFrames(t, client, want...)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// All of a small batch goes at once.
	if p, err := c.tryWriteFrames(frames[:2]); p != nil || err != nil {
		t.Fatalf("two small frames: pending %v, err %v", p, err)
	}
	readFrames(t, client, want[:2]...)
}

// A write to a connection the client reset fails at once, not on a timer.
func TestWSConnWriteNowToAClosedConnection(t *testing.T) {
	if !canWriteNow {
		t.Skip("no non-blocking writev here")
	}
	client, server := tcpPair(t)
	c := newWSConn(server, nil)
	client.SetLinger(0)
	client.Close()
	frames := []outFrame{{op: ws.OpText, payload: []byte("lost")}}
	var err error
	for i := 0; i < 100 && err == nil; i++ { // the RST comes after the first write
		_, err = c.tryWriteFrames(frames)
		time.Sleep(10 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a reset connection kept succeeding")
	}
}

func TestConsume(t *testing.T) {
	bufs := func() [][]byte { return [][]byte{[]byte("ab"), []byte("cde"), nil, []byte("f")} }
	for n, want := range []string{"abcdef", "bcdef", "cdef", "def", "ef", "f", ""} {
		if got := string(bytes.Join(consume(bufs(), n), nil)); got != want {
			t.Errorf("consume %d: %q, want %q", n, got, want)
		}
	}
	if got := size(bufs()); got != 6 {
		t.Errorf("size %d, want 6", got)
	}
}
