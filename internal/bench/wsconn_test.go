package bench

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// fakeNode accepts one WebSocket, answers the hello with a welcome, then
// runs script on the raw connection.
func fakeNode(t *testing.T, script func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		if _, err := wsutil.ReadClientText(c); err != nil { // hello
			return
		}
		wsutil.WriteServerText(c, []byte(`{"type":"welcome","node":"0123456789ab","session":"s","name":"x"}`))
		script(c)
	}()
	return "ws://" + ln.Addr().String() + "/chatr/ws"
}

func dialFake(t *testing.T, script func(c net.Conn)) *wsConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialWS(ctx, fakeNode(t, script), "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.closeNow)
	return c
}

func TestWSConnReadsWhatTheNodeSends(t *testing.T) {
	pong := make(chan string, 1)
	c := dialFake(t, func(c net.Conn) {
		ws.WriteFrame(c, ws.NewPingFrame([]byte("hi")))
		// A message in two fragments.
		ws.WriteFrame(c, ws.Frame{Header: ws.Header{OpCode: ws.OpText, Length: 6}, Payload: []byte(`{"type`)})
		ws.WriteFrame(c, ws.Frame{Header: ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 9}, Payload: []byte(`":"pong"}`)})
		if h, err := ws.ReadHeader(c); err == nil && h.OpCode == ws.OpPong && h.Masked && h.Length < 126 {
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(c, p); err == nil {
				ws.Cipher(p, h.Mask, 0)
				pong <- string(p)
			}
		}
		ws.WriteFrame(c, ws.NewCloseFrame(ws.NewCloseFrameBody(4000, "too slow")))
		wsutil.ReadClientData(c)
	})
	data, err := c.read()
	if err != nil || string(data) != `{"type":"pong"}` {
		t.Fatalf("read %q, %v", data, err)
	}
	select {
	case p := <-pong:
		if p != "hi" {
			t.Errorf("pong %q, want hi", p)
		}
	case <-time.After(5 * time.Second):
		t.Error("the ping was not answered")
	}
	_, err = c.read()
	if code := closeCode(err); code != 4000 || !strings.Contains(err.Error(), "too slow") {
		t.Errorf("close: %v (code %d), want 4000 too slow", err, code)
	}
}

// Frames a node never sends are errors, not crashes or huge buffers.
func TestWSConnBadFrames(t *testing.T) {
	for name, raw := range map[string][]byte{
		"binary":        ws.MustCompileFrame(ws.NewBinaryFrame([]byte("x"))),
		"huge length":   {0x81, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"cut payload":   {0x81, 10, 'a', 'b'},
		"bad op code":   {0x83, 0},
		"not websocket": []byte("HTTP/1.1 200 OK\r\n\r\n"),
	} {
		t.Run(name, func(t *testing.T) {
			c := dialFake(t, func(c net.Conn) { c.Write(raw) })
			if data, err := c.read(); err == nil {
				t.Fatalf("read %q, want an error", data)
			} else if closeCode(err) != -1 {
				t.Fatalf("%v taken for a close", err)
			}
		})
	}
	// A node that refuses the hello.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		ws.Upgrade(c)
		wsutil.ReadClientText(c)
		wsutil.WriteServerText(c, []byte(`{"type":"error","code":"name_taken","message":"no"}`))
		wsutil.ReadClientData(c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dialWS(ctx, "ws://"+ln.Addr().String()+"/chatr/ws", "x", nil); err == nil || !strings.Contains(err.Error(), "name_taken") {
		t.Fatalf("hello refused: %v", err)
	}
}
