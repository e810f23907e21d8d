package natsengine

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"chatr/internal/proto"
)

// Presence between chatr nodes on NATS travels on core NATS subjects,
// chatr.presence.<node id>, not in the stream: each node publishes a full
// snapshot of its own sessions' presence every PresenceHeartbeat and, in
// between, the rooms that changed (at most once per presenceEvery). Core
// NATS may drop a message: a delta that does not follow the last one seen
// from its node is ignored, and the next snapshot mends the view. A node
// not heard of for PresenceTTL (killed with -9, cut off) is dropped from
// every other node's presence within PresenceTTL+PresenceHeartbeat (the
// drop is checked at each heartbeat): 6-8 s, inside the 10 s the local
// engine's failure detection keeps to (test/e2e presence suite); a node
// that stops says goodbye with an empty snapshot.
const (
	presencePrefix    = "chatr.presence."
	PresenceHeartbeat = 2 * time.Second
	PresenceTTL       = 6 * time.Second
	presenceEvery     = 200 * time.Millisecond
)

// PresenceHub is what presence needs of the node's hub.
type PresenceHub interface {
	LocalSnapshot() (map[string][]proto.Person, uint64)
	LocalSince(gen uint64) (map[string][]proto.Person, uint64, bool)
	LocalChanged() <-chan struct{}
	SetRemote(node string, snapshot map[string][]proto.Person)
}

// presenceMsg is one node's presence: a snapshot (Full) or the rooms that
// changed after generation From.
type presenceMsg struct {
	Node  string                    `json:"node"`
	Full  bool                      `json:"full,omitempty"`
	From  uint64                    `json:"from,omitempty"`
	Gen   uint64                    `json:"gen"`
	Rooms map[string][]proto.Person `json:"rooms"`
}

// maxPresenceBytes bounds a presence message taken from NATS.
const maxPresenceBytes = 8 << 20

// remote is what this node knows of another node's presence.
type remote struct {
	gen   uint64
	rooms map[string][]proto.Person
	seen  time.Time
}

// Presence shares this node's presence (node is its id) with the other
// chatr nodes of the NATS account and keeps theirs in h, until ctx ends.
func (e *Engine) Presence(ctx context.Context, node string, h PresenceHub) error {
	var mu sync.Mutex
	others := map[string]*remote{}
	sub, err := e.nc.Subscribe(presencePrefix+"*", func(m *nats.Msg) {
		if len(m.Data) > maxPresenceBytes {
			return
		}
		var p presenceMsg
		if json.Unmarshal(m.Data, &p) != nil || p.Node == node || !proto.ValidNodeID(p.Node) ||
			strings.TrimPrefix(m.Subject, presencePrefix) != p.Node {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		r := others[p.Node]
		switch {
		case p.Full:
			r = &remote{rooms: p.Rooms}
			others[p.Node] = r
		case r == nil || r.gen != p.From:
			return // a delta after one we missed: the next snapshot mends it
		default:
			for room, people := range p.Rooms {
				if len(people) == 0 {
					delete(r.rooms, room)
				} else {
					r.rooms[room] = people
				}
			}
		}
		if r.rooms == nil {
			r.rooms = map[string][]proto.Person{}
		}
		r.gen, r.seen = p.Gen, time.Now()
		h.SetRemote(p.Node, maps.Clone(r.rooms)) // a copy: the next delta changes r.rooms
		if len(r.rooms) == 0 && p.Full {
			delete(others, p.Node) // a goodbye, or a node with no one
		}
	})
	if err != nil {
		return unreadable(err)
	}
	defer sub.Unsubscribe()

	publish := func(p presenceMsg) {
		p.Node = node
		if b, err := json.Marshal(p); err == nil {
			e.nc.Publish(presencePrefix+node, b)
		}
	}
	full := func() uint64 {
		rooms, gen := h.LocalSnapshot()
		publish(presenceMsg{Full: true, Gen: gen, Rooms: rooms})
		return gen
	}
	defer func() { publish(presenceMsg{Full: true, Rooms: map[string][]proto.Person{}}); e.nc.Flush() }()

	gen := full()
	heartbeat := time.NewTicker(PresenceHeartbeat)
	defer heartbeat.Stop()
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	for {
		changed := h.LocalChanged()
		select {
		case <-ctx.Done():
			return nil
		case <-heartbeat.C:
			gen = full()
		case <-sweep.C:
			mu.Lock()
			for id, r := range others {
				if time.Since(r.seen) > PresenceTTL {
					delete(others, id)
					h.SetRemote(id, nil)
				}
			}
			mu.Unlock()
		case <-changed:
			// Let changes gather for a moment, then send them in one.
			select {
			case <-time.After(presenceEvery):
			case <-ctx.Done():
				return nil
			}
			rooms, now, ok := h.LocalSince(gen)
			if !ok {
				gen = full()
				continue
			}
			publish(presenceMsg{From: gen, Gen: now, Rooms: rooms})
			gen = now
		}
	}
}
