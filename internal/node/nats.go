package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/natsengine"
)

// openNATS connects the node to its NATS JetStream stream (--engine nats)
// and returns the cursor key the chatr nodes of the stream share.
func (n *Node) openNATS() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := n.cfg
	e, err := natsengine.Open(ctx, natsengine.Config{URL: c.NATSURL, CredsFile: c.NATSCredsFile, TokenFile: c.NATSTokenFile,
		TLSCAFile: c.NATSTLSCAFile, Stream: c.NATSStream, Replicas: c.NATSReplicas, MaxAge: c.HistoryMaxAge,
		MaxPerRoom: c.HistoryMaxPerRoom, Name: "chatr " + c.NodeName + " " + n.store.NodeID()}, n.log)
	if err != nil {
		return nil, err
	}
	key, err := e.SharedKey(ctx, "cursor")
	if err != nil {
		e.Close()
		return nil, err
	}
	n.nats = e
	n.natsSkipped = prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_nats_skipped_total",
		Help: "Messages on the NATS stream that are not chatr's, skipped."})
	n.reg.MustRegister(n.natsSkipped)
	return key, nil
}

// followNATS hands the stream's messages to the hub until ctx ends; a
// follow that fails starts again after the last message it took.
func (n *Node) followNATS(ctx context.Context) {
	var from uint64 // from now
	for ctx.Err() == nil {
		last, err := n.nats.Follow(ctx, from, n.hub.Publish, n.natsSkipped.Inc)
		if last > 0 {
			from = last + 1
		}
		if err != nil && ctx.Err() == nil {
			n.log.Warn("nats: following the stream failed; trying again", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	}
}

// presenceNATS shares presence with the other chatr nodes over NATS until
// ctx ends.
func (n *Node) presenceNATS(ctx context.Context) {
	for ctx.Err() == nil {
		if err := n.nats.Presence(ctx, n.ID(), n.hub); err != nil && ctx.Err() == nil {
			n.log.Warn("nats: presence failed; trying again", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	}
}

func (n *Node) closeNATS() {
	if n.nats != nil {
		n.nats.Close()
	}
}
