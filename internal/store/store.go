// Package store is chatr's durable log: every message of every origin, in
// SQLite (WAL, synchronous=FULL), appended by one writer goroutine that
// commits in batches so one fsync pays for many messages.
package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"chatr/internal/proto"
)

// FileName is the database file inside the data directory.
const FileName = "chatr.db"

// schemaVersion is kept in meta; a store with another version is refused.
const schemaVersion = "5"

// magic marks a database as a chatr store.
const magic = "chatr-store"

// Options tunes a Store. Zero values mean the documented defaults.
type Options struct {
	// MaxBatch is the most messages committed in one transaction. Default 2048.
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

// ErrClosed is returned by writes after Close.
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

	wdb *sql.DB // one connection, used only by the writer goroutine
	rdb *sql.DB // readers

	// Statements of the writer, prepared once on wdb.
	insertStmt, hideStmt, replacesStmt, headStmt, findRefStmt, heldStmt *sql.Stmt

	reqs chan *writeReq
	done chan struct{}
	once sync.Once

	mu     sync.RWMutex
	vector proto.Vector // origin -> highest seq held (contiguous by construction)
	lastUS int64        // created of the newest local message

	// gate is held for reading while a write is queued, and for writing by
	// Close, so nothing is sent on the closed queue.
	gate    sync.RWMutex
	closing bool

	// heads is room -> origin -> newest message of that origin in the room.
	// Only the writer changes it; readers copy under mu.
	heads map[string]map[string]head

	// refs answers, for the writer, whether a send may have an earlier copy.
	refs *refFilter

	// hiddenRooms holds the rooms with a hidden copy of a re-sent message
	// (few), so a resume elsewhere skips the look for them (a third of the
	// cost of a resume that replays nothing). Under mu.
	hiddenRooms map[string]bool

	// stream is the commit stream: the writer appends each batch of newly
	// stored messages; consumers Follow it.
	stream *stream

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
// a chatr store, or is corrupt, is an error; it is never reset. So is one
// that breaks the on-disk rules (files.go): a link, a directory others may
// write to.
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
	s := &Store{dir: dir, log: opts.Log, opts: opts, wdb: wdb,
		reqs: make(chan *writeReq, opts.QueueLen), done: make(chan struct{}), stream: newStream(opts.StreamLen)}
	if err := s.init(fresh, schema); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := s.prepare(); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(8)
	s.rdb = rdb
	s.metrics(opts.Metrics)
	go s.writer()
	return s, nil
}

// inspect checks, without changing a byte, that path is a chatr store (or
// that there is none yet, in an empty directory, or only an empty database
// left by a first start that crashed) and returns its schema version.
func inspect(dir, path string) (fresh bool, schema string, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(dir)
		if len(entries) == 0 {
			return true, "", nil
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return false, "", fmt.Errorf("data directory %s holds files (%s) but no %s: not a chatr data directory; use an empty or new directory", dir, strings.Join(names, ", "), FileName)
	}
	empty, err := checkHeader(path)
	if err != nil || empty {
		return empty, "", err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return false, "", err
	}
	defer db.Close()
	var objects int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master`).Scan(&objects); err != nil {
		return false, "", fmt.Errorf("not a chatr store, or corrupt: %w", err)
	}
	if objects == 0 {
		return true, "", nil // an empty database holds nothing to lose
	}
	var check string
	if err := db.QueryRow(`PRAGMA quick_check`).Scan(&check); err != nil {
		return false, "", fmt.Errorf("not a chatr store, or corrupt: %w", err)
	}
	if check != "ok" {
		return false, "", fmt.Errorf("store is corrupt: %s", check)
	}
	meta := map[string]string{}
	rows, err := db.Query(`SELECT key, value FROM meta`)
	if err != nil {
		return false, "", fmt.Errorf("not a chatr store (no meta table): %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return false, "", fmt.Errorf("not a chatr store: %w", err)
		}
		meta[k] = v
	}
	if meta["magic"] != magic {
		return false, "", errors.New("not a chatr store (no chatr marker in meta)")
	}
	if meta["schema"] != schemaVersion && migrations[meta["schema"]] == nil {
		return false, "", fmt.Errorf("store schema %q is not the supported %q (made by a newer chatr?)", meta["schema"], schemaVersion)
	}
	if !proto.ValidNodeID(meta["node_id"]) {
		return false, "", fmt.Errorf("store node id %q is malformed", meta["node_id"])
	}
	for _, name := range keyNames {
		if k, ok := meta[keyRow(name)]; ok && !validKey(k) {
			return false, "", fmt.Errorf("store %s key is malformed (%d characters; chatr makes %d lowercase hex digits)", name, len(k), 2*keyLen)
		}
	}
	return false, meta["schema"], nil
}

// checkHeader reads the SQLite file header, so that a file that is not a
// database, or a truncated one, is refused before SQLite opens it (which
// would create -wal and -shm files beside it). An empty file is a store
// whose first start crashed before anything was written.
func checkHeader(path string) (empty bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	if st.Size() == 0 {
		return true, nil
	}
	h := make([]byte, 100)
	if _, err := io.ReadFull(f, h); err != nil || string(h[:16]) != "SQLite format 3\x00" {
		return false, errors.New("not a chatr store: the file is not an SQLite database")
	}
	pageSize := int64(binary.BigEndian.Uint16(h[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	if pageSize < 512 || st.Size()%pageSize != 0 {
		return false, fmt.Errorf("store is corrupt: size %d is not a whole number of %d-byte pages", st.Size(), pageSize)
	}
	// The page count in the header is valid when the change counter matches
	// the version-valid-for number.
	pages := int64(binary.BigEndian.Uint32(h[28:32]))
	valid := binary.BigEndian.Uint32(h[24:28]) == binary.BigEndian.Uint32(h[92:96])
	if _, err := os.Stat(path + "-wal"); valid && pages*pageSize > st.Size() && errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("store is truncated: the header says %d pages, the file holds %d", pages, st.Size()/pageSize)
	}
	return false, nil
}

// schema creates a new store's tables.
var schema = []string{
	`CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`,
	`CREATE TABLE messages(
		origin TEXT NOT NULL, seq INTEGER NOT NULL, room TEXT NOT NULL,
		sender TEXT NOT NULL, text TEXT NOT NULL, created INTEGER NOT NULL,
		ref TEXT NOT NULL DEFAULT '', hidden INTEGER NOT NULL DEFAULT 0, replaces TEXT NOT NULL DEFAULT '',
		user TEXT NOT NULL DEFAULT '',
		PRIMARY KEY(origin, seq)) WITHOUT ROWID`,
	`CREATE INDEX messages_room ON messages(room, created, origin, seq)`,
	`CREATE INDEX messages_ref ON messages(sender, ref, room) WHERE ref != ''`,
	hiddenIndex,
	// room_heads keeps, per room and origin, the newest message and the
	// count, so a room's version vector and the room list need no scan.
	`CREATE TABLE room_heads(
		room TEXT NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL,
		created INTEGER NOT NULL, count INTEGER NOT NULL,
		PRIMARY KEY(room, origin)) WITHOUT ROWID`,
}

// migrations bring an older schema to the next version, by version.
var migrations = map[string][]string{
	"1": { // 1 -> 2: keep each send's ref for dedup of re-sent messages
		`ALTER TABLE messages ADD COLUMN ref TEXT NOT NULL DEFAULT ''`,
		`CREATE INDEX messages_ref ON messages(sender, ref, room) WHERE ref != ''`,
		`UPDATE meta SET value = '2' WHERE key = 'schema'`,
	},
	"2": { // 2 -> 3: the later of two copies of one send is hidden
		`ALTER TABLE messages ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE messages ADD COLUMN replaces TEXT NOT NULL DEFAULT ''`,
		`UPDATE meta SET value = '3' WHERE key = 'schema'`,
	},
	"3": { // 3 -> 4: a resume names the hidden copies its cursor covers
		hiddenIndex,
		`UPDATE meta SET value = '4' WHERE key = 'schema'`,
	},
	"4": { // 4 -> 5: with auth on, a message names its sender's user id
		`ALTER TABLE messages ADD COLUMN user TEXT NOT NULL DEFAULT ''`,
		`UPDATE meta SET value = '5' WHERE key = 'schema'`,
	},
}

// hiddenIndex finds a room's hidden copies (few: only re-sends that met
// another copy) without a scan of the room.
const hiddenIndex = `CREATE INDEX messages_hidden ON messages(room, created) WHERE hidden = 1`

func (s *Store) exec(stmts []string, extra func(tx *sql.Tx) error) error {
	tx, err := s.wdb.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			return err
		}
	}
	if extra != nil {
		if err := extra(tx); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *Store) init(fresh bool, version string) error {
	if fresh {
		id := make([]byte, proto.NodeIDLen/2)
		if _, err := rand.Read(id); err != nil {
			return err
		}
		err := s.exec(schema, func(tx *sql.Tx) error {
			for k, v := range map[string]string{"magic": magic, "schema": schemaVersion, "node_id": hex.EncodeToString(id)} {
				if _, err := tx.Exec(`INSERT INTO meta(key, value) VALUES(?, ?)`, k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("create store: %w", err)
		}
	}
	for version != "" && version != schemaVersion {
		if err := s.exec(migrations[version], nil); err != nil {
			return fmt.Errorf("migrate store from schema %s: %w", version, err)
		}
		s.log.Info("store migrated", "from", version)
		if err := s.wdb.QueryRow(`SELECT value FROM meta WHERE key = 'schema'`).Scan(&version); err != nil {
			return err
		}
	}
	if err := s.wdb.QueryRow(`SELECT value FROM meta WHERE key = 'node_id'`).Scan(&s.nodeID); err != nil {
		return fmt.Errorf("read node id: %w", err)
	}
	if err := s.initKeys(); err != nil {
		return err
	}
	return s.load()
}

// Keys the node keeps, each 32 random bytes made at its first Open (stores
// of older releases get them then, with no schema change: they ignore rows
// they do not read), in meta rows key_<name>:
//   - cursor: the MAC key of a single node's cursors, so they survive a
//     restart;
//   - identity: the seed of its Ed25519 identity key (peer links);
//   - cluster_secret: the secret of a cluster this node started without
//     one given (it prints the line that adds a node).
var keyNames = []string{"cursor", "identity", "cluster_secret"}

// keyLen is the size of a kept key: 32 bytes, the size of an HMAC-SHA256
// key RFC 2104 advises, of an Ed25519 seed, and of a generated secret.
const keyLen = 32

func keyRow(name string) string { return "key_" + name }

func validKey(k string) bool {
	b, err := hex.DecodeString(k)
	return err == nil && len(b) == keyLen && hex.EncodeToString(b) == k
}

// initKeys reads the node's kept keys, making those it lacks.
func (s *Store) initKeys() error {
	s.keys = map[string][]byte{}
	for _, name := range keyNames {
		k := make([]byte, keyLen)
		if _, err := rand.Read(k); err != nil {
			return err
		}
		if _, err := s.wdb.Exec(`INSERT OR IGNORE INTO meta(key, value) VALUES(?, ?)`, keyRow(name), hex.EncodeToString(k)); err != nil {
			return fmt.Errorf("make %s key: %w", name, err)
		}
		var v string
		if err := s.wdb.QueryRow(`SELECT value FROM meta WHERE key = ?`, keyRow(name)).Scan(&v); err != nil {
			return fmt.Errorf("read %s key: %w", name, err)
		}
		if !validKey(v) {
			return fmt.Errorf("store %s key is malformed", name)
		}
		s.keys[name], _ = hex.DecodeString(v)
	}
	return nil
}

// load reads the room heads and the version vector into memory.
func (s *Store) load() error {
	s.heads = map[string]map[string]head{}
	hrows, err := s.wdb.Query(`SELECT room, origin, seq, created, count FROM room_heads`)
	if err != nil {
		return fmt.Errorf("read room heads: %w", err)
	}
	for hrows.Next() {
		var room, origin string
		var h head
		if err := hrows.Scan(&room, &origin, &h.seq, &h.created, &h.count); err != nil {
			hrows.Close()
			return fmt.Errorf("read room heads: %w", err)
		}
		if s.heads[room] == nil {
			s.heads[room] = map[string]head{}
		}
		s.heads[room][origin] = h
	}
	hrows.Close()
	if err := s.loadRefs(time.Now()); err != nil {
		return fmt.Errorf("read recent refs: %w", err)
	}
	s.hiddenRooms = map[string]bool{}
	rows, err := s.wdb.Query(`SELECT DISTINCT room FROM messages INDEXED BY messages_hidden WHERE hidden = 1`)
	if err != nil {
		return fmt.Errorf("read rooms with hidden copies: %w", err)
	}
	for rows.Next() {
		var room string
		if err := rows.Scan(&room); err != nil {
			rows.Close()
			return fmt.Errorf("read rooms with hidden copies: %w", err)
		}
		s.hiddenRooms[room] = true
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("read rooms with hidden copies: %w", err)
	}
	// Sequences are held without gaps, so each origin's highest sequence
	// is its highest head over the rooms.
	s.vector = proto.Vector{}
	for _, hs := range s.heads {
		for origin, h := range hs {
			s.vector[origin] = max(s.vector[origin], h.seq)
			if origin == s.nodeID {
				s.lastUS = max(s.lastUS, h.created)
			}
		}
	}
	return nil
}

// loadRefs fills the ref filter with the recent messages that have a ref,
// room by room along the room index, skipping rooms quiet since before the
// filter's horizon.
func (s *Store) loadRefs(now time.Time) error {
	s.refs = newRefFilter(now)
	for room, hs := range s.heads {
		newest := int64(math.MinInt64)
		for _, h := range hs {
			newest = max(newest, h.created)
		}
		if newest < s.refs.horizon {
			continue
		}
		rows, err := s.wdb.Query(`SELECT sender, ref, created, user FROM messages WHERE room = ? AND created >= ? AND ref != ''`, room, s.refs.horizon)
		if err != nil {
			return err
		}
		for rows.Next() {
			var m proto.Message
			if err := rows.Scan(&m.Sender, &m.Ref, &m.Created, &m.User); err != nil {
				rows.Close()
				return err
			}
			s.refs.add(author(&m), room, m.Ref, m.Created)
		}
		if err := rows.Close(); err != nil {
			return err
		}
	}
	return nil
}

// NodeID is this node's id, made once and kept in the store.
func (s *Store) NodeID() string { return s.nodeID }

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// Key returns a copy of the kept key name (see keyNames), the same after
// every restart. It panics on a name it does not keep: a programming error.
func (s *Store) Key(name string) []byte {
	k, ok := s.keys[name]
	if !ok {
		panic("store: no kept key " + name)
	}
	return bytes.Clone(k)
}

// Vector returns the highest sequence held per origin. Sequences are stored
// without gaps, so every lower one is held too.
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
// batches in flight pays one fsync for them all. An error return means
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
// messages), commits them in one transaction, then answers them.
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

func (s *Store) commit(batch []*writeReq) {
	start := time.Now()
	s.mu.RLock()
	vec := s.vector.Clone()
	lastUS := s.lastUS
	s.mu.RUnlock()

	s.refs.expire(start)
	results := make([]writeRes, len(batch))
	var stored []proto.Message
	var committed []Committed
	tx, err := s.wdb.Begin()
	if err == nil {
		var stmt, refStmt *sql.Stmt
		stmt = tx.Stmt(s.insertStmt)
		for i, r := range batch {
			if err != nil {
				break
			}
			if r.local != nil {
				m := *r.local
				since := max(time.Now().UnixMicro(), lastUS) - DedupWindow.Microseconds()
				if m.Ref != "" && s.refs.mayHold(author(&m), m.Room, m.Ref, since, math.MaxInt64) {
					if refStmt == nil {
						refStmt = tx.Stmt(s.findRefStmt)
					}
					var dup proto.Message
					if dup, err = findRef(refStmt, m, since, math.MaxInt64); err != nil {
						break
					}
					if dup.Seq != 0 {
						results[i].msgs = []proto.Message{dup}
						continue
					}
				}
				m.Seq = vec[s.nodeID] + 1
				m.Created = time.Now().UnixMicro()
				if m.Created <= lastUS { // created never goes backwards on one origin
					m.Created = lastUS + 1
				}
				if _, err = stmt.Exec(m.Origin, m.Seq, m.Room, m.Sender, m.Text, m.Created, m.Ref, false, "", m.User); err != nil {
					break
				}
				vec[s.nodeID], lastUS = m.Seq, m.Created
				if m.Ref != "" {
					s.refs.add(author(&m), m.Room, m.Ref, m.Created)
				}
				results[i].msgs = []proto.Message{m}
				stored = append(stored, m)
				continue
			}
			for _, m := range r.peer {
				if m.Seq <= vec[m.Origin] {
					// Held already (catch-up of one origin may come over
					// several links): it must be the same message.
					if results[i].err = s.checkHeld(tx, m); results[i].err != nil {
						break
					}
					continue
				}
				if m.Origin == s.nodeID {
					// Only this node writes its own log: a peer sending more of
					// it is lying (it could date every later message of ours).
					results[i].err = fmt.Errorf("%w: %s", ErrOwnOrigin, m.ID())
					break
				}
				if m.Seq != vec[m.Origin]+1 {
					results[i].err = fmt.Errorf("%w: origin %s holds %d, got %d", ErrGap, m.Origin, vec[m.Origin], m.Seq)
					break
				}
				// Hidden and Replaces are this node's own judgement, never a
				// peer's: every node reaches the same one.
				m.Hidden, m.Replaces = false, ""
				if m.Ref != "" {
					if refStmt == nil {
						refStmt = tx.Stmt(s.findRefStmt)
					}
					if err = s.settleCopies(tx, refStmt, &m); err != nil {
						break
					}
				}
				if _, err = stmt.Exec(m.Origin, m.Seq, m.Room, m.Sender, m.Text, m.Created, m.Ref, m.Hidden, m.Replaces, m.User); err != nil {
					break
				}
				vec[m.Origin] = m.Seq
				if m.Ref != "" {
					s.refs.add(author(&m), m.Room, m.Ref, m.Created)
				}
				results[i].msgs = append(results[i].msgs, m)
				stored = append(stored, m)
			}
		}
		if stmt != nil {
			stmt.Close()
		}
		var heads map[string]map[string]head
		if err == nil {
			heads, committed, err = s.writeHeads(tx, stored)
		}
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		if err == nil {
			s.mu.Lock()
			s.vector, s.lastUS = vec, lastUS
			for room, hs := range heads {
				s.heads[room] = hs
			}
			for _, m := range stored {
				if m.Hidden || m.Replaces != "" { // stored hidden, or hid one stored before
					s.hiddenRooms[m.Room] = true
				}
			}
			s.mu.Unlock()
		}
	}
	if err != nil {
		s.log.Error("store commit failed", "messages", len(stored), "err", err)
		for i := range results {
			results[i] = writeRes{err: fmt.Errorf("store commit: %w", err)}
		}
		stored, committed = nil, nil
	}
	s.observe(stored, time.Since(start))
	for i, r := range batch {
		r.done(results[i])
	}
	s.stream.append(committed)
}

// prepare makes the writer's statements once: preparing them on every
// commit cost as much as running them.
func (s *Store) prepare() error {
	var err error
	if s.insertStmt, err = s.wdb.Prepare(`INSERT INTO messages(origin, seq, room, sender, text, created, ref, hidden, replaces, user)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`); err != nil {
		return err
	}
	if s.hideStmt, err = s.wdb.Prepare(`UPDATE messages SET hidden = 1 WHERE origin = ? AND seq = ?`); err != nil {
		return err
	}
	if s.replacesStmt, err = s.wdb.Prepare(`UPDATE messages SET replaces = ? WHERE origin = ? AND seq = ?`); err != nil {
		return err
	}
	if s.headStmt, err = s.wdb.Prepare(`INSERT INTO room_heads(room, origin, seq, created, count) VALUES(?, ?, ?, ?, ?)
		ON CONFLICT(room, origin) DO UPDATE SET seq = excluded.seq, created = excluded.created, count = excluded.count
		WHERE excluded.seq >= room_heads.seq`); err != nil {
		return err
	}
	if s.heldStmt, err = s.wdb.Prepare(`SELECT room, sender, text, created, ref, user FROM messages WHERE origin = ? AND seq = ?`); err != nil {
		return err
	}
	s.findRefStmt, err = s.wdb.Prepare(findRefQuery)
	return err
}

// checkHeld compares a replicated message with the one held under its id,
// inside tx: ErrConflict when they differ (counted and logged here).
func (s *Store) checkHeld(tx *sql.Tx, m proto.Message) error {
	var h proto.Message
	err := tx.Stmt(s.heldStmt).QueryRow(m.Origin, m.Seq).Scan(&h.Room, &h.Sender, &h.Text, &h.Created, &h.Ref, &h.User)
	if err != nil {
		return fmt.Errorf("read held message %s: %w", m.ID(), err)
	}
	if h.Room == m.Room && h.Sender == m.Sender && h.Text == m.Text && h.Created == m.Created && h.Ref == m.Ref && h.User == m.User {
		return nil
	}
	if s.conflicts != nil {
		s.conflicts.Inc()
	}
	s.log.Warn("store: a peer sent another message under an id this node holds; kept the one held",
		"id", m.ID(), "held_room", h.Room, "held_created", proto.FormatTime(h.Created), "sent_room", m.Room, "sent_created", proto.FormatTime(m.Created))
	return fmt.Errorf("%w: %s", ErrConflict, m.ID())
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
func (s *Store) settleCopies(tx *sql.Tx, refStmt *sql.Stmt, m *proto.Message) error {
	w := DedupWindow.Microseconds()
	if !s.refs.mayHold(author(m), m.Room, m.Ref, m.Created-w, m.Created+w) {
		return nil // surely no other copy
	}
	shown, err := findRef(refStmt, *m, m.Created-w, m.Created+w)
	if err != nil || shown.Seq == 0 || shown.Origin == m.Origin && shown.Seq == m.Seq || shown.Text != m.Text {
		return err // no copy (another text is another message: a client bug, both shown)
	}
	if !earlier(m, &shown) {
		// The shown copy names the hidden one too, so a client that saw m on
		// another node drops it when it resumes here.
		m.Hidden = true
		if shown.Replaces == "" {
			_, err := tx.Stmt(s.replacesStmt).Exec(m.ID(), shown.Origin, shown.Seq)
			return err
		}
		return nil
	}
	if _, err := tx.Stmt(s.hideStmt).Exec(shown.Origin, shown.Seq); err != nil {
		return err
	}
	m.Replaces = shown.ID()
	return nil
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

// findRefQuery looks for a message of the same room, sender and ref made
// after a time. Left to itself, SQLite may walk the room's index from that
// time instead (a scan of every recent message per send); "ref != ”" makes
// the partial index usable and INDEXED BY insists on it.
const findRefQuery = `SELECT ` + msgCols + ` FROM messages INDEXED BY messages_ref
	WHERE sender = ? AND ref = ? AND room = ? AND ref != '' AND user = ? AND hidden = 0 AND created > ? AND created < ? LIMIT 1`

// findRef looks inside tx (so earlier messages of the same batch count) for
// the shown message of the same room, sender and ref created between lo and
// hi (exclusive). stmt is findRefQuery, prepared once.
func findRef(stmt *sql.Stmt, m proto.Message, lo, hi int64) (proto.Message, error) {
	var d proto.Message
	err := stmt.QueryRow(m.Sender, m.Ref, m.Room, m.User, lo, hi).Scan(&d.Origin, &d.Seq, &d.Room, &d.Sender, &d.Text, &d.Created, &d.Ref, &d.Hidden, &d.Replaces, &d.User)
	if err == sql.ErrNoRows {
		return proto.Message{}, nil
	}
	return d, err
}

// writeHeads updates room_heads for the stored messages inside tx. It
// returns the new heads of the rooms they touched, and each message with its
// room's vector just after it.
func (s *Store) writeHeads(tx *sql.Tx, stored []proto.Message) (map[string]map[string]head, []Committed, error) {
	heads := map[string]map[string]head{}
	out := make([]Committed, len(stored))
	s.mu.RLock()
	for i, m := range stored {
		hs := heads[m.Room]
		if hs == nil {
			hs = make(map[string]head, len(s.heads[m.Room])+1)
			for o, h := range s.heads[m.Room] {
				hs[o] = h
			}
			heads[m.Room] = hs
		}
		h := hs[m.Origin]
		h.seq, h.created = m.Seq, m.Created
		// count is of shown messages: a hidden copy adds none, and a copy
		// that hid an earlier-stored one takes that one's place.
		if !m.Hidden {
			h.count++
		}
		hs[m.Origin] = h
		if o, _, perr := proto.ParseMessageID(m.Replaces); perr == nil && !m.Hidden {
			if hh, ok := hs[o]; ok {
				hh.count--
				hs[o] = hh
			}
		}
		v := make(proto.Vector, len(hs))
		for o, h := range hs {
			v[o] = h.seq
		}
		out[i] = Committed{Msg: m, RoomVector: v}
	}
	s.mu.RUnlock()
	headStmt := tx.Stmt(s.headStmt)
	for room, hs := range heads {
		for origin, h := range hs {
			if old, ok := s.heads[room][origin]; ok && old == h {
				continue // unchanged (only the writer changes s.heads)
			}
			if _, err := headStmt.Exec(room, origin, h.seq, h.created, h.count); err != nil {
				return nil, nil, fmt.Errorf("update room heads: %w", err)
			}
		}
	}
	return heads, out, nil
}

func (s *Store) observe(stored []proto.Message, took time.Duration) {
	if s.batchSize == nil {
		return
	}
	s.batchSize.Observe(float64(len(stored)))
	s.commitTime.Observe(took.Seconds())
	for _, m := range stored {
		if m.Origin == s.nodeID {
			s.appended.WithLabelValues("local").Inc()
		} else {
			s.appended.WithLabelValues("replicated").Inc()
		}
	}
}

func (s *Store) metrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	s.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "chatr_store_commit_messages", Help: "Messages per store commit (group commit batch size).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}})
	s.commitTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "chatr_store_commit_seconds", Help: "Time to commit one batch, fsync included.",
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
	s.stream.waits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "chatr_store_stream_waits_total", Help: "Commits that waited for the hub's fan-out to read the commit stream (it was a whole stream behind)."})
	reg.MustRegister(s.batchSize, s.commitTime, s.queueLen, s.appended, refBytes, s.conflicts, s.stream.waits)
}

// Close stops the writer after committing every queued write, and closes
// the database.
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
		err = errors.Join(s.insertStmt.Close(), s.hideStmt.Close(), s.heldStmt.Close(), s.replacesStmt.Close(), s.headStmt.Close(), s.findRefStmt.Close(), s.rdb.Close(), s.wdb.Close())
	})
	return err
}
