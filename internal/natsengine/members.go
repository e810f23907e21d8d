package natsengine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"chatr/internal/proto"
)

// The chatr nodes of a NATS account announce themselves in the KV bucket
// CHATR_NODES: each puts its entry (id, name, HTTP address) every
// AnnounceEvery, and the bucket forgets an entry MemberTTL after its last
// put. Each node reads the bucket every second: an entry that appears is a
// node that joined, one whose state says left has left, one that is gone
// without saying so died (killed, or cut off from NATS).
const (
	nodesBucket   = "CHATR_NODES"
	AnnounceEvery = 2 * time.Second
	MemberTTL     = 10 * time.Second
	readMembers   = time.Second
)

// entry is a node's announcement.
type entry struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	HTTP  string `json:"http"`
	State string `json:"state"` // alive or left
}

// member is a node as this one sees it.
type member struct {
	entry
	since time.Time // when this node saw its state begin
}

// Members is the view of the chatr nodes of the NATS account.
type Members struct {
	e    *Engine
	self entry
	out  io.Writer // gets the cluster view: lines

	mu    sync.Mutex
	nodes map[string]*member // others, by id
	since time.Time
}

// NewMembers makes the view; self is this node (its Node field unused).
// Run announces it and keeps the view.
func (e *Engine) NewMembers(self proto.Member, console io.Writer) *Members {
	return &Members{e: e, self: entry{ID: self.ID, Name: self.Name, HTTP: self.HTTP, State: "alive"},
		out: console, nodes: map[string]*member{}, since: time.Now()}
}

// Run announces this node and reads the others' announcements until ctx
// ends; then it says this node left.
func (m *Members) Run(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	kv, err := m.e.bucket(cctx, jetstream.KeyValueConfig{Bucket: nodesBucket,
		Description: "chatr: its nodes, each put every 2 s", TTL: MemberTTL, Storage: jetstream.MemoryStorage,
		Replicas: m.e.cfg.Replicas})
	cancel()
	if err != nil {
		return fmt.Errorf("nats: member bucket %s: %w", nodesBucket, err)
	}
	put := func(ctx context.Context, state string) {
		e := m.self
		e.State = state
		b, _ := json.Marshal(e)
		if _, err := kv.Put(ctx, e.ID, b); err != nil && ctx.Err() == nil {
			m.e.log.Warn("nats: could not announce this node", "err", err)
		}
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		put(ctx, "left")
	}()
	put(ctx, "alive")
	m.read(ctx, kv)
	announce := time.NewTicker(AnnounceEvery)
	defer announce.Stop()
	look := time.NewTicker(readMembers)
	defer look.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-announce.C:
			put(ctx, "alive")
		case <-look.C:
			m.read(ctx, kv)
		}
	}
}

// read takes the bucket's entries into the view, printing a line for
// each change.
func (m *Members) read(ctx context.Context, kv jetstream.KeyValue) {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return
	}
	seen := map[string]entry{}
	for k := range keys.Keys() {
		if k == m.self.ID || !proto.ValidNodeID(k) {
			continue
		}
		v, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var e entry
		if json.Unmarshal(v.Value(), &e) != nil || e.ID != k || len(e.Name) > 64 || len(e.HTTP) > 300 {
			continue
		}
		seen[k] = e
	}
	if ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	change := func(n *member, state, kind string) {
		n.State, n.since = state, now
		m.line(n.entry, kind)
	}
	for id, e := range seen {
		n := m.nodes[id]
		switch {
		case n == nil && e.State == "alive":
			n = &member{entry: e}
			m.nodes[id] = n
			change(n, "alive", "joined")
		case n == nil:
		case n.State != "alive" && e.State == "alive":
			n.entry = e
			change(n, "alive", "joined")
		case n.State == "alive" && e.State == "left":
			change(n, "left", "left")
		default:
			n.Name, n.HTTP = e.Name, e.HTTP
		}
	}
	for id, n := range m.nodes {
		if _, ok := seen[id]; !ok && n.State == "alive" {
			change(n, "dead", "died")
		}
	}
}

// line prints the view after node e changed, as the local engine does:
// "cluster view: 2 members [a (this), b] after b joined".
func (m *Members) line(e entry, kind string) {
	if m.out == nil {
		return
	}
	names := []string{m.self.Name + " (this)"}
	for _, n := range m.nodes {
		if n.State == "alive" {
			names = append(names, n.Name)
		}
	}
	slices.Sort(names[1:])
	noun := "members"
	if len(names) == 1 {
		noun = "member"
	}
	fmt.Fprintf(m.out, "cluster view: %d %s [%s] after %s %s\n", len(names), noun, strings.Join(names, ", "), e.Name, kind)
}

// Alive lists the alive nodes, this one first, for welcome.nodes.
func (m *Members) Alive() []proto.Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []proto.Member{{ID: m.self.ID, Name: m.self.Name, HTTP: m.self.HTTP}}
	for _, n := range m.sorted() {
		if n.State == "alive" {
			out = append(out, proto.Member{ID: n.ID, Name: n.Name, HTTP: n.HTTP})
		}
	}
	return out
}

func (m *Members) sorted() []*member {
	out := make([]*member, 0, len(m.nodes))
	for _, n := range m.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// View is the cluster view of /chatr/api/cluster: the chatr nodes, and
// the NATS servers this node knows of.
func (m *Members) View() proto.ClusterView {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := proto.ClusterView{Self: m.self.ID, Cluster: "nats:" + m.e.cfg.Stream, Members: []proto.MemberView{
		{ID: m.self.ID, Name: m.self.Name, HTTP: m.self.HTTP, State: "alive", Since: proto.FormatTime(m.since.UnixMicro())}}}
	for _, n := range m.sorted() {
		v.Members = append(v.Members, proto.MemberView{ID: n.ID, Name: n.Name, HTTP: n.HTTP, State: n.State,
			Since: proto.FormatTime(n.since.UnixMicro())})
	}
	v.NATS = m.e.nc.Servers()
	return v
}
