package natsengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"chatr/internal/proto"
	"chatr/internal/store"
)

// Reads go through short-lived consumers with the room's subject as
// filter: JetStream then counts (NumPending) and delivers only that room's
// messages, whatever else the stream holds. Counting from a sequence is
// one consumer; finding where the newest n of a room begin is a binary
// search of such counts (about log2 of the stream's length).

// fetchWait bounds the wait for a batch whose messages JetStream said are
// there.
const fetchWait = 5 * time.Second

// pending counts the messages of subj at stream sequence from or after.
func (e *Engine) pending(ctx context.Context, subj string, from uint64) (uint64, error) {
	c, err := e.consumer(ctx, subj, from)
	if err != nil {
		return 0, err
	}
	info := c.CachedInfo()
	e.drop(info.Name)
	return info.NumPending, nil
}

// consumer makes a consumer of subj that starts at sequence from.
func (e *Engine) consumer(ctx context.Context, subj string, from uint64) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     subj,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute, // a reader that dies leaves none behind
	}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	// A reader keeps a consumer only on a whole copy of the stream (place).
	c, whole, err := e.place(ctx, func() (c jetstream.Consumer, err error) {
		err = retry(ctx, func(ctx context.Context) (err error) {
			c, err = e.stream.CreateConsumer(ctx, cfg)
			return err
		})
		return c, err
	})
	if err == nil && !whole {
		err = fmt.Errorf("no consumer on a current replica in %d tries", maxPlacements)
	}
	if err != nil {
		if c != nil {
			e.drop(c.CachedInfo().Name)
		}
		return nil, unreadable(err)
	}
	return c, nil
}

// maxPlacements bounds the consumers place makes to find one on a current
// replica.
const maxPlacements = 20

// place makes consumers with newConsumer until one sits on a whole copy
// of the stream, at most maxPlacements of them, dropping the others.
// JetStream places a consumer of one replica on any server of the stream,
// and it reads that server's copy: a replica still catching up after an
// outage has holes (found by TestNATSFaults: acked messages missing from a
// page). It returns the last consumer made (nil when newConsumer failed)
// and whether it is on a whole copy; err is newConsumer's, or the check's.
func (e *Engine) place(ctx context.Context, newConsumer func() (jetstream.Consumer, error)) (jetstream.Consumer, bool, error) {
	for try := 1; ; try++ {
		c, err := newConsumer()
		if err != nil {
			return nil, false, err
		}
		info := c.CachedInfo()
		if info == nil {
			return c, true, nil
		}
		whole, err := e.caughtUp(ctx, info)
		if whole || err != nil || try == maxPlacements {
			return c, whole, err
		}
		e.drop(info.Name)
		if !sleep(ctx, 50*time.Millisecond) {
			return nil, false, ctx.Err()
		}
	}
}

// caughtUp reports whether consumer ci sits on a server whose copy of the
// stream is whole: the leader's, or a replica's that is current with no
// lag. A stream of one replica has only the leader.
func (e *Engine) caughtUp(ctx context.Context, ci *jetstream.ConsumerInfo) (bool, error) {
	if e.cfg.Replicas <= 1 || ci.Cluster == nil || ci.Cluster.Leader == "" {
		return true, nil
	}
	var info *jetstream.StreamInfo
	err := retry(ctx, func(ctx context.Context) (err error) {
		info, err = e.stream.Info(ctx)
		return err
	})
	if err != nil {
		return false, err
	}
	if info.Cluster == nil || info.Cluster.Leader == ci.Cluster.Leader {
		return true, nil
	}
	for _, r := range info.Cluster.Replicas {
		if r.Name == ci.Cluster.Leader {
			return r.Current && !r.Offline && r.Lag == 0, nil
		}
	}
	return false, nil
}

// drop deletes a reader's consumer, in the background (its inactivity
// threshold removes it anyway).
func (e *Engine) drop(name string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), fetchWait)
		defer cancel()
		e.stream.DeleteConsumer(ctx, name)
	}()
}

// read returns the chatr messages among the next n stream messages of
// subj from sequence from on, stopping before sequence upTo (0: no bound),
// and how many it skipped as not chatr's.
func (e *Engine) read(ctx context.Context, subj string, from uint64, n int, upTo uint64) (out []proto.Message, skipped int, err error) {
	c, err := e.consumer(ctx, subj, from)
	if err != nil {
		return nil, 0, err
	}
	info := c.CachedInfo()
	defer e.drop(info.Name)
	left := min(uint64(n), info.NumPending)
	for try := 1; left > 0; try++ {
		batch, err := c.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return nil, 0, unreadable(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			seq := meta.Sequence.Stream
			if upTo > 0 && seq >= upTo {
				return out, skipped, nil
			}
			if msg, ok := e.decode(m.Subject(), seq, m.Data()); ok {
				out = append(out, msg)
			} else {
				skipped++
				e.log.Warn("nats: skipped a stream message that is not chatr's", "stream", e.cfg.Stream, "seq", seq, "subject", m.Subject())
			}
			left--
			if meta.NumPending == 0 {
				left = 0
			}
		}
		err = batch.Error()
		if got == 0 && errors.Is(err, nats.ErrNoResponders) && try < 10 && sleep(ctx, 100*time.Millisecond) {
			continue // a consumer just made may not answer at once on its server
		}
		if err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, 0, unreadable(err)
		}
		if got == 0 {
			return nil, 0, unreadable(fmt.Errorf("%d messages of %s announced, none came in %v", left, subj, fetchWait))
		}
	}
	return out, skipped, nil
}

// newest returns the newest n chatr messages of subj in [lo, upTo) (upTo
// 0: to hi and past), oldest first. Counting finds where the newest n
// stream messages begin; when some of them are not chatr's, it looks again
// for as many more.
func (e *Engine) newest(ctx context.Context, subj string, lo, hi, n, upTo uint64) ([]proto.Message, error) {
	for want := n; ; {
		from, err := e.newestFrom(ctx, subj, lo, hi, want, upTo)
		if err != nil {
			return nil, err
		}
		msgs, skipped, err := e.read(ctx, subj, from, int(want), upTo)
		if err != nil || skipped == 0 || from == lo || uint64(len(msgs)) >= n {
			return msgs[max(0, len(msgs)-int(n)):], err
		}
		want += uint64(skipped)
	}
}

// startOfNewest returns the sequence from which subj has exactly n
// messages before the after messages at its end, given that it has more
// than n there: the largest s with count(s) - after >= n, where count is
// non-increasing in s and steps by one message at a time.
func (e *Engine) startOfNewest(ctx context.Context, subj string, lo, hi, n, after uint64) (uint64, error) {
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		c, err := e.pending(ctx, subj, mid)
		if err != nil {
			return 0, err
		}
		if c-after >= n {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// last returns the stream sequence of the newest message of subj, 0 when
// it has none, as the stream's leader has it: a read must show every
// message acked before it, and a direct get, answered by any replica, may
// come from one that lags.
func (e *Engine) last(ctx context.Context, subj string) (uint64, error) {
	req, err := json.Marshal(map[string]string{"last_by_subj": subj})
	if err != nil {
		return 0, err
	}
	var seq uint64
	err = retry(ctx, func(ctx context.Context) error {
		m, err := e.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+e.cfg.Stream, req)
		if err != nil {
			return err
		}
		var resp struct {
			Message *struct {
				Seq uint64 `json:"seq"`
			} `json:"message"`
			Error *jetstream.APIError `json:"error"`
		}
		switch err := json.Unmarshal(m.Data, &resp); {
		case err != nil:
			return fmt.Errorf("the stream's leader answered %q: %w", m.Data, err)
		case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
			seq = 0
		case resp.Error != nil:
			return resp.Error
		case resp.Message == nil:
			return jetstream.ErrInvalidJetStreamResponse
		default:
			seq = resp.Message.Seq
		}
		return nil
	})
	if err != nil {
		return 0, unreadable(err)
	}
	return seq, nil
}

// tailWait bounds how long a read waits for the live feed to take what
// the stream had stored when the read began, before it reads the stream
// instead.
const tailWait = 250 * time.Millisecond

// fromTail returns the messages of room's tail after cursor sequence have
// (latest: the newest limit), and the stream sequence upTo to which they
// are every message of the room: once the live feed has taken every
// message the stream had stored when fromTail was called, so that a read
// shows each message acked before it. ok false: the stream must be read
// (see tails.read).
func (e *Engine) fromTail(ctx context.Context, room string, have uint64, limit int, latest bool) (msgs []proto.Message, upTo uint64, ok bool) {
	if !e.tails.has(room) {
		return nil, 0, false
	}
	upTo, err := e.stored.last(ctx)
	if err != nil {
		return nil, 0, false // the stream's read says why
	}
	timeout := time.NewTimer(tailWait)
	defer timeout.Stop()
	for {
		wait, ok := e.tails.at(upTo)
		if !ok {
			return nil, 0, false
		}
		if wait == nil {
			msgs, ok := e.tails.read(room, have, upTo, limit, latest)
			return msgs, max(upTo, newestSeq(msgs)), ok
		}
		select {
		case <-wait:
		case <-timeout.C:
			return nil, 0, false
		case <-ctx.Done():
			return nil, 0, false
		}
	}
}

// vector is the cursor vector of this engine at seq (empty for 0).
func (e *Engine) vector(seq uint64) proto.Vector {
	if seq == 0 {
		return proto.Vector{}
	}
	return proto.Vector{e.origin: seq}
}

// Latest returns the newest limit messages of room, oldest first, and the
// room's vector (everything up to now).
func (e *Engine) Latest(ctx context.Context, room string, limit int) (store.Page, error) {
	if limit > 0 {
		if msgs, upTo, ok := e.fromTail(ctx, room, 0, limit, true); ok {
			return store.Page{Messages: msgs[max(0, len(msgs)-limit):], Vector: e.vector(upTo)}, nil
		}
	}
	subj := subject(room)
	last, err := e.last(ctx, subj)
	if err != nil || limit <= 0 {
		return store.Page{Vector: e.vector(last)}, err
	}
	var msgs []proto.Message
	if last > 0 {
		if msgs, err = e.newest(ctx, subj, 1, last, uint64(limit), last+1); err != nil {
			return store.Page{}, err
		}
	}
	e.tails.make(room, msgs, last, len(msgs) < limit)
	return store.Page{Messages: msgs, Vector: e.vector(last)}, nil
}

// newestSeq is the stream sequence of the newest of msgs, oldest first (0
// for none).
func newestSeq(msgs []proto.Message) uint64 {
	if len(msgs) == 0 {
		return 0
	}
	return msgs[len(msgs)-1].Seq
}

// newestFrom is where the newest n messages of subj in [lo, upTo) (upTo 0:
// to hi and past) begin: lo when there are no more than n.
func (e *Engine) newestFrom(ctx context.Context, subj string, lo, hi, n, upTo uint64) (uint64, error) {
	total, err := e.pending(ctx, subj, lo)
	if err != nil {
		return 0, err
	}
	var after uint64 // messages at upTo and later
	if upTo > 0 {
		if after, err = e.pending(ctx, subj, upTo); err != nil {
			return 0, err
		}
	}
	if total-after <= n {
		return lo, nil
	}
	return e.startOfNewest(ctx, subj, lo, hi, n, after)
}

// Since returns the messages of room the cursor does not cover, oldest
// first, at most limit: the first limit when newest is false, the last
// limit when it is true (a replay that shows a gap). Vector is the cursor
// raised by what was returned.
func (e *Engine) Since(ctx context.Context, room string, cursor proto.Vector, limit int, newest bool) (store.Page, error) {
	p := store.Page{Vector: cursor.Clone()}
	have := cursor[e.origin] // may be anything up to 2^64-1: a cursor is the client's
	if limit > 0 {
		if msgs, _, ok := e.fromTail(ctx, room, have, limit, false); ok {
			if len(msgs) > limit {
				p.Truncated = true
				if newest {
					msgs = msgs[len(msgs)-limit:]
				} else {
					msgs = msgs[:limit]
				}
			}
			p.Messages = msgs
			if len(msgs) > 0 {
				p.Vector[e.origin] = newestSeq(msgs)
			}
			return p, nil
		}
	}
	subj := subject(room)
	last, err := e.last(ctx, subj)
	if err != nil {
		return store.Page{}, err
	}
	if have >= last || limit <= 0 {
		p.Truncated = have < last
		return p, nil
	}
	from := have + 1
	count, err := e.pending(ctx, subj, from)
	if err != nil {
		return store.Page{}, err
	}
	switch {
	case count <= uint64(limit):
		p.Messages, _, err = e.read(ctx, subj, from, limit, 0)
	case newest:
		p.Truncated = true
		p.Messages, err = e.newest(ctx, subj, from, last, uint64(limit), last+1)
	default:
		p.Truncated = true
		p.Messages, _, err = e.read(ctx, subj, from, limit, 0)
	}
	if err != nil {
		return store.Page{}, err
	}
	if k := len(p.Messages); k > 0 {
		p.Vector[e.origin] = p.Messages[k-1].Seq
	}
	return p, nil
}

// Before returns the limit messages of room just before the message
// (origin, seq), oldest first; store.ErrNotFound when room has no such
// message.
func (e *Engine) Before(ctx context.Context, room, origin string, seq uint64, limit int) (store.Page, error) {
	subj := subject(room)
	if origin != e.origin {
		return store.Page{}, store.ErrNotFound
	}
	m, err := e.get(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, store.ErrNotFound):
		return store.Page{}, store.ErrNotFound
	case err != nil:
		return store.Page{}, unreadable(err)
	case m.Room != room:
		return store.Page{}, store.ErrNotFound
	}
	if seq <= 1 || limit <= 0 {
		return store.Page{}, nil
	}
	msgs, err := e.newest(ctx, subj, 1, seq-1, uint64(limit), seq)
	return store.Page{Messages: msgs}, err
}

// HasRoom reports whether room has messages; when NATS does not answer it
// says yes (the new-room limit it serves then does not refuse anyone).
func (e *Engine) HasRoom(room string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), fetchWait)
	defer cancel()
	last, err := e.last(ctx, subject(room))
	return err != nil || last > 0
}

// RoomsAfter lists, by name, at most limit rooms with messages whose names
// sort after after, and whether more follow.
func (e *Engine) RoomsAfter(ctx context.Context, after string, limit int) ([]store.RoomInfo, bool, error) {
	info, err := e.stream.Info(ctx, jetstream.WithSubjectFilter(roomSubjects))
	if err != nil {
		return nil, false, unreadable(err)
	}
	counts := map[string]uint64{}
	var names []string
	for subj, n := range info.State.Subjects {
		if room, ok := roomOf(subj); ok && room > after {
			names = append(names, room)
			counts[room] = n
		}
	}
	sort.Strings(names)
	more := len(names) > limit
	names = names[:min(len(names), limit)]
	out := make([]store.RoomInfo, 0, len(names))
	for _, room := range names {
		ri := store.RoomInfo{Room: room, Messages: int64(counts[room])}
		if m, err := e.stream.GetLastMsgForSubject(ctx, subject(room)); err == nil {
			if msg, ok := e.decode(m.Subject, m.Sequence, m.Data); ok {
				ri.Last = msg.Created
			}
		}
		out = append(out, ri)
	}
	return out, more, nil
}

// retry runs f again, a few times, while it finds no responder or gets no
// answer in time: right after a stream is made or its leader moves, its API
// and direct gets may have none for a moment, and a request made while
// other nodes make the same stream or bucket may never be answered (nats.go
// issue 949, nats-server 3677). So each try has tryTimeout of ctx's time,
// and a try that runs out of it is tried again while ctx lasts.
func retry(ctx context.Context, f func(context.Context) error) error {
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, tryTimeout)
		err := f(tctx)
		cancel()
		lost := errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
		transient := lost || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrTimeout)
		if err == nil || !transient || try == 10 || !sleep(ctx, 100*time.Millisecond) {
			return err
		}
	}
}

// tryTimeout bounds one try of a JetStream API call or direct get (retry).
const tryTimeout = 3 * time.Second

// sleep waits d and reports false if ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
