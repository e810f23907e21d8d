// Package hub keeps the rooms of one node: which local sessions joined each
// room, who is present (here and on peer nodes), and the fan-out of each new
// message to the room's sessions, encoded once for all of them.
package hub

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/names"
	"chatr/internal/proto"
	"chatr/internal/store"
)

// Subscriber receives a room's events, in order. Deliver must not block: a
// subscriber that cannot keep up drops itself (the gateway closes it with
// 4000). The events of one store commit come in one call, so a burst costs
// a subscriber one hand-over, not one per message.
type Subscriber interface {
	Deliver(evs []*Event)
}

// Event is one thing that happened in a room, encoded once for every
// subscriber.
type Event struct {
	Room string
	// Msg is set for a message, nil for a presence change.
	Msg *proto.Message
	// Vector is the room's version vector just after Msg.
	Vector proto.Vector
	// Frame is the encoded frame: a message frame whose cursor is Vector, a
	// presence frame, or for a hidden copy of a re-sent message (Msg.Hidden),
	// the hidden frame naming it.
	Frame []byte
	// Notice, for a message that hid an earlier-stored copy (Msg.Replaces),
	// is the hidden frame naming that copy, for the subscribers that hold
	// the message already and so do not get Frame.
	Notice []byte
}

// Options configures a Hub.
type Options struct {
	NodeID  string // this node's id, for presence entries of local sessions
	Cluster string // the cluster name, which scopes cursors
	// CursorKey keys the MAC of the cursors of this hub's rooms: only a
	// cursor made with it is accepted, so every node that may resume a
	// client's cursor needs the same key (node derives it from the cluster
	// secret). Default: a random key made by New, good for as long as the
	// hub lives.
	CursorKey []byte
	Metrics   prometheus.Registerer
	// PresenceInterval coalesces the presence changes of a room: the first
	// change an interval after the room's last presence frame is sent at
	// once, later ones together at the end of the interval, as one
	// presence frame, and a person who came and went within it not at all.
	// So a loop of joins and leaves costs a room one frame per interval, not
	// one per change. A room of many local subscribers waits longer
	// (presenceInterval). 0 sends every change at once.
	PresenceInterval time.Duration
}

// Hub is the set of rooms of one node. Its methods are safe for concurrent use.
type Hub struct {
	opts Options

	mu    sync.RWMutex
	rooms map[string]*room
	// changed is closed and replaced whenever the local presence changes,
	// so peers can be told.
	changed chan struct{}
	// localLog lists, by generation, the rooms whose local presence
	// changed (LocalSince); it keeps the newest maxLocalLog.
	localGen uint64
	localLog []genRoom

	deliveries prometheus.Counter
}

type genRoom struct {
	gen  uint64
	room string
}

// maxLocalLog bounds the hub's list of local presence changes; a peer link
// further behind is sent a whole snapshot.
const maxLocalLog = 1 << 14

// person is who is present: a user (auth on: two people may share a
// name) or, with auth off, a name.
type person struct{ name, user string }

type room struct {
	subs  map[Subscriber]person // subscriber -> its person
	scope proto.CursorScope     // the room's cursor scope, prepared once
	// people is person -> sessions by node. A person is present while any
	// node has a session of theirs, and is listed once.
	people map[person]tally
	// present is who is present, in list order (sortPeople), each with
	// the first of their nodes by name (so that every node lists the same
	// one): a joined list is a copy of it, not a sort.
	present []proto.Person
	// looks is names.Keys -> the present names with that key, each with
	// how many present people bear it: who a new name would look like.
	// Built by the room's first Lookalike, so that a room only peers' people
	// are in costs no skeletons; add keeps it.
	looks map[string]tally

	// Presence changes not told yet (see flush). told holds, for each
	// person whose presence changed since the last flush, what the room's
	// subscribers were last told of them. fresh holds, for each subscriber
	// that joined since, how many of changes its joined list covered:
	// changes lists, while a fresh subscriber waits, each change with what
	// the person's presence was before it, so a flush tells each fresh
	// subscriber exactly what changed after its joined list, at a cost of
	// the changes since, not of everyone in the room.
	told    map[person]seen
	fresh   map[Subscriber]int
	changes []changeOf
	// localChanged is set when a change since the last flush changed this
	// node's own presence, which peers are then told of.
	localChanged bool
	lastFlush    time.Time
	timer        *time.Timer // a flush at the end of the interval, when one waits
}

// seen is what a subscriber was told of a person: present or not, and on
// which node.
type seen struct {
	present bool
	node    string
}

type changeOf struct {
	p   person
	was seen
}

// seenOf is the presence of p now.
func (r *room) seenOf(p person) seen {
	if i, ok := r.find(p); ok {
		return seen{present: true, node: r.present[i].Node}
	}
	return seen{}
}

// find returns where p is, or would be, in present.
func (r *room) find(p person) (int, bool) {
	return sort.Find(len(r.present), func(i int) int {
		if c := strings.Compare(p.name, r.present[i].Name); c != 0 {
			return c
		}
		return strings.Compare(p.user, r.present[i].User)
	})
}

// touch records what subscribers know of p before their presence
// changes; the first change since the last flush decides it.
func (r *room) touch(p person) {
	if r.told == nil {
		r.told = map[person]seen{}
	}
	now := r.seenOf(p)
	if _, ok := r.told[p]; !ok {
		r.told[p] = now
	}
	if len(r.fresh) > 0 {
		r.changes = append(r.changes, changeOf{p, now})
	}
}

// New makes an empty hub.
func New(opts Options) *Hub {
	if len(opts.CursorKey) == 0 {
		opts.CursorKey = make([]byte, 32)
		rand.Read(opts.CursorKey) // never fails (crypto/rand)
	} else {
		opts.CursorKey = bytes.Clone(opts.CursorKey)
	}
	h := &Hub{opts: opts, rooms: map[string]*room{}, changed: make(chan struct{})}
	h.deliveries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "chatr_hub_deliveries_total", Help: "Frames handed to local sessions by room fan-out."})
	if opts.Metrics != nil {
		opts.Metrics.MustRegister(h.deliveries, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatr_hub_rooms", Help: "Rooms with at least one local session or present person."},
			func() float64 { h.mu.RLock(); defer h.mu.RUnlock(); return float64(len(h.rooms)) }))
	}
	return h
}

// Scope is the cursor scope of a room in this cluster, under the hub's
// cursor key: prepared (proto.CursorScope.Prepared) while the room has
// anyone in it. The key is shared: callers must not change it.
func (h *Hub) Scope(room string) proto.CursorScope {
	h.mu.RLock()
	r := h.rooms[room]
	h.mu.RUnlock()
	if r != nil {
		return r.scope
	}
	return h.scope(room)
}

func (h *Hub) scope(room string) proto.CursorScope {
	return proto.CursorScope{Cluster: h.opts.Cluster, Room: room, Key: h.opts.CursorKey}
}

func (h *Hub) room(name string) *room {
	r := h.rooms[name]
	if r == nil {
		r = &room{subs: map[Subscriber]person{}, people: map[person]tally{}, scope: h.scope(name).Prepared()}
		h.rooms[name] = r
	}
	return r
}

// Join adds a local session of the person named name (and, with auth on,
// user) to room and returns who is present, the session's own person
// included. Others in the room learn of a newly present person with a
// presence frame.
func (h *Hub) Join(roomName string, sub Subscriber, name, user string) []proto.Person {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.room(roomName)
	if _, ok := r.subs[sub]; ok {
		return r.list()
	}
	p := person{name: name, user: user}
	r.subs[sub] = p
	r.localChanged = r.localChanged || r.people[p].get(h.opts.NodeID) == 0
	r.touch(p)
	r.add(p, h.opts.NodeID, 1)
	// The joined list covers every change so far; the flush tells the new
	// subscriber those after it.
	if r.fresh == nil {
		r.fresh = map[Subscriber]int{}
	}
	r.fresh[sub] = len(r.changes)
	people := r.list()
	h.changedPresence(roomName, r)
	return people
}

// Leave removes a local session from room. It reports whether the session
// had joined.
func (h *Hub) Leave(roomName string, sub Subscriber) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[roomName]
	if r == nil {
		return false
	}
	p, ok := r.subs[sub]
	if !ok {
		return false
	}
	delete(r.subs, sub)
	delete(r.fresh, sub)
	r.localChanged = r.localChanged || r.people[p].get(h.opts.NodeID) == 1
	r.touch(p)
	r.add(p, h.opts.NodeID, -1)
	h.changedPresence(roomName, r)
	h.gc(roomName, r)
	return true
}

// add changes the session count of p on node by delta and reports
// whether the person came (first session anywhere) or went (last one).
// Call touch first, so the change is told.
func (r *room) add(p person, node string, delta int) bool {
	nodes := r.people[p]
	before := len(nodes) > 0
	had := nodes.get(node) > 0
	nodes = nodes.add(node, delta)
	after := len(nodes) > 0
	if after {
		r.people[p] = nodes
	} else {
		delete(r.people, p)
	}
	if has := nodes.get(node) > 0; has != had { // the person's nodes changed
		i, found := r.find(p)
		switch {
		case !after:
			if found {
				r.present = slices.Delete(r.present, i, i+1)
			}
		case !found:
			r.present = slices.Insert(r.present, i, proto.Person{Name: p.name, Node: nodes.first(), User: p.user})
		default:
			r.present[i].Node = nodes.first()
		}
	}
	if r.looks != nil && before != after {
		r.index(p.name, after)
	}
	return before != after
}

// index adds name to looks (present) or takes it out.
func (r *room) index(name string, present bool) {
	for _, k := range names.Keys(name) {
		delta := -1
		if present {
			delta = 1
		}
		if set := r.looks[k].add(name, delta); len(set) > 0 {
			r.looks[k] = set
		} else {
			delete(r.looks, k)
		}
	}
}

// Lookalike returns the person present in room, on this node or a peer,
// whose name looks like name (names.Same) but is another name: the
// session of name must not join. When name is present itself, nothing
// is: one more session of a person present adds no lookalike to those
// there (two met after a network split, say). Of several, it returns the
// first by name.
//
// Join does not ask: the caller asks first, so a lookalike that joins
// between the two calls, or on a peer before its presence arrives, is
// not refused.
func (h *Hub) Lookalike(roomName, name string) (string, bool) {
	h.mu.Lock() // the first call builds the room's index
	defer h.mu.Unlock()
	r := h.rooms[roomName]
	if r == nil {
		return "", false
	}
	if r.looks == nil {
		r.looks = map[string]tally{}
		for p := range r.people {
			r.index(p.name, true)
		}
	}
	keys := names.Keys(name)
	for _, k := range keys {
		if r.looks[k].get(name) > 0 {
			return "", false // someone here has this very name
		}
	}
	first := ""
	for _, k := range keys {
		if other := r.looks[k].first(); other != "" && (first == "" || other < first) {
			first = other
		}
	}
	return first, first != ""
}

func (r *room) list() []proto.Person {
	return append(make([]proto.Person, 0, len(r.present)), r.present...)
}

// sortPeople orders a presence list by name, then user id.
func sortPeople(ps []proto.Person) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Name != ps[j].Name {
			return ps[i].Name < ps[j].Name
		}
		return ps[i].User < ps[j].User
	})
}

// gc forgets a room with no one in it; a change of local presence that
// waited for its flush is signalled now. The caller holds h.mu.
func (h *Hub) gc(name string, r *room) {
	if len(r.subs) == 0 && len(r.people) == 0 {
		delete(h.rooms, name)
		if r.timer != nil {
			r.timer.Stop()
			r.timer = nil
		}
		h.localChanged(name, r.localChanged)
		r.localChanged = false
	}
}

// changedPresence sends the room's presence changes now, or at the end of
// the interval since its last flush. The caller holds h.mu.
func (h *Hub) changedPresence(roomName string, r *room) {
	if r.timer != nil {
		return // a flush waits already
	}
	wait := time.Until(r.lastFlush.Add(h.presenceInterval(r)))
	if h.opts.PresenceInterval <= 0 || wait <= 0 {
		h.flush(roomName, r)
		return
	}
	// The timer's goroutine ends with the flush; a room forgotten
	// meanwhile (gc) stops it.
	r.timer = time.AfterFunc(wait, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if r.timer != nil && h.rooms[roomName] == r {
			r.timer = nil
			h.flush(roomName, r)
		}
	})
}

// presenceFrames is how many subscribers' presence frames a room may
// cost per --presence-interval: a room with more local subscribers flushes
// less often, in proportion (2 s for 200 at 200 ms), up to
// maxPresenceInterval. Each flush writes to every subscriber, so without
// this a storm of joins into big rooms spends the node on presence
// frames (19,800 joins into 100 rooms wrote 1.1M of them).
const (
	presenceFrames      = 20
	maxPresenceInterval = 10 * time.Second
)

// presenceInterval is the least time between two presence frames of r.
func (h *Hub) presenceInterval(r *room) time.Duration {
	base := h.opts.PresenceInterval
	if n := len(r.subs); n > presenceFrames {
		return min(max(base, base*time.Duration(n)/presenceFrames), maxPresenceInterval)
	}
	return base
}

// flush tells the room's subscribers how presence changed since the last
// flush: who came and who went, netting out whoever came and went. A
// subscriber that joined since is told what changed after its joined
// list. The caller holds h.mu.
func (h *Hub) flush(roomName string, r *room) {
	h.localChanged(roomName, r.localChanged)
	r.localChanged = false
	told, fresh, changes := r.told, r.fresh, r.changes
	r.told, r.fresh, r.changes = nil, nil, nil
	if len(told) == 0 {
		return
	}
	joined, left := []proto.Person{}, []proto.Person{}
	tell := func(p person, was seen) {
		switch now := r.seenOf(p); {
		case now.present && !was.present:
			joined = append(joined, proto.Person{Name: p.name, Node: now.node, User: p.user})
		case was.present && !now.present:
			left = append(left, proto.Person{Name: p.name, Node: was.node, User: p.user})
		}
	}
	frame := func() []*Event {
		sortPeople(joined)
		sortPeople(left)
		if len(joined)+len(left) == 0 {
			return nil
		}
		evs := []*Event{{Room: roomName, Frame: proto.EncodePresence(roomName, joined, left)}}
		joined, left = []proto.Person{}, []proto.Person{}
		return evs
	}
	for p, was := range told {
		tell(p, was)
	}
	all := frame() // encoded once for every subscriber but the fresh ones
	for sub := range r.subs {
		evs := all
		if from, ok := fresh[sub]; ok {
			// A person's first change after the joined list says what
			// the list told of them.
			first := map[person]bool{}
			for _, c := range changes[from:] {
				if !first[c.p] {
					first[c.p] = true
					tell(c.p, c.was)
				}
			}
			evs = frame()
		}
		if evs != nil {
			sub.Deliver(evs)
			h.deliveries.Inc()
			// The interval runs from a frame sent: a change that told no
			// one (the first person in a room) holds back nothing.
			r.lastFlush = time.Now()
		}
	}
}

// Run fans the commit stream out to the local sessions until ctx ends or
// the store closes. commits is the hub's own follower of the stream, made
// with hold (the hub has nowhere else to read what it missed); Run closes
// it. What has been committed since the last read is published at once, so
// under load one pass carries many commits.
func (h *Hub) Run(ctx context.Context, commits *store.Follower) {
	defer commits.Close()
	for {
		batch, err := commits.Next(ctx)
		if err != nil {
			return
		}
		h.Publish(batch)
	}
}

// Publish fans newly stored messages out to the local sessions of their
// rooms, in commit order, each message encoded once for all of them.
func (h *Hub) Publish(batch []store.Committed) {
	// Group the batch by room, keeping the order within each room.
	var order []string
	byRoom := map[string][]*Event{}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for i := range batch {
		c := &batch[i]
		r := h.rooms[c.Msg.Room]
		if r == nil || len(r.subs) == 0 {
			continue
		}
		if _, ok := byRoom[c.Msg.Room]; !ok {
			order = append(order, c.Msg.Room)
		}
		ev := &Event{Room: c.Msg.Room, Msg: &c.Msg, Vector: c.RoomVector}
		switch {
		case c.Msg.Hidden:
			// Never shown; named to the sessions that may hold it from
			// another node.
			ev.Frame = proto.EncodeHidden(c.Msg.Room, c.Msg.ID())
		default:
			ev.Frame = c.Msg.Frame("message", r.scope, c.RoomVector)
			if c.Msg.Replaces != "" {
				ev.Notice = proto.EncodeHidden(c.Msg.Room, c.Msg.Replaces)
			}
		}
		byRoom[c.Msg.Room] = append(byRoom[c.Msg.Room], ev)
	}
	for _, room := range order {
		evs := byRoom[room]
		r := h.rooms[room]
		for sub := range r.subs {
			sub.Deliver(evs)
		}
		h.deliveries.Add(float64(len(r.subs) * len(evs)))
	}
}

// localChanged logs and signals a change of this node's own presence in
// room when it is one. The caller holds h.mu.
func (h *Hub) localChanged(room string, is bool) {
	if !is {
		return
	}
	h.localGen++
	if len(h.localLog) == maxLocalLog {
		h.localLog = slices.Delete(h.localLog, 0, maxLocalLog/2)
	}
	h.localLog = append(h.localLog, genRoom{h.localGen, room})
	close(h.changed)
	h.changed = make(chan struct{})
}

// LocalSnapshot is the presence of this node's own sessions, room ->
// people (name and user; Node is left empty), which peers receive to list
// this node's people, and the generation of local presence it is at, for
// LocalSince.
func (h *Hub) LocalSnapshot() (map[string][]proto.Person, uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := map[string][]proto.Person{}
	for name, r := range h.rooms {
		if people := r.local(h.opts.NodeID); len(people) > 0 {
			out[name] = people
		}
	}
	return out, h.localGen
}

// LocalSince returns the local presence of each room whose local presence
// changed after generation gen (a room no one here is in: an empty list),
// and the generation now. It walks the rooms changed, not every room. ok
// is false when gen is older than the hub remembers: LocalSnapshot then.
func (h *Hub) LocalSince(gen uint64) (rooms map[string][]proto.Person, now uint64, ok bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	i, _ := slices.BinarySearchFunc(h.localLog, gen+1, func(e genRoom, g uint64) int { return cmp.Compare(e.gen, g) })
	if gen < h.localGen && (i == len(h.localLog) || h.localLog[i].gen != gen+1) {
		return nil, h.localGen, false
	}
	rooms = map[string][]proto.Person{}
	for _, e := range h.localLog[i:] {
		if _, done := rooms[e.room]; done {
			continue
		}
		rooms[e.room] = []proto.Person{}
		if r := h.rooms[e.room]; r != nil {
			rooms[e.room] = r.local(h.opts.NodeID)
		}
	}
	return rooms, h.localGen, true
}

// local lists the people with a session on node in the room (Node left
// empty).
func (r *room) local(node string) []proto.Person {
	var out []proto.Person
	for p, nodes := range r.people {
		if nodes.get(node) > 0 {
			out = append(out, proto.Person{Name: p.name, User: p.user})
		}
	}
	return out
}

// LocalChanged returns a channel that is closed at the next change of this
// node's own presence.
func (h *Hub) LocalChanged() <-chan struct{} {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.changed
}

// Empty reports whether no one is in room, on this node or a peer.
func (h *Hub) Empty(roomName string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	r := h.rooms[roomName]
	return r == nil || len(r.subs) == 0 && len(r.people) == 0
}

// Presence lists who is present in room.
func (h *Hub) Presence(roomName string) []proto.Person {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if r := h.rooms[roomName]; r != nil {
		return r.list()
	}
	return []proto.Person{}
}

// ChangeRemote changes what node contributes to presence, room by room:
// the people in joined have a session there now, those in left none (their
// Node is ignored: they are node's). Only the rooms named are touched.
// Local sessions hear of each change.
func (h *Hub) ChangeRemote(node string, joined, left map[string][]proto.Person) {
	if node == h.opts.NodeID {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := map[string]bool{}
	for roomName, people := range left {
		r := h.rooms[roomName]
		if r == nil {
			continue
		}
		for _, who := range people {
			p := person{name: who.Name, user: who.User}
			if n := r.people[p].get(node); n > 0 {
				r.touch(p)
				r.add(p, node, -n)
				changed[roomName] = true
			}
		}
	}
	for roomName, people := range joined {
		r := h.room(roomName)
		for _, who := range people {
			p := person{name: who.Name, user: who.User}
			if r.people[p].get(node) == 0 {
				r.touch(p)
				r.add(p, node, 1)
				changed[roomName] = true
			}
		}
		if !changed[roomName] {
			h.gc(roomName, r) // made for nothing
		}
	}
	for roomName := range changed {
		r := h.rooms[roomName]
		h.changedPresence(roomName, r)
		h.gc(roomName, r)
	}
}

// SetRemote replaces what node contributes to presence with snapshot
// (room -> people; their Node is ignored: they are node's); an empty
// snapshot drops the node's people, as when it died or left. Local
// sessions hear of each change.
func (h *Hub) SetRemote(node string, snapshot map[string][]proto.Person) {
	if node == h.opts.NodeID {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	want := map[string]map[person]bool{}
	for roomName, people := range snapshot {
		set := map[person]bool{}
		for _, p := range people {
			set[person{name: p.Name, user: p.User}] = true
		}
		want[roomName] = set
	}
	for roomName := range snapshot {
		h.room(roomName)
	}
	for roomName, r := range h.rooms {
		changed := false
		for p, nodes := range r.people {
			if n := nodes.get(node); n > 0 && !want[roomName][p] {
				r.touch(p)
				r.add(p, node, -n)
				changed = true
			}
		}
		for p := range want[roomName] {
			if r.people[p].get(node) == 0 {
				r.touch(p)
				r.add(p, node, 1)
				changed = true
			}
		}
		if changed {
			h.changedPresence(roomName, r)
		}
		h.gc(roomName, r)
	}
}
