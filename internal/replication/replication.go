// Package replication copies every message to every node. Each node
// numbers its own messages and serves its log; every node follows each other
// alive member over one long-lived peer link that resumes from the version
// vector it holds, so per-origin order and no gaps hold by construction.
// Links also carry the logs of origins that are not alive (catch-up from
// whoever has more), the leader's presence, and the follower's acks.
package replication

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/hub"
	"chatr/internal/proto"
	"chatr/internal/store"
)

// Peer is an alive member other than this node.
type Peer struct {
	ID   string
	HTTP string // host:port of its HTTP listener
}

// Options configures a Replicator. Zero values mean the documented defaults.
type Options struct {
	Store   *store.Store
	Hub     *hub.Hub
	NodeID  string
	Cluster string
	// Secret authenticates peer links when set (the --secret-file key).
	Secret []byte
	// AckReplicas is how many peers must hold a message before its sender
	// is answered (--ack-replicas).
	AckReplicas int
	// AckTimeout bounds the wait for AckReplicas. Default 5s.
	AckTimeout time.Duration
	// LinkQueue bounds the commit batches waiting for one outgoing link;
	// past it the link catches up from the store instead. Default 1024.
	LinkQueue int
	// Dial replaces the network dialer of outgoing links (tests cut links
	// with it).
	Dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Replicator runs the peer links of one node.
type Replicator struct {
	opts   Options
	log    *slog.Logger
	client *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	following map[string]*follower // peer id -> its link
	leading   map[*leaderLink]struct{}
	acks      map[string]uint64 // follower -> highest of our seqs it holds
	waiters   []waiter
	peerVecs  map[string]proto.Vector

	m *metrics
}

type waiter struct {
	msg      proto.Message
	deadline time.Time
	done     func(proto.Message, error)
}

// ErrNotReplicated answers a send whose message is stored on this node but
// not yet on --ack-replicas peers within the timeout.
// It is a protocol error, so the sender is told `unavailable`.
var ErrNotReplicated = proto.Errorf(proto.CodeUnavailable,
	"the message is stored on this node but not yet on enough peers (--ack-replicas); re-send it with the same ref to be sure")

// New makes a Replicator; it does nothing until SetPeers names peers.
func New(opts Options) *Replicator {
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 5 * time.Second
	}
	if opts.LinkQueue <= 0 {
		opts.LinkQueue = 1024
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Replicator{opts: opts, log: opts.Log, ctx: ctx, cancel: cancel,
		client:    &http.Client{Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 4}},
		following: map[string]*follower{}, leading: map[*leaderLink]struct{}{},
		acks: map[string]uint64{}, peerVecs: map[string]proto.Vector{}}
	r.m = newMetrics(opts.Metrics, r)
	if opts.AckReplicas > 0 {
		r.wg.Add(1)
		go r.expireWaiters()
	}
	return r
}

// Handler serves the peer link endpoint, mounted at /chatr/peer/.
func (r *Replicator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /chatr/peer/link", r.serveLink)
	return mux
}

// SetPeers sets the alive members to follow. Links to peers no longer
// listed stop, and those peers' presence is dropped: nobody stays listed
// on a node that died or left.
func (r *Replicator) SetPeers(peers []Peer) {
	alive := map[string]bool{}
	for _, p := range peers {
		alive[p.ID] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return
	}
	for id, f := range r.following {
		if !alive[id] {
			f.stop()
			delete(r.following, id)
			r.opts.Hub.SetRemote(id, nil)
			delete(r.acks, id)
		}
	}
	for _, p := range peers {
		if p.ID == r.opts.NodeID {
			continue
		}
		// Skip the origins this link need not carry: the other alive
		// members, which have their own links. Origins that are not alive
		// come over every link, so they are caught up from whoever has them.
		var skip []string
		for _, q := range peers {
			if q.ID != p.ID && q.ID != r.opts.NodeID {
				skip = append(skip, q.ID)
			}
		}
		sort.Strings(skip)
		key := p.HTTP + "|" + strings.Join(skip, ",")
		if f := r.following[p.ID]; f != nil {
			if f.key == key {
				continue
			}
			f.stop()
		}
		f := &follower{r: r, peer: p, skip: skip, key: key}
		r.following[p.ID] = f
		f.start(r.ctx)
	}
}

// Publish hands newly committed messages to the outgoing links. It is part
// of the store's OnCommit function and never blocks: a link whose queue is
// full catches up from the store.
func (r *Replicator) Publish(batch []store.Committed) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for l := range r.leading {
		select {
		case l.live <- batch:
		default:
			l.behind.Store(true)
			r.m.dropped.Inc()
		}
	}
}

// queuedBatches counts the commit batches waiting for outgoing links.
func (r *Replicator) queuedBatches() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for l := range r.leading {
		n += len(l.live)
	}
	return float64(n)
}

// Post stores a new message of this node; with AckReplicas it answers only
// once that many peers hold it. It implements gateway.Poster.
func (r *Replicator) Post(ctx context.Context, draft proto.Message, done func(proto.Message, error)) error {
	if r.opts.AckReplicas == 0 {
		return r.opts.Store.AppendAsync(ctx, draft, done)
	}
	return r.opts.Store.AppendAsync(ctx, draft, func(m proto.Message, err error) {
		if err != nil || m.Origin != r.opts.NodeID {
			done(m, err)
			return
		}
		r.mu.Lock()
		if r.replicas(m.Seq) >= r.opts.AckReplicas {
			r.mu.Unlock()
			done(m, nil)
			return
		}
		r.waiters = append(r.waiters, waiter{msg: m, deadline: time.Now().Add(r.opts.AckTimeout), done: done})
		r.mu.Unlock()
	})
}

// replicas counts the followers holding our message seq. r.mu is held.
func (r *Replicator) replicas(seq uint64) int {
	n := 0
	for _, got := range r.acks {
		if got >= seq {
			n++
		}
	}
	return n
}

// onAck records what a follower holds of our log and answers the sends
// that are now replicated enough.
func (r *Replicator) onAck(follower string, seq uint64) {
	r.mu.Lock()
	if seq > r.acks[follower] {
		r.acks[follower] = seq
	}
	ready := r.takeWaiters(func(w waiter) bool { return r.replicas(w.msg.Seq) >= r.opts.AckReplicas })
	r.mu.Unlock()
	for _, w := range ready {
		w.done(w.msg, nil)
	}
}

func (r *Replicator) expireWaiters() {
	defer r.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			r.failWaiters(func(waiter) bool { return true })
			return
		case now := <-t.C:
			r.failWaiters(func(w waiter) bool { return now.After(w.deadline) })
		}
	}
}

// takeWaiters removes and returns the waiters that match. r.mu is held;
// the caller answers them after letting it go.
func (r *Replicator) takeWaiters(match func(waiter) bool) []waiter {
	var taken []waiter
	keep := r.waiters[:0]
	for _, w := range r.waiters {
		if match(w) {
			taken = append(taken, w)
		} else {
			keep = append(keep, w)
		}
	}
	r.waiters = keep
	return taken
}

func (r *Replicator) failWaiters(expired func(waiter) bool) {
	r.mu.Lock()
	failed := r.takeWaiters(expired)
	r.mu.Unlock()
	for _, w := range failed {
		r.m.ackTimeouts.Inc()
		w.done(w.msg, ErrNotReplicated)
	}
}

// LocalState is this node's version vector, advertised to peers through
// membership push/pull.
func (r *Replicator) LocalState() []byte {
	b, _ := json.Marshal(r.opts.Store.Vector())
	return b
}

// MergeState records a peer's advertised version vector; the lag metrics
// and the catch-up log lines come from it.
func (r *Replicator) MergeState(node string, state []byte) {
	var v proto.Vector
	if err := json.Unmarshal(state, &v); err != nil {
		r.log.Warn("peer sent a bad version vector", "peer", node, "err", err)
		return
	}
	for o := range v {
		if !proto.ValidNodeID(o) {
			r.log.Warn("peer sent a bad version vector", "peer", node, "origin", o)
			return
		}
	}
	r.mu.Lock()
	r.peerVecs[node] = v
	r.mu.Unlock()
}

// Lag is, per origin, how far this node is behind the furthest peer as
// advertised.
func (r *Replicator) Lag() map[string]uint64 {
	local := r.opts.Store.Vector()
	r.mu.Lock()
	defer r.mu.Unlock()
	lag := map[string]uint64{}
	for _, v := range r.peerVecs {
		for o, s := range v {
			if s > local[o] && s-local[o] > lag[o] {
				lag[o] = s - local[o]
			}
		}
	}
	return lag
}

// Close stops every link and fails the sends still waiting for replicas.
func (r *Replicator) Close() {
	r.mu.Lock()
	r.cancel()
	for id, f := range r.following {
		f.stop()
		delete(r.following, id)
	}
	r.mu.Unlock()
	r.wg.Wait()
}
