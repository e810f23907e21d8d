package natsengine

import (
	"container/list"
	"context"
	"sync"
	"time"

	"chatr/internal/proto"
)

// The tails: the newest messages of the rooms this node reads, kept in
// memory from the live feed, so that a join (Latest) or a resume (Since)
// is served once the feed has taken what the stream had stored when the
// read came (lastStored: one request for many readers), instead of a count
// by binary search over consumers (about log2 of the stream's length
// requests each).
//
// A tail is made on a read that finds none, from what that read got from
// the stream, and from then on the feed appends each message of its room.
// It is a suffix of the room's messages: no hole, from its oldest message
// to the feed's position. Making it is safe only when the read got every
// message of the room the feed had taken by then (the read's last
// sequence is at least the room's last one the feed took: seen), since
// the feed appends only what comes after. A feed that starts again
// anywhere but right after its last message drops every tail.
//
// Tails are bounded: at most tailMax messages each (fewer if the stream
// keeps fewer a room), and tailBytes in all, the rooms read least lately
// dropped first. They show no message older than the stream keeps.
const (
	tailMax   = 2 * proto.DefaultHistory
	tailBytes = 32 << 20
	// seenMax bounds the rooms whose last sequence the feed remembers;
	// past it the memory is dropped, and tails are made again only for
	// rooms with a message after that.
	seenMax = 1 << 20
)

type tails struct {
	keep   int           // messages a tail keeps: tailMax, or the stream's limit per room when lower
	capped bool          // keep is the stream's limit: a tail that holds keep messages has all the stream has
	maxAge time.Duration // the stream's limit of age (0: none): older messages are not shown

	mu      sync.Mutex
	running bool   // the feed runs: pos moves
	pos     uint64 // the stream sequence the feed took last
	floor   uint64 // seen is complete above this: a room not in it has no message the feed took after floor
	seen    map[string]uint64
	rooms   map[string]*list.Element // of *tail, in lru
	lru     list.List                // front: read most lately
	bytes   int
	moved   chan struct{} // closed when pos moves
}

type tail struct {
	room string
	msgs []proto.Message // oldest first, contiguous in the room
	// from is the lowest cursor sequence the tail serves: every message of
	// the room after it is in msgs (0: the room has none older than msgs).
	from  uint64
	bytes int
}

// newTails makes the tails of a stream that keeps at most maxPerRoom
// messages a room (0: no limit) and none older than maxAge (0: no limit):
// a tail shows no more than the stream does.
func newTails(maxPerRoom int64, maxAge time.Duration) *tails {
	keep, capped := tailMax, maxPerRoom > 0 && maxPerRoom <= tailMax
	if capped {
		keep = int(maxPerRoom)
	}
	return &tails{keep: keep, capped: capped, maxAge: maxAge, seen: map[string]uint64{}, rooms: map[string]*list.Element{}, moved: make(chan struct{})}
}

// tailCost is about what a tail costs before its messages.
const tailCost = 200

// msgBytes is about what a message held in a tail costs.
func msgBytes(m proto.Message) int {
	return 160 + len(m.Origin) + len(m.Room) + len(m.Sender) + len(m.Text) + len(m.Ref) + len(m.Replaces) + len(m.User)
}

// start tells the tails the feed takes messages from sequence from on.
// Unless that follows its last one, what they hold may have holes: drop it.
func (t *tails) start(from uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if from != t.pos+1 {
		t.pos, t.floor = from-min(from, 1), 0 // nothing taken in this run yet
		clear(t.seen)
		clear(t.rooms)
		t.lru.Init()
		t.bytes = 0
	}
	t.running = true
}

// stop tells the tails the feed stopped: reads go to the stream until it
// starts again.
func (t *tails) stop() {
	t.mu.Lock()
	t.running = false
	t.mu.Unlock()
}

// take is the feed's message at stream sequence seq (m nil: not chatr's),
// taken in stream order.
func (t *tails) take(seq uint64, m *proto.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq <= t.pos {
		return
	}
	t.pos = seq
	close(t.moved)
	t.moved = make(chan struct{})
	if m == nil {
		return
	}
	if len(t.seen) >= seenMax {
		clear(t.seen)
		t.floor = seq - 1
	}
	t.seen[m.Room] = seq
	e := t.rooms[m.Room]
	if e == nil {
		return
	}
	tl := e.Value.(*tail)
	if n := len(tl.msgs); n > 0 && tl.msgs[n-1].Seq >= seq {
		return // the read that made the tail was ahead of the feed
	}
	tl.msgs = append(tl.msgs, *m)
	tl.bytes += msgBytes(*m)
	t.bytes += msgBytes(*m)
	t.trim(tl)
	t.bound()
}

// trim keeps the newest t.keep messages of tl.
func (t *tails) trim(tl *tail) {
	for len(tl.msgs) > t.keep {
		b := msgBytes(tl.msgs[0])
		tl.bytes -= b
		t.bytes -= b
		tl.from = tl.msgs[0].Seq
		tl.msgs[0] = proto.Message{}
		tl.msgs = tl.msgs[1:]
	}
	if t.capped && len(tl.msgs) == t.keep {
		tl.from = 0 // the stream has forgotten the older ones too
	}
}

// bound drops the tails read least lately while all hold over tailBytes.
func (t *tails) bound() {
	for t.bytes > tailBytes && t.lru.Len() > 0 {
		tl := t.lru.Remove(t.lru.Back()).(*tail)
		delete(t.rooms, tl.room)
		t.bytes -= tl.bytes
	}
}

// has reports whether the feed runs and room has a tail.
func (t *tails) has(room string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.running && t.rooms[room] != nil
}

// at returns a channel closed once the feed has taken sequence seq, nil
// when it has already; ok false when the feed does not run.
func (t *tails) at(seq uint64) (wait <-chan struct{}, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		return nil, false
	}
	if t.pos >= seq {
		return nil, true
	}
	return t.moved, true
}

// read returns from room's tail the messages after cursor sequence have,
// or with latest all it holds when that is at least limit or the whole
// room (have ignored). ok is false when the tail cannot tell: there is
// none, the feed has not taken last (the room's newest message, which a
// read must show), or the tail may lack messages asked for.
func (t *tails) read(room string, have, last uint64, limit int, latest bool) (msgs []proto.Message, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.rooms[room]
	if e == nil || !t.running || t.pos < last {
		return nil, false
	}
	tl := e.Value.(*tail)
	if latest && tl.from != 0 && len(tl.msgs) < limit || !latest && have < tl.from {
		return nil, false
	}
	t.lru.MoveToFront(e)
	i := 0
	if t.maxAge > 0 { // the stream has forgotten these, and every older one
		cutoff := time.Now().Add(-t.maxAge).UnixMicro()
		for i < len(tl.msgs) && tl.msgs[i].Created < cutoff {
			i++
		}
	}
	if !latest {
		j := len(tl.msgs)
		for j > i && tl.msgs[j-1].Seq > have {
			j--
		}
		i = j
	}
	return append([]proto.Message(nil), tl.msgs[i:]...), true
}

// make makes room's tail from msgs, the newest messages of the room up to
// stream sequence last, read from the stream (whole: every one it has).
// It does nothing when the feed does not run, when the room has a tail,
// or when the feed took a message of room after last (msgs may lack it:
// the feed appends only what comes after).
func (t *tails) make(room string, msgs []proto.Message, last uint64, whole bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen, ok := t.seen[room]
	if !ok {
		seen = t.floor
	}
	if !t.running || t.rooms[room] != nil || seen > last {
		return
	}
	tl := &tail{room: room, msgs: append([]proto.Message(nil), msgs...), bytes: tailCost + len(room)}
	switch {
	case whole:
		tl.from = 0
	case len(msgs) > 0:
		tl.from = msgs[0].Seq
	default:
		return // nothing read, and not the whole room: nothing to serve
	}
	for _, m := range tl.msgs {
		tl.bytes += msgBytes(m)
	}
	t.bytes += tl.bytes
	t.rooms[room] = t.lru.PushFront(tl)
	t.trim(tl)
	t.bound()
}

// lastStored asks the stream for its last sequence on behalf of many
// readers at once: a reader waits for the first ask that begins after it
// came (so the answer covers every message acked before it), and a storm
// of joins makes one request per round trip, not one each.
type lastStored struct {
	ask func(context.Context) (uint64, error)

	mu     sync.Mutex
	next   *round // the ask the readers that came since the last began wait for
	asking bool   // run runs
}

type round struct {
	done chan struct{}
	seq  uint64
	err  error
}

func (l *lastStored) last(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l.mu.Lock()
	if l.next == nil {
		l.next = &round{done: make(chan struct{})}
	}
	r := l.next
	if !l.asking {
		l.asking = true
		go l.run()
	}
	l.mu.Unlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run asks for each round in turn while readers wait.
func (l *lastStored) run() {
	for {
		l.mu.Lock()
		r := l.next
		l.next = nil
		if r == nil {
			l.asking = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), tryTimeout)
		r.seq, r.err = l.ask(ctx)
		cancel()
		close(r.done)
	}
}
