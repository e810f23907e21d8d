package store

import (
	"context"
	"fmt"
	"math"
	"sort"

	"chatr/internal/proto"
)

// Page is a slice of a room's history, oldest first, with the room's
// version vector as seen by the reader: Vector covers every message listed
// and every message of the room before them.
type Page struct {
	Messages  []proto.Message
	Vector    proto.Vector
	Truncated bool // more messages matched than the limit allowed
	// Hidden lists, for Since, the ids of hidden copies of re-sent messages
	// that the cursor covers (so its client may have been shown them
	// elsewhere, before that node knew of the earlier copy), among the
	// newest MaxHiddenNamed of the room.
	Hidden []string
}

// MaxHiddenNamed bounds how many hidden copies of a room a resume names.
const MaxHiddenNamed = 100

// ErrNotFound is returned when a message named by a request does not exist.
var ErrNotFound = fmt.Errorf("message not found")

// A read finds what to read in the index under the read lock (the keys of
// the messages, in order), then reads their records without it: positions
// never change, and the log is only appended to.

// found is a message the index chose for a read: where it is, and what
// the index knows of it that its record may not say (changes made after).
type found struct {
	pos      uint64
	hidden   bool
	replaces string
}

// pick turns keys into what to read. s.mu is held.
func (s *Store) pick(keys []uint64) []found {
	out := make([]found, len(keys))
	for i, k := range keys {
		sl := s.ix.slotOf(k)
		out[i] = found{pos: sl.position(), hidden: sl.hidden(), replaces: s.ix.replaces[k]}
	}
	return out
}

// readFound reads the records of fs, in order.
func (s *Store) readFound(ctx context.Context, fs []found) ([]proto.Message, error) {
	if len(fs) == 0 {
		return nil, nil
	}
	out := make([]proto.Message, len(fs))
	for i, f := range fs {
		if i%256 == 255 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		r, err := s.readAt(f.pos)
		if err != nil {
			return nil, fmt.Errorf("read messages: %w", err)
		}
		r.msg.Hidden, r.msg.Replaces = f.hidden, f.replaces
		out[i] = r.msg
	}
	return out, nil
}

// shows reports whether a reader lists the message of e: visible and not a
// hidden copy. s.mu is held.
func (s *Store) shows(e entry) bool {
	sl := s.ix.slotOf(e.key)
	return !sl.hidden() && sl.position() < s.visible
}

// roomVector is the room's vector now. s.mu is held.
func (s *Store) roomVector(room string) proto.Vector {
	v := make(proto.Vector, len(s.heads[room]))
	for o, h := range s.heads[room] {
		v[o] = h.seq
	}
	return v
}

// Latest returns the newest limit messages of room, oldest first, and the
// room's vector (everything up to now).
func (s *Store) Latest(ctx context.Context, room string, limit int) (Page, error) {
	s.mu.RLock()
	if s.shut {
		s.mu.RUnlock()
		return Page{}, ErrClosed
	}
	p := Page{Vector: s.roomVector(room)}
	var keys []uint64
	if t := s.ix.rooms[room]; t != nil && limit > 0 {
		t.Descend(func(e entry) bool {
			if s.shows(e) {
				keys = append(keys, e.key)
			}
			return len(keys) < limit
		})
	}
	fs := s.pick(keys)
	s.mu.RUnlock()
	reverseFound(fs)
	var err error
	p.Messages, err = s.readFound(ctx, fs)
	return p, err
}

// Before returns the limit messages of room just before the message
// (origin, seq), oldest first. Vector is not set: a page of the past moves
// no cursor.
func (s *Store) Before(ctx context.Context, room, origin string, seq uint64, limit int) (Page, error) {
	s.mu.RLock()
	if s.shut {
		s.mu.RUnlock()
		return Page{}, ErrClosed
	}
	t := s.ix.rooms[room]
	sl, ok := s.ix.at(origin, seq)
	var at entry
	if ok {
		at, ok = s.ix.entryOf(origin, seq, sl.created)
	}
	if !ok || t == nil || !t.Has(at) || sl.position() >= s.visible {
		s.mu.RUnlock()
		return Page{}, ErrNotFound
	}
	var keys []uint64
	if limit > 0 {
		t.DescendLessOrEqual(at, func(e entry) bool {
			if e.key != at.key && s.shows(e) {
				keys = append(keys, e.key)
			}
			return len(keys) < limit
		})
	}
	fs := s.pick(keys)
	s.mu.RUnlock()
	reverseFound(fs)
	msgs, err := s.readFound(ctx, fs)
	return Page{Messages: msgs}, err
}

// Since returns the messages of room that cursor does not cover, oldest
// first, at most limit of them: the first limit when newest is false (to page
// forward), the last limit when newest is true (a replay that shows a gap).
// Vector is cursor raised by what was returned; when nothing was left out it
// also covers the whole room.
func (s *Store) Since(ctx context.Context, room string, cursor proto.Vector, limit int, newest bool) (Page, error) {
	s.mu.RLock()
	if s.shut {
		s.mu.RUnlock()
		return Page{}, ErrClosed
	}
	heads := s.heads[room]
	// Messages of one origin are created in sequence order, so the first
	// one the cursor lacks is no older than the message it holds last.
	lb := int64(math.MaxInt64)
	for o, h := range heads {
		if h.seq <= cursor[o] {
			continue
		}
		from := int64(math.MinInt64)
		if sl, ok := s.ix.at(o, cursor[o]); ok {
			from = sl.created
		}
		lb = min(lb, from)
	}
	p := Page{Vector: cursor.Clone(), Hidden: s.hiddenCovered(room, cursor)}
	var keys []uint64
	t := s.ix.rooms[room]
	lacks := func(e entry) bool {
		o := s.ix.origins[e.key>>seqBits]
		return e.key&seqMask > cursor[o] && s.shows(e)
	}
	if lb != math.MaxInt64 && t != nil {
		take := func(e entry) bool {
			if !newest && e.created < lb {
				return true
			}
			if newest && e.created < lb {
				return false
			}
			if lacks(e) {
				if len(keys) == limit {
					p.Truncated = true
					return false
				}
				keys = append(keys, e.key)
			}
			return true
		}
		if newest {
			t.Descend(take)
		} else {
			t.AscendGreaterOrEqual(first(lb), take)
		}
	}
	fs := s.pick(keys)
	if newest {
		reverseFound(fs)
	}
	if !p.Truncated || newest {
		// Everything after the cursor up to the heads was returned, or
		// (newest) the gap before the returned messages is given up on.
		for o, h := range heads {
			if h.seq > p.Vector[o] {
				p.Vector[o] = h.seq
			}
		}
	} else {
		for _, k := range keys {
			o, seq := s.ix.origins[k>>seqBits], k&seqMask
			if seq > p.Vector[o] {
				p.Vector[o] = seq
			}
		}
	}
	s.mu.RUnlock()
	var err error
	p.Messages, err = s.readFound(ctx, fs)
	return p, err
}

// hiddenCovered lists the ids of the room's newest hidden copies that
// cursor covers. s.mu is held.
func (s *Store) hiddenCovered(room string, cursor proto.Vector) []string {
	if len(cursor) == 0 || !s.hiddenRooms[room] {
		return nil
	}
	hidden := s.ix.hidden[room]
	// The newest MaxHiddenNamed by creation: hidden is in the order they
	// were hidden, which is about that.
	type copyAt struct {
		key     uint64
		created int64
	}
	cs := make([]copyAt, 0, len(hidden))
	for _, k := range hidden {
		if sl := s.ix.slotOf(k); sl.position() < s.visible {
			cs = append(cs, copyAt{k, sl.created})
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].created > cs[j].created })
	var ids []string
	for i, c := range cs {
		if i == MaxHiddenNamed {
			break
		}
		if o, seq := s.ix.origins[c.key>>seqBits], c.key&seqMask; seq <= cursor[o] {
			ids = append(ids, proto.MessageID(o, seq))
		}
	}
	return ids
}

// Range returns up to limit messages of origin from seq on, in order: the
// log that replication streams to peers.
func (s *Store) Range(ctx context.Context, origin string, from uint64, limit int) ([]proto.Message, error) {
	s.mu.RLock()
	if s.shut {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	var fs []found
	n, ok := s.ix.nums[origin]
	for seq := max(from, 1); ok && seq <= uint64(len(s.ix.logs[n])) && len(fs) < limit; seq++ {
		sl := s.ix.logs[n][seq-1]
		if sl.position() >= s.visible {
			break
		}
		key := uint64(n)<<seqBits | seq
		fs = append(fs, found{pos: sl.position(), hidden: sl.hidden(), replaces: s.ix.replaces[key]})
	}
	s.mu.RUnlock()
	msgs, err := s.readFound(ctx, fs)
	if err != nil {
		return nil, fmt.Errorf("read log of %s: %w", origin, err)
	}
	return msgs, nil
}

// RoomInfo summarizes one room.
type RoomInfo struct {
	Room     string
	Messages int64
	Last     int64 // created of the newest message, microseconds
}

// Rooms lists every room that has messages, by name.
func (s *Store) Rooms() []RoomInfo {
	s.mu.RLock()
	out := make([]RoomInfo, 0, len(s.heads))
	for room, hs := range s.heads {
		ri := RoomInfo{Room: room}
		for _, h := range hs {
			ri.Messages += h.count
			ri.Last = max(ri.Last, h.created)
		}
		out = append(out, ri)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Room < out[j].Room })
	return out
}

func reverseFound(fs []found) {
	for i, j := 0, len(fs)-1; i < j; i, j = i+1, j-1 {
		fs[i], fs[j] = fs[j], fs[i]
	}
}
