// Package node assembles one chatr node from its parts: store, hub,
// gateway, and (in cluster mode) membership and replication. cmd/chatr and
// the in-process cluster tests both start nodes through it.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"chatr/internal/config"
	"chatr/internal/gateway"
	"chatr/internal/hub"
	"chatr/internal/store"
	"chatr/web"
)

// Node is one running chatr node.
type Node struct {
	cfg     config.Config
	log     *slog.Logger
	console io.Writer
	store   *store.Store
	hub     *hub.Hub
	gw      *gateway.Server
	http    *http.Server
	ln      net.Listener
	reg     *prometheus.Registry
}

// New opens the store and binds the HTTP listener, so that a bad data
// directory or a busy port fails here, before anything runs.
func New(cfg config.Config, log *slog.Logger, console io.Writer) (*Node, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := store.Open(cfg.DataDir, store.Options{Log: log, Metrics: reg})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, console: console, store: st, reg: reg}
	n.hub = hub.New(hub.Options{NodeID: st.NodeID(), Cluster: cfg.ClusterName, Metrics: reg})
	st.OnCommit(n.hub.Publish)
	n.gw = gateway.New(gateway.Options{Config: cfg, NodeID: st.NodeID(), Store: st, Hub: n.hub,
		Poster: gateway.StorePoster{Store: st}, Web: web.FS, Log: log, Metrics: reg})
	n.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listen on %s (--http): %w", cfg.HTTPAddr, err)
	}
	n.http = &http.Server{Handler: n.gw.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return n, nil
}

// ID is the node id.
func (n *Node) ID() string { return n.store.NodeID() }

// HTTPAddr is the address the HTTP listener is bound to.
func (n *Node) HTTPAddr() string { return n.ln.Addr().String() }

// Run serves until ctx ends, then drains: stop taking sessions, close them
// with 1001, finish the store's writes.
func (n *Node) Run(ctx context.Context) error {
	fmt.Fprintf(n.console, "chatr node %s (%s) serving http://%s/chatr/chatr.html, data in %s\n",
		n.ID(), n.cfg.NodeName, browseAddr(n.HTTPAddr()), n.cfg.DataDir)
	errc := make(chan error, 1)
	go func() { errc <- n.http.Serve(n.ln) }()
	select {
	case err := <-errc:
		n.store.Close()
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	return n.shutdown()
}

func (n *Node) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Shutdown)
	defer cancel()
	n.log.Info("draining: closing sessions with 1001")
	n.gw.Drain(ctx)
	err := n.http.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		n.http.Close()
		err = nil
	}
	return errors.Join(err, n.store.Close())
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
