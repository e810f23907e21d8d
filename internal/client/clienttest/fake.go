package clienttest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/proto"
)

// FakeNode is a small in-memory stand-in for a chatr node, for tests of
// clients: hello, join (with history or a since cursor), leave, send with
// ack and fan-out to every joined session, and ping. Its cursors are the
// number of messages of the room seen so far. It keeps nothing on disk and
// knows no cluster.
type FakeNode struct {
	URL string // ws:// URL of its /chatr/ws

	srv *httptest.Server

	mu       sync.Mutex
	rooms    map[string][]proto.MessageJSON
	sessions map[*fakeSession]bool
	seq      uint64
}

type fakeSession struct {
	ws    *websocket.Conn
	name  string
	out   chan []byte
	rooms map[string]bool // guarded by FakeNode.mu
}

const fakeNodeID = "fa4e00000001"

// NewFakeNode starts a FakeNode, stopped by t.Cleanup.
func NewFakeNode(t testing.TB) *FakeNode {
	n := &FakeNode{rooms: map[string][]proto.MessageJSON{}, sessions: map[*fakeSession]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/chatr/ws", n.serve)
	n.srv = httptest.NewServer(mux)
	n.URL = "ws" + strings.TrimPrefix(n.srv.URL, "http") + "/chatr/ws"
	t.Cleanup(func() {
		n.DropAll()
		n.srv.Close()
	})
	return n
}

// DropAll closes every session with code 4000, as a node does with a client
// that fell behind: clients are expected to reconnect and resume.
func (n *FakeNode) DropAll() {
	n.mu.Lock()
	var all []*fakeSession
	for s := range n.sessions {
		all = append(all, s)
	}
	n.mu.Unlock()
	for _, s := range all {
		s.ws.Close(proto.CloseSlowClient, "dropped by the test")
	}
}

// Messages returns the messages of room.
func (n *FakeNode) Messages(room string) []proto.MessageJSON {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]proto.MessageJSON(nil), n.rooms[room]...)
}

func (n *FakeNode) serve(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	s := &fakeSession{ws: ws, out: make(chan []byte, 4096), rooms: map[string]bool{}}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		for {
			select {
			case b := <-s.out:
				if ws.Write(ctx, websocket.MessageText, b) != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		n.mu.Lock()
		delete(n.sessions, s)
		for room := range s.rooms {
			n.presence(s, room, "left")
		}
		n.mu.Unlock()
		ws.CloseNow()
	}()
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		in, perr := proto.DecodeInbound(data)
		if perr != nil {
			s.send(proto.EncodeError(in.Ref, perr))
			continue
		}
		n.handle(s, in)
	}
}

// send queues a frame for s, and closes s if it cannot keep up.
func (s *fakeSession) send(b []byte) {
	select {
	case s.out <- b:
	default:
		go s.ws.Close(proto.CloseSlowClient, "too slow")
	}
}

func (n *FakeNode) handle(s *fakeSession, in proto.Inbound) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if in.Type != proto.TypeHello && s.name == "" {
		s.send(proto.EncodeError(in.Ref, proto.Errorf(proto.CodeHelloRequired, "say hello first")))
		return
	}
	switch in.Type {
	case proto.TypeHello:
		s.name = in.Name
		n.sessions[s] = true
		s.send(proto.Encode(proto.Welcome{Type: "welcome", Node: fakeNodeID, Session: "s1", Name: in.Name,
			Nodes: []proto.Member{{ID: fakeNodeID, Name: "fake", HTTP: strings.TrimPrefix(n.srv.URL, "http://")}}}))
	case proto.TypeJoin:
		s.rooms[in.Room] = true
		msgs := n.rooms[in.Room]
		var people []proto.Person
		for o := range n.sessions {
			if o.rooms[in.Room] {
				people = append(people, proto.Person{Name: o.name, Node: fakeNodeID})
			}
		}
		s.send(proto.Encode(proto.Joined{Type: "joined", Room: in.Room, Presence: people}))
		n.presence(s, in.Room, "joined")
		from := max(len(msgs)-proto.DefaultHistory, 0)
		if in.History != nil {
			from = max(len(msgs)-*in.History, 0)
		}
		if in.Since != "" {
			from, _ = strconv.Atoi(in.Since)
		}
		for _, m := range msgs[min(from, len(msgs)):] {
			s.send(proto.Encode(m))
		}
		cursor := ""
		if len(msgs) > 0 {
			cursor = strconv.Itoa(len(msgs))
		}
		s.send(proto.Encode(proto.Synced{Type: "synced", Room: in.Room, Cursor: cursor}))
	case proto.TypeLeave:
		delete(s.rooms, in.Room)
		n.presence(s, in.Room, "left")
		s.send(proto.Encode(proto.Left{Type: "left", Room: in.Room}))
	case proto.TypeSend:
		if !s.rooms[in.Room] {
			s.send(proto.EncodeError(in.Ref, proto.Errorf(proto.CodeNotJoined, "join %s first", in.Room)))
			return
		}
		n.seq++
		m := proto.Message{Origin: fakeNodeID, Seq: n.seq, Room: in.Room, Sender: s.name, Text: in.Text, Created: time.Now().UnixMicro()}
		mj := m.JSON("message", strconv.Itoa(len(n.rooms[in.Room])+1))
		n.rooms[in.Room] = append(n.rooms[in.Room], mj)
		frame := proto.Encode(mj)
		s.send(proto.Encode(proto.Ack{Type: "ack", Ref: in.Ref, ID: m.ID(), Created: proto.FormatTime(m.Created)}))
		for o := range n.sessions {
			if o.rooms[in.Room] {
				o.send(frame)
			}
		}
	case proto.TypePing:
		s.send(proto.Pong)
	}
}

// presence tells the other sessions in room that s joined or left it.
// n.mu is held.
func (n *FakeNode) presence(s *fakeSession, room, change string) {
	p := proto.Presence{Type: "presence", Room: room}
	who := []proto.Person{{Name: s.name, Node: fakeNodeID}}
	if change == "joined" {
		p.Joined = who
	} else {
		p.Left = who
	}
	b := proto.Encode(p)
	for o := range n.sessions {
		if o != s && o.rooms[room] {
			o.send(b)
		}
	}
}
