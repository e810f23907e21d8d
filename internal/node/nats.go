package node

import (
	"context"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/gateway"
	"chatr/internal/natsengine"
	"chatr/internal/proto"
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

// wireNATS plugs the engine into the gateway's options: it stores and
// reads the messages, and its member view lists the chatr nodes.
func (n *Node) wireNATS(gw *gateway.Options) {
	scheme := "http://"
	if n.cert != nil {
		scheme = "https://"
	}
	n.natsMembers = n.nats.NewMembers(proto.Member{ID: n.ID(), Name: n.cfg.NodeName, HTTP: announcedHTTP(n.HTTPAddr())}, n.console)
	gw.History, gw.Poster, gw.Ready = n.nats, n.nats, n.nats.Ready
	gw.Members, gw.ClusterView = n.natsMembers.Alive, n.natsMembers.View
	gw.KnownHTTP = func() []string {
		var out []string
		for _, m := range n.natsMembers.Alive()[1:] {
			out = append(out, scheme+m.HTTP)
		}
		return out
	}
}

// announcedHTTP is the address other nodes' clients reach this node's
// listener at: the listener's, with this machine's name for a listener
// bound to every interface.
func announcedHTTP(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err == nil && (host == "" || ip != nil && ip.IsUnspecified()) {
		if name, err := os.Hostname(); err == nil {
			return net.JoinHostPort(name, port)
		}
	}
	return addr
}

// keepNATS runs f until ctx ends, again a second after each time it fails
// (what is logged as what).
func (n *Node) keepNATS(ctx context.Context, what string, f func(context.Context) error) {
	for ctx.Err() == nil {
		if err := f(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("nats: "+what+" failed; trying again", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	}
}

// announceNATS keeps this node in the member view of the NATS account
// until ctx ends.
func (n *Node) announceNATS(ctx context.Context) { n.keepNATS(ctx, "member view", n.natsMembers.Run) }

// presenceNATS shares presence with the other chatr nodes over NATS until
// ctx ends.
func (n *Node) presenceNATS(ctx context.Context) {
	n.keepNATS(ctx, "presence", func(ctx context.Context) error { return n.nats.Presence(ctx, n.ID(), n.hub) })
}

// followNATS hands the stream's messages to the hub until ctx ends; a
// follow that fails starts again after the last message it took.
func (n *Node) followNATS(ctx context.Context) {
	var from uint64 // from now
	n.keepNATS(ctx, "following the stream", func(ctx context.Context) error {
		last, err := n.nats.Follow(ctx, from, n.hub.Publish, n.natsSkipped.Inc)
		if last > 0 {
			from = last + 1
		}
		return err
	})
}

func (n *Node) closeNATS() {
	if n.nats != nil {
		n.nats.Close()
	}
}
