package cluster

import (
	"context"
	"log"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/mdns"
)

// LAN discovery announces this node as an mDNS service (_chatr._tcp, port =
// gossip port, TXT id= and cluster=) and browses for others, often while the
// node is alone and seldom once it has peers (the reconnect loop, not mDNS,
// heals partitions). Discovered nodes of the same cluster go to the
// reconnect loop, which joins them.
const (
	browseAlone  = 2 * time.Second
	browseJoined = 15 * time.Second
	queryTimeout = time.Second
)

func (c *Cluster) discover(ctx context.Context) {
	mlog := log.New(logWriter{c: c, from: "mdns"}, "", 0)
	host, portStr, _ := net.SplitHostPort(c.addr)
	ip := net.ParseIP(host)
	port, _ := strconv.Atoi(portStr)
	bindHost, _, _ := net.SplitHostPort(c.cfg.BindAddr)
	iface := interfaceOf(net.ParseIP(bindHost)) // nil: every interface
	v4only := ip.To4() != nil

	txt := []string{"id=" + c.cfg.NodeID, "cluster=" + c.cfg.ClusterName, "proto=" + strconv.Itoa(ProtocolVersion)}
	svc, err := mdns.NewMDNSService(c.cfg.NodeID, ServiceName, "local.", c.cfg.NodeID+".local.", port, []net.IP{ip}, txt)
	if err != nil {
		c.log.Error("cluster: LAN discovery off: cannot describe the mDNS service", "err", err)
		return
	}
	srv, err := mdns.NewServer(&mdns.Config{Zone: svc, Iface: iface, Logger: mlog})
	if err != nil {
		c.log.Error("cluster: LAN discovery off: cannot announce with mDNS", "err", err)
		return
	}
	defer func() { _ = srv.Shutdown() }()
	ifName := "all"
	if iface != nil {
		ifName = iface.Name
	}
	c.log.Info("cluster: LAN discovery on", "service", ServiceName, "interface", ifName, "addr", c.addr)

	for {
		c.browse(ctx, iface, v4only, mlog)
		wait := browseJoined
		if !c.hasAlivePeer() {
			wait = browseAlone
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64()))):
		}
	}
}

// browse sends one mDNS query and hands the nodes of this cluster that
// answer within queryTimeout to the reconnect loop.
func (c *Cluster) browse(ctx context.Context, iface *net.Interface, v4only bool, mlog *log.Logger) {
	entries := make(chan *mdns.ServiceEntry, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- mdns.QueryContext(ctx, &mdns.QueryParam{
			Service: ServiceName, Domain: "local", Timeout: queryTimeout,
			Interface: iface, Entries: entries, DisableIPv6: v4only, Logger: mlog,
		})
		close(entries)
	}()
	for e := range entries {
		txt := map[string]string{}
		for _, f := range e.InfoFields {
			if k, v, ok := strings.Cut(f, "="); ok {
				txt[k] = v
			}
		}
		if txt["id"] == c.cfg.NodeID || e.Port == 0 {
			continue
		}
		if txt["cluster"] != c.cfg.ClusterName {
			c.log.Debug("cluster: ignoring a node of another cluster on the LAN", "node", txt["id"], "cluster", txt["cluster"])
			continue
		}
		var addr string
		switch {
		case e.AddrV4 != nil:
			addr = net.JoinHostPort(e.AddrV4.String(), strconv.Itoa(e.Port))
		case e.AddrV6IPAddr != nil:
			addr = net.JoinHostPort(e.AddrV6IPAddr.String(), strconv.Itoa(e.Port))
		default:
			continue
		}
		c.log.Debug("cluster: found a node on the LAN", "node", txt["id"], "addr", addr)
		c.reconnect.found(addr)
	}
	if err := <-errc; err != nil && ctx.Err() == nil {
		c.log.Warn("cluster: mDNS query failed", "err", err)
	}
}

func (c *Cluster) hasAlivePeer() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.members {
		if e.State == StateAlive {
			return true
		}
	}
	return false
}

// interfaceOf is the interface holding ip, or nil when ip is unspecified or
// not found.
func interfaceOf(ip net.IP) *net.Interface {
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return &ifs[i]
			}
		}
	}
	return nil
}
