package main

import (
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	_ "github.com/mattn/go-sqlite3" // registers "sqlite3" (cgo)
	_ "modernc.org/sqlite"          // registers "sqlite"
)

// sqlVariant is one way of keeping chatr's log in SQLite.
type sqlVariant struct {
	driver string
	// writerDSN and readerDSN are the data source names for path.
	writerDSN, readerDSN func(path string) string
	schema               []string
	// roomHeads: upsert room_heads per commit and read room vectors from it
	// (chatr today); otherwise the heads live only in memory and Open
	// rebuilds them with one scan.
	roomHeads bool
	// refIndexOnDisk: the messages_ref index exists (chatr today);
	// otherwise refs are kept in an exact in-memory map.
	refIndexOnDisk bool
}

const msgCols = `origin, seq, room, sender, text, created, ref, hidden, replaces, user`

// Today's schema, indexes and pragmas, from internal/store/store.go
// (schema version 5).
var todaySchema = []string{
	`CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`,
	`CREATE TABLE messages(
		origin TEXT NOT NULL, seq INTEGER NOT NULL, room TEXT NOT NULL,
		sender TEXT NOT NULL, text TEXT NOT NULL, created INTEGER NOT NULL,
		ref TEXT NOT NULL DEFAULT '', hidden INTEGER NOT NULL DEFAULT 0, replaces TEXT NOT NULL DEFAULT '',
		user TEXT NOT NULL DEFAULT '',
		PRIMARY KEY(origin, seq)) WITHOUT ROWID`,
	`CREATE INDEX messages_room ON messages(room, created, origin, seq)`,
	`CREATE INDEX messages_ref ON messages(sender, ref, room) WHERE ref != ''`,
	`CREATE INDEX messages_hidden ON messages(room, created) WHERE hidden = 1`,
	`CREATE TABLE room_heads(
		room TEXT NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL,
		created INTEGER NOT NULL, count INTEGER NOT NULL,
		PRIMARY KEY(room, origin)) WITHOUT ROWID`,
}

func moderncDSN(extra ...string) func(string) string {
	return func(path string) string {
		q := []string{"_pragma=busy_timeout(10000)"}
		for _, p := range extra {
			q = append(q, "_pragma="+p)
		}
		return "file:" + path + "?" + strings.Join(q, "&")
	}
}

var (
	sqliteToday = sqlVariant{
		driver: "sqlite",
		writerDSN: func(p string) string {
			return "file:" + p + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_txlock=immediate"
		},
		readerDSN:      moderncDSN("query_only(1)"),
		schema:         todaySchema,
		roomHeads:      true,
		refIndexOnDisk: true,
	}
	// sqliteTuned drops the ref index (the writer keeps refs in memory, as
	// its Bloom filter already does), gives each connection a 64 MiB page
	// cache and lets the WAL grow to 8192 pages (32 MiB) between
	// checkpoints, so a hot page is copied into the database less often.
	sqliteTuned = sqlVariant{
		driver: "sqlite",
		writerDSN: func(p string) string {
			return "file:" + p + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(8192)&_txlock=immediate"
		},
		readerDSN: moderncDSN("query_only(1)", "cache_size(-65536)"),
		schema: []string{
			todaySchema[0], todaySchema[1], todaySchema[2], todaySchema[4], todaySchema[5],
		},
		roomHeads: true,
	}
	// sqliteRoomPK clusters messages by room order, so a room read walks
	// one B-tree, with the log order as a covering secondary index; no ref
	// index and no room_heads table (heads in memory, rebuilt at Open).
	sqliteRoomPK = sqlVariant{
		driver:    "sqlite",
		writerDSN: sqliteTuned.writerDSN,
		readerDSN: sqliteTuned.readerDSN,
		schema: []string{
			todaySchema[0],
			`CREATE TABLE messages(
				origin TEXT NOT NULL, seq INTEGER NOT NULL, room TEXT NOT NULL,
				sender TEXT NOT NULL, text TEXT NOT NULL, created INTEGER NOT NULL,
				ref TEXT NOT NULL DEFAULT '', hidden INTEGER NOT NULL DEFAULT 0, replaces TEXT NOT NULL DEFAULT '',
				user TEXT NOT NULL DEFAULT '',
				PRIMARY KEY(room, created, origin, seq)) WITHOUT ROWID`,
			`CREATE UNIQUE INDEX messages_origin ON messages(origin, seq)`,
			todaySchema[4],
		},
	}
	mattnToday = sqlVariant{
		driver: "sqlite3",
		writerDSN: func(p string) string {
			return "file:" + p + "?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate"
		},
		readerDSN: func(p string) string {
			return "file:" + p + "?_busy_timeout=10000&_query_only=1"
		},
		schema:         todaySchema,
		roomHeads:      true,
		refIndexOnDisk: true,
	}
)

type sqlEngine struct {
	v        sqlVariant
	wdb, rdb *sql.DB
	insert   *sql.Stmt
	upsert   *sql.Stmt // room_heads, when v.roomHeads
	heads    heads
	refs     refIndex
}

func openSQL(dir string, v sqlVariant) (Engine, error) {
	path := filepath.Join(dir, "chatr.db")
	wdb, err := sql.Open(v.driver, v.writerDSN(path))
	if err != nil {
		return nil, err
	}
	wdb.SetMaxOpenConns(1)
	e := &sqlEngine{v: v, wdb: wdb, heads: heads{}, refs: refIndex{}}
	if err := e.init(); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if e.rdb, err = sql.Open(v.driver, v.readerDSN(path)); err != nil {
		e.Close()
		return nil, err
	}
	e.rdb.SetMaxOpenConns(8)
	return e, nil
}

func (e *sqlEngine) init() error {
	var n int
	if err := e.wdb.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'messages'`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		tx, err := e.wdb.Begin()
		if err != nil {
			return err
		}
		for _, q := range e.v.schema {
			if _, err := tx.Exec(q); err != nil {
				tx.Rollback()
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	var err error
	if e.insert, err = e.wdb.Prepare(`INSERT INTO messages(origin, seq, room, sender, text, created, ref, hidden, replaces, user)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`); err != nil {
		return err
	}
	if e.v.roomHeads {
		if e.upsert, err = e.wdb.Prepare(`INSERT INTO room_heads(room, origin, seq, created, count) VALUES(?, ?, ?, ?, ?)
			ON CONFLICT(room, origin) DO UPDATE SET seq = excluded.seq, created = excluded.created, count = excluded.count
			WHERE excluded.seq >= room_heads.seq`); err != nil {
			return err
		}
		return e.loadHeads(`SELECT room, origin, seq, created, count FROM room_heads`)
	}
	if err := e.loadHeads(`SELECT room, origin, max(seq), max(created), sum(hidden = 0) FROM messages GROUP BY room, origin`); err != nil {
		return err
	}
	if !e.v.refIndexOnDisk {
		// What chatr's loadRefs does for its Bloom filter: recent refs. The
		// bench reloads all of them (its messages are all recent).
		rows, err := e.wdb.Query(`SELECT origin, seq, room, sender, user, ref FROM messages WHERE ref != ''`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m Message
			if err := rows.Scan(&m.Origin, &m.Seq, &m.Room, &m.Sender, &m.User, &m.Ref); err != nil {
				return err
			}
			e.refs.add(&m)
		}
		return rows.Err()
	}
	return nil
}

func (e *sqlEngine) loadHeads(q string) error {
	rows, err := e.wdb.Query(q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var room, origin string
		var h head
		if err := rows.Scan(&room, &origin, &h.seq, &h.created, &h.count); err != nil {
			return err
		}
		if e.heads[room] == nil {
			e.heads[room] = map[string]head{}
		}
		e.heads[room][origin] = h
	}
	return rows.Err()
}

func (e *sqlEngine) Commit(batch []Message) error {
	tx, err := e.wdb.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt := tx.Stmt(e.insert)
	type rk struct{ room, origin string }
	touched := map[rk]bool{}
	for i := range batch {
		m := &batch[i]
		if _, err := stmt.Exec(m.Origin, m.Seq, m.Room, m.Sender, m.Text, m.Created, m.Ref, m.Hidden, m.Replaces, m.User); err != nil {
			return err
		}
		touched[rk{m.Room, m.Origin}] = true
	}
	stmt.Close()
	// The heads change only after the commit, as chatr's do; compute the
	// new ones first.
	nh := heads{}
	for i := range batch {
		m := &batch[i]
		if nh[m.Room] == nil {
			nh[m.Room] = map[string]head{}
			for o, h := range e.heads[m.Room] {
				nh[m.Room][o] = h
			}
		}
		nh.add(m)
	}
	if e.v.roomHeads {
		up := tx.Stmt(e.upsert)
		for k := range touched {
			h := nh[k.room][k.origin]
			if _, err := up.Exec(k.room, k.origin, h.seq, h.created, h.count); err != nil {
				return err
			}
		}
		up.Close()
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for room, hs := range nh {
		e.heads[room] = hs
	}
	if !e.v.refIndexOnDisk {
		for i := range batch {
			e.refs.add(&batch[i])
		}
	}
	return nil
}

func scanMessages(rows *sql.Rows) ([]Message, error) {
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		if err := rows.Scan(&m.Origin, &m.Seq, &m.Room, &m.Sender, &m.Text, &m.Created, &m.Ref, &m.Hidden, &m.Replaces, &m.User); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// roomVector reads the room's heads inside tx (chatr's roomVector), or
// copies them from memory when the variant keeps none on disk.
func (e *sqlEngine) roomVector(tx *sql.Tx, room string) (map[string]uint64, error) {
	v := map[string]uint64{}
	if !e.v.roomHeads {
		for o, h := range e.heads[room] {
			v[o] = h.seq
		}
		return v, nil
	}
	rows, err := tx.Query(`SELECT origin, seq FROM room_heads WHERE room = ?`, room)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var o string
		var seq uint64
		if err := rows.Scan(&o, &seq); err != nil {
			return nil, err
		}
		v[o] = seq
	}
	return v, rows.Err()
}

func (e *sqlEngine) readTx(f func(tx *sql.Tx) error) error {
	tx, err := e.rdb.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return f(tx)
}

func (e *sqlEngine) Latest(room string, n int) ([]Message, error) {
	var out []Message
	err := e.readTx(func(tx *sql.Tx) error {
		if _, err := e.roomVector(tx, room); err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT `+msgCols+` FROM messages WHERE room = ? AND hidden = 0
			ORDER BY created DESC, origin DESC, seq DESC LIMIT ?`, room, n)
		if err != nil {
			return err
		}
		out, err = scanMessages(rows)
		reverse(out)
		return err
	})
	return out, err
}

// Since follows chatr's Store.Since with newest=true (no hidden copies in
// the bench, so no look for them).
func (e *sqlEngine) Since(room string, cursor map[string]uint64, limit int) ([]Message, error) {
	var out []Message
	err := e.readTx(func(tx *sql.Tx) error {
		hs, err := e.roomVector(tx, room)
		if err != nil {
			return err
		}
		lb := int64(math.MaxInt64)
		for o, seq := range hs {
			if seq <= cursor[o] {
				continue
			}
			from := int64(math.MinInt64)
			if cursor[o] > 0 {
				var c int64
				err := tx.QueryRow(`SELECT created FROM messages WHERE origin = ? AND seq = ?`, o, cursor[o]).Scan(&c)
				switch {
				case err == nil:
					from = c
				case err != sql.ErrNoRows:
					return err
				}
			}
			lb = min(lb, from)
		}
		if lb == math.MaxInt64 {
			return nil
		}
		rows, err := tx.Query(`SELECT `+msgCols+` FROM messages WHERE room = ? AND created >= ?
			ORDER BY created DESC, origin DESC, seq DESC`, room, lb)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m Message
			if err := rows.Scan(&m.Origin, &m.Seq, &m.Room, &m.Sender, &m.Text, &m.Created, &m.Ref, &m.Hidden, &m.Replaces, &m.User); err != nil {
				return err
			}
			if m.Seq <= cursor[m.Origin] || m.Hidden {
				continue
			}
			if len(out) == limit {
				break
			}
			out = append(out, m)
		}
		reverse(out)
		return rows.Err()
	})
	return out, err
}

func (e *sqlEngine) Range(origin string, from uint64, n int) ([]Message, error) {
	rows, err := e.rdb.Query(`SELECT `+msgCols+` FROM messages WHERE origin = ? AND seq >= ? ORDER BY seq LIMIT ?`, origin, from, n)
	if err != nil {
		return nil, err
	}
	return scanMessages(rows)
}

func (e *sqlEngine) Close() error {
	var errs []error
	for _, s := range []*sql.Stmt{e.insert, e.upsert} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if e.rdb != nil {
		errs = append(errs, e.rdb.Close())
	}
	errs = append(errs, e.wdb.Close())
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
