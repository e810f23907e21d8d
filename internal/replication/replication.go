// Package replication copies every message to every node. Each node
// numbers its own messages and serves its log; every node follows each other
// alive member over one long-lived peer link that resumes from the version
// vector it holds, so per-origin order and no gaps hold by construction.
// Links also carry the logs of origins that are not alive (catch-up from
// whoever has more), the leader's presence, and the follower's acks.
package replication

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"chatr/internal/hub"
	"chatr/internal/proto"
	"chatr/internal/secret"
	"chatr/internal/store"
)

// Peer is an alive member other than this node.
type Peer struct {
	ID   string
	HTTP string // host:port of its HTTP listener
	Key  []byte // its identity key (Ed25519 public key), from membership
	TLS  bool   // its HTTP listener serves TLS
}

// Options configures a Replicator. Zero values mean the documented defaults.
type Options struct {
	Store   *store.Store
	Hub     *hub.Hub
	NodeID  string
	Cluster string
	// Identity is this node's identity key; its public half is in the
	// membership meta, and peer links prove it.
	Identity ed25519.PrivateKey
	// Secret is the cluster secret: both ends of a link prove they hold it.
	// Nil (--insecure-no-secret) leaves that proof out.
	Secret []byte
	// AckReplicas is how many peers must hold a message before its sender
	// is answered (--ack-replicas).
	AckReplicas int
	// AckTimeout bounds the wait for AckReplicas. Default 5s.
	AckTimeout time.Duration
	// Dial replaces the network dialer of outgoing links (tests cut links
	// with it).
	Dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Replicator runs the peer links of one node. New makes it; Run keeps the
// links in step with reachability and expires sends waiting for replicas;
// Close stops everything and waits for every goroutine it started.
type Replicator struct {
	opts    Options
	log     *slog.Logger
	client  *http.Client
	cert    tls.Certificate // of Identity, for both ends of links
	linkKey []byte          // derived from Secret for the link proofs; nil without
	// logRefused spaces out the log lines of refused links: a stranger
	// knocking must not flood the log (each refusal is counted).
	logRefused rate.Sometimes
	ctx        context.Context // ends at Close; every link runs under it
	cancel     context.CancelFunc
	wg         sync.WaitGroup // Run, followers, served links

	// linksMu serializes changes to the outgoing links: following is read
	// and written only under it, and it is held while an old link is
	// stopped and waited for, never while taking mu.
	linksMu   sync.Mutex
	following map[string]*follower // peer id -> its link
	// relink wakes Run when a peer's reachability changed.
	relink chan struct{}

	mu      sync.Mutex
	closed  bool
	peers   []Peer            // the alive members, as SetPeers last said
	cutOff  map[string]bool   // alive peers whose link has not worked for a while
	acks    map[string]uint64 // follower -> highest of our seqs it holds, while it has a link
	serving map[string]int    // follower -> its links served now
	waiters []waiter
	// peerVecs is each peer's version vector as it advertised it in
	// membership push/pull.
	peerVecs map[string]proto.Vector

	m *metrics
}

type waiter struct {
	msg      proto.Message
	deadline time.Time
	done     func(proto.Message, error)
}

// ErrNotReplicated answers a send whose message is stored on this node but
// not yet on --ack-replicas peers within the timeout (or before the node
// stopped). It is a protocol error, so the sender is told `unavailable`.
var ErrNotReplicated = proto.Errorf(proto.CodeUnavailable,
	"the message is stored on this node but not yet on enough peers (--ack-replicas); re-send it with the same ref to be sure")

// New makes a Replicator. It starts nothing: it follows no one until
// SetPeers names peers, and Run must run for sends to expire and for links
// to route around peers they cannot reach.
func New(opts Options) (*Replicator, error) {
	if len(opts.Identity) != ed25519.PrivateKeySize {
		return nil, errors.New("replication: no identity key")
	}
	cert, err := identity(opts.Identity)
	if err != nil {
		return nil, fmt.Errorf("replication: certificate of the identity key: %w", err)
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The outer TLS of wss:// (a peer whose listener serves TLS) is not
	// checked against a CA: the link's own TLS inside proves the peer.
	transport := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 4,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}}
	r := &Replicator{opts: opts, log: opts.Log, ctx: ctx, cancel: cancel, cert: cert,
		client:     &http.Client{Transport: transport},
		logRefused: rate.Sometimes{Interval: 10 * time.Second},
		following:  map[string]*follower{}, relink: make(chan struct{}, 1), cutOff: map[string]bool{},
		acks: map[string]uint64{}, serving: map[string]int{},
		peerVecs: map[string]proto.Vector{}}
	if opts.Secret != nil {
		r.linkKey = secret.Derive(opts.Secret, secret.PeerLink)
	}
	r.m = newMetrics(opts.Metrics, r)
	return r, nil
}

// memberWithKey is the id of the alive member whose identity key is k, or
// "" for none.
func (r *Replicator) memberWithKey(k ed25519.PublicKey) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.peers {
		if p.ID != r.opts.NodeID && k.Equal(ed25519.PublicKey(p.Key)) {
			return p.ID
		}
	}
	return ""
}

// linkEnded forgets what a follower acked once its last served link has
// ended: acks count only from followers this node is linked to now.
func (r *Replicator) linkEnded(follower string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.serving[follower]--; r.serving[follower] <= 0 {
		delete(r.serving, follower)
		delete(r.acks, follower)
	}
}

// Run expires sends that waited too long for replicas and re-plans the
// links when a peer's reachability changes, until ctx ends or Close.
func (r *Replicator) Run(ctx context.Context) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	defer r.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			r.failWaiters(func(w waiter) bool { return now.After(w.deadline) })
		case <-r.relink:
			r.linksMu.Lock()
			r.planLinks()
			r.linksMu.Unlock()
		}
	}
}

// Handler serves the peer link endpoint, mounted at /chatr/peer/.
func (r *Replicator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /chatr/peer/link", r.serveLink)
	return mux
}

// SetPeers sets the alive members to follow. Links to peers no longer
// listed stop, and once they have, those peers' presence is dropped: nobody
// stays listed on a node that died or left. It returns when the links are
// in step.
func (r *Replicator) SetPeers(peers []Peer) {
	r.linksMu.Lock()
	defer r.linksMu.Unlock()
	r.mu.Lock()
	r.peers = append([]Peer(nil), peers...)
	alive := map[string]bool{}
	for _, p := range peers {
		alive[p.ID] = true
	}
	for id := range r.cutOff {
		if !alive[id] {
			delete(r.cutOff, id)
		}
	}
	r.mu.Unlock()
	r.planLinks()
}

// linkPlan is what the link to one peer carries.
type linkPlan struct {
	peer Peer
	skip []string // origins the link leaves out
	key  string   // changes when the link must be made again
}

// plans says which links to keep: one per alive peer, each leaving out the
// origins of the other alive peers that have links of their own that work.
// Origins that are not alive, and those of peers this node cannot reach
// though they are alive (a partial partition: SWIM's indirect probes keep
// them alive), come over every link, so they are caught up from whoever
// has them. r.mu is held.
func (r *Replicator) plans() map[string]linkPlan {
	out := map[string]linkPlan{}
	for _, p := range r.peers {
		if p.ID == r.opts.NodeID {
			continue
		}
		var skip []string
		for _, q := range r.peers {
			if q.ID != p.ID && q.ID != r.opts.NodeID && !r.cutOff[q.ID] {
				skip = append(skip, q.ID)
			}
		}
		sort.Strings(skip)
		out[p.ID] = linkPlan{peer: p, skip: skip,
			key: fmt.Sprintf("%s|%t|%x|%s", p.HTTP, p.TLS, p.Key, strings.Join(skip, ","))}
	}
	return out
}

// planLinks stops the links that are not in the plan (or not as planned),
// waiting for each to end, then starts the missing ones. r.linksMu is held.
func (r *Replicator) planLinks() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	plans := r.plans()
	cutOff := maps.Clone(r.cutOff)
	r.mu.Unlock()
	for id, f := range r.following {
		p, ok := plans[id]
		if ok && p.key == f.plan.key {
			continue
		}
		f.stop()
		delete(r.following, id)
		if !ok {
			// Only now that its link has ended can no snapshot of the peer
			// come in after this one.
			r.opts.Hub.SetRemote(id, nil)
			r.mu.Lock()
			delete(r.acks, id)
			r.mu.Unlock()
		}
	}
	for id, p := range plans {
		if r.following[id] == nil {
			f := &follower{r: r, plan: p}
			f.cut.Store(cutOff[id]) // a new link to a cut-off peer must say when it works
			r.following[id] = f
			f.start(r.ctx)
		}
	}
}

// setCutOff records whether peer's link has stopped working (or works
// again) and has Run re-plan the links when that changed.
func (r *Replicator) setCutOff(peer string, cut bool) {
	r.mu.Lock()
	changed := false
	for _, p := range r.peers {
		if p.ID == peer && r.cutOff[peer] != cut {
			r.cutOff[peer] = cut
			changed = true
		}
	}
	r.mu.Unlock()
	if !changed {
		return
	}
	if cut {
		r.m.routedAround.Inc()
		r.log.Warn("peer link not working while the peer is alive: its messages now come through the other peers", "peer", peer)
	} else {
		r.log.Info("peer link works again", "peer", peer)
	}
	select {
	case r.relink <- struct{}{}:
	default:
	}
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
		if r.closed {
			// Nothing expires waiters any more: answer now.
			r.mu.Unlock()
			done(m, ErrNotReplicated)
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
	// No follower holds more of our log than we wrote: a bigger ack is a lie
	// that would void --ack-replicas for every later send.
	seq = min(seq, r.opts.Store.Vector()[r.opts.NodeID])
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

// WaitReplicated waits until each of peers holds this node's own messages
// up to seq, as their acks or their advertised vectors say, or until ctx
// ends. It returns what each peer still short of seq holds (empty when all
// hold it).
func (r *Replicator) WaitReplicated(ctx context.Context, peers []string, seq uint64) map[string]uint64 {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		short := map[string]uint64{}
		r.mu.Lock()
		for _, p := range peers {
			if got := max(r.acks[p], r.peerVecs[p][r.opts.NodeID]); got < seq {
				short[p] = got
			}
		}
		r.mu.Unlock()
		if len(short) == 0 {
			return short
		}
		select {
		case <-ctx.Done():
			return short
		case <-t.C:
		}
	}
}

// Close stops every link, fails the sends still waiting for replicas, and
// waits for every goroutine of the Replicator to end.
func (r *Replicator) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.failWaiters(func(waiter) bool { return true })
	r.linksMu.Lock()
	for id, f := range r.following {
		f.stop()
		delete(r.following, id)
	}
	r.linksMu.Unlock()
	r.wg.Wait()
}
