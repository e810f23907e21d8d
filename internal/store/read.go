package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"sort"

	"chatr/internal/proto"
)

const msgCols = `origin, seq, room, sender, text, created, ref, hidden, replaces, user`

func scanMessages(rows *sql.Rows) ([]proto.Message, error) {
	defer rows.Close()
	var out []proto.Message
	for rows.Next() {
		var m proto.Message
		if err := rows.Scan(&m.Origin, &m.Seq, &m.Room, &m.Sender, &m.Text, &m.Created, &m.Ref, &m.Hidden, &m.Replaces, &m.User); err != nil {
			return nil, fmt.Errorf("read messages: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read messages: %w", err)
	}
	return out, nil
}

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

// roomVector reads the room's heads inside tx, so it matches what tx sees.
func roomVector(ctx context.Context, tx *sql.Tx, room string) (proto.Vector, error) {
	rows, err := tx.QueryContext(ctx, `SELECT origin, seq FROM room_heads WHERE room = ?`, room)
	if err != nil {
		return nil, fmt.Errorf("read room heads: %w", err)
	}
	defer rows.Close()
	v := proto.Vector{}
	for rows.Next() {
		var o string
		var seq uint64
		if err := rows.Scan(&o, &seq); err != nil {
			return nil, fmt.Errorf("read room heads: %w", err)
		}
		v[o] = seq
	}
	return v, rows.Err()
}

func (s *Store) readTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("read store: %w", err)
	}
	defer tx.Rollback()
	return f(tx)
}

// Latest returns the newest limit messages of room, oldest first, and the
// room's vector (everything up to now).
func (s *Store) Latest(ctx context.Context, room string, limit int) (Page, error) {
	var p Page
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		if p.Vector, err = roomVector(ctx, tx, room); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+msgCols+` FROM messages WHERE room = ? AND hidden = 0
			ORDER BY created DESC, origin DESC, seq DESC LIMIT ?`, room, limit)
		if err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		p.Messages, err = scanMessages(rows)
		reverse(p.Messages)
		return err
	})
	return p, err
}

// Before returns the limit messages of room just before the message
// (origin, seq), oldest first. Vector is not set: a page of the past moves
// no cursor.
func (s *Store) Before(ctx context.Context, room, origin string, seq uint64, limit int) (Page, error) {
	var p Page
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var created int64
		err := tx.QueryRowContext(ctx, `SELECT created FROM messages WHERE origin = ? AND seq = ? AND room = ?`,
			origin, seq, room).Scan(&created)
		if err == sql.ErrNoRows {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+msgCols+` FROM messages WHERE room = ? AND hidden = 0
			AND (created, origin, seq) < (?, ?, ?)
			ORDER BY created DESC, origin DESC, seq DESC LIMIT ?`, room, created, origin, seq, limit)
		if err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		p.Messages, err = scanMessages(rows)
		reverse(p.Messages)
		return err
	})
	return p, err
}

// ErrNotFound is returned when a message named by a request does not exist.
var ErrNotFound = fmt.Errorf("message not found")

// Since returns the messages of room that cursor does not cover, oldest
// first, at most limit of them: the first limit when newest is false (to page
// forward), the last limit when newest is true (a replay that shows a gap).
// Vector is cursor raised by what was returned; when nothing was left out it
// also covers the whole room.
func (s *Store) Since(ctx context.Context, room string, cursor proto.Vector, limit int, newest bool) (Page, error) {
	var p Page
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		heads, err := roomVector(ctx, tx, room)
		if err != nil {
			return err
		}
		// Messages of one origin are created in sequence order, so the first
		// one the cursor lacks is no older than the message it holds last.
		lb := int64(math.MaxInt64)
		for o, seq := range heads {
			if seq <= cursor[o] {
				continue
			}
			from := int64(math.MinInt64)
			if cursor[o] > 0 {
				var c int64
				err := tx.QueryRowContext(ctx, `SELECT created FROM messages WHERE origin = ? AND seq = ?`, o, cursor[o]).Scan(&c)
				switch {
				case err == nil:
					from = c
				case err != sql.ErrNoRows:
					return fmt.Errorf("read message: %w", err)
				}
			}
			lb = min(lb, from)
		}
		p.Vector = cursor.Clone()
		if p.Hidden, err = s.hiddenCovered(ctx, tx, room, cursor); err != nil {
			return err
		}
		if lb == math.MaxInt64 {
			return nil // the cursor covers the room
		}
		order := "ASC"
		if newest {
			order = "DESC"
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+msgCols+` FROM messages WHERE room = ? AND created >= ?
			ORDER BY created `+order+`, origin `+order+`, seq `+order, room, lb)
		if err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var m proto.Message
			if err := rows.Scan(&m.Origin, &m.Seq, &m.Room, &m.Sender, &m.Text, &m.Created, &m.Ref, &m.Hidden, &m.Replaces, &m.User); err != nil {
				return fmt.Errorf("read messages: %w", err)
			}
			if m.Seq <= cursor[m.Origin] || m.Hidden {
				continue
			}
			if len(p.Messages) == limit {
				p.Truncated = true
				break
			}
			p.Messages = append(p.Messages, m)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		if newest {
			reverse(p.Messages)
		}
		if !p.Truncated || newest {
			// Everything after the cursor up to the heads was returned, or
			// (newest) the gap before the returned messages is given up on.
			p.Vector.Merge(heads)
			return nil
		}
		for _, m := range p.Messages {
			if m.Seq > p.Vector[m.Origin] {
				p.Vector[m.Origin] = m.Seq
			}
		}
		return nil
	})
	return p, err
}

// hiddenCovered lists the ids of the room's newest hidden copies that
// cursor covers.
func (s *Store) hiddenCovered(ctx context.Context, tx *sql.Tx, room string, cursor proto.Vector) ([]string, error) {
	s.mu.RLock()
	some := s.hiddenRooms[room]
	s.mu.RUnlock()
	if len(cursor) == 0 || !some {
		return nil, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT origin, seq FROM messages INDEXED BY messages_hidden
		WHERE room = ? AND hidden = 1 ORDER BY created DESC LIMIT ?`, room, MaxHiddenNamed)
	if err != nil {
		return nil, fmt.Errorf("read hidden copies: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var o string
		var seq uint64
		if err := rows.Scan(&o, &seq); err != nil {
			return nil, fmt.Errorf("read hidden copies: %w", err)
		}
		if seq <= cursor[o] {
			ids = append(ids, proto.MessageID(o, seq))
		}
	}
	return ids, rows.Err()
}

// Range returns up to limit messages of origin from seq on, in order: the
// log that replication streams to peers.
func (s *Store) Range(ctx context.Context, origin string, from uint64, limit int) ([]proto.Message, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+msgCols+` FROM messages WHERE origin = ? AND seq >= ?
		ORDER BY seq LIMIT ?`, origin, from, limit)
	if err != nil {
		return nil, fmt.Errorf("read log of %s: %w", origin, err)
	}
	return scanMessages(rows)
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

func reverse(ms []proto.Message) {
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
}
