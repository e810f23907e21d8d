package natsengine

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

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
	// As for reads (consumer), the feed's consumer must sit on a whole
	// copy of the stream; nats.go's own remakes after a reset are not
	// checked.
	var c jetstream.Consumer
	for try := 1; ; try++ {
		var err error
		c, err = e.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{roomSubjects},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    from,
		})
		if err != nil {
			return last, unreadable(err)
		}
		info := c.CachedInfo()
		if info == nil || try == maxPlacements {
			break
		}
		if ok, err := e.caughtUp(ctx, info); err != nil || ok {
			break
		}
		e.drop(info.Name)
	}
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
		mu.Lock()
		taken = meta.Sequence.Stream
		mu.Unlock()
		msg, ok := e.decode(m.Subject(), meta.Sequence.Stream, m.Data())
		if !ok {
			skipped()
			return
		}
		mu.Lock()
		pending = append(pending, store.Committed{Msg: msg, RoomVector: e.vector(msg.Seq)})
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
