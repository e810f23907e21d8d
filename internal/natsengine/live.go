package natsengine

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"chatr/internal/proto"
	"chatr/internal/store"
)

// Follow delivers every message stored in the stream from sequence from
// on (0: from now) to publish, in stream order, once, until ctx ends, and
// returns the sequence of the last message it took: an ordered consumer of
// every room's subject, which nats.go makes again from the last sequence
// it delivered when it sees a gap, a missed heartbeat or a reconnect. What
// arrived while publish ran goes in one batch. Messages that are not
// chatr's are skipped and counted in skipped.
func (e *Engine) Follow(ctx context.Context, from uint64, publish func([]store.Committed), skipped func()) (uint64, error) {
	last := from - min(from, 1)
	if from == 0 {
		info, err := e.stream.Info(ctx)
		if err != nil {
			return 0, unreadable(err)
		}
		from, last = info.State.LastSeq+1, info.State.LastSeq
	}
	// As for reads, the feed's consumer should sit on a whole copy of the
	// stream (place); if none is found it goes on with the last one made,
	// and the gap check below mends what that costs. nats.go's own remakes
	// after a reset are not placed.
	c, _, err := e.place(ctx, func() (jetstream.Consumer, error) {
		return e.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{roomSubjects},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    from,
		})
	})
	if c == nil {
		return last, unreadable(err)
	}
	// The tails follow from here (and are dropped unless this follows
	// the last run on from the message after its last).
	e.tails.start(from)
	defer e.tails.stop()
	var (
		mu      sync.Mutex
		pending []store.Committed
		taken   = last
		wake    = make(chan struct{}, 1)
	)
	cc, err := c.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			skipped()
			return
		}
		seq := meta.Sequence.Stream
		mu.Lock()
		prev := taken
		taken = seq
		mu.Unlock()
		// Every message of chatr.room.* comes here, so stream sequences
		// follow one another: a jump is a gap (a consumer remade on a
		// replica with holes, say), filled from a checked read first.
		var fill []proto.Message
		if seq > prev+1 {
			var n int
			fill, n = e.fill(ctx, prev, seq)
			for range n {
				skipped()
			}
		}
		msg, ok := e.decode(m.Subject(), seq, m.Data())
		for i := range fill {
			e.tails.take(fill[i].Seq, &fill[i])
		}
		if ok {
			e.tails.take(seq, &msg)
		} else {
			e.tails.take(seq, nil)
			skipped()
		}
		mu.Lock()
		for _, f := range fill {
			pending = append(pending, store.Committed{Msg: f, RoomVector: e.vector(f.Seq)})
		}
		if ok {
			pending = append(pending, store.Committed{Msg: msg, RoomVector: e.vector(msg.Seq)})
		}
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return last, unreadable(err)
	}
	defer cc.Stop()
	for {
		select {
		case <-ctx.Done():
			cc.Stop()
			<-cc.Closed()
			mu.Lock()
			defer mu.Unlock()
			// What was taken but not yet published is dropped with the
			// node's sessions: nobody is left to tell.
			return taken, nil
		case <-wake:
		}
		mu.Lock()
		batch := pending
		pending = nil
		mu.Unlock()
		publish(batch)
	}
}

// fill reads the chatr messages of every room after stream sequence after
// and before before, for a gap in the live feed, and how many messages it
// skipped as not chatr's. It keeps trying until ctx ends: a gap left
// unfilled would be messages some sessions never see.
func (e *Engine) fill(ctx context.Context, after, before uint64) ([]proto.Message, int) {
	for {
		msgs, skipped, err := e.read(ctx, roomSubjects, after+1, int(before-after-1), before)
		if err == nil {
			if len(msgs) > 0 {
				e.log.Warn("nats: the live feed skipped messages; filled the gap", "after", after, "before", before, "filled", len(msgs))
			}
			return msgs, skipped
		}
		e.log.Warn("nats: could not fill a gap in the live feed; trying again", "after", after, "before", before, "err", err)
		if !sleep(ctx, time.Second) {
			return nil, 0
		}
	}
}
