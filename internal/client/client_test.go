package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/client/clienttest"
	"chatr/internal/proto"
)

func TestWebSocketURL(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{in: "ws://127.0.0.1:5080/chatr/ws", want: "ws://127.0.0.1:5080/chatr/ws"},
		{in: "http://127.0.0.1:5080", want: "ws://127.0.0.1:5080/chatr/ws"},
		{in: "https://chat.example.com/", want: "wss://chat.example.com/chatr/ws"},
		{in: "localhost:5080", want: "ws://localhost:5080/chatr/ws"},
		{in: "ws://h:1/other", want: "ws://h:1/other"},
		{in: "ftp://h:1", err: "scheme"},
		{in: "http://", err: "no host"},
	}
	for _, c := range cases {
		got, err := client.WebSocketURL(c.in)
		if c.err != "" {
			if err == nil {
				t.Errorf("WebSocketURL(%q) = %q, want an error about %s", c.in, got, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("WebSocketURL(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestDecode(t *testing.T) {
	f, err := client.Decode([]byte(`{"type":"presence","room":"lobby","joined":[{"name":"ann","node":"a1"}],"left":[]}`))
	if err != nil || f.Type != client.TypePresence || len(f.Joined) != 1 || f.Joined[0].Name != "ann" {
		t.Fatalf("Decode presence = %+v, %v", f, err)
	}
	f, _ = client.Decode([]byte(`{"type":"error","ref":"r1","code":"not_joined","message":"join first"}`))
	var perr *proto.Error
	if !errors.As(f.Err(), &perr) || perr.Code != proto.CodeNotJoined {
		t.Fatalf("Err() = %v, want a not_joined *proto.Error", f.Err())
	}
	if _, err := client.Decode([]byte(`{"room":"x"}`)); err == nil {
		t.Fatal("Decode of a frame without type: no error")
	}
}

// TestSessionAgainstFake walks through hello, join, send, ack, the echo of
// the message, and a resume on a second connection from the cursor.
func TestSessionAgainstFake(t *testing.T) {
	node := clienttest.NewFakeNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	a, err := client.Dial(ctx, node.URL, "  ann ", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if w := a.Welcome(); w.Name != "ann" || w.Node == "" || len(w.Nodes) == 0 {
		t.Fatalf("welcome = %+v", w)
	}
	if err := a.Join(ctx, "lobby", ""); err != nil {
		t.Fatal(err)
	}
	frames, err := a.ReadUntil(ctx, client.IsType(client.TypeSynced, "lobby"))
	if err != nil || frames[0].Type != client.TypeJoined {
		t.Fatalf("join answers = %+v, %v", frames, err)
	}
	if err := a.Send(ctx, "lobby", "hello", "r1"); err != nil {
		t.Fatal(err)
	}
	var ack, msg client.Frame
	for ack.Type == "" || msg.Type == "" {
		f, err := a.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		switch f.Type {
		case client.TypeAck:
			ack = f
		case client.TypeMessage:
			msg = f
		}
	}
	if ack.Ref != "r1" || ack.ID != msg.ID || msg.Text != "hello" || msg.Sender != "ann" {
		t.Fatalf("ack %+v, message %+v", ack, msg)
	}
	if a.Cursor("lobby") != msg.Cursor || msg.Cursor == "" {
		t.Fatalf("Cursor = %q, want the message's %q", a.Cursor("lobby"), msg.Cursor)
	}

	// Another message, then a new connection resumes from the old cursor.
	cursor := a.Cursor("lobby")
	a.Send(ctx, "lobby", "second", "r2")
	a.ReadUntil(ctx, client.IsType(client.TypeAck, ""))
	b, err := client.Dial(ctx, node.URL, "ann", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Join(ctx, "lobby", cursor)
	frames, err = b.ReadUntil(ctx, client.IsType(client.TypeSynced, "lobby"))
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, f := range frames {
		if f.Type == client.TypeMessage {
			texts = append(texts, f.Text)
		}
	}
	if len(texts) != 1 || texts[0] != "second" {
		t.Fatalf("resume replayed %q, want [second]", texts)
	}
}

func TestDialRefused(t *testing.T) {
	node := clienttest.NewFakeNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, node.URL, "bad/name", nil)
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeBadRequest {
		t.Fatalf("Dial with a bad name: %v, want a bad_request *proto.Error", err)
	}
}

func TestLocalAddrClient(t *testing.T) {
	from := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from <- r.RemoteAddr
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, srv.URL, "ann", &client.Options{HTTPClient: client.LocalAddrClient(net.IPv4(127, 0, 0, 2))})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("Dial = %v, want the 403 of the handshake", err)
	}
	if host, _, _ := net.SplitHostPort(<-from); host != "127.0.0.2" {
		t.Fatalf("the request came from %s, want 127.0.0.2", host)
	}
}
