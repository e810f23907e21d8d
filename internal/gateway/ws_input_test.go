package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

	"chatr/internal/proto"
)

// Every bad frame gets an error with the docs/protocol.md code (and the frame's
// ref when it had one), and the connection keeps working.
func TestBadFramesAnswerAndKeepTheConnection(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, unlimited()...)
	elsewhere := ts.hub.Scope("lobby")
	elsewhere.Cluster = "elsewhere"
	otherRoom := proto.EncodeCursor(ts.hub.Scope("other"), proto.Vector{ts.origin: 1})
	otherCluster := proto.EncodeCursor(elsewhere, proto.Vector{ts.origin: 1})
	good := proto.EncodeCursor(ts.hub.Scope("lobby"), proto.Vector{ts.origin: 1})

	cases := []struct {
		name  string
		frame string
		code  string
		ref   string
	}{
		{"not JSON", `hello there`, proto.CodeBadRequest, ""},
		{"truncated JSON", `{"type":"ping"`, proto.CodeBadRequest, ""},
		{"JSON array", `[1,2,3]`, proto.CodeBadRequest, ""},
		{"JSON string", `"ping"`, proto.CodeBadRequest, ""},
		{"JSON null", `null`, proto.CodeBadRequest, ""},
		{"empty object", `{}`, proto.CodeBadRequest, ""},
		{"empty frame", ``, proto.CodeBadRequest, ""},
		{"type not a string", `{"type":5}`, proto.CodeBadRequest, ""},
		{"unknown type", `{"type":"shout","ref":"u1"}`, proto.CodeBadRequest, "u1"},
		{"hello twice", `{"type":"hello","name":"again","ref":"h2"}`, proto.CodeBadRequest, "h2"},
		{"join without room", `{"type":"join","ref":"j0"}`, proto.CodeBadRequest, "j0"},
		{"join room not a string", `{"type":"join","room":7,"ref":"j1"}`, proto.CodeBadRequest, "j1"},
		{"join upper-case room", `{"type":"join","room":"Lobby","ref":"j2"}`, proto.CodeBadRequest, "j2"},
		{"join room with space", `{"type":"join","room":"a b","ref":"j3"}`, proto.CodeBadRequest, "j3"},
		{"join room too long", `{"type":"join","room":"` + strings.Repeat("r", 65) + `","ref":"j4"}`, proto.CodeBadRequest, "j4"},
		{"join room slash", `{"type":"join","room":"../etc","ref":"j5"}`, proto.CodeBadRequest, "j5"},
		{"join negative history", `{"type":"join","room":"lobby","history":-1,"ref":"j6"}`, proto.CodeBadRequest, "j6"},
		{"join history not a number", `{"type":"join","room":"lobby","history":"ten","ref":"j7"}`, proto.CodeBadRequest, "j7"},
		{"join since garbage", `{"type":"join","room":"lobby","since":"not-a-cursor","ref":"c1"}`, proto.CodeBadRequest, "c1"},
		{"join since of another room", `{"type":"join","room":"lobby","since":"` + otherRoom + `","ref":"c2"}`, proto.CodeBadRequest, "c2"},
		{"join since of another cluster", `{"type":"join","room":"lobby","since":"` + otherCluster + `","ref":"c3"}`, proto.CodeBadRequest, "c3"},
		{"join since with a flipped byte", `{"type":"join","room":"lobby","since":"` + flip(good) + `","ref":"c4"}`, proto.CodeBadRequest, "c4"},
		{"leave without room", `{"type":"leave","ref":"l0"}`, proto.CodeBadRequest, "l0"},
		{"leave room not joined", `{"type":"leave","room":"lobby","ref":"l1"}`, proto.CodeNotJoined, "l1"},
		{"send without room", `{"type":"send","text":"hi","ref":"s0"}`, proto.CodeBadRequest, "s0"},
		{"send without text", `{"type":"send","room":"lobby","ref":"s1"}`, proto.CodeBadRequest, "s1"},
		{"send empty text", `{"type":"send","room":"lobby","text":"","ref":"s2"}`, proto.CodeBadRequest, "s2"},
		{"send text not a string", `{"type":"send","room":"lobby","text":["hi"],"ref":"s3"}`, proto.CodeBadRequest, "s3"},
		{"send bad room", `{"type":"send","room":"NO","text":"hi","ref":"s4"}`, proto.CodeBadRequest, "s4"},
		{"send text over 4096 bytes", `{"type":"send","room":"lobby","text":"` + strings.Repeat("x", 4097) + `","ref":"s5"}`, proto.CodeTooLarge, "s5"},
		{"send multibyte text over 4096 bytes", `{"type":"send","room":"lobby","text":"` + strings.Repeat("é", 2049) + `","ref":"s6"}`, proto.CodeTooLarge, "s6"},
		{"send to a room not joined", `{"type":"send","room":"lobby","text":"hi","ref":"s7"}`, proto.CodeNotJoined, "s7"},
		{"ref too long", `{"type":"ping","ref":"` + strings.Repeat("r", 65) + `"}`, proto.CodeBadRequest, ""},
		{"ref not a string", `{"type":"ping","ref":12}`, proto.CodeBadRequest, ""},
	}
	c := ts.hello(t, "alice")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := c.For(t)
			c.Send(tc.frame)
			c.ExpectError(tc.code, tc.ref)
			c.Quiet()
		})
	}

	t.Run("invalid UTF-8", func(t *testing.T) {
		c := c.For(t)
		c.Send([]byte("{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"\xff\xfe\",\"ref\":\"u8\"}"))
		f := c.Expect("error")
		if f.Code != proto.CodeBadRequest {
			t.Fatalf("got %s, want bad_request", f)
		}
		c.Quiet()
	})
	t.Run("binary frame", func(t *testing.T) {
		c := c.For(t)
		c.Write(websocket.MessageBinary, []byte(`{"type":"ping"}`))
		c.ExpectError(proto.CodeBadRequest, "")
		c.Quiet()
	})

	// After all that, the session still chats.
	c.Join("lobby", nil)
	c.Send(`{"type":"send","room":"lobby","text":"still here","ref":"ok"}`)
	ack, before := c.Until("ack")
	if ack.Ref != "ok" {
		t.Fatalf("ack %s, want ref ok", ack)
	}
	if len(before) == 0 {
		c.Expect("message")
	}
}

func flip(s string) string {
	b := []byte(s)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// Frames before hello get hello_required; a bad hello gets bad_request; both
// leave the connection open for a good hello.
func TestHelloFirst(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	c := ts.dial(t)
	for _, f := range []string{
		`{"type":"ping","ref":"p"}`,
		`{"type":"join","room":"lobby","ref":"j"}`,
		`{"type":"send","room":"lobby","text":"hi","ref":"s"}`,
		`{"type":"leave","room":"lobby"}`,
	} {
		c.Send(f)
		var in struct{ Ref string }
		_ = json.Unmarshal([]byte(f), &in)
		c.ExpectError(proto.CodeHelloRequired, in.Ref)
	}
	for _, tc := range []struct{ name, frame string }{
		{"no name", `{"type":"hello","ref":"h"}`},
		{"blank name", `{"type":"hello","name":"   ","ref":"h"}`},
		{"name too long", `{"type":"hello","name":"` + strings.Repeat("n", 33) + `","ref":"h"}`},
		{"name with <", `{"type":"hello","name":"<b>bob</b>","ref":"h"}`},
		{"name with newline", `{"type":"hello","name":"bo\nb","ref":"h"}`},
		{"name with emoji", `{"type":"hello","name":"bob 😀","ref":"h"}`},
		{"name not a string", `{"type":"hello","name":42,"ref":"h"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := c.For(t)
			c.Send(tc.frame)
			c.ExpectError(proto.CodeBadRequest, "h")
			// Still not greeted.
			c.Send(`{"type":"ping"}`)
			c.ExpectError(proto.CodeHelloRequired, "")
		})
	}
	// 32 characters (not bytes) is the limit: accented letters count once.
	name := strings.Repeat("é", 32)
	c.Send(`{"type":"hello","name":"  ` + name + ` "}`)
	w := c.Expect("welcome")
	if w.Name != name {
		t.Fatalf("welcome name %q, want %q", w.Name, name)
	}
	c.Quiet()
}

// A frame over --read-limit closes the connection with 1009.
func TestReadLimitCloses1009(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--read-limit", "8192")
	c := ts.hello(t, "big")
	other := ts.hello(t, "other")
	// A frame just under the limit is an ordinary (bad) frame.
	c.Send(`{"type":"ping","pad":"` + strings.Repeat("p", 8000) + `"}`)
	c.Expect("pong")
	c.Send(`{"type":"send","room":"lobby","text":"` + strings.Repeat("x", 9000) + `"}`)
	c.ExpectClose(websocket.StatusMessageTooBig)
	// Others are unaffected.
	other.Quiet()
}

// No hello within 10 s closes with 1008. (This test takes 10 s.)
func TestNoHelloCloses1008(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes 10 s")
	}
	ts := newTestServer(t)
	c := ts.dial(t)
	greeted := ts.hello(t, "greeted")
	c.ExpectClose(websocket.StatusPolicyViolation)
	// A session that said hello is not cut off by the timer.
	greeted.Quiet()
}

// A client's close frame is answered with its own code when that code may
// be sent (RFC 6455 7.4: 1000-1003, 1007-1011, 3000-4999), and with 1002
// (protocol error) when it may not: reserved codes, codes only endpoints
// report locally (1005, 1006, 1015), a one-byte body, out of range.
func TestClientCloseCodes(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	for _, tc := range []struct {
		name string
		body []byte
		want ws.StatusCode
	}{
		{"no body", nil, 1000},
		{"1000", ws.NewCloseFrameBody(1000, "bye"), 1000},
		{"1001", ws.NewCloseFrameBody(1001, ""), 1001},
		{"1003", ws.NewCloseFrameBody(1003, ""), 1003},
		{"1007", ws.NewCloseFrameBody(1007, ""), 1007},
		{"1011", ws.NewCloseFrameBody(1011, ""), 1011},
		{"3000", ws.NewCloseFrameBody(3000, ""), 3000},
		{"4999", ws.NewCloseFrameBody(4999, ""), 4999},
		{"one byte", []byte{3}, 1002},
		{"0", ws.NewCloseFrameBody(0, ""), 1002},
		{"999", ws.NewCloseFrameBody(999, ""), 1002},
		{"1004", ws.NewCloseFrameBody(1004, ""), 1002},
		{"1005", ws.NewCloseFrameBody(1005, ""), 1002},
		{"1006", ws.NewCloseFrameBody(1006, ""), 1002},
		{"1012", ws.NewCloseFrameBody(1012, ""), 1002},
		{"1015", ws.NewCloseFrameBody(1015, ""), 1002},
		{"2999", ws.NewCloseFrameBody(2999, ""), 1002},
		{"5000", ws.NewCloseFrameBody(5000, ""), 1002},
		{"65535", ws.NewCloseFrameBody(65535, ""), 1002},
		{"reason not UTF-8", append(ws.NewCloseFrameBody(1000, ""), 0xff, 0xfe), 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
			defer cancel()
			conn, _, _, err := ws.Dial(ctx, ts.ws)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(readTimeout))
			if err := ws.WriteFrame(conn, ws.MaskFrameInPlace(ws.NewFrame(ws.OpClose, true, bytes.Clone(tc.body)))); err != nil {
				t.Fatal(err)
			}
			for {
				h, err := ws.ReadHeader(conn)
				if err != nil || h.Length > 125 {
					t.Fatalf("no close frame came back: %v (header %+v)", err, h)
				}
				payload := make([]byte, h.Length)
				if _, err := io.ReadFull(conn, payload); err != nil {
					t.Fatalf("no close frame came back: %v", err)
				}
				if h.OpCode != ws.OpClose {
					continue
				}
				code, _ := ws.ParseCloseFrameData(payload)
				if code != tc.want {
					t.Fatalf("close %x answered with %d, want %d", tc.body, code, tc.want)
				}
				return
			}
		})
	}
}
