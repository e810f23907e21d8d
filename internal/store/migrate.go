package store

import (
	"fmt"
	"os"
	"path/filepath"

	"chatr/internal/proto"
)

// moveToLog moves the messages of a store of schema 5 (kept in SQLite)
// to the log, in (origin, seq) order, durably, and only then drops their
// tables and sets schema 6, in one transaction. A crash on the way leaves
// schema 5 and part of a log, which the next Open throws away and makes
// again: the messages are in SQLite until the very end.
func (s *Store) moveToLog() error {
	dir := filepath.Join(s.dir, logDirName)
	if err := prepareDir(dir); err != nil {
		return err
	}
	partial := &segLog{dir: dir}
	nums, err := partial.list()
	if err != nil {
		return err
	}
	for _, num := range nums {
		if err := os.Remove(filepath.Join(dir, segName(num))); err != nil {
			return fmt.Errorf("remove a log segment of an earlier move: %w", err)
		}
	}
	l, err := openLog(s.dir, s.log, true, func(uint64, record) error { return nil })
	if err != nil {
		return err
	}
	defer l.close()
	rows, err := s.wdb.Query(`SELECT origin, seq, room, sender, text, created, ref, hidden, replaces, user FROM messages ORDER BY origin, seq`)
	if err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	defer rows.Close()
	buf := startBatch(nil)
	n := 0
	for rows.Next() {
		var m proto.Message
		if err := rows.Scan(&m.Origin, &m.Seq, &m.Room, &m.Sender, &m.Text, &m.Created, &m.Ref, &m.Hidden, &m.Replaces, &m.User); err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		buf = appendMessage(buf, &m)
		n++
		if len(buf) >= 1<<20 {
			if _, err := l.write(buf); err != nil {
				return err
			}
			buf = startBatch(buf[:0])
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	rows.Close()
	if len(buf) > batchHeader {
		if _, err := l.write(buf); err != nil {
			return err
		}
	}
	if err := l.sync(); err != nil {
		return err
	}
	err = s.exec([]string{`DROP TABLE messages`, `DROP TABLE room_heads`,
		`UPDATE meta SET value = '` + schemaVersion + `' WHERE key = 'schema'`,
		`INSERT INTO meta(key, value) VALUES('log_made', '1')`}, nil)
	if err != nil {
		return fmt.Errorf("drop the moved tables: %w", err)
	}
	s.logMade = true
	if _, err := s.wdb.Exec(`VACUUM`); err != nil {
		s.log.Warn("store: could not shrink chatr.db after the move (it keeps the space)", "err", err)
	}
	s.log.Info("store moved its messages from SQLite to the log", "messages", n, "log", dir)
	return nil
}
