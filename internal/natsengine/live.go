package natsengine

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"chatr/internal/store"
)

// Follow delivers every message stored in the stream from now on to
// publish, in stream order, once, until ctx ends: an ordered consumer of
// every room's subject, which nats.go makes again from the last sequence
// it delivered when it sees a gap, a missed heartbeat or a reconnect. What
// arrived while publish ran goes in one batch. Messages that are not
// chatr's are skipped and counted in skipped.
func (e *Engine) Follow(ctx context.Context, publish func([]store.Committed), skipped func()) error {
	info, err := e.stream.Info(ctx)
	if err != nil {
		return unreadable(err)
	}
	c, err := e.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{roomSubjects},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    info.State.LastSeq + 1,
	})
	if err != nil {
		return unreadable(err)
	}
	var (
		mu      sync.Mutex
		pending []store.Committed
		wake    = make(chan struct{}, 1)
	)
	cc, err := c.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			skipped()
			return
		}
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
		return unreadable(err)
	}
	defer cc.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
		mu.Lock()
		batch := pending
		pending = nil
		mu.Unlock()
		publish(batch)
	}
}
