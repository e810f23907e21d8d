package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// memberlist does not re-merge members it declared dead, so, like Serf's
// reconnect loop, Run keeps trying three kinds of addresses until they
// answer: the join addresses, the nodes found on the LAN, and the gossip
// addresses of members lost to failure (not those that left cleanly).
// Each address has its own backoff (250ms doubling up to
// ReconnectInterval); addresses of members already alive are skipped, and
// at most maxAttempts attempts run at once.
const (
	tickInterval = 250 * time.Millisecond
	maxAttempts  = 4
	discoverTTL  = time.Minute      // a discovered address is tried this long after its last sighting
	recheck      = 30 * time.Second // after a success, when to try an address again if it is still not an alive member
	resolveWait  = 5 * time.Second
	longOutage   = 100 // failures (about 5 minutes) after which an address is tried every 10*ReconnectInterval
)

// resolver is used for join names; tests point it at a fake DNS server.
var resolver = net.DefaultResolver

type candidateKind string

const (
	kindJoin   candidateKind = "join"
	kindLAN    candidateKind = "lan"
	kindFailed candidateKind = "failed"
)

type candidate struct {
	kind     candidateKind
	target   string // join spec, discovered address, or failed member's gossip address
	member   string // failed member's id
	next     time.Time
	failures int
	busy     bool
}

type reconnector struct {
	mu         sync.Mutex
	self       string
	cands      map[string]*candidate
	discovered map[string]time.Time // gossip address -> last seen
	busy       int
}

func (r *reconnector) init() {
	r.cands = make(map[string]*candidate)
	r.discovered = make(map[string]time.Time)
}

func (r *reconnector) setSelf(addr string) {
	r.mu.Lock()
	r.self = addr
	r.mu.Unlock()
}

// found records a node seen on the LAN.
func (r *reconnector) found(addr string) {
	r.mu.Lock()
	r.discovered[addr] = time.Now()
	r.mu.Unlock()
}

func (c *Cluster) reconnectLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	for {
		c.reconnectTick(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Cluster) reconnectTick(ctx context.Context, wg *sync.WaitGroup) {
	now := time.Now()
	alive := make(map[string]bool)
	failed := make(map[string]string) // id -> gossip address
	c.mu.Lock()
	pruned := false
	for id, e := range c.members {
		switch {
		case e.State == StateAlive:
			alive[e.Gossip] = true
		case now.Sub(e.Since) > c.cfg.ReconnectTimeout:
			delete(c.members, id)
			pruned = true
		case e.State == StateDead:
			failed[id] = e.Gossip
		}
	}
	if pruned {
		c.updateGaugesLocked()
	}
	c.mu.Unlock()

	r := &c.reconnect
	r.mu.Lock()
	want := make(map[string]*candidate)
	for _, spec := range c.cfg.Join {
		want[string(kindJoin)+" "+spec] = &candidate{kind: kindJoin, target: spec}
	}
	for addr, seen := range r.discovered {
		if now.Sub(seen) > discoverTTL {
			delete(r.discovered, addr)
			continue
		}
		want[string(kindLAN)+" "+addr] = &candidate{kind: kindLAN, target: addr}
	}
	for id, addr := range failed {
		want[string(kindFailed)+" "+id] = &candidate{kind: kindFailed, target: addr, member: id}
	}
	for k, cand := range r.cands {
		if _, ok := want[k]; !ok && !cand.busy {
			delete(r.cands, k)
		}
	}
	var due []*candidate
	for k, w := range want {
		cand := r.cands[k]
		if cand == nil {
			cand = w
			cand.next = now
			r.cands[k] = cand
		}
		if cand.busy {
			continue
		}
		cand.target = w.target // a failed member may come back elsewhere
		if now.Before(cand.next) || cand.target == r.self || (cand.kind != kindJoin && alive[cand.target]) {
			continue
		}
		due = append(due, cand)
	}
	sort.Slice(due, func(i, j int) bool { return due[i].next.Before(due[j].next) })
	if n := maxAttempts - r.busy; len(due) > n {
		due = due[:max(n, 0)]
	}
	for _, cand := range due {
		cand.busy = true
		r.busy++
	}
	self := r.self
	r.mu.Unlock()

	for _, cand := range due {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.attempt(ctx, cand, alive, self)
		}()
	}
}

// attempt contacts one candidate and schedules its next try.
func (c *Cluster) attempt(ctx context.Context, cand *candidate, alive map[string]bool, self string) {
	addrs := []string{cand.target}
	var err error
	if cand.kind == kindJoin {
		addrs, err = resolveJoin(ctx, cand.target)
		addrs = slices.DeleteFunc(addrs, func(a string) bool { return alive[a] || a == self || c.isSelf(a) })
		if err == nil && len(addrs) == 0 {
			c.finish(cand, nil, recheck) // every address is an alive member, or this node
			return
		}
	}
	if err == nil {
		c.metrics.joinAttempts.Inc()
		_, err = c.ml.Join(addrs)
	}
	if ctx.Err() != nil {
		c.finish(cand, nil, 0)
		return
	}
	c.finish(cand, err, 0)
}

// isSelf reports whether addr reaches this node's own gossip listener, so a
// join list that names every node, this one included, does not make it
// join itself.
func (c *Cluster) isSelf(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	_, ownPort, _ := net.SplitHostPort(c.addr)
	if err != nil || port != ownPort {
		return false
	}
	ip := net.ParseIP(host)
	bindHost, _, _ := net.SplitHostPort(c.cfg.BindAddr)
	bind := net.ParseIP(bindHost)
	if bind != nil && !bind.IsUnspecified() {
		return ip.Equal(bind)
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func (c *Cluster) finish(cand *candidate, err error, next time.Duration) {
	r := &c.reconnect
	r.mu.Lock()
	defer r.mu.Unlock()
	cand.busy = false
	r.busy--
	now := time.Now()
	switch {
	case next > 0:
		cand.next = now.Add(next)
	case err != nil:
		cand.failures++
		c.metrics.joinFailures.Inc()
		d := tickInterval << min(cand.failures-1, 10)
		d = min(d, c.cfg.ReconnectInterval)
		if cand.failures > longOutage {
			d = 10 * c.cfg.ReconnectInterval // gone for minutes: try less often
		}
		cand.next = now.Add(time.Duration(float64(d) * (0.8 + 0.4*rand.Float64())))
		if cand.failures == 1 {
			c.log.Info("cluster: cannot reach "+string(cand.kind)+" address; retrying", "addr", cand.target, "member", cand.member, "err", err)
		} else {
			c.log.Debug("cluster: still cannot reach "+string(cand.kind)+" address", "addr", cand.target, "member", cand.member, "failures", cand.failures, "err", err)
		}
	default:
		if cand.failures > 0 || cand.kind != kindFailed {
			c.log.Info("cluster: reached "+string(cand.kind)+" address", "addr", cand.target, "member", cand.member)
		}
		cand.failures = 0
		cand.next = now.Add(recheck)
	}
}

// joinSpec is a parsed Config.Join entry.
type joinSpec struct {
	host string
	port int // 0: DefaultPort for addresses, the SRV port for SRV answers
	dns  bool
}

func parseJoin(s string) (joinSpec, error) {
	var j joinSpec
	rest := strings.TrimSpace(s)
	if name, ok := strings.CutPrefix(rest, "dns:"); ok {
		j.dns, rest = true, name
	}
	if rest == "" {
		return j, errors.New("empty address")
	}
	host, port, err := net.SplitHostPort(rest)
	if ip := net.ParseIP(rest); ip != nil {
		host, port, err = rest, "", nil // a bare IPv6 address
	}
	if err != nil {
		if !strings.Contains(err.Error(), "missing port") {
			return j, fmt.Errorf("want host:port, [ipv6]:port or dns:NAME (%v)", err)
		}
		host, port = strings.Trim(rest, "[]"), ""
	}
	if host == "" {
		return j, errors.New("missing host")
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return j, fmt.Errorf("bad port %q", port)
		}
		j.port = p
	}
	j.host = host
	return j, nil
}

// resolveJoin turns a join entry into gossip addresses: an IP as is, a name
// by its A/AAAA answers, and with "dns:" also by its SRV answers.
func resolveJoin(ctx context.Context, spec string) ([]string, error) {
	j, err := parseJoin(spec)
	if err != nil {
		return nil, err
	}
	port := j.port
	if port == 0 {
		port = DefaultPort
	}
	if ip := net.ParseIP(j.host); ip != nil {
		return []string{net.JoinHostPort(ip.String(), strconv.Itoa(port))}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveWait)
	defer cancel()

	var mu sync.Mutex
	var out []string
	var errs []error
	add := func(addrs []net.IPAddr, port int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
		for _, a := range addrs {
			out = append(out, net.JoinHostPort(a.String(), strconv.Itoa(port)))
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		addrs, err := resolver.LookupIPAddr(ctx, j.host)
		add(addrs, port, err)
	})
	if j.dns {
		wg.Go(func() {
			// On bad records Go returns the good ones with an error.
			_, srvs, err := resolver.LookupSRV(ctx, "", "", j.host)
			add(nil, 0, err)
			for _, s := range srvs {
				addrs, err := resolver.LookupIPAddr(ctx, strings.TrimSuffix(s.Target, "."))
				add(addrs, int(s.Port), err)
			}
		})
	}
	wg.Wait()
	if len(out) == 0 {
		return nil, fmt.Errorf("resolve %s: %w", spec, errors.Join(errs...))
	}
	sort.Strings(out)
	uniq := out[:0]
	for i, a := range out {
		if i == 0 || a != out[i-1] {
			uniq = append(uniq, a)
		}
	}
	return uniq, nil
}
