package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/proto"
)

// follower keeps one link to a peer open, resuming from what the store
// holds after every disconnect.
type follower struct {
	r      *Replicator
	peer   Peer
	skip   []string
	key    string
	cancel context.CancelFunc
	done   chan struct{}
}

func (f *follower) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	f.cancel, f.done = cancel, make(chan struct{})
	f.r.wg.Add(1)
	go func() {
		defer f.r.wg.Done()
		defer close(f.done)
		f.loop(ctx)
	}()
}

// stop ends the link without waiting (the caller may hold r.mu).
func (f *follower) stop() { f.cancel() }

func (f *follower) loop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := f.session(ctx)
		if ctx.Err() != nil {
			return
		}
		f.r.m.linkErrors.Inc()
		f.r.log.Info("peer link lost; reconnecting", "peer", f.peer.ID, "http", f.peer.HTTP, "err", err, "retry_in", backoff)
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
	q.Set("skip", strings.Join(f.skip, ","))
	u := "ws://" + f.peer.HTTP + "/chatr/peer/link?" + q.Encode()
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
	var acked uint64
	for {
		rctx, cancel := context.WithTimeout(ctx, linkTimeout)
		_, data, err := conn.Read(rctx)
		cancel()
		if err != nil {
			return err
		}
		var rec record
		if err := json.Unmarshal(data, &rec); err != nil {
			return fmt.Errorf("peer sent garbage: %w", err)
		}
		if rec.Snapshot {
			r.opts.Hub.SetRemote(f.peer.ID, rec.Presence)
		}
		if len(rec.Msgs) == 0 {
			continue
		}
		msgs := make([]proto.Message, len(rec.Msgs))
		for i, w := range rec.Msgs {
			if msgs[i], err = w.message(); err != nil {
				return fmt.Errorf("peer sent a bad message: %w", err)
			}
		}
		stored, err := r.opts.Store.Insert(ctx, msgs)
		if err != nil {
			return fmt.Errorf("store replicated messages: %w", err)
		}
		r.m.received.Add(float64(len(stored)))
		// Tell the peer how much of its own log we hold, for --ack-replicas.
		if got := r.opts.Store.Vector()[f.peer.ID]; got > acked {
			acked = got
			b, _ := json.Marshal(record{Ack: proto.Vector{f.peer.ID: got}})
			wctx, cancel := context.WithTimeout(ctx, linkTimeout)
			err := conn.Write(wctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				return err
			}
		}
	}
}
