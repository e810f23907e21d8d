package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/proto"
	"chatr/internal/replication/wire"
)

// cutOffAfter is how long a link to an alive peer may go without a frame
// (the leader sends one every heartbeat) before the peer's messages are
// fetched through the other peers instead.
const cutOffAfter = 3 * time.Second

// follower keeps one link to a peer open, resuming from what the store
// holds after every disconnect.
type follower struct {
	r      *Replicator
	plan   linkPlan
	cancel context.CancelFunc
	done   chan struct{}
	// quiet fires when nothing came over the link for cutOffAfter.
	quiet *time.Timer
	cut   atomic.Bool
}

func (f *follower) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	f.cancel, f.done = cancel, make(chan struct{})
	f.quiet = time.AfterFunc(cutOffAfter, func() {
		if ctx.Err() == nil && !f.cut.Swap(true) {
			f.r.setCutOff(f.plan.peer.ID, true)
		}
	})
	f.r.wg.Add(1)
	go func() {
		defer f.r.wg.Done()
		defer close(f.done)
		defer f.quiet.Stop()
		f.loop(ctx)
	}()
}

// heard notes a frame from the peer: the link works.
func (f *follower) heard() {
	f.quiet.Reset(cutOffAfter)
	if f.cut.Load() && f.cut.Swap(false) {
		f.r.setCutOff(f.plan.peer.ID, false)
	}
}

// stop ends the link and waits until it has.
func (f *follower) stop() {
	f.cancel()
	<-f.done
}

func (f *follower) loop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := f.session(ctx)
		if ctx.Err() != nil {
			return
		}
		f.r.m.linkErrors.Inc()
		f.r.log.Info("peer link lost; reconnecting", "peer", f.plan.peer.ID, "http", f.plan.peer.HTTP, "err", err, "retry_in", backoff)
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// session runs one connection of the link until it fails.
func (f *follower) session(ctx context.Context) error {
	r := f.r
	scheme := "ws"
	if f.plan.peer.TLS {
		scheme = "wss"
	}
	dctx, cancel := context.WithTimeout(ctx, linkTimeout)
	conn, _, err := websocket.Dial(dctx, scheme+"://"+f.plan.peer.HTTP+"/chatr/peer/link", &websocket.DialOptions{HTTPClient: r.client})
	cancel()
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(wsMessageLimit)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lc, err := r.clientHandshake(sctx, websocket.NetConn(sctx, conn, websocket.MessageBinary), f.plan.peer,
		hello{Since: r.opts.Store.Vector(), Skip: f.plan.skip, Deltas: true})
	if err != nil {
		return err
	}
	defer lc.Close()
	r.m.following.Inc()
	defer r.m.following.Dec()
	// Batches are stored without waiting for each commit: up to
	// maxInFlight are queued at once and the store commits them together.
	// A failed one ends the session, which resumes from the store's vector.
	inflight := make(chan struct{}, maxInFlight)
	stored := make(chan struct{}, 1)
	var insertErr atomic.Value
	acking := make(chan struct{})
	go func() {
		defer close(acking)
		f.ack(sctx, lc, stored)
	}()
	defer func() {
		cancel()
		lc.Close() // ends a write in progress
		<-acking
	}()
	snapshot := false // changes of presence apply to a snapshot of this link
	for {
		typ, data, err := lc.read(maxLeaderFrame, linkTimeout)
		if err != nil {
			if e, ok := insertErr.Load().(error); ok {
				return e
			}
			return err
		}
		f.heard()
		var rec wire.Record
		if typ == frameBatch {
			rec.Msgs, err = wire.DecodeBatch(data)
		} else {
			err = json.Unmarshal(data, &rec)
		}
		if err != nil {
			return fmt.Errorf("peer sent garbage: %w", err)
		}
		if rec.Snapshot {
			if err := checkPresence(rec.Presence); err != nil {
				return f.violation("bad_presence", err)
			}
			r.opts.Hub.SetRemote(f.plan.peer.ID, rec.Presence)
			snapshot = true
		}
		if len(rec.Joined)+len(rec.Left) > 0 {
			err := errors.Join(checkPresence(rec.Joined), checkPresence(rec.Left))
			if err == nil && !snapshot {
				err = errors.New("presence changes before a snapshot")
			}
			if err != nil {
				return f.violation("bad_presence", err)
			}
			r.opts.Hub.ChangeRemote(f.plan.peer.ID, rec.Joined, rec.Left)
		}
		if len(rec.Msgs) == 0 {
			continue
		}
		msgs := make([]proto.Message, len(rec.Msgs))
		now := time.Now()
		for i, w := range rec.Msgs {
			if msgs[i], err = w.Message(); err != nil {
				return f.violation("bad_message", err)
			}
			if reason, err := f.believable(&msgs[i], now); err != nil {
				return f.violation(reason, err)
			}
		}
		select {
		case inflight <- struct{}{}:
		case <-sctx.Done():
			return sctx.Err()
		}
		err = r.opts.Store.InsertAsync(sctx, msgs, func(got []proto.Message, err error) {
			<-inflight
			if err != nil {
				insertErr.CompareAndSwap(nil, fmt.Errorf("store replicated messages: %w", err))
				cancel()
				return
			}
			r.m.received.Add(float64(len(got)))
			select {
			case stored <- struct{}{}:
			default:
			}
		})
		if err != nil {
			return fmt.Errorf("store replicated messages: %w", err)
		}
	}
}

// maxClockSkew is how far ahead of this node's clock a peer's message may
// be dated: more is a lie or a broken clock, and a message dated in the far
// future would date every later message of its origin there too.
const maxClockSkew = 2 * time.Minute

// believable says why m is not something the peer could know, if it is
// not: a peer speaks for its own origin, and for other origins only as
// catch-up for those this node has no link of their own for. Never for
// this node's origin, and never with a date far in the future.
func (f *follower) believable(m *proto.Message, now time.Time) (string, error) {
	switch {
	case m.Origin == f.r.opts.NodeID:
		return "own_origin", fmt.Errorf("message %s of this node's own origin", m.ID())
	case slices.Contains(f.plan.skip, m.Origin):
		return "other_origin", fmt.Errorf("message %s of an origin this node follows on a link of its own", m.ID())
	case m.Created > now.Add(maxClockSkew).UnixMicro():
		return "future", fmt.Errorf("message %s dated %s, more than %v ahead of this node's clock", m.ID(), proto.FormatTime(m.Created), maxClockSkew)
	}
	return "", nil
}

// violation ends the session on something the peer should never send:
// counted by reason, logged, and the link resumes after its backoff.
func (f *follower) violation(reason string, err error) error {
	f.r.m.violations.WithLabelValues(reason).Inc()
	return fmt.Errorf("peer %s refused: %w", f.plan.peer.ID, err)
}

// maxPresence bounds a peer's presence snapshot (room, name pairs).
const maxPresence = 1 << 20

// checkPresence checks a peer's presence snapshot like a client's input;
// names by the rule of names some node cleaned (proto.CheckName), which a
// peer of an earlier release may still have.
func checkPresence(p map[string][]proto.Person) error {
	n := 0
	for room, people := range p {
		if perr := proto.CheckRoom(room); perr != nil {
			return fmt.Errorf("presence: room %q: %v", room, perr)
		}
		for _, who := range people {
			if perr := proto.CheckName(who.Name); perr != nil {
				return fmt.Errorf("presence: name %q is not one a client could have", who.Name)
			}
			if perr := proto.CheckUser(who.User); perr != nil {
				return fmt.Errorf("presence: user %q: %v", who.User, perr)
			}
		}
		if n += len(people); n > maxPresence {
			return fmt.Errorf("presence: more than %d entries", maxPresence)
		}
	}
	return nil
}

// maxInFlight bounds the batches of one link queued in the store.
const maxInFlight = 64

// ack tells the peer how much of its own log this node holds (for
// --ack-replicas), each time a batch is stored and the figure grew.
func (f *follower) ack(ctx context.Context, lc *linkConn, stored <-chan struct{}) {
	var acked uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-stored:
		}
		got := f.r.opts.Store.Vector()[f.plan.peer.ID]
		if got <= acked {
			continue
		}
		acked = got
		if lc.writeJSON(wire.Record{Ack: proto.Vector{f.plan.peer.ID: got}}, linkTimeout) != nil {
			return
		}
	}
}
