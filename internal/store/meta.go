package store

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"chatr/internal/proto"
)

// chatr.db is a small SQLite database of what the node keeps besides the
// log: its id, the schema version and its keys. The messages are in the
// log (log.go); stores of schema 5 and before kept them here, and are
// moved over at their first Open (migrate.go).

// FileName is the database file inside the data directory.
const FileName = "chatr.db"

// schemaVersion is kept in meta; a store with another version is refused.
const schemaVersion = "6"

// magic marks a database as a chatr store.
const magic = "chatr-store"

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
	if v := meta["schema"]; v != schemaVersion && v != sqlMessagesSchema && migrations[v] == nil {
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
}

// sqlMessagesSchema is the last schema that kept the messages in SQLite;
// from it they move to the log (moveToLog).
const sqlMessagesSchema = "5"

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

// init makes a fresh store's meta, or brings an older one to the schema
// its messages leave SQLite at (5), and reads the node id and keys. It
// returns the schema version the store is at then.
func (s *Store) init(fresh bool, version string) (string, error) {
	if fresh {
		id := make([]byte, proto.NodeIDLen/2)
		if _, err := rand.Read(id); err != nil {
			return "", err
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
			return "", fmt.Errorf("create store: %w", err)
		}
		version = schemaVersion
	}
	for migrations[version] != nil {
		if err := s.exec(migrations[version], nil); err != nil {
			return "", fmt.Errorf("migrate store from schema %s: %w", version, err)
		}
		s.log.Info("store migrated", "from", version)
		if err := s.wdb.QueryRow(`SELECT value FROM meta WHERE key = 'schema'`).Scan(&version); err != nil {
			return "", err
		}
	}
	if err := s.wdb.QueryRow(`SELECT value FROM meta WHERE key = 'node_id'`).Scan(&s.nodeID); err != nil {
		return "", fmt.Errorf("read node id: %w", err)
	}
	var made int
	if err := s.wdb.QueryRow(`SELECT count(*) FROM meta WHERE key = 'log_made'`).Scan(&made); err != nil {
		return "", fmt.Errorf("read meta: %w", err)
	}
	s.logMade = made > 0
	return version, s.initKeys()
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

// Key returns a copy of the kept key name (see keyNames), the same after
// every restart. It panics on a name it does not keep: a programming error.
func (s *Store) Key(name string) []byte {
	k, ok := s.keys[name]
	if !ok {
		panic("store: no kept key " + name)
	}
	return bytes.Clone(k)
}
