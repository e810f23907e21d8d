package main

import (
	"fmt"
	"sort"
)

// Engine is one candidate store engine. One goroutine calls it at a time
// (the bench is single-threaded, like chatr's one writer); the SQL engines
// still read through their own reader pool, as chatr does.
type Engine interface {
	// Commit stores batch (messages with seq and created set, each origin's
	// seqs contiguous with what is held) and returns once it is durable:
	// fsync (or fdatasync) before return, as chatr acks.
	Commit(batch []Message) error
	// Latest returns the newest n shown messages of room, oldest first.
	Latest(room string, n int) ([]Message, error)
	// Since returns the last limit messages of room that cursor does not
	// cover, oldest first (chatr's Since with newest=true: a replay).
	Since(room string, cursor map[string]uint64, limit int) ([]Message, error)
	// Range returns up to n messages of origin from seq on, in seq order.
	Range(origin string, from uint64, n int) ([]Message, error)
	// Close releases the engine; a later Open of the same dir sees
	// everything committed.
	Close() error
}

// engineSpec names an engine and how to open it in a directory.
type engineSpec struct {
	name string
	open func(dir string) (Engine, error)
	note string
}

var engines = []engineSpec{
	{"sqlite-today", func(d string) (Engine, error) { return openSQL(d, sqliteToday) }, "modernc v1.62.0, chatr's schema and pragmas"},
	{"sqlite-tuned", func(d string) (Engine, error) { return openSQL(d, sqliteTuned) }, "modernc, no ref index (refs in memory), 64 MiB cache, autocheckpoint 8192 pages"},
	{"sqlite-roompk", func(d string) (Engine, error) { return openSQL(d, sqliteRoomPK) }, "modernc, messages clustered by (room, created, origin, seq), origin index, no ref index, no room_heads (in memory)"},
	{"mattn", func(d string) (Engine, error) { return openSQL(d, mattnToday) }, "mattn/go-sqlite3 v1.14.53 (cgo), chatr's schema and pragmas"},
	{"pebble", openPebble, "pebble v2.1.7, pebble.Sync"},
	{"seglog", func(d string) (Engine, error) { return openSeglog(d, seglogOptions{}) }, "segment log + in-memory index, fdatasync"},
}

func findEngine(name string) (engineSpec, error) {
	for _, e := range engines {
		if e.name == name {
			return e, nil
		}
	}
	names := make([]string, len(engines))
	for i, e := range engines {
		names[i] = e.name
	}
	sort.Strings(names)
	return engineSpec{}, fmt.Errorf("no engine %q (have %v)", name, names)
}

// head is the newest message of one origin in one room and the room's
// count of that origin's shown messages, as chatr's room_heads keeps.
type head struct {
	seq     uint64
	created int64
	count   int64
}

// heads is room -> origin -> head, kept in memory by every engine (chatr's
// store does so too).
type heads map[string]map[string]head

func (h heads) add(m *Message) {
	hs := h[m.Room]
	if hs == nil {
		hs = map[string]head{}
		h[m.Room] = hs
	}
	x := hs[m.Origin]
	x.seq, x.created = m.Seq, m.Created
	if !m.Hidden {
		x.count++
	}
	hs[m.Origin] = x
}

// refKey is whose refs a ref is unique among, plus the room.
type refKey struct{ author, room, ref string }

// refIndex is the exact in-memory replacement of chatr's messages_ref index
// and Bloom filter for engines that keep no ref index on disk: (user+sender,
// room, ref) -> the message. Expiry after the dedup window is not modelled
// (the bench runs for less than the window).
type refIndex map[refKey]msgID

type msgID struct {
	origin string
	seq    uint64
}

func (r refIndex) add(m *Message) {
	if m.Ref != "" {
		r[refKey{m.User + "\x00" + m.Sender, m.Room, m.Ref}] = msgID{m.Origin, m.Seq}
	}
}
