// Package node assembles one chatr node from its parts: store, hub,
// gateway, and (in cluster mode) membership and replication, or (with
// --engine nats) the NATS engine in their place. cmd/chatr and
// the in-process cluster tests both start nodes through it.
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"chatr/internal/cluster"
	"chatr/internal/config"
	"chatr/internal/gateway"
	"chatr/internal/hub"
	"chatr/internal/natsengine"
	"chatr/internal/proto"
	"chatr/internal/replication"
	"chatr/internal/secret"
	"chatr/internal/store"
	"chatr/web"
)

// Hooks let tests stand between a node and the network.
type Hooks struct {
	// GossipBlocked drops gossip to and from an address (a partition).
	GossipBlocked func(remoteGossipAddr string) bool
	// Dial replaces the dialer of outgoing peer links.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Node is one running chatr node.
type Node struct {
	cfg     config.Config
	log     *slog.Logger
	console io.Writer
	store   *store.Store
	hub     *hub.Hub
	gw      *gateway.Server
	ln      net.Listener
	admin   net.Listener // --admin-http; nil when off
	reg     *prometheus.Registry
	commits *store.Follower // the hub's place in the commit stream
	cert    *certificate    // nil without --tls-cert-file
	// secret is the cluster secret (nil for one node, or without one);
	// secretKept says this node made it and keeps it in its store.
	secret     []byte
	secretKept bool

	// Cluster mode only.
	cluster *cluster.Cluster
	repl    *replication.Replicator

	// --engine nats only: the stream holds the messages.
	nats        *natsengine.Engine
	natsSkipped prometheus.Counter
	natsMembers *natsengine.Members
}

// New opens the store and binds the HTTP listener, the admin one (and, in
// cluster mode, the gossip listener), so that a bad data directory or a
// busy port fails here, before anything runs.
func New(cfg config.Config, log *slog.Logger, console io.Writer) (*Node, error) {
	return NewWithHooks(cfg, log, console, Hooks{})
}

// NewWithHooks is New with test hooks.
func NewWithHooks(cfg config.Config, log *slog.Logger, console io.Writer, hooks Hooks) (*Node, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := store.Open(cfg.DataDir, store.Options{Log: log, Metrics: reg})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, console: console, store: st, reg: reg}
	tokens, apiKey, err := signIn(cfg, log, reg)
	if err != nil {
		st.Close()
		return nil, err
	}
	if cfg.Clustered() {
		n.secret, n.secretKept = clusterSecret(cfg, st)
	}
	key := cursorKey(cfg, n.secret, st)
	if cfg.NATS() {
		if key, err = n.openNATS(); err != nil {
			st.Close()
			return nil, err
		}
	}
	n.hub = hub.New(hub.Options{NodeID: st.NodeID(), Cluster: cfg.ClusterName, CursorKey: key,
		Metrics: reg, PresenceInterval: cfg.PresenceInterval})
	n.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listen on %s (--http): %w", cfg.HTTPAddr, err)
	}
	if cfg.TLS() {
		if n.cert, err = newCertificate(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			n.ln.Close()
			st.Close()
			return nil, err
		}
	}
	if n.admin, err = listenAdmin(cfg.AdminHTTPAddr); err != nil {
		n.ln.Close()
		n.closeNATS()
		st.Close()
		return nil, err
	}
	gw := gateway.Options{Config: cfg, TLS: n.tlsConfig(), Tokens: tokens, APIKey: apiKey,
		ExpiredGrace: cfg.ExpiredGrace, TokenURL: cfg.TokenURL, NodeID: st.NodeID(), HTTPAddr: n.ln.Addr().String(), History: gateway.StoreHistory{Store: st}, Hub: n.hub,
		Poster: gateway.StorePoster{Store: st}, Web: web.FS, Log: log, Metrics: reg}
	if n.nats != nil {
		n.wireNATS(&gw)
	}
	if cfg.Clustered() {
		if err := n.newCluster(&gw, hooks); err != nil {
			n.ln.Close()
			closeAdmin(n.admin)
			st.Close()
			return nil, err
		}
	}
	// The hub follows the commit stream from the first commit on (with the
	// NATS engine, the stream: see Run).
	if n.nats == nil {
		n.commits = st.Follow(true)
	}
	n.gw = gateway.New(gw)
	return n, nil
}

// newCluster sets up membership and replication and plugs them into the
// gateway's options.
func (n *Node) newCluster(gw *gateway.Options, hooks Hooks) error {
	cfg, sec, kept := n.cfg, n.secret, n.secretKept
	id := ed25519.NewKeyFromSeed(n.store.Key("identity"))
	var err error
	n.repl, err = replication.New(replication.Options{Store: n.store, Hub: n.hub, NodeID: n.store.NodeID(),
		Cluster: cfg.ClusterName, Identity: id, Secret: sec, AckReplicas: cfg.AckReplicas, Dial: hooks.Dial,
		Log: n.log.With("part", "replication"), Metrics: n.reg})
	if err != nil {
		return err
	}
	var gossipKey []byte
	if sec != nil {
		gossipKey = secret.Derive(sec, secret.Gossip)
	}
	c, err := cluster.New(cluster.Config{NodeID: n.store.NodeID(), NodeName: cfg.NodeName,
		ClusterName: cfg.ClusterName, BindAddr: cfg.ClusterAddr, Advertise: cfg.Advertise, Join: cfg.Join,
		DiscoverLAN: cfg.Discover == "lan", SecretKey: gossipKey, HTTPAddr: n.ln.Addr().String(),
		PublicKey: id.Public().(ed25519.PublicKey), TLS: cfg.TLS(),
		Log: n.log.With("part", "cluster"), Console: n.console, Metrics: n.reg,
		LocalState: n.repl.LocalState, MergeState: n.repl.MergeState, Blocked: hooks.GossipBlocked})
	if err != nil {
		n.repl.Close()
		return fmt.Errorf("cluster: %w", err)
	}
	n.cluster = c
	if host, _, _ := net.SplitHostPort(cfg.ClusterAddr); host == "" || net.ParseIP(host).IsUnspecified() {
		n.log.Warn("gossip listens on every interface; give --cluster-addr an IP to listen on one", "cluster_addr", cfg.ClusterAddr)
	}
	switch {
	case sec == nil:
		fmt.Fprintf(n.console, "WARNING: --insecure-no-secret: anyone who reaches %s or %s can join this cluster, read every message and write as any node\n",
			c.Addr(), n.ln.Addr())
		n.log.Warn("cluster without a secret (--insecure-no-secret): anyone who reaches the ports can join")
	case kept:
		// The way docker swarm prints its join token: the secret this node
		// made is what another node needs.
		fmt.Fprintf(n.console, "to add a node: chatr --cluster-addr HOST:%d --join %s --secret %s\n",
			cluster.DefaultPort, c.Addr(), secret.Format(sec))
	}
	gw.Poster = n.repl
	gw.Peer = n.repl.Handler()
	gw.Members = n.aliveMembers
	gw.ClusterView = n.clusterView
	gw.Ready = c.Joined
	gw.KnownHTTP = func() []string {
		// Only members alive now, whose gossip proved the secret: a page of a
		// node that is gone, or was never one, may not open sessions here.
		var out []string
		for _, m := range c.Members() {
			if m.State == cluster.StateAlive {
				scheme := "http://"
				if m.TLS {
					scheme = "https://"
				}
				out = append(out, scheme+peerHTTP(m))
			}
		}
		return out
	}
	return nil
}

// clusterSecret is the secret of the cluster: the one given (--secret,
// --secret-file), else the one this node keeps in its store, made at its
// first start (kept is true then); nil with --insecure-no-secret.
func clusterSecret(cfg config.Config, st *store.Store) (sec []byte, kept bool) {
	switch {
	case cfg.Secret != nil:
		return cfg.Secret, false
	case cfg.InsecureNoSecret:
		return nil, false
	}
	return st.Key("cluster_secret"), true
}

// peerHTTP is the HTTP address to reach member m at: its advertised one,
// with the gossip host filled in when the listener was bound to all
// interfaces.
func peerHTTP(m cluster.Member) string {
	host, port, err := net.SplitHostPort(m.HTTP)
	if err != nil {
		return m.HTTP
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if gh, _, err := net.SplitHostPort(m.Gossip); err == nil {
			host = gh
		}
	}
	return net.JoinHostPort(host, port)
}

func (n *Node) aliveMembers() []proto.Member {
	var out []proto.Member
	for _, m := range n.cluster.Members() {
		if m.State == cluster.StateAlive {
			out = append(out, proto.Member{ID: m.ID, Name: m.Name, HTTP: peerHTTP(m)})
		}
	}
	return out
}

func (n *Node) clusterView() proto.ClusterView {
	v := proto.ClusterView{Self: n.ID(), Cluster: n.cfg.ClusterName, Members: []proto.MemberView{}}
	for _, m := range n.cluster.Members() {
		v.Members = append(v.Members, proto.MemberView{ID: m.ID, Name: m.Name, HTTP: peerHTTP(m), Gossip: m.Gossip,
			State: string(m.State), Since: proto.FormatTime(m.Since.UnixMicro())})
	}
	return v
}

// followMembers keeps the replication links in step with the membership.
func (n *Node) followMembers(ctx context.Context) {
	events, unsubscribe := n.cluster.Subscribe(256)
	defer unsubscribe()
	for {
		var peers []replication.Peer
		for _, m := range n.cluster.Members() {
			if m.State == cluster.StateAlive && !m.Self {
				peers = append(peers, replication.Peer{ID: m.ID, HTTP: peerHTTP(m), Key: m.Key, TLS: m.TLS})
			}
		}
		n.repl.SetPeers(peers)
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				return // the cluster shut down
			}
		}
	}
}

// tlsConfig is the HTTP listener's TLS configuration, nil without TLS.
func (n *Node) tlsConfig() *tls.Config {
	if n.cert == nil {
		return nil
	}
	return n.cert.config()
}

// ReloadTLS reads the TLS certificate and key files again (SIGHUP): new
// connections get the new certificate, open ones stay. Without TLS it does
// nothing.
func (n *Node) ReloadTLS() error {
	if n.cert == nil {
		return nil
	}
	if err := n.cert.reload(); err != nil {
		n.log.Error("TLS certificate not reloaded; the one in use stays", "err", err)
		return err
	}
	n.log.Info("TLS certificate reloaded", "cert", n.cfg.TLSCertFile)
	return nil
}

// Store is the node's message log, for tools and tests that check it.
func (n *Node) Store() *store.Store { return n.store }

// ID is the node id.
func (n *Node) ID() string { return n.store.NodeID() }

// HTTPAddr is the address the HTTP listener is bound to.
func (n *Node) HTTPAddr() string { return n.ln.Addr().String() }

// Run serves until ctx ends, then shuts down (see shutdown). Every
// goroutine it starts has ended when it returns.
func (n *Node) Run(ctx context.Context) error {
	scheme := "http"
	if n.cert != nil {
		scheme = "https"
	}
	fmt.Fprintf(n.console, "chatr node %s (%s) serving %s://%s/chatr/chatr.html, data in %s\n",
		n.ID(), n.cfg.NodeName, scheme, browseAddr(n.HTTPAddr()), n.cfg.DataDir)
	if n.cfg.AuthOn() {
		fmt.Fprintln(n.console, "sign-in: people need a signed token; their names come from it")
	} else {
		fmt.Fprintln(n.console, "anonymous: anyone may use any name (an --auth-* key turns sign-in on)")
	}
	n.printAdmin()
	errc := make(chan error, 3)
	go func() { errc <- n.gw.Serve(n.ln) }() // ends with gw.Shutdown
	if n.admin != nil {
		go func() { errc <- n.gw.ServeAdmin(n.admin) }() // ends with gw.Shutdown too
	}
	bgCtx, stopBG := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	start := func(f func()) {
		bg.Add(1)
		go func() {
			defer bg.Done()
			f()
		}()
	}
	start(func() { n.gw.Run(bgCtx) })
	if n.nats != nil {
		start(func() { n.followNATS(bgCtx) })
		start(func() { n.presenceNATS(bgCtx) })
		start(func() { n.announceNATS(bgCtx) })
		start(func() { n.nats.Health(bgCtx) })
	} else {
		start(func() { n.hub.Run(bgCtx, n.commits) })
	}
	if n.cluster != nil {
		start(func() { n.repl.Run(bgCtx) })
		start(func() { n.followMembers(bgCtx) })
		start(func() {
			if err := n.cluster.Run(bgCtx); err != nil && bgCtx.Err() == nil {
				errc <- fmt.Errorf("cluster: %w", err)
			}
		})
	}
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	err = errors.Join(err, n.shutdown())
	stopBG()
	bg.Wait()
	n.closeNATS() // after presence said goodbye
	return err
}

// shutdown stops the node without losing what it acked, within
// --shutdown-timeout: in a cluster, it first takes no new sends (clients
// are told to go to the other nodes), lets the store commit what it took,
// and waits (at most half the time) until every alive peer holds this
// node's messages; only then does it leave the cluster, so no peer stops
// following it while it holds messages they lack. Then it closes the
// sessions with 1001 and closes the store.
func (n *Node) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Shutdown)
	defer cancel()
	var errs []error
	if n.cluster != nil {
		n.log.Info("shutting down: refusing new sends, clients go to the other nodes")
		n.gw.StopSends()
		if err := n.store.Flush(ctx); err != nil {
			n.log.Warn("shutting down: the store did not finish its writes in time", "err", err)
		}
		n.handOver(ctx)
		n.log.Info("leaving the cluster")
		errs = append(errs, n.cluster.Shutdown(ctx))
	}
	if n.nats != nil {
		// What was taken is in NATS's hands once published: stop taking.
		n.gw.StopSends()
	}
	n.log.Info("draining: closing sessions with 1001")
	n.gw.Drain(ctx)
	if n.repl != nil {
		n.repl.Close()
	}
	err := n.gw.Shutdown(ctx)
	return errors.Join(append(errs, err, n.store.Close())...)
}

// handOver waits, for at most half of what ctx leaves, until every alive
// peer holds this node's own messages, and logs how that went.
func (n *Node) handOver(ctx context.Context) {
	seq := n.store.Vector()[n.ID()]
	var peers []string
	for _, m := range n.cluster.Members() {
		if m.State == cluster.StateAlive && !m.Self {
			peers = append(peers, m.ID)
		}
	}
	if seq == 0 || len(peers) == 0 {
		return
	}
	wait := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl) / 2
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	began := time.Now()
	n.log.Info("shutting down: waiting for the peers to hold this node's messages", "seq", seq, "peers", len(peers))
	short := n.repl.WaitReplicated(wctx, peers, seq)
	if len(short) == 0 {
		n.log.Info("every alive peer holds this node's messages", "seq", seq, "took", time.Since(began).Round(time.Millisecond))
		return
	}
	n.log.Warn("leaving before every peer holds this node's messages; they get the rest from this node when it is back, or from peers that have it",
		"seq", seq, "held_by_peer", short, "waited", time.Since(began).Round(time.Millisecond))
}

// browseAddr turns a listen address into one a browser can open.
func browseAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
