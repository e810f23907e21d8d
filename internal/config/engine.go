package config

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Engine says where messages are stored and how they reach the other
// nodes: the node's own store and peer links (local), or a NATS JetStream
// stream (nats; see docs/nats.md).
type Engine struct {
	Kind              string        // --engine: local or nats
	NATSURL           string        // --nats-url: nats://h1:4222,nats://h2:4222
	NATSCredsFile     string        // --nats-creds-file
	NATSTokenFile     string        // --nats-token-file
	NATSTLSCAFile     string        // --nats-tls-ca-file
	NATSStream        string        // --nats-stream
	NATSReplicas      int           // --nats-replicas
	HistoryMaxAge     time.Duration // --history-max-age (nats): 0 keeps every message
	HistoryMaxPerRoom int64         // --history-max-per-room (nats): 0 keeps every message
}

// NATS reports whether the node runs on the NATS engine.
func (e *Engine) NATS() bool { return e.Kind == "nats" }

func (e *Engine) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&e.Kind, "engine", "local", "where messages live: local (this node's store, replicated to the cluster's nodes over peer links) or nats (a NATS JetStream stream; see docs/nats.md)")
	fs.StringVar(&e.NATSURL, "nats-url", "", "with --engine nats: the NATS servers, `nats://host:port[,nats://host:port...]`")
	fs.StringVar(&e.NATSCredsFile, "nats-creds-file", "", "with --engine nats: a NATS credentials `file` (JWT and nkey seed)")
	fs.StringVar(&e.NATSTokenFile, "nats-token-file", "", "with --engine nats: a `file` holding the NATS token")
	fs.StringVar(&e.NATSTLSCAFile, "nats-tls-ca-file", "", "with --engine nats: PEM `file` of the CAs that sign the NATS servers' certificates")
	fs.StringVar(&e.NATSStream, "nats-stream", "CHATR", "with --engine nats: the stream's `name` (subjects chatr.room.*), created if missing")
	fs.IntVar(&e.NATSReplicas, "nats-replicas", 3, "with --engine nats: replicas of the stream (a send is acked once a quorum stored it), 1 to 5")
	fs.DurationVar(&e.HistoryMaxAge, "history-max-age", 0, "with --engine nats: the stream forgets messages older than this (0: never)")
	fs.Int64Var(&e.HistoryMaxPerRoom, "history-max-per-room", 0, "with --engine nats: the stream keeps at most this many messages a room, forgetting the oldest (0: no limit)")
}

// validate checks e against the rest of c, reporting each problem with add.
func (e *Engine) validate(c *Config, add func(error)) {
	switch e.Kind {
	case "local":
		for name, set := range map[string]bool{"nats-url": e.NATSURL != "", "nats-creds-file": e.NATSCredsFile != "",
			"nats-token-file": e.NATSTokenFile != "", "nats-tls-ca-file": e.NATSTLSCAFile != "",
			"history-max-age": e.HistoryMaxAge != 0, "history-max-per-room": e.HistoryMaxPerRoom != 0} {
			if set {
				add(fmt.Errorf("--%s: only with --engine nats", name))
			}
		}
		return
	case "nats":
	default:
		add(fmt.Errorf("--engine %q: must be local or nats", e.Kind))
		return
	}
	if e.NATSURL == "" {
		add(errors.New("--engine nats needs --nats-url nats://host:port[,...]"))
	}
	if c.Clustered() || c.AckReplicas > 0 {
		add(errors.New("--engine nats: the NATS servers are the cluster; --cluster-addr, --join, --discover and --ack-replicas are for --engine local"))
	}
	if e.NATSCredsFile != "" && e.NATSTokenFile != "" {
		add(errors.New("--nats-creds-file and --nats-token-file: give one or neither"))
	}
	if e.NATSReplicas < 1 || e.NATSReplicas > 5 {
		add(fmt.Errorf("--nats-replicas %d: must be from 1 to 5", e.NATSReplicas))
	}
	if e.NATSStream == "" {
		add(errors.New("--nats-stream: must not be empty"))
	}
	if e.HistoryMaxAge < 0 || e.HistoryMaxPerRoom < 0 {
		add(errors.New("--history-max-age and --history-max-per-room: must be 0 (no limit) or more"))
	}
}
