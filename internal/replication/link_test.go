package replication

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"chatr/internal/hub"
	"chatr/internal/proctest"
	"chatr/internal/proto"
	"chatr/internal/replication/wire"
	"chatr/internal/store"
)

// recorder keeps every byte that crosses the connections it dialed.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (rec *recorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &recordedConn{Conn: c, rec: rec}, nil
}

func (rec *recorder) bytes() []byte {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return bytes.Clone(rec.buf.Bytes())
}

type recordedConn struct {
	net.Conn
	rec *recorder
}

func (c *recordedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rec.mu.Lock()
	c.rec.buf.Write(p[:n])
	c.rec.mu.Unlock()
	return n, err
}

func (c *recordedConn) Write(p []byte) (int, error) {
	c.rec.mu.Lock()
	c.rec.buf.Write(p)
	c.rec.mu.Unlock()
	return c.Conn.Write(p)
}

// newPeerDialing is newPeer whose links are dialed by dial.
func newPeerDialing(t *testing.T, cluster string, secret []byte, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *peer {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, id, _ := ed25519.GenerateKey(nil)
	p := &peer{st: st, key: pub}
	p.hub = hub.New(hub.Options{NodeID: st.NodeID(), Cluster: cluster})
	if p.repl, err = New(Options{Store: st, Hub: p.hub, NodeID: st.NodeID(), Cluster: cluster, Identity: id, Secret: secret,
		Dial: dial, Metrics: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	fanout := st.Follow(true)
	hubCtx, stopHub := context.WithCancel(context.Background())
	go p.hub.Run(hubCtx, fanout)
	p.srv = httptest.NewServer(p.repl.Handler())
	go p.repl.Run(context.Background())
	t.Cleanup(func() { p.repl.Close(); p.srv.Close(); stopHub(); st.Close() })
	return p
}

// A link is private: what crosses the network is TLS, and no message text,
// vector or node id of the cluster is in it in clear.
func TestLinkIsPrivate(t *testing.T) {
	key := []byte("0123456789abcdef")
	a := newPeer(t, "c", key, 0)
	const text = "nobody on the wire may read this"
	post(t, a, text)
	var rec recorder
	b := newPeerDialing(t, "c", key, rec.dial)
	a.knows(b)
	b.knows(a)
	proctest.Eventually(t, 10*time.Second, func() error { return holds(b, proto.Vector{a.st.NodeID(): 1}) })
	wire := rec.bytes()
	for _, clear := range []string{text, a.st.NodeID(), b.st.NodeID(), `"since"`, "lobby"} {
		if bytes.Contains(wire, []byte(clear)) {
			t.Errorf("%q crossed the network in clear", clear)
		}
	}
	if !bytes.Contains(wire, []byte("/chatr/peer/link")) || len(wire) < 1000 {
		t.Fatalf("recorded %d bytes without the link's upgrade: the recorder saw nothing", len(wire))
	}
}

// dialLink opens a peer link to leader as x would, through x's handshake.
func dialLink(t *testing.T, x *peer, leader *peer, h hello) *linkConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	conn, _, err := websocket.Dial(ctx, "ws://"+leader.addr()+"/chatr/peer/link", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	conn.SetReadLimit(wsMessageLimit)
	lc, err := x.repl.clientHandshake(ctx, websocket.NetConn(ctx, conn, websocket.MessageBinary), leader.as(), h)
	if err != nil {
		t.Fatal(err)
	}
	return lc
}

// A stranger that opens the link's WebSocket and speaks TLS with a key of
// its own is refused in the handshake, before a byte of ours: it never gets
// the leader's hello, let alone a message.
func TestStrangerLearnsNothing(t *testing.T) {
	a := newPeer(t, "c", []byte("0123456789abcdef"), 0)
	post(t, a, "hello")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+a.addr()+"/chatr/peer/link", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	_, key, _ := ed25519.GenerateKey(nil)
	cert, err := identity(key)
	if err != nil {
		t.Fatal(err)
	}
	before := refusals(t, a)
	tc := tls.Client(websocket.NetConn(ctx, conn, websocket.MessageBinary),
		&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
	err = tc.HandshakeContext(ctx)
	if err == nil {
		// TLS 1.3 clients finish before the server has checked them: the
		// refusal comes with the first read.
		_, err = tc.Read(make([]byte, 1))
	}
	if err == nil {
		t.Fatal("a stranger's TLS link was let in")
	}
	proctest.Eventually(t, 5*time.Second, func() error {
		if n := refusals(t, a) - before; n != 1 {
			return fmt.Errorf("refusals counted %v, want 1", n)
		}
		return nil
	})
	if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 && strings.Contains(cs.PeerCertificates[0].Subject.String(), a.st.NodeID()) {
		t.Errorf("the leader's certificate names its node id: %s", cs.PeerCertificates[0].Subject)
	}
}

// A follower reaches only the member it meant: a listener that answers
// with another key (a node that took the address, an impostor) is left.
func TestFollowerChecksTheLeadersKey(t *testing.T) {
	a, b, imp := newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0)
	post(t, imp, "from an impostor")
	imp.knows(b)
	a.knows(b)
	fake := a.as()
	fake.HTTP = imp.addr() // a's id and key, the impostor's address
	b.repl.SetPeers([]Peer{fake})
	post(t, a, "from a")
	proctest.Eventually(t, 10*time.Second, func() error {
		if n := testutil.ToFloat64(b.repl.m.linkErrors); n < 2 {
			return fmt.Errorf("%v failed links, want the impostor's refused twice", n)
		}
		return nil
	})
	if v := b.st.Vector(); v[imp.st.NodeID()] != 0 || v[a.st.NodeID()] != 0 {
		t.Fatalf("b stored %v through a link to an impostor", v)
	}
}

// fakeLeader is a member that passes the handshake, then sends what the
// test gives it.
func fakeLeader(t *testing.T, frames func(lc *linkConn)) *peer {
	t.Helper()
	f := newPeer(t, "c", nil, 0)
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		conn.SetReadLimit(wsMessageLimit)
		lc, _, err := f.repl.serverHandshake(r.Context(), websocket.NetConn(r.Context(), conn, websocket.MessageBinary))
		if err != nil {
			return
		}
		frames(lc)
		lc.read(maxFollowerFrame, 5*time.Second) // until the follower gives up the link
	})
	return f
}

// A peer is believed only about what it can know: its own origin, and
// other origins as catch-up for those without a link of their own. A
// message of the follower's own origin, of an alive member it follows
// directly, or dated far ahead ends the link, counted by reason, and is
// never stored; so do broken frames and presence no client could have.
func TestPeerBelievedOnlyAboutWhatItCanKnow(t *testing.T) {
	a := newPeer(t, "c", nil, 0) // an honest member
	post(t, a, "real")
	var f, b *peer // the fake leader and the follower; set before any link
	ready := make(chan struct{})
	msg := func(origin string, created time.Time) []byte {
		return wire.AppendBatch(nil, []wire.Msg{{Origin: origin, Seq: 1, Room: "lobby", Sender: "x", Text: "t", Created: created.UnixMicro()}})
	}
	lies := []struct {
		reason string
		frame  func() (byte, []byte)
	}{
		{"own_origin", func() (byte, []byte) { return frameBatch, msg(b.st.NodeID(), time.Now()) }},
		{"other_origin", func() (byte, []byte) { return frameBatch, msg(a.st.NodeID(), time.Now()) }},
		{"future", func() (byte, []byte) { return frameBatch, msg(f.st.NodeID(), time.Now().Add(time.Hour)) }},
		{"bad_message", func() (byte, []byte) {
			return frameBatch, wire.AppendBatch(nil, []wire.Msg{{Origin: f.st.NodeID(), Seq: 1, Room: "Bad Room", Sender: "x", Text: "t", Created: 1}})
		}},
		{"bad_presence", func() (byte, []byte) {
			return frameJSON, []byte(`{"p":{"lobby":[{"name":"ghost\u0000","node":""}]},"ps":true}`)
		}},
	}
	var mu sync.Mutex
	next := 0
	f = fakeLeader(t, func(lc *linkConn) {
		<-ready
		mu.Lock()
		l := lies[next%len(lies)]
		next++
		mu.Unlock()
		typ, p := l.frame()
		lc.write(typ, p, 5*time.Second)
	})
	b = newPeer(t, "c", nil, 0)
	f.knows(b)
	a.knows(b)
	b.knows(a, f)
	close(ready)
	proctest.Eventually(t, 30*time.Second, func() error {
		for _, l := range lies {
			if n := testutil.ToFloat64(b.repl.m.violations.WithLabelValues(l.reason)); n < 1 {
				return fmt.Errorf("no link ended for %s yet", l.reason)
			}
		}
		return nil
	})
	if err := holds(b, proto.Vector{a.st.NodeID(): 1}); err != nil {
		t.Fatalf("the honest member's link suffered: %v", err)
	}
	v := b.st.Vector()
	if v[b.st.NodeID()] != 0 || v[f.st.NodeID()] != 0 || v[a.st.NodeID()] != 1 {
		t.Fatalf("b stored what it should not have: %v", v)
	}
	for _, p := range b.hub.Presence("lobby") {
		if strings.HasPrefix(p.Name, "ghost") {
			t.Fatalf("a ghost from a bad snapshot: %v", p)
		}
	}
}

// Acks count only for what this node wrote, and only while the follower's
// link lasts: a member acking 2^64-1 does not make later sends pass
// --ack-replicas without a replica.
func TestForgedAcksDoNotCount(t *testing.T) {
	a := newPeer(t, "c", nil, 1)
	x := newPeer(t, "c", nil, 0)
	a.knows(x)
	post(t, a, "one")
	lc := dialLink(t, x, a, hello{})
	if err := lc.writeJSON(wire.Record{Ack: proto.Vector{a.st.NodeID(): math.MaxUint64}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	proctest.Eventually(t, 5*time.Second, func() error {
		a.repl.mu.Lock()
		defer a.repl.mu.Unlock()
		if n := a.repl.acks[x.st.NodeID()]; n != 1 {
			return fmt.Errorf("a counts x holding %d of its log, want 1 (all it wrote)", n)
		}
		return nil
	})
	if err := a.repl.Post(context.Background(), proto.Message{Room: "lobby", Sender: "ann", Text: "two"}, func(m proto.Message, err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != ErrNotReplicated {
			t.Fatalf("a send with one forged ack: %v, want ErrNotReplicated", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
	lc.Close()
	proctest.Eventually(t, 5*time.Second, func() error {
		a.repl.mu.Lock()
		defer a.repl.mu.Unlock()
		if _, ok := a.repl.acks[x.st.NodeID()]; ok {
			return fmt.Errorf("x's acks outlive its link")
		}
		return nil
	})
}

// Garbage from a member, either way, costs that link only.
func TestGarbageOnLink(t *testing.T) {
	a := newPeer(t, "c", nil, 0)
	x := newPeer(t, "c", nil, 0)
	a.knows(x)
	post(t, a, "one")
	for _, frame := range [][]byte{
		{9, 0, 0, 0, 1, 'x'},              // unknown frame type
		{frameJSON, 0xff, 0, 0, 0},        // over the follower's limit
		{frameJSON, 0, 0, 0, 2, '{', '}'}, // JSON but no ack
	} {
		lc := dialLink(t, x, a, hello{})
		lc.tls.Write(frame)
		lc.tls.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := lc.read(maxLeaderFrame, 10*time.Second); err != nil {
				break // the leader ended the link
			}
		}
	}
	// A follower fed garbage by a member reconnects, stores nothing of it,
	// and keeps its other links.
	f := fakeLeader(t, func(lc *linkConn) {
		lc.write(frameBatch, []byte{wire.BatchVersion, 12, 'x'}, 5*time.Second)
	})
	b := newPeer(t, "c", nil, 0)
	a.knows(b)
	f.knows(b)
	b.knows(a, f)
	proctest.Eventually(t, 10*time.Second, func() error { return holds(b, proto.Vector{a.st.NodeID(): 1}) })
	if v := b.st.Vector()[f.st.NodeID()]; v != 0 {
		t.Fatalf("stored %d messages from garbage", v)
	}
}

// Presence changes on a link are checked like snapshots, and apply only
// to a snapshot of the same link: a change before one, or with a name no
// client could have, ends the link and leaves no ghost; a good one after
// a snapshot lists the person.
func TestPresenceChangesChecked(t *testing.T) {
	links := []func(lc *linkConn){
		func(lc *linkConn) { // a change before any snapshot
			lc.write(frameJSON, []byte(`{"pj":{"lobby":[{"name":"ghost1","node":""}]}}`), 5*time.Second)
		},
		func(lc *linkConn) { // a change with a bad name
			lc.write(frameJSON, []byte(`{"p":{},"ps":true}`), 5*time.Second)
			lc.write(frameJSON, []byte(`{"pj":{"lobby":[{"name":"ghost\u0000","node":""}]}}`), 5*time.Second)
		},
		func(lc *linkConn) { // a room no client could have
			lc.write(frameJSON, []byte(`{"p":{},"ps":true}`), 5*time.Second)
			lc.write(frameJSON, []byte(`{"pl":{"Bad Room":[{"name":"x","node":""}]}}`), 5*time.Second)
		},
		func(lc *linkConn) { // good: a snapshot, a change that adds rita and one that takes sam away
			lc.write(frameJSON, []byte(`{"p":{"lobby":[{"name":"sam","node":""}]},"ps":true}`), 5*time.Second)
			lc.write(frameJSON, []byte(`{"pj":{"lobby":[{"name":"rita","node":""}]},"pl":{"lobby":[{"name":"sam","node":""}]}}`), 5*time.Second)
			time.Sleep(30 * time.Second) // hold the link, so rita stays listed
		},
	}
	var mu sync.Mutex
	next := 0
	ready := make(chan struct{})
	f := fakeLeader(t, func(lc *linkConn) {
		<-ready
		mu.Lock()
		link := links[min(next, len(links)-1)]
		next++
		mu.Unlock()
		link(lc)
	})
	b := newPeer(t, "c", nil, 0)
	f.knows(b)
	b.knows(f)
	close(ready)
	proctest.Eventually(t, 30*time.Second, func() error {
		got := b.hub.Presence("lobby")
		if len(got) != 1 || got[0].Name != "rita" {
			return fmt.Errorf("b lists %v, want rita", got)
		}
		return nil
	})
	if n := testutil.ToFloat64(b.repl.m.violations.WithLabelValues("bad_presence")); n != 3 {
		t.Fatalf("%v links ended for bad presence, want 3", n)
	}
}
