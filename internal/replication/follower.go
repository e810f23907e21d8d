package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
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
	q := url.Values{}
	q.Set("since", encodeVector(r.opts.Store.Vector()))
	q.Set("skip", strings.Join(f.plan.skip, ","))
	q.Set("enc", "bin") // batches as binary frames, see wire.AppendBatch
	u := "ws://" + f.plan.peer.HTTP + "/chatr/peer/link?" + q.Encode()
	h := http.Header{}
	setAuth(h, r.opts.Secret, r.opts.Cluster, r.opts.NodeID)
	dctx, cancel := context.WithTimeout(ctx, linkTimeout)
	conn, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: r.client, HTTPHeader: h})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusForbidden {
			return fmt.Errorf("peer refused our link (secret or cluster name differ?): %w", err)
		}
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(64 << 20)
	r.m.following.Inc()
	defer r.m.following.Dec()
	// Batches are stored without waiting for each commit: up to
	// maxInFlight are queued at once and the store commits them together.
	// A failed one ends the session, which resumes from the store's vector.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inflight := make(chan struct{}, maxInFlight)
	stored := make(chan struct{}, 1)
	var insertErr atomic.Value
	acking := make(chan struct{})
	go func() {
		defer close(acking)
		f.ack(sctx, conn, stored)
	}()
	defer func() {
		cancel()
		<-acking
	}()
	for {
		rctx, rcancel := context.WithTimeout(sctx, linkTimeout)
		typ, data, err := conn.Read(rctx)
		rcancel()
		if err != nil {
			if e, ok := insertErr.Load().(error); ok {
				return e
			}
			return err
		}
		f.heard()
		var rec wire.Record
		if typ == websocket.MessageBinary {
			rec.Msgs, err = wire.DecodeBatch(data)
		} else {
			err = json.Unmarshal(data, &rec)
		}
		if err != nil {
			return fmt.Errorf("peer sent garbage: %w", err)
		}
		if rec.Snapshot {
			r.opts.Hub.SetRemote(f.plan.peer.ID, rec.Presence)
		}
		if len(rec.Msgs) == 0 {
			continue
		}
		msgs := make([]proto.Message, len(rec.Msgs))
		for i, w := range rec.Msgs {
			if msgs[i], err = w.Message(); err != nil {
				return fmt.Errorf("peer sent a bad message: %w", err)
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

// maxInFlight bounds the batches of one link queued in the store.
const maxInFlight = 64

// ack tells the peer how much of its own log this node holds (for
// --ack-replicas), each time a batch is stored and the figure grew.
func (f *follower) ack(ctx context.Context, conn *websocket.Conn, stored <-chan struct{}) {
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
		b, _ := json.Marshal(wire.Record{Ack: proto.Vector{f.plan.peer.ID: got}})
		wctx, cancel := context.WithTimeout(ctx, linkTimeout)
		err := conn.Write(wctx, websocket.MessageText, b)
		cancel()
		if err != nil {
			return
		}
	}
}
