package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble keys (strings are 0-terminated; chatr's names hold no NUL):
//
//	'l' origin 0 seq(8, BE)                        -> the message (binary)
//	'r' room 0 created(8, BE, sign flipped) origin 0 seq(8) -> empty: room order
//	'h' room 0 origin                              -> seq, created, count (uvarints)
//
// The message is stored once, under its log key; a room read looks each
// one up by the (origin, seq) at the end of its room key.
type pebbleEngine struct {
	db    *pebble.DB
	heads heads
	refs  refIndex
	buf   []byte
}

func openPebble(dir string) (Engine, error) {
	opts := &pebble.Options{
		Cache:              pebble.NewCache(64 << 20),
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
	}
	defer opts.Cache.Unref()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	e := &pebbleEngine{db: db, heads: heads{}, refs: refIndex{}}
	if err := e.load(); err != nil {
		db.Close()
		return nil, err
	}
	return e, nil
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)      {}
func (quietLogger) Errorf(string, ...any)     {}
func (quietLogger) Fatalf(f string, a ...any) { panic(fmt.Sprintf("pebble: "+f, a...)) }

// load reads the heads, and the refs for the in-memory ref index (all of
// them here: every bench message is recent).
func (e *pebbleEngine) load() error {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("h"), UpperBound: []byte("i")})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[1:]
		i := bytes.IndexByte(k, 0)
		room, origin := string(k[:i]), string(k[i+1:])
		v := it.Value()
		var h head
		var n int
		h.seq, n = binary.Uvarint(v)
		v = v[n:]
		h.created, n = binary.Varint(v)
		v = v[n:]
		c, _ := binary.Varint(v)
		h.count = c
		if e.heads[room] == nil {
			e.heads[room] = map[string]head{}
		}
		e.heads[room][origin] = h
	}
	if err := it.Close(); err != nil {
		return err
	}
	it, err = e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("l"), UpperBound: []byte("m")})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		var m Message
		if err := decodeBinary(it.Value(), &m); err != nil {
			it.Close()
			return err
		}
		e.refs.add(&m)
	}
	return it.Close()
}

func logKey(b []byte, origin string, seq uint64) []byte {
	b = append(append(append(b, 'l'), origin...), 0)
	return binary.BigEndian.AppendUint64(b, seq)
}

func roomPrefix(b []byte, room string) []byte {
	return append(append(append(b, 'r'), room...), 0)
}

func roomKey(b []byte, m *Message) []byte {
	b = roomPrefix(b, m.Room)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Created)^(1<<63))
	b = append(append(b, m.Origin...), 0)
	return binary.BigEndian.AppendUint64(b, m.Seq)
}

// parseRoomKey returns the created, origin and seq of a room key.
func parseRoomKey(k []byte) (int64, string, uint64) {
	i := bytes.IndexByte(k, 0)
	k = k[i+1:]
	created := int64(binary.BigEndian.Uint64(k) ^ (1 << 63))
	k = k[8:]
	j := bytes.IndexByte(k, 0)
	return created, string(k[:j]), binary.BigEndian.Uint64(k[j+1:])
}

func (e *pebbleEngine) Commit(batch []Message) error {
	b := e.db.NewBatch()
	defer b.Close()
	nh := heads{}
	for i := range batch {
		m := &batch[i]
		e.buf = appendBinary(e.buf[:0], m)
		if err := b.Set(logKey(nil, m.Origin, m.Seq), e.buf, nil); err != nil {
			return err
		}
		if err := b.Set(roomKey(nil, m), nil, nil); err != nil {
			return err
		}
		if nh[m.Room] == nil {
			nh[m.Room] = map[string]head{}
			for o, h := range e.heads[m.Room] {
				nh[m.Room][o] = h
			}
		}
		nh.add(m)
	}
	for room, hs := range nh {
		for o, h := range hs {
			if old, ok := e.heads[room][o]; ok && old == h {
				continue
			}
			k := append(append(append([]byte{'h'}, room...), 0), o...)
			v := binary.AppendUvarint(nil, h.seq)
			v = binary.AppendVarint(v, h.created)
			v = binary.AppendVarint(v, h.count)
			if err := b.Set(k, v, nil); err != nil {
				return err
			}
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	for room, hs := range nh {
		e.heads[room] = hs
	}
	for i := range batch {
		e.refs.add(&batch[i])
	}
	return nil
}

func (e *pebbleEngine) get(origin string, seq uint64) (Message, error) {
	v, c, err := e.db.Get(logKey(e.buf[:0], origin, seq))
	if err != nil {
		return Message{}, err
	}
	defer c.Close()
	var m Message
	err = decodeBinary(v, &m)
	return m, err
}

// roomIter walks room's keys from the newest back, calling f with each
// (created, origin, seq) until f returns false.
func (e *pebbleEngine) roomBackward(room string, lower int64, f func(created int64, origin string, seq uint64) (bool, error)) error {
	p := roomPrefix(nil, room)
	lo := binary.BigEndian.AppendUint64(bytes.Clone(p), uint64(lower)^(1<<63))
	hi := append(bytes.Clone(p[:len(p)-1]), 1) // just after every key of room
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	for it.Last(); it.Valid(); it.Prev() {
		more, err := f(parseRoomKey(it.Key()))
		if err != nil {
			it.Close()
			return err
		}
		if !more {
			break
		}
	}
	return it.Close()
}

func (e *pebbleEngine) Latest(room string, n int) ([]Message, error) {
	out := make([]Message, 0, n)
	err := e.roomBackward(room, math.MinInt64, func(_ int64, origin string, seq uint64) (bool, error) {
		m, err := e.get(origin, seq)
		if err != nil {
			return false, err
		}
		if !m.Hidden {
			out = append(out, m)
		}
		return len(out) < n, nil
	})
	reverse(out)
	return out, err
}

func (e *pebbleEngine) Since(room string, cursor map[string]uint64, limit int) ([]Message, error) {
	lb := int64(math.MaxInt64)
	for o, h := range e.heads[room] {
		if h.seq <= cursor[o] {
			continue
		}
		from := int64(math.MinInt64)
		if cursor[o] > 0 {
			m, err := e.get(o, cursor[o])
			switch {
			case err == nil:
				from = m.Created
			case !errors.Is(err, pebble.ErrNotFound):
				return nil, err
			}
		}
		lb = min(lb, from)
	}
	if lb == math.MaxInt64 {
		return nil, nil
	}
	var out []Message
	err := e.roomBackward(room, lb, func(_ int64, origin string, seq uint64) (bool, error) {
		if seq <= cursor[origin] {
			return true, nil
		}
		m, err := e.get(origin, seq)
		if err != nil {
			return false, err
		}
		if !m.Hidden {
			out = append(out, m)
		}
		return len(out) < limit, nil
	})
	reverse(out)
	return out, err
}

func (e *pebbleEngine) Range(origin string, from uint64, n int) ([]Message, error) {
	it, err := e.db.NewIter(&pebble.IterOptions{
		LowerBound: logKey(nil, origin, from),
		UpperBound: logKey(nil, origin, math.MaxUint64),
	})
	if err != nil {
		return nil, err
	}
	var out []Message
	for it.First(); it.Valid() && len(out) < n; it.Next() {
		var m Message
		if err := decodeBinary(it.Value(), &m); err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, m)
	}
	return out, it.Close()
}

func (e *pebbleEngine) Close() error { return e.db.Close() }
