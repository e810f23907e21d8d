// Package store is chatr's durable log: every message of every origin,
// appended by one writer goroutine to a log of segment files (log.go) in
// batches, with one fdatasync per batch before any of it is acked; an
// index in memory (index.go), rebuilt from the log at Open, answers every
// read without a scan; a small SQLite file keeps the node's id and keys
// (meta.go). Each commit goes to the commit stream (stream.go), which the
// fan-out and the peer links follow.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/proto"
)

// Options tunes a Store. Zero values mean the documented defaults.
type Options struct {
	// MaxBatch is the most messages committed in one batch. Default 2048.
	MaxBatch int
	// QueueLen bounds the writes waiting for the writer. Default 4096.
	QueueLen int
	// StreamLen is how many messages the commit stream holds (see Follow).
	// Default StreamLen.
	StreamLen int
	// Log receives store events. Default: discard.
	Log *slog.Logger
	// Metrics registers the store's metrics when non-nil.
	Metrics prometheus.Registerer
}

// ErrClosed is returned by writes and reads after Close.
var ErrClosed = errors.New("store is closed")

// ErrGap is returned by Insert when a message does not follow the last
// sequence held for its origin.
var ErrGap = errors.New("message does not follow the last sequence of its origin")

// ErrOwnOrigin is returned by Insert for a message of this node's own
// origin that it does not hold: only this node adds to its log.
var ErrOwnOrigin = errors.New("a message of this node's own origin that it never wrote")

// ErrConflict is returned by Insert for a message whose (origin, seq) the
// store holds with other contents: one of the two is forged (or an origin
// reused a number), and the store keeps the one it has.
var ErrConflict = errors.New("another message is held under the same id")

// Store is the durable message log of one node.
type Store struct {
	dir    string
	nodeID string
	keys   map[string][]byte // kept keys by name (initKeys)
	log    *slog.Logger
	opts   Options

	wdb *sql.DB // chatr.db: meta and keys
	seg *segLog // the log; only the writer writes to it
	// logMade is set once chatr.db says the log was made: from then on a
	// missing log is an error, not a new store.
	logMade bool
	ix      *index    // the log in memory; changed by the writer under mu
	buf     []byte    // the writer's scratch for a batch's records
	bufs    sync.Pool // readers' scratch for a record

	reqs chan *writeReq
	done chan struct{}
	once sync.Once

	mu sync.RWMutex
	// visible is the position up to which readers see the log: the
	// writer's records past it (its batch) are not theirs yet.
	visible uint64
	// heads is room -> origin -> newest visible message of that origin in
	// the room, and the count of the room's shown messages of it.
	heads map[string]map[string]head
	// vector is origin -> highest seq durable here (contiguous by
	// construction); lastUS is created of the newest local message.
	vector proto.Vector
	lastUS int64
	// hiddenRooms holds the rooms with a hidden copy of a re-sent message
	// (few), so a resume elsewhere skips the look for them.
	hiddenRooms map[string]bool
	shut        bool // closed: reads fail with ErrClosed

	// gate is held for reading while a write is queued, and for writing by
	// Close, so nothing is sent on the closed queue.
	gate    sync.RWMutex
	closing bool

	// refs answers, for the writer, whether a send may have an earlier copy.
	refs *refFilter
	// failed, once set, fails every write: a write or sync of the log
	// failed, so what is on disk is no longer known (see commit).
	failed error

	// stream is the commit stream: the writer appends each batch of newly
	// stored messages; consumers Follow it.
	stream *stream
	// beforeSync, for tests, runs in the writer just before a batch's sync.
	beforeSync func()

	batchSize  prometheus.Histogram
	commitTime prometheus.Histogram
	queueLen   prometheus.GaugeFunc
	appended   *prometheus.CounterVec
	conflicts  prometheus.Counter
}

type writeReq struct {
	local *proto.Message  // a new local message: seq and created are set by the writer
	peer  []proto.Message // replicated messages, in per-origin order
	done  func(writeRes)  // called by the writer once the batch is committed or failed
}

type writeRes struct {
	msgs []proto.Message // what was stored (for local: the message with seq and created)
	err  error
}

// Open opens or creates the store in dir. A directory whose database is not
// a chatr store, or is corrupt, or whose log is damaged, is an error; it is
// never reset. So is one that breaks the on-disk rules (files.go): a link,
// a directory others may write to.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 2048
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 4096
	}
	if opts.StreamLen <= 0 {
		opts.StreamLen = StreamLen
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	dir = filepath.Clean(dir) // "data/" would follow a link named data
	if err := prepareDir(dir); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	if err := checkFiles(dir); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	fresh, schema, err := inspect(dir, path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := tightenModes(dir, opts.Log); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		if err := createDB(path); err != nil {
			return nil, fmt.Errorf("create store %s: %w", path, err)
		}
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_txlock=immediate"
	wdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	s := &Store{dir: dir, log: opts.Log, opts: opts, wdb: wdb, ix: newIndex(),
		heads: map[string]map[string]head{}, vector: proto.Vector{}, hiddenRooms: map[string]bool{},
		refs: newRefFilter(time.Now()), stream: newStream(opts.StreamLen),
		reqs: make(chan *writeReq, opts.QueueLen), done: make(chan struct{})}
	version, err := s.init(fresh, schema)
	if err == nil && version == sqlMessagesSchema {
		err = s.moveToLog()
	}
	if err == nil {
		s.seg, err = openLog(dir, opts.Log, !s.logMade, s.load)
	}
	if err == nil && !s.logMade {
		// From now on a missing log is an error, not a new store.
		_, err = s.wdb.Exec(`INSERT OR REPLACE INTO meta(key, value) VALUES('log_made', '1')`)
	}
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s.visible = s.seg.position()
	s.metrics(opts.Metrics)
	go s.writer()
	return s, nil
}

// load applies one record of the log, in log order, at Open.
func (s *Store) load(p uint64, r record) error {
	m := &r.msg
	switch r.kind {
	case recMessage:
		if err := s.ix.add(m, p); err != nil {
			return err
		}
		s.advance([]proto.Message{*m}, false)
		s.vector[m.Origin] = m.Seq
		if m.Origin == s.nodeID {
			s.lastUS = max(s.lastUS, m.Created)
		}
		if m.Ref != "" {
			s.refs.add(author(m), m.Room, m.Ref, m.Created)
		}
	default:
		c := change{hide: r.kind == recHide, room: m.Room, origin: m.Origin, seq: m.Seq, replaces: m.Replaces}
		if !s.ix.holds(c.room, c.origin, c.seq) {
			return fmt.Errorf("a change to %s of room %q, which the log does not hold before it", proto.MessageID(c.origin, c.seq), c.room)
		}
		s.applyChanges([]change{c})
	}
	return nil
}

// NodeID is this node's id, made once and kept in the store.
func (s *Store) NodeID() string { return s.nodeID }

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// Vector returns the highest sequence held durably per origin. Sequences
// are stored without gaps, so every lower one is held too.
func (s *Store) Vector() proto.Vector {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.vector.Clone()
}

// Committed is a newly stored message with its room's version vector just
// after it: the cursor of a client that has received it and all before it.
type Committed struct {
	Msg        proto.Message
	RoomVector proto.Vector
}

type head struct {
	seq     uint64
	created int64
	count   int64
}

// DedupWindow is how long a (sender, ref) pair names one message: a send
// repeated with the same ref within it gets the first message back.
const DedupWindow = 10 * time.Minute

// Append stores a new message of this node in room and returns it with its
// sequence and creation time, once it is durable.
func (s *Store) Append(ctx context.Context, room, sender, text string) (proto.Message, error) {
	ch := make(chan writeRes, 1)
	draft := proto.Message{Room: room, Sender: sender, Text: text}
	if err := s.AppendAsync(ctx, draft, func(m proto.Message, err error) {
		ch <- writeRes{msgs: []proto.Message{m}, err: err}
	}); err != nil {
		return proto.Message{}, err
	}
	res := <-ch
	return res.msgs[0], res.err
}

// AppendAsync queues a new message of this node (Room, Sender, Text and
// optionally Ref of draft) and returns at once; done is called by the
// store's writer once the message is durable (or failed), so it must not
// block. Messages queued by one goroutine are numbered in order. A draft
// whose sender and ref match a message of the room stored within
// DedupWindow, on any node, is not stored again: done gets that message.
// An error return means nothing was queued and done is not called.
func (s *Store) AppendAsync(ctx context.Context, draft proto.Message, done func(proto.Message, error)) error {
	m := &proto.Message{Origin: s.nodeID, Room: draft.Room, Sender: draft.Sender, Text: draft.Text, Ref: draft.Ref, User: draft.User}
	return s.enqueue(ctx, &writeReq{local: m, done: func(r writeRes) {
		if r.err != nil {
			done(proto.Message{}, r.err)
			return
		}
		done(r.msgs[0], nil)
	}})
}

// Insert stores replicated messages of other origins, each in its origin's
// order. Messages already held are skipped; a message that would leave a gap
// stops the batch with ErrGap. It returns the messages newly stored.
func (s *Store) Insert(ctx context.Context, msgs []proto.Message) ([]proto.Message, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	return s.submit(ctx, &writeReq{peer: msgs})
}

// InsertAsync queues replicated messages like Insert and returns at once;
// done is called by the writer with the messages newly stored, once durable.
// Batches queued one after another are stored in that order, and the writer
// commits all that is queued together, so a follower that keeps a few
// batches in flight pays one sync for them all. An error return means
// nothing was queued and done is not called.
func (s *Store) InsertAsync(ctx context.Context, msgs []proto.Message, done func([]proto.Message, error)) error {
	return s.enqueue(ctx, &writeReq{peer: msgs, done: func(r writeRes) { done(r.msgs, r.err) }})
}

// Flush returns once every write queued before it is committed and
// answered, or when ctx ends first.
func (s *Store) Flush(ctx context.Context) error {
	ch := make(chan writeRes, 1)
	if err := s.enqueue(ctx, &writeReq{done: func(res writeRes) { ch <- res }}); err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) submit(ctx context.Context, r *writeReq) ([]proto.Message, error) {
	ch := make(chan writeRes, 1)
	r.done = func(res writeRes) { ch <- res }
	if err := s.enqueue(ctx, r); err != nil {
		return nil, err
	}
	// Once queued, the write is committed or failed by the writer; wait for
	// it even if ctx ends, so a caller never reports a loss that did not happen.
	res := <-ch
	return res.msgs, res.err
}

func (s *Store) enqueue(ctx context.Context, r *writeReq) error {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closing {
		return ErrClosed
	}
	select {
	case s.reqs <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer owns all writes: it takes every queued request (up to MaxBatch
// messages), commits them in one batch, then answers them.
func (s *Store) writer() {
	defer close(s.done)
	for r := range s.reqs {
		batch := []*writeReq{r}
		n := r.size()
	drain:
		for n < s.opts.MaxBatch {
			select {
			case r2, ok := <-s.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r2)
				n += r2.size()
			default:
				break drain
			}
		}
		s.commit(batch)
	}
}

func (r *writeReq) size() int {
	if r.local != nil {
		return 1
	}
	return len(r.peer)
}

// plan is what one batch stores, decided before anything is written:
// the new replicated messages (first in the log) and the changes they
// make to messages stored before, then this node's own.
type plan struct {
	peer, local []proto.Message
	changes     []change
	vec         proto.Vector // what is held per origin, the batch included
	lastUS      int64
}

// commit stores a batch: it decides what each request stores (plan),
// writes the records in one write, makes the replicated messages visible
// and hands them to the stream, syncs, then makes this node's own visible,
// answers every request and hands those to the stream.
//
// Followers deliver on receipt: a replicated message is durable on its
// origin and carries the origin's id, so readers and the stream get it
// while the sync runs, and a cross-node delivery waits for one sync, not
// two. (Readers get it first, so a join that reads the store just then
// does not miss what the hub hands out before the join is subscribed.) This
// node's own messages wait for the sync: before it, a crash would give
// their ids to other messages.
//
// A failed write or sync leaves the log in a state the store no longer
// knows (a sync that failed may have lost what it was to write, and the
// file system does not tell what): every later write fails too, and the
// node must be restarted, when the log is read again. Replicated messages
// made visible in the failed batch are still on their origins, which send
// them again then.
func (s *Store) commit(batch []*writeReq) {
	start := time.Now()
	results := make([]writeRes, len(batch))
	var peer, local []Committed
	err := s.failed
	if err == nil {
		s.refs.expire(start)
		var p *plan
		if p, err = s.plan(batch, results); err == nil {
			peer, local, err = s.store(p)
		}
	}
	if err != nil {
		s.log.Error("store commit failed", "err", err)
		for i := range results {
			results[i] = writeRes{err: fmt.Errorf("store commit: %w", err)}
		}
		local = nil
	}
	s.observe(peer, local, time.Since(start))
	for i, r := range batch {
		r.done(results[i])
	}
	s.stream.append(local)
}

// plan decides what each request of the batch stores, filling results.
// An error is one of the store's own (a read of the log): the batch fails.
func (s *Store) plan(batch []*writeReq, results []writeRes) (*plan, error) {
	s.mu.RLock()
	p := &plan{vec: s.vector.Clone(), lastUS: s.lastUS}
	s.mu.RUnlock()
	nLocal, nPeer := 0, 0
	for _, r := range batch {
		if r.local != nil {
			nLocal++
		}
		nPeer += len(r.peer)
	}
	p.local, p.peer = make([]proto.Message, 0, nLocal), make([]proto.Message, 0, nPeer)
	for i, r := range batch {
		if r.local != nil {
			m := *r.local
			since := max(time.Now().UnixMicro(), p.lastUS) - DedupWindow.Microseconds()
			if m.Ref != "" && s.refs.mayHold(author(&m), m.Room, m.Ref, since, math.MaxInt64) {
				dup, _, err := s.findCopy(p, &m, since, math.MaxInt64)
				if err != nil {
					return nil, err
				}
				if dup.Seq != 0 {
					results[i].msgs = []proto.Message{dup}
					continue
				}
			}
			m.Seq = p.vec[s.nodeID] + 1
			m.Created = time.Now().UnixMicro()
			if m.Created <= p.lastUS { // created never goes backwards on one origin
				m.Created = p.lastUS + 1
			}
			p.vec[s.nodeID], p.lastUS = m.Seq, m.Created
			if m.Ref != "" {
				s.refs.add(author(&m), m.Room, m.Ref, m.Created)
			}
			results[i].msgs = []proto.Message{m}
			p.local = append(p.local, m)
			continue
		}
		results[i].msgs = make([]proto.Message, 0, len(r.peer))
		for _, m := range r.peer {
			if err := s.admit(p, &m); err != nil {
				if errors.Is(err, errHeld) {
					continue
				}
				if errors.Is(err, errRead) {
					return nil, err
				}
				results[i].err = err
				break
			}
			// Hidden and Replaces are this node's own judgement, never a
			// peer's: every node reaches the same one.
			m.Hidden, m.Replaces = false, ""
			if m.Ref != "" {
				if err := s.settleCopies(p, &m); err != nil {
					return nil, err
				}
			}
			p.vec[m.Origin] = m.Seq
			if m.Ref != "" {
				s.refs.add(author(&m), m.Room, m.Ref, m.Created)
			}
			results[i].msgs = append(results[i].msgs, m)
			p.peer = append(p.peer, m)
		}
	}
	return p, nil
}

var (
	errHeld = errors.New("held already")
	errRead = errors.New("read the log")
)

// admit checks a replicated message against what is held: errHeld for
// one held already (the same message: catch-up of one origin may come over
// several links), or why it is refused.
func (s *Store) admit(p *plan, m *proto.Message) error {
	held := p.vec[m.Origin]
	switch {
	case m.Seq <= held:
		return s.checkHeld(p, m)
	case m.Origin == s.nodeID:
		// Only this node writes its own log: a peer sending more of it is
		// lying (it could date every later message of ours).
		return fmt.Errorf("%w: %s", ErrOwnOrigin, m.ID())
	case m.Seq != held+1:
		return fmt.Errorf("%w: origin %s holds %d, got %d", ErrGap, m.Origin, held, m.Seq)
	case m.Seq > seqMask:
		return fmt.Errorf("%w: %s: sequence over %d", ErrGap, m.ID(), uint64(seqMask))
	}
	return nil
}

// checkHeld compares a replicated message with the one held under its id:
// errHeld when they match, ErrConflict (counted and logged) when not.
func (s *Store) checkHeld(p *plan, m *proto.Message) error {
	h, err := s.message(p, m.Origin, m.Seq)
	if err != nil {
		return err
	}
	if h.Room == m.Room && h.Sender == m.Sender && h.Text == m.Text && h.Created == m.Created && h.Ref == m.Ref && h.User == m.User {
		return errHeld
	}
	if s.conflicts != nil {
		s.conflicts.Inc()
	}
	s.log.Warn("store: a peer sent another message under an id this node holds; kept the one held",
		"id", m.ID(), "held_room", h.Room, "held_created", proto.FormatTime(h.Created), "sent_room", m.Room, "sent_created", proto.FormatTime(m.Created))
	return fmt.Errorf("%w: %s", ErrConflict, m.ID())
}

// message is the held message (origin, seq), of this batch or of the log.
func (s *Store) message(p *plan, origin string, seq uint64) (proto.Message, error) {
	for i := range p.peer {
		if m := &p.peer[i]; m.Origin == origin && m.Seq == seq {
			return *m, nil
		}
	}
	sl, ok := s.ix.at(origin, seq)
	if !ok {
		return proto.Message{}, fmt.Errorf("%w: %s is not in the index", errRead, proto.MessageID(origin, seq))
	}
	r, err := s.readAt(sl.position())
	if err != nil {
		return proto.Message{}, fmt.Errorf("%w: %v", errRead, err)
	}
	return r.msg, nil
}

// settleCopies decides, for a replicated message m, between it and a shown
// copy of the same send (same sender, room and ref: a client re-sent it on
// another node before the first copy reached that node). The earlier by
// (created, origin, seq) is shown and the later hidden, whichever order a
// node stores them in, so every node lists the same one, and the shown copy
// names the hidden one in Replaces (clients that showed it drop it).
//
// Copies are looked for within DedupWindow of m's own creation time, not of
// now, so a node catching up on old messages decides as the others did.
func (s *Store) settleCopies(p *plan, m *proto.Message) error {
	w := DedupWindow.Microseconds()
	if !s.refs.mayHold(author(m), m.Room, m.Ref, m.Created-w, m.Created+w) {
		return nil // surely no other copy
	}
	shown, pending, err := s.findCopy(p, m, m.Created-w, m.Created+w)
	if err != nil || shown.Seq == 0 || shown.Origin == m.Origin && shown.Seq == m.Seq || shown.Text != m.Text {
		return err // no copy (another text is another message: a client bug, both shown)
	}
	if !earlier(m, &shown) {
		// The shown copy names the hidden one too, so a client that saw m on
		// another node drops it when it resumes here.
		m.Hidden = true
		switch {
		case shown.Replaces != "":
		case pending != nil:
			pending.Replaces = m.ID()
		default:
			p.changes = append(p.changes, change{room: m.Room, origin: shown.Origin, seq: shown.Seq, replaces: m.ID()})
		}
		return nil
	}
	if pending != nil {
		pending.Hidden = true
	} else {
		p.changes = append(p.changes, change{hide: true, room: m.Room, origin: shown.Origin, seq: shown.Seq})
	}
	m.Replaces = shown.ID()
	return nil
}

// findCopy looks, in the batch and then in the log, for the shown message
// of m's room with m's sender, user and ref, created between lo and hi
// (exclusive). pending points into the batch when it is there.
func (s *Store) findCopy(p *plan, m *proto.Message, lo, hi int64) (found proto.Message, pending *proto.Message, err error) {
	same := func(c *proto.Message) bool {
		return c.Room == m.Room && c.Sender == m.Sender && c.User == m.User && c.Ref == m.Ref && !c.Hidden && c.Created > lo && c.Created < hi
	}
	for _, batch := range [][]proto.Message{p.peer, p.local} {
		for i := range batch {
			if same(&batch[i]) {
				return batch[i], &batch[i], nil
			}
		}
	}
	// Only the writer changes the index: it reads it without the lock.
	t := s.ix.rooms[m.Room]
	if t == nil {
		return proto.Message{}, nil, nil
	}
	h := s.ix.refHash(m)
	var keys []uint64
	t.AscendGreaterOrEqual(first(lo+1), func(e entry) bool {
		if e.created >= hi {
			return false
		}
		if e.ref == h && !s.ix.slotOf(e.key).hidden() {
			keys = append(keys, e.key)
		}
		return true
	})
	for _, key := range keys {
		r, err := s.readAt(s.ix.slotOf(key).position())
		if err != nil {
			return proto.Message{}, nil, fmt.Errorf("%w: %v", errRead, err)
		}
		r.msg.Replaces = s.ix.replaces[key]
		if same(&r.msg) {
			return r.msg, nil, nil
		}
	}
	return proto.Message{}, nil, nil
}

// store writes the plan's records, makes the replicated messages visible,
// syncs, and makes this node's own visible. It returns what it made
// visible before and after the sync, each with its room's vector.
func (s *Store) store(p *plan) (peer, local []Committed, err error) {
	b := startBatch(s.buf[:0])
	offsets := make([]int, 0, len(p.peer)+len(p.local))
	for i := range p.peer {
		offsets = append(offsets, len(b))
		b = appendMessage(b, &p.peer[i])
	}
	for i := range p.changes {
		b = appendChange(b, &p.changes[i])
	}
	peerEnd := len(b)
	for i := range p.local {
		offsets = append(offsets, len(b))
		b = appendMessage(b, &p.local[i])
	}
	if cap(b) <= 4<<20 {
		s.buf = b // a burst's buffer is not kept
	}
	if len(b) == batchHeader {
		return nil, nil, nil
	}
	base, err := s.seg.write(b)
	if err != nil {
		s.failed = err
		return nil, nil, err
	}
	s.mu.Lock()
	for i := range p.peer {
		if err := s.ix.add(&p.peer[i], base+uint64(offsets[i])); err != nil {
			s.mu.Unlock()
			s.failed = err
			return nil, nil, err
		}
	}
	s.applyChanges(p.changes)
	for i := range p.local {
		if err := s.ix.add(&p.local[i], base+uint64(offsets[len(p.peer)+i])); err != nil {
			s.mu.Unlock()
			s.failed = err
			return nil, nil, err
		}
	}
	s.visible = base + uint64(peerEnd)
	peer = s.advance(p.peer, true)
	s.mu.Unlock()
	s.stream.append(peer)

	if s.beforeSync != nil {
		s.beforeSync()
	}
	if err := s.seg.sync(); err != nil {
		s.failed = err
		return peer, nil, err
	}

	s.mu.Lock()
	s.visible = base + uint64(len(b))
	local = s.advance(p.local, true)
	s.vector, s.lastUS = p.vec, p.lastUS
	s.mu.Unlock()
	return peer, local, nil
}

// applyChanges applies changes to messages stored before to the index and
// the heads (a copy hidden no longer counts). s.mu is held (or Open runs).
func (s *Store) applyChanges(changes []change) {
	for _, c := range changes {
		s.hiddenRooms[c.room] = true
		if !c.hide {
			s.ix.setReplaces(c.origin, c.seq, c.replaces)
			continue
		}
		if s.ix.hide(c.room, c.origin, c.seq) {
			if h, ok := s.heads[c.room][c.origin]; ok {
				h.count--
				s.heads[c.room][c.origin] = h
			}
		}
	}
}

// advance moves the heads of the rooms of msgs, newly visible, on. With
// vectors it returns each message with its room's vector just after it.
// s.mu is held (or Open runs).
func (s *Store) advance(msgs []proto.Message, vectors bool) []Committed {
	var out []Committed
	if vectors {
		out = make([]Committed, len(msgs))
	}
	for i := range msgs {
		m := &msgs[i]
		hs := s.heads[m.Room]
		if hs == nil {
			hs = map[string]head{}
			s.heads[m.Room] = hs
		}
		h := hs[m.Origin]
		h.seq, h.created = m.Seq, m.Created
		if !m.Hidden { // count is of shown messages
			h.count++
		}
		hs[m.Origin] = h
		if m.Hidden || m.Replaces != "" {
			s.hiddenRooms[m.Room] = true
		}
		if vectors {
			v := make(proto.Vector, len(hs))
			for o, h := range hs {
				v[o] = h.seq
			}
			out[i] = Committed{Msg: *m, RoomVector: v}
		}
	}
	return out
}

// readAt reads the record at position p.
func (s *Store) readAt(p uint64) (record, error) {
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	r, err := s.seg.read(p, bp)
	s.bufs.Put(bp)
	return r, err
}

// earlier orders messages as history lists them: by (created, origin, seq).
func earlier(a, b *proto.Message) bool {
	if a.Created != b.Created {
		return a.Created < b.Created
	}
	if a.Origin != b.Origin {
		return a.Origin < b.Origin
	}
	return a.Seq < b.Seq
}

// author is whose refs a message's ref is unique among: its user and the
// name it was sent under (a user's, or with auth off anyone's who says it).
func author(m *proto.Message) string { return m.User + "\x00" + m.Sender }

func (s *Store) observe(peer, local []Committed, took time.Duration) {
	if s.batchSize == nil {
		return
	}
	s.batchSize.Observe(float64(len(peer) + len(local)))
	s.commitTime.Observe(took.Seconds())
	s.appended.WithLabelValues("local").Add(float64(len(local)))
	s.appended.WithLabelValues("replicated").Add(float64(len(peer)))
}

func (s *Store) metrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	s.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "chatr_store_commit_messages", Help: "Messages per store commit (group commit batch size).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}})
	s.commitTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "chatr_store_commit_seconds", Help: "Time to commit one batch, sync included.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	s.queueLen = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatr_store_queue_length", Help: "Writes waiting for the store writer."},
		func() float64 { return float64(len(s.reqs)) })
	s.appended = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chatr_store_messages_total", Help: "Messages stored, by kind (local or replicated)."}, []string{"kind"})
	refBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatr_store_ref_filter_bytes", Help: "Memory of the filter of recent send refs (grows with the messages of the last 15 minutes)."},
		func() float64 { return float64(s.refs.bytes.Load()) })
	s.conflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "chatr_store_conflicts_total", Help: "Replicated messages refused because another message is held under the same id (origin, seq)."})
	logBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatr_store_log_bytes", Help: "Bytes of records in the log."},
		func() float64 { return float64(s.seg.bytes()) })
	s.stream.waits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "chatr_store_stream_waits_total", Help: "Commits that waited for the hub's fan-out to read the commit stream (it was a whole stream behind)."})
	reg.MustRegister(s.batchSize, s.commitTime, s.queueLen, s.appended, refBytes, s.conflicts, logBytes, s.stream.waits)
}

// Close stops the writer after committing every queued write, and closes
// the files.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.gate.Lock()
		s.closing = true
		close(s.reqs)
		s.gate.Unlock()
		s.stream.release()
		<-s.done
		s.stream.close()
		s.mu.Lock()
		s.shut = true
		s.mu.Unlock()
		err = errors.Join(s.seg.close(), s.wdb.Close())
	})
	return err
}
