package gateway

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
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
