package cluster

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"chatr/internal/proto"
)

// meta is what every node gossips about itself (memberlist node meta, at
// most 512 bytes).
type meta struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	HTTP    string `json:"http,omitempty"`
	Proto   int    `json:"proto"`
	Cluster string `json:"cluster"`
	Leaving bool   `json:"leaving,omitempty"`
	// Key is the node's public identity key (Ed25519), which its peer links
	// prove; TLS says its HTTP listener serves TLS.
	Key []byte `json:"key"`
	TLS bool   `json:"tls,omitempty"`
}

func (c *Cluster) localMeta() meta {
	return meta{ID: c.cfg.NodeID, Name: c.cfg.NodeName, HTTP: c.cfg.HTTPAddr, Proto: ProtocolVersion,
		Cluster: c.cfg.ClusterName, Leaving: c.leaving.Load(), Key: c.cfg.PublicKey, TLS: c.cfg.TLS}
}

// member is the Member that memberlist node n with meta m stands for.
func member(n *memberlist.Node, m meta) Member {
	return Member{ID: n.Name, Name: orID(m.Name, n.Name), HTTP: m.HTTP, Gossip: n.Address(), Key: m.Key, TLS: m.TLS}
}

func (c *Cluster) validateMeta() error {
	m := c.localMeta()
	m.Leaving = true
	b, _ := json.Marshal(m)
	if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("cluster: node name and HTTP address too long for node meta (%d > %d bytes)", len(b), memberlist.MetaMaxSize)
	}
	return nil
}

// checkMeta parses a peer's meta and refuses other clusters and protocols.
func (c *Cluster) checkMeta(name string, b []byte) (meta, error) {
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("node meta is not chatr's: %v", err)
	}
	switch {
	case m.Cluster != c.cfg.ClusterName:
		return m, fmt.Errorf("node is in cluster %q, not %q", m.Cluster, c.cfg.ClusterName)
	case m.Proto != ProtocolVersion:
		return m, fmt.Errorf("node speaks cluster protocol %d, not %d", m.Proto, ProtocolVersion)
	case m.ID != name || !proto.ValidNodeID(m.ID):
		return m, fmt.Errorf("node id %q in meta does not match node name %q", m.ID, name)
	case len(m.Key) != ed25519.PublicKeySize:
		return m, fmt.Errorf("node meta has no identity key of %d bytes", ed25519.PublicKeySize)
	}
	return m, nil
}

// refuse counts a refused peer and logs it, once per peer and reason every
// 30 s so a peer that keeps knocking does not flood the log.
func (c *Cluster) refuse(reason, peer string, err error) {
	c.metrics.refused.WithLabelValues(reason).Inc()
	key := reason + " " + peer
	now := time.Now()
	c.mu.Lock()
	last, seen := c.lastRefuse[key]
	logIt := !seen || now.Sub(last) > 30*time.Second
	if logIt {
		if len(c.lastRefuse) >= 1000 { // bounded: forget peers not seen lately
			for k, t := range c.lastRefuse {
				if now.Sub(t) > 30*time.Second {
					delete(c.lastRefuse, k)
				}
			}
		}
		c.lastRefuse[key] = now
	}
	c.mu.Unlock()
	if logIt {
		c.log.Warn("cluster: refused peer", "reason", reason, "peer", peer, "err", err)
	}
}

// delegate plugs chatr into memberlist's delegate interfaces. Its methods run
// on memberlist's goroutines, some under its node lock: they only take c.mu
// briefly and never block.
type delegate struct{ c *Cluster }

// NodeMeta is this node's meta.
func (d *delegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(d.c.localMeta())
	if len(b) > limit {
		return nil // validated in New; never reached
	}
	return b
}

// NotifyMsg ignores user messages: chatr sends none through gossip.
func (d *delegate) NotifyMsg([]byte) {}

// GetBroadcasts has nothing to broadcast.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// stateVersion prefixes the push/pull state: [version][id length][id][state].
// memberlist does not say whose state it is, so the sender names itself.
const stateVersion = 1

// LocalState wraps Config.LocalState with this node's id.
func (d *delegate) LocalState(join bool) []byte {
	if d.c.cfg.LocalState == nil {
		return nil
	}
	st := d.c.cfg.LocalState()
	id := d.c.cfg.NodeID
	b := make([]byte, 0, 2+len(id)+len(st))
	b = append(b, stateVersion, byte(len(id)))
	b = append(b, id...)
	return append(b, st...)
}

// MergeRemoteState unwraps a peer's state and hands it to Config.MergeState.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := d.c
	id, st, err := decodeState(buf)
	if err != nil {
		c.log.Debug("cluster: ignoring remote state", "err", err)
		return
	}
	if c.cfg.MergeState == nil || id == c.cfg.NodeID || len(st) == 0 {
		return
	}
	c.mu.Lock()
	e, ok := c.members[id]
	known := ok && e.State == StateAlive
	c.mu.Unlock()
	if !known {
		c.log.Debug("cluster: ignoring state of a node that is not an alive member", "node", id)
		return
	}
	c.cfg.MergeState(id, st)
}

func decodeState(b []byte) (id string, state []byte, err error) {
	if len(b) < 2 || b[0] != stateVersion {
		return "", nil, errors.New("unknown state format")
	}
	n := int(b[1])
	if len(b) < 2+n || !proto.ValidNodeID(string(b[2:2+n])) {
		return "", nil, errors.New("bad node id in state")
	}
	return string(b[2 : 2+n]), b[2+n:], nil
}

// NotifyAlive refuses peers of other clusters or protocols.
func (d *delegate) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name == d.c.cfg.NodeID {
		return nil
	}
	if _, err := d.c.checkMeta(peer.Name, peer.Meta); err != nil {
		d.c.refuse("meta", peer.Name+"@"+peer.Address(), err)
		return err
	}
	return nil
}

// NotifyMerge refuses a join whose remote state holds a node of another
// cluster or protocol.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if p.Name == d.c.cfg.NodeID || p.State == memberlist.StateDead || p.State == memberlist.StateLeft {
			continue
		}
		if _, err := d.c.checkMeta(p.Name, p.Meta); err != nil {
			d.c.refuse("meta", p.Name+"@"+p.Address(), err)
			return err
		}
	}
	return nil
}

// NotifyConflict logs another node claiming this node's id (or a known id)
// from another address: two data directories copied from one, most likely.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.c.log.Error("cluster: two nodes use the same node id; give each node its own data directory",
		"node", existing.Name, "addr", existing.Address(), "other_addr", other.Address())
}

// NotifyJoin records a member coming alive.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	c := d.c
	if n.Name == c.cfg.NodeID {
		return
	}
	m, _ := c.checkMeta(n.Name, n.Meta) // NotifyAlive let it in
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	e := c.members[n.Name]
	if e == nil {
		e = &entry{}
		c.members[n.Name] = e
	}
	e.Member = member(n, m)
	e.State, e.Since = StateAlive, now
	e.leaving = m.Leaving
	c.joined = true
	c.emitLocked(Joined, e.Member)
}

// NotifyLeave records a member that left or was declared dead. memberlist
// does not tell which: a member whose meta said "leaving" left cleanly.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	c := d.c
	if n.Name == c.cfg.NodeID {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	e := c.members[n.Name]
	if e == nil {
		m, _ := c.checkMeta(n.Name, n.Meta)
		e = &entry{Member: member(n, m), leaving: m.Leaving}
		c.members[n.Name] = e
	}
	kind, state := Failed, StateDead
	if e.leaving {
		kind, state = Left, StateLeft
	}
	e.State, e.Since = state, now
	c.emitLocked(kind, e.Member)
}

// NotifyUpdate records a member's new meta.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	c := d.c
	if n.Name == c.cfg.NodeID {
		return
	}
	m, err := c.checkMeta(n.Name, n.Meta)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.members[n.Name]
	if c.closed || e == nil {
		return
	}
	e.leaving = m.Leaving
	next := member(n, m)
	next.State, next.Since, next.Self = e.State, e.Since, e.Self
	if e.Name == next.Name && e.HTTP == next.HTTP && e.Gossip == next.Gossip && bytes.Equal(e.Key, next.Key) && e.TLS == next.TLS {
		return // only the leaving flag changed
	}
	e.Member = next
	c.emitLocked(Updated, e.Member)
}

func orID(name, id string) string {
	if name == "" {
		return id
	}
	return name
}

// emitLocked prints the cluster view for joins, leaves and failures and
// hands the event to every subscriber without blocking. c.mu is held.
func (c *Cluster) emitLocked(kind EventKind, m Member) {
	c.updateGaugesLocked()
	if kind != Updated {
		line := c.viewLineLocked(kind, m)
		select {
		case c.lines <- line:
		default:
			c.log.Warn("cluster: console is not keeping up; dropped a line", "line", line)
		}
		c.log.Info("cluster: member "+kind.String(), "node", m.ID, "name", m.Name, "gossip", m.Gossip, "http", m.HTTP)
	}
	ev := Event{Kind: kind, Member: m}
	for s := range c.subs {
		select {
		case s.ch <- ev:
		default:
			c.metrics.dropped.Inc()
			c.log.Warn("cluster: subscriber is full; dropped a membership event", "event", kind.String(), "node", m.ID)
		}
	}
}

// viewLineLocked is e.g. "cluster view: 3 members [a1 (this), b2, c3] after
// b2 joined": the alive members by display name (with the id when two share
// a name), and the member that came or went.
func (c *Cluster) viewLineLocked(kind EventKind, m Member) string {
	view := []Member{c.self}
	names := map[string]int{c.self.Name: 1}
	for _, e := range c.members {
		if e.State == StateAlive {
			view = append(view, e.Member)
		}
		names[e.Name]++
	}
	sortMembers(view)
	label := func(m Member) string {
		if names[m.Name] > 1 {
			return m.Name + "/" + m.ID
		}
		return m.Name
	}
	parts := make([]string, len(view))
	for i, v := range view {
		parts[i] = label(v)
		if v.Self {
			parts[i] += " (this)"
		}
	}
	noun := "members"
	if len(view) == 1 {
		noun = "member"
	}
	return fmt.Sprintf("cluster view: %d %s [%s] after %s %s", len(view), noun, strings.Join(parts, ", "), label(m), kind)
}
