package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/proto"
	"chatr/internal/replication/wire"
	"chatr/internal/store"
)

// heartbeat is how often a leader writes to an idle link; a follower that
// hears nothing for linkTimeout reconnects.
const (
	heartbeat   = time.Second
	linkTimeout = 5 * time.Second
	// rangeBatch is how many messages one catch-up read takes from the store.
	rangeBatch = 512
	// wsMessageLimit bounds one WebSocket message of a link: a TLS record
	// (16 KB and a little) is one message.
	wsMessageLimit = 64 << 10
)

// serveLink streams to one follower: every message it lacks of the origins
// it asked for, then new ones as they are committed, plus this node's
// presence; it reads the follower's acks. Anyone may open the WebSocket;
// only a member holding the secret gets past the handshake (see link.go).
func (r *Replicator) serveLink(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	r.wg.Add(1) // a hijacked link is not waited for by the HTTP server: Close waits
	r.mu.Unlock()
	defer r.wg.Done()
	conn, err := websocket.Accept(w, req, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(wsMessageLimit)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	lc, h, err := r.serverHandshake(ctx, websocket.NetConn(ctx, conn, websocket.MessageBinary))
	if err != nil {
		r.m.refused.Inc()
		r.logRefused.Do(func() {
			r.log.Warn("peer link refused (logged at most every 10 s)", "remote", req.RemoteAddr, "err", err)
		})
		return
	}
	defer lc.Close()
	follower := h.Node
	skip := map[string]bool{follower: true}
	for _, o := range h.Skip {
		skip[o] = true
	}
	since := h.Since
	if since == nil {
		since = proto.Vector{}
	}

	// Following the stream from before the catch-up, so nothing committed
	// meanwhile is missed; what the catch-up also sent is skipped by sent.
	commits := r.opts.Store.Follow(false)
	defer commits.Close()
	r.mu.Lock()
	r.serving[follower]++
	r.mu.Unlock()
	r.m.leading.Inc()
	defer func() {
		r.m.leading.Dec()
		r.linkEnded(follower)
	}()
	// What the follower says it holds of our log is its first ack.
	r.onAck(follower, since[r.opts.NodeID])
	acking := make(chan struct{})
	go func() {
		defer close(acking)
		r.readAcks(cancel, lc, follower)
	}()
	defer func() {
		cancel()
		lc.Close() // ends the ack reader's read
		<-acking
	}()

	s := &linkSender{r: r, conn: lc, skip: skip, sent: since, deltas: h.Deltas}
	err = s.run(ctx, commits)
	if ctx.Err() == nil && err != nil {
		r.log.Info("peer link to follower ended", "follower", follower, "err", err)
	}
}

// readAcks takes the follower's acks; anything else ends the link.
func (r *Replicator) readAcks(cancel context.CancelFunc, lc *linkConn, follower string) {
	defer cancel()
	for {
		typ, data, err := lc.read(maxFollowerFrame, 0)
		if err != nil {
			return
		}
		var rec wire.Record
		if err := json.Unmarshal(data, &rec); typ != frameJSON || err != nil || rec.Ack == nil {
			r.m.linkErrors.Inc()
			r.log.Warn("peer sent garbage on its link", "peer", follower, "err", err)
			return
		}
		r.onAck(follower, rec.Ack[r.opts.NodeID])
	}
}

// linkSender is the state of one outgoing stream: what it has sent so far
// of each origin.
type linkSender struct {
	r    *Replicator
	conn *linkConn
	skip map[string]bool
	sent proto.Vector
	buf  []byte
	// deltas: the follower takes presence changes; told is what it was
	// told of this node's presence (room -> people), at generation gen.
	deltas bool
	told   map[string]map[proto.Person]bool
	gen    uint64
}

func (s *linkSender) run(ctx context.Context, commits *store.Follower) error {
	if err := s.catchUp(ctx, s.r.opts.Store.Vector()); err != nil {
		return err
	}
	if err := s.sendPresence(ctx); err != nil {
		return err
	}
	changed := s.r.opts.Hub.LocalChanged()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-commits.Ready():
			batch, err := commits.Take()
			if errors.Is(err, store.ErrBehind) {
				// A whole stream behind: what it missed is in the store.
				s.r.m.dropped.Inc()
				err = s.catchUp(ctx, s.r.opts.Store.Vector())
			}
			if err != nil {
				return err
			}
			if err := s.sendLive(ctx, batch); err != nil {
				return err
			}
		case <-changed:
			changed = s.r.opts.Hub.LocalChanged()
			if err := s.sendPresence(ctx); err != nil {
				return err
			}
		case <-tick.C:
			if err := s.write(ctx, wire.Record{}); err != nil {
				return err
			}
		}
	}
}

func (s *linkSender) wants(origin string) bool { return !s.skip[origin] }

// catchUp sends, from the store, every message of the wanted origins after
// sent and up to upto.
func (s *linkSender) catchUp(ctx context.Context, upto proto.Vector) error {
	for origin, last := range upto {
		if !s.wants(origin) {
			continue
		}
		if err := s.catchUpOrigin(ctx, origin, last); err != nil {
			return err
		}
	}
	return nil
}

func (s *linkSender) catchUpOrigin(ctx context.Context, origin string, last uint64) error {
	for s.sent[origin] < last {
		msgs, err := s.r.opts.Store.Range(ctx, origin, s.sent[origin]+1, min(rangeBatch, int(last-s.sent[origin])))
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return fmt.Errorf("store has no %s-%d though its vector says so", origin, s.sent[origin]+1)
		}
		rec := wire.Record{Msgs: make([]wire.Msg, len(msgs))}
		for i, m := range msgs {
			rec.Msgs[i] = wire.FromMessage(m)
		}
		n, err := s.writeN(ctx, rec)
		if err != nil {
			return err
		}
		s.r.m.catchUpBytes.Add(float64(n))
		s.r.m.catchUpMsgs.Add(float64(len(msgs)))
		s.sent[origin] = msgs[len(msgs)-1].Seq
	}
	return nil
}

// sendLive sends the wanted messages of a commit batch, first catching up
// any it finds missing (a dropped batch, or one committed during the
// catch-up).
func (s *linkSender) sendLive(ctx context.Context, batch []store.Committed) error {
	var rec wire.Record
	for _, c := range batch {
		m := c.Msg
		if !s.wants(m.Origin) || m.Seq <= s.sent[m.Origin] {
			continue
		}
		if m.Seq > s.sent[m.Origin]+1 {
			if len(rec.Msgs) > 0 {
				if err := s.write(ctx, rec); err != nil {
					return err
				}
				rec.Msgs = nil
			}
			if err := s.catchUpOrigin(ctx, m.Origin, m.Seq-1); err != nil {
				return err
			}
		}
		rec.Msgs = append(rec.Msgs, wire.FromMessage(m))
		s.sent[m.Origin] = m.Seq
	}
	if len(rec.Msgs) == 0 {
		return nil
	}
	return s.write(ctx, rec)
}

// sendPresence tells the follower how this node's presence changed: the
// rooms that changed since it was last told, or first (and whenever the
// hub no longer remembers that far back) a snapshot of every room.
func (s *linkSender) sendPresence(ctx context.Context) error {
	hub := s.r.opts.Hub
	if s.deltas && s.told != nil {
		if rooms, gen, ok := hub.LocalSince(s.gen); ok {
			s.gen = gen
			rec := wire.Record{Joined: map[string][]proto.Person{}, Left: map[string][]proto.Person{}}
			for room, people := range rooms {
				now := make(map[proto.Person]bool, len(people))
				for _, p := range people {
					now[p] = true
					if !s.told[room][p] {
						rec.Joined[room] = append(rec.Joined[room], p)
					}
				}
				for p := range s.told[room] {
					if !now[p] {
						rec.Left[room] = append(rec.Left[room], p)
					}
				}
				if len(now) == 0 {
					delete(s.told, room)
				} else {
					s.told[room] = now
				}
			}
			if len(rec.Joined)+len(rec.Left) == 0 {
				return nil
			}
			return s.write(ctx, rec)
		}
	}
	snap, gen := hub.LocalSnapshot()
	s.gen = gen
	s.told = make(map[string]map[proto.Person]bool, len(snap))
	for room, people := range snap {
		set := make(map[proto.Person]bool, len(people))
		for _, p := range people {
			set[p] = true
		}
		s.told[room] = set
	}
	return s.write(ctx, wire.Record{Presence: snap, Snapshot: true})
}

func (s *linkSender) write(ctx context.Context, rec wire.Record) error {
	_, err := s.writeN(ctx, rec)
	return err
}

func (s *linkSender) writeN(ctx context.Context, rec wire.Record) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Batches of messages go binary; presence and heartbeats as JSON.
	typ := byte(frameBatch)
	if len(rec.Msgs) > 0 && rec.Presence == nil && !rec.Snapshot {
		s.buf = wire.AppendBatch(s.buf[:0], rec.Msgs)
	} else {
		typ = frameJSON
		var err error
		if s.buf, err = json.Marshal(rec); err != nil {
			return 0, err
		}
	}
	if err := s.conn.write(typ, s.buf, linkTimeout); err != nil {
		return 0, err
	}
	s.r.m.sentMsgs.Add(float64(len(rec.Msgs)))
	return len(s.buf), nil
}
