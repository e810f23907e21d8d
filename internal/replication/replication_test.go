package replication

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"chatr/internal/hub"
	"chatr/internal/proctest"
	"chatr/internal/proto"
	"chatr/internal/replication/wire"
	"chatr/internal/store"
)

// peer is one node without membership: a store, a hub, a replicator and
// its HTTP listener.
type peer struct {
	st   *store.Store
	hub  *hub.Hub
	repl *Replicator
	srv  *httptest.Server
	key  ed25519.PublicKey
}

func newPeer(t *testing.T, cluster string, secret []byte, ackReplicas int) *peer {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, id, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{st: st, key: pub}
	p.hub = hub.New(hub.Options{NodeID: st.NodeID(), Cluster: cluster})
	if p.repl, err = New(Options{Store: st, Hub: p.hub, NodeID: st.NodeID(), Cluster: cluster, Identity: id, Secret: secret,
		AckReplicas: ackReplicas, AckTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	fanout := st.Follow(true)
	hubCtx, stopHub := context.WithCancel(context.Background())
	go p.hub.Run(hubCtx, fanout)
	p.srv = httptest.NewServer(p.repl.Handler())
	go p.repl.Run(context.Background()) // until Close
	t.Cleanup(func() { p.repl.Close(); p.srv.Close(); stopHub(); st.Close() })
	return p
}

func (p *peer) addr() string { return strings.TrimPrefix(p.srv.URL, "http://") }

func (p *peer) as() Peer { return Peer{ID: p.st.NodeID(), HTTP: p.addr(), Key: p.key} }

// knows makes the others alive members of p: p follows them and lets their
// links in (a leader serves only members).
func (p *peer) knows(others ...*peer) {
	var peers []Peer
	for _, o := range others {
		peers = append(peers, o.as())
	}
	p.repl.SetPeers(peers)
}

func post(t *testing.T, p *peer, text string) proto.Message {
	t.Helper()
	m, err := p.st.Append(context.Background(), "lobby", "ann", text)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func holds(p *peer, want proto.Vector) error {
	if got := p.st.Vector(); !got.Covers(want) {
		return fmt.Errorf("vector %v does not cover %v", got, want)
	}
	return nil
}

func TestTwoPeersReplicateBothWays(t *testing.T) {
	a, b := newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0)
	post(t, a, "before the link")
	a.repl.SetPeers([]Peer{b.as()})
	b.repl.SetPeers([]Peer{a.as()})
	for i := range 20 {
		post(t, a, fmt.Sprint("a", i))
		post(t, b, fmt.Sprint("b", i))
	}
	want := proto.Vector{a.st.NodeID(): 21, b.st.NodeID(): 20}
	proctest.Eventually(t, 10*time.Second, func() error {
		if err := holds(a, want); err != nil {
			return err
		}
		return holds(b, want)
	})
}

// A third origin that is not alive reaches a node through any peer that has
// it: catch-up from whoever has more.
func TestDeadOriginCaughtUpFromPeer(t *testing.T) {
	a, b, c := newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0)
	for i := range 5 {
		post(t, c, fmt.Sprint("c", i))
	}
	// a follows c while c is alive, then c goes away.
	c.knows(a)
	a.knows(c)
	proctest.Eventually(t, 10*time.Second, func() error { return holds(a, proto.Vector{c.st.NodeID(): 5}) })
	a.repl.SetPeers([]Peer{b.as()})
	b.repl.SetPeers([]Peer{a.as()}) // c is not alive for b: a's link carries it
	proctest.Eventually(t, 10*time.Second, func() error { return holds(b, proto.Vector{c.st.NodeID(): 5}) })
}

func TestPresenceGoesWithThePeer(t *testing.T) {
	a, b := newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0)
	sub := &nullSub{}
	a.hub.Join("lobby", sub, "ann", "")
	a.knows(b)
	b.knows(a)
	proctest.Eventually(t, 10*time.Second, func() error {
		if got := b.hub.Presence("lobby"); len(got) != 1 || got[0].Name != "ann" {
			return fmt.Errorf("b lists %v", got)
		}
		return nil
	})
	a.hub.Leave("lobby", sub)
	proctest.Eventually(t, 10*time.Second, func() error {
		if got := b.hub.Presence("lobby"); len(got) != 0 {
			return fmt.Errorf("b still lists %v", got)
		}
		return nil
	})
	a.hub.Join("lobby", sub, "ann", "")
	proctest.Eventually(t, 10*time.Second, func() error {
		if len(b.hub.Presence("lobby")) != 1 {
			return fmt.Errorf("b does not list ann again")
		}
		return nil
	})
	b.repl.SetPeers(nil) // a died or left: no ghost
	if got := b.hub.Presence("lobby"); len(got) != 0 {
		t.Fatalf("ghost after the peer went: %v", got)
	}
}

type nullSub struct{}

func (nullSub) Deliver([]*hub.Event) {}

func TestAckReplicasWaitsForPeers(t *testing.T) {
	a, b := newPeer(t, "c", nil, 1), newPeer(t, "c", nil, 0)
	a.knows(b) // b may follow it; b does not yet
	got := make(chan error, 1)
	send := func() {
		a.repl.Post(context.Background(), proto.Message{Room: "lobby", Sender: "ann", Text: "x"}, func(m proto.Message, err error) {
			got <- err
		})
	}
	send() // no follower: not replicated in time
	select {
	case err := <-got:
		if err != ErrNotReplicated {
			t.Fatalf("without a follower: %v, want ErrNotReplicated", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer without a follower")
	}
	b.repl.SetPeers([]Peer{a.as()})
	send()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("with a follower: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer with a follower")
	}
	if err := holds(b, proto.Vector{a.st.NodeID(): 2}); err != nil {
		t.Fatalf("acked before the follower held it: %v", err)
	}
}

// refusals counts the peer links p has refused.
func refusals(t *testing.T, p *peer) float64 {
	t.Helper()
	var m dto.Metric
	if err := p.repl.m.refused.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A follower of another cluster, without the secret, with another secret,
// or that is no member is refused, again each time it tries, and gets
// nothing; a member with the secret gets in.
func TestLinkRefused(t *testing.T) {
	key := []byte("0123456789abcdef")
	a := newPeer(t, "c", key, 0)
	post(t, a, "secret")
	// Without a secret only the cluster name and the membership's keys
	// keep strangers out.
	open := newPeer(t, "c", nil, 0)
	post(t, open, "open")
	cases := []struct {
		name    string
		leader  *peer
		cluster string
		secret  []byte
		member  bool // the leader lists the follower's key
	}{
		{"not a member", a, "c", key, false},
		{"not a member, no secrets", open, "c", nil, false},
		{"other cluster", a, "other", key, true},
		{"other cluster, no secrets", open, "other", nil, true},
		{"no secret", a, "c", nil, true},
		{"wrong secret", a, "c", []byte("fedcba9876543210"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := refusals(t, tc.leader)
			b := newPeer(t, tc.cluster, tc.secret, 0)
			if tc.member {
				tc.leader.knows(b)
			}
			b.knows(tc.leader)
			// A follower dials again only after its link failed, so a second
			// refusal means no link of b's got through in between.
			proctest.Eventually(t, 10*time.Second, func() error {
				if n := refusals(t, tc.leader) - before; n < 2 {
					return fmt.Errorf("the leader refused b's link %v times, want it refused on the first try and again on the next", n)
				}
				return nil
			})
			if v := b.st.Vector()[tc.leader.st.NodeID()]; v != 0 {
				t.Fatalf("a refused peer got %d messages", v)
			}
			tc.leader.knows() // forget b
		})
	}
	before := refusals(t, a)
	good := newPeer(t, "c", key, 0)
	a.knows(good)
	good.knows(a)
	proctest.Eventually(t, 10*time.Second, func() error { return holds(good, proto.Vector{a.st.NodeID(): 1}) })
	if n := refusals(t, a) - before; n != 0 {
		t.Fatalf("a refused the link of a member with the secret %v times", n)
	}
}

func TestBadInputFromPeers(t *testing.T) {
	bad := []wire.Msg{
		{Origin: "x", Seq: 1, Room: "lobby", Sender: "a", Text: "t"},
		{Origin: "0123456789ab", Seq: 0, Room: "lobby", Sender: "a", Text: "t"},
		{Origin: "0123456789ab", Seq: 1, Room: "Bad Room", Sender: "a", Text: "t"},
		{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: "", Text: "t"},
		{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: "a", Text: ""},
		{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: "a", Text: strings.Repeat("x", 5000)},
		{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: "a", Text: "t", Ref: strings.Repeat("r", 65)},
	}
	for _, w := range bad {
		if _, err := w.Message(); err == nil {
			t.Errorf("message %+v accepted", w)
		}
	}
	// What a node accepts from a client, its peers accept from it: a ref of
	// 64 characters that take more than 64 bytes used to be refused on the
	// peer link, which then could never get past that message.
	for _, ref := range []string{strings.Repeat("é", proto.MaxRefLen), strings.Repeat("\uFFFD", proto.MaxRefLen)} {
		frame := `{"type":"send","room":"lobby","text":"t","ref":"` + ref + `"}`
		in, perr := proto.DecodeInbound([]byte(frame))
		if perr != nil {
			t.Fatalf("gateway refused ref %q: %v", ref, perr)
		}
		w := wire.Msg{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: "a", Text: "t", Ref: in.Ref}
		if _, err := w.Message(); err != nil {
			t.Errorf("peer refused a ref the gateway accepted (%d bytes): %v", len(in.Ref), err)
		}
	}
	if _, err := (wire.Msg{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: "a", Text: "t", Ref: "\xff"}).Message(); err == nil {
		t.Errorf("a ref of invalid UTF-8 accepted from a peer")
	}
}

// Names that earlier releases let clients take, and that a client can no
// longer take, still come from peers: in stored messages and in the
// presence of a peer not upgraded yet. Refusing one would stop the link at
// that message or snapshot, again at every retry.
func TestPeersNamesOfEarlierReleases(t *testing.T) {
	for _, name := range []string{"alice\u3164", "ａｌｉｃｅ", "\u0430lice", "a  b"} {
		if clean, perr := proto.CleanName(name); perr == nil && clean == name {
			t.Fatalf("CleanName(%+q) keeps it: pick a name a client may no longer take", name)
		}
		w := wire.Msg{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: name, Text: "t"}
		if _, err := w.Message(); err != nil {
			t.Errorf("a peer's message from %+q refused: %v", name, err)
		}
		if err := checkPresence(map[string][]proto.Person{"lobby": {{Name: name}}}); err != nil {
			t.Errorf("a peer's presence of %+q refused: %v", name, err)
		}
	}
	for _, name := range []string{"", " alice", "ghost\u0000", "a:b", strings.Repeat("n", proto.MaxNameLen+1)} {
		if err := checkPresence(map[string][]proto.Person{"lobby": {{Name: name}}}); err == nil {
			t.Errorf("a peer's presence of %+q accepted", name)
		}
		if _, err := (wire.Msg{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: name, Text: "t"}).Message(); err == nil {
			t.Errorf("a peer's message from %+q accepted", name)
		}
	}
}

// A send posted after Close is answered at once, not left waiting for an
// expiry loop that has ended.
func TestPostAfterCloseIsAnswered(t *testing.T) {
	a := newPeer(t, "c", nil, 1)
	a.repl.Close()
	got := make(chan error, 1)
	err := a.repl.Post(context.Background(), proto.Message{Room: "lobby", Sender: "ann", Text: "late"}, func(m proto.Message, err error) {
		got <- err
	})
	if err != nil {
		return // refused outright: answered too
	}
	select {
	case err := <-got:
		if err != ErrNotReplicated {
			t.Fatalf("after Close: %v, want ErrNotReplicated", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a send posted after Close was never answered")
	}
}

// Close waits for every goroutine of the Replicator: the links it follows,
// the links it serves (hijacked: the HTTP server does not wait for them)
// and their ack readers and writers.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	a, b := newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0)
	a.knows(b)
	b.knows(a)
	post(t, a, "one")
	post(t, b, "two")
	want := proto.Vector{a.st.NodeID(): 1, b.st.NodeID(): 1}
	proctest.Eventually(t, 10*time.Second, func() error {
		if err := holds(a, want); err != nil {
			return err
		}
		return holds(b, want)
	})
	a.repl.Close()
	b.repl.Close()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "chatr/internal/replication.(*") {
			t.Fatalf("a goroutine of the Replicator outlived Close:\n%s", g)
		}
	}
}

// Replacing the link to a peer (its address changed) waits for the old one
// to end before the new one starts: two links of one peer never race to
// set its presence.
func TestRelinkWaitsForTheOldLink(t *testing.T) {
	a, b := newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0)
	a.knows(b)
	b.knows(a)
	proctest.Eventually(t, 10*time.Second, func() error { return holds(b, a.st.Vector()) }) // the link runs
	old := b.repl.following[a.st.NodeID()]
	moved := a.as()
	moved.HTTP = strings.Replace(moved.HTTP, "127.0.0.1", "localhost", 1)
	b.repl.SetPeers([]Peer{moved})
	select {
	case <-old.done:
	default:
		t.Fatal("SetPeers returned while the replaced link still ran")
	}
	if f := b.repl.following[a.st.NodeID()]; f == old || f.plan.peer.HTTP != moved.HTTP {
		t.Fatalf("the link was not replaced: %+v", f.plan)
	}
}

// Presence goes to a peer as changes after the first snapshot: whatever
// this node's sessions do, in many rooms, the peer's view ends up exactly
// this node's own.
func TestPresenceChangesAddUp(t *testing.T) {
	a, b := newPeer(t, "c", nil, 0), newPeer(t, "c", nil, 0)
	subs := map[string]*nullSub{}
	join := func(room, name string) {
		sub := &nullSub{}
		subs[room+"/"+name] = sub
		a.hub.Join(room, sub, name, "")
	}
	for i := range 20 {
		join(fmt.Sprint("room", i%5), fmt.Sprint("p", i))
	}
	a.knows(b)
	b.knows(a)
	for i := range 20 {
		room, name := fmt.Sprint("room", i%5), fmt.Sprint("p", i)
		if i%2 == 0 {
			a.hub.Leave(room, subs[room+"/"+name])
		}
		join(fmt.Sprint("room", i%7), fmt.Sprint("q", i))
	}
	proctest.Eventually(t, 10*time.Second, func() error {
		for i := range 7 {
			room := fmt.Sprint("room", i)
			want, got := names(a.hub.Presence(room)), names(b.hub.Presence(room))
			if !slices.Equal(want, got) {
				return fmt.Errorf("%s: b lists %v, a %v", room, got, want)
			}
		}
		return nil
	})
}

func names(ps []proto.Person) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}
