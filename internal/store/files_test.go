package store

import (
	"bytes"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// storeFiles are the files SQLite keeps in a data directory.
var storeFiles = []string{FileName, FileName + "-wal", FileName + "-shm"}

// mode is the permission bits of path, not following a link.
func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// makeStore leaves a closed store with one message in dir, its -wal and
// -shm files included (a store killed while running keeps them).
func makeStore(t *testing.T, dir string) {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "lobby", "hello")
	// Close checkpoints and removes -wal and -shm; a store that was
	// killed leaves them, so leave empty ones in their place.
	s.Close()
	for _, name := range storeFiles[1:] {
		if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
			writeFile(t, filepath.Join(dir, name), nil)
		}
	}
}

// TestDataFileModes: a new data directory is 0700 and the store's files
// 0600, so other users of the machine can neither read the history (and the
// store's cursor key) nor change it.
func TestDataFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "data")
	s := openStore(t, dir)
	// -wal and -shm exist while the store is open and has written.
	mustAppend(t, s, "lobby", "hello")
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("new data directory has mode %04o, want 0700", got)
	}
	if got := mode(t, filepath.Dir(dir)); got != 0o700 {
		t.Errorf("new parent of the data directory has mode %04o, want 0700", got)
	}
	for _, name := range storeFiles {
		if got := mode(t, filepath.Join(dir, name)); got != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", name, got)
		}
	}
}

// TestOpenTightensOldFileModes: a store of an older release, whose files
// are 0644, is opened and its files made 0600, with one log line that says
// so; the next Open has nothing to say.
func TestOpenTightensOldFileModes(t *testing.T) {
	dir := t.TempDir()
	makeStore(t, dir)
	for _, name := range storeFiles {
		if err := os.Chmod(filepath.Join(dir, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for round := range 2 {
		logs.Reset()
		s, err := Open(dir, Options{Log: log})
		if err != nil {
			t.Fatalf("Open of a store with 0644 files: %v", err)
		}
		p, err := s.Latest(t.Context(), "lobby", 10)
		s.Close()
		if err != nil || len(p.Messages) != 1 {
			t.Fatalf("history = %v, %v; want the one message", ids(p.Messages), err)
		}
		for _, name := range storeFiles {
			path := filepath.Join(dir, name)
			if _, err := os.Lstat(path); os.IsNotExist(err) {
				continue // Close removed it
			}
			if got := mode(t, path); got != 0o600 {
				t.Errorf("round %d: %s has mode %04o after Open, want 0600", round, name, got)
			}
		}
		lines := strings.Count(logs.String(), "open to other users")
		switch {
		case round == 0 && lines != 1:
			t.Errorf("first Open logged %d lines about the modes, want 1:\n%s", lines, logs.String())
		case round == 1 && lines != 0:
			t.Errorf("second Open logged about the modes again:\n%s", logs.String())
		}
	}
}

// TestDataDirWritableByOthersRefused: a data directory that others can
// write to is refused, new or with a store in it, with the command that
// fixes it, and nothing in it is changed. Anyone who can write there can
// swap chatr.db, or plant a link for SQLite to follow.
func TestDataDirWritableByOthersRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  os.FileMode
		store bool
	}{
		{"empty, group-writable", 0o770, false},
		{"empty, world-writable", 0o707, false},
		{"empty, 0777", 0o777, false},
		{"empty, sticky 1777 like /tmp", 0o777 | os.ModeSticky, false},
		{"with a store, group-writable", 0o775, true},
		{"with a store, world-writable", 0o757, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.store {
				makeStore(t, dir)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			before := snapshotDir(t, dir)
			s, err := Open(dir, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open accepted a data directory of mode %v", tc.mode)
			}
			t.Log(err)
			for _, m := range []string{dir, "writable", "chmod go-w " + dir} {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if after := snapshotDir(t, dir); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused Open changed the directory:\n%s", diffDirs(before, after))
			}
			// Once fixed as the message says, it opens.
			if err := os.Chmod(dir, tc.mode&^0o022); err != nil {
				t.Fatal(err)
			}
			openStore(t, dir)
		})
	}
}

// TestLinksRefused: a data directory, chatr.db, -wal or -shm that is a
// symbolic link, or a store file that is not a regular file, is refused
// with a message that says so, and nothing is written through the link: a
// link planted there would have the node write its log into someone else's
// file.
func TestLinksRefused(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir, elsewhere string) (data string)
		mention []string // each must appear in the error; {elsewhere} is the link's target
	}{
		{"chatr.db links to a store elsewhere", func(t *testing.T, dir, elsewhere string) string {
			makeStore(t, elsewhere)
			symlink(t, filepath.Join(elsewhere, FileName), filepath.Join(dir, FileName))
			return dir
		}, []string{FileName, "symbolic link"}},
		{"chatr.db links to nothing yet", func(t *testing.T, dir, elsewhere string) string {
			symlink(t, filepath.Join(elsewhere, "victim"), filepath.Join(dir, FileName))
			return dir
		}, []string{FileName, "symbolic link"}},
		{"chatr.db-wal links to a file elsewhere", func(t *testing.T, dir, elsewhere string) string {
			makeStore(t, dir)
			os.Remove(filepath.Join(dir, FileName+"-wal"))
			writeFile(t, filepath.Join(elsewhere, "victim"), []byte("precious"))
			symlink(t, filepath.Join(elsewhere, "victim"), filepath.Join(dir, FileName+"-wal"))
			return dir
		}, []string{FileName + "-wal", "symbolic link"}},
		{"chatr.db-shm links to a file elsewhere", func(t *testing.T, dir, elsewhere string) string {
			makeStore(t, dir)
			os.Remove(filepath.Join(dir, FileName+"-shm"))
			writeFile(t, filepath.Join(elsewhere, "victim"), []byte("precious"))
			symlink(t, filepath.Join(elsewhere, "victim"), filepath.Join(dir, FileName+"-shm"))
			return dir
		}, []string{FileName + "-shm", "symbolic link"}},
		{"the data directory is a link", func(t *testing.T, dir, elsewhere string) string {
			makeStore(t, elsewhere)
			link := filepath.Join(dir, "data")
			symlink(t, elsewhere, link)
			return link
		}, []string{"symbolic link", "{elsewhere}"}},
		{"the data directory is a link, with a trailing slash", func(t *testing.T, dir, elsewhere string) string {
			link := filepath.Join(dir, "data")
			symlink(t, elsewhere, link)
			return link + "/"
		}, []string{"symbolic link"}},
		{"chatr.db is a directory", func(t *testing.T, dir, elsewhere string) string {
			if err := os.Mkdir(filepath.Join(dir, FileName), 0o700); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{FileName, "not a regular file"}},
		{"chatr.db is a named pipe", func(t *testing.T, dir, elsewhere string) string {
			// Opening a pipe blocks until a writer comes: Open would hang.
			if err := syscall.Mkfifo(filepath.Join(dir, FileName), 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
			return dir
		}, []string{FileName, "not a regular file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, elsewhere := t.TempDir(), t.TempDir()
			data := tc.setup(t, dir, elsewhere)
			before, beforeElsewhere := snapshotLinks(t, dir), snapshotDir(t, elsewhere)
			s, err := Open(data, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open accepted it")
			}
			t.Log(err)
			for _, m := range append([]string{strings.TrimSuffix(data, "/")}, tc.mention...) {
				m = strings.ReplaceAll(m, "{elsewhere}", elsewhere)
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if after := snapshotLinks(t, dir); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused Open changed the data directory:\n%s", diffDirs(before, after))
			}
			if after := snapshotDir(t, elsewhere); !reflect.DeepEqual(beforeElsewhere, after) {
				t.Errorf("a refused Open changed the files the link points to:\n%s", diffDirs(beforeElsewhere, after))
			}
		})
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// snapshotLinks maps each entry of dir (not below) to its content, or to
// where it links, without following links or opening pipes.
func snapshotLinks(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = "link to " + target
		case e.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = string(b)
		default:
			out[e.Name()] = e.Type().String()
		}
	}
	return out
}

// TestCursorKeyKept: a store makes its cursor key once and keeps it, so a
// single node's cursors survive a restart; a store made before the key
// existed gets one at Open; two stores have different keys.
func TestCursorKeyKept(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	key := bytes.Clone(s.Key("cursor"))
	if len(key) != 32 {
		t.Fatalf("cursor key of %d bytes, want 32", len(key))
	}
	if bytes.Equal(key, make([]byte, 32)) {
		t.Fatal("cursor key is all zeros")
	}
	s.Key("cursor")[0] ^= 1 // a caller cannot change it
	s.Close()
	if again := openStore(t, dir).Key("cursor"); !bytes.Equal(again, key) {
		t.Errorf("cursor key after a restart %x, was %x", again, key)
	}
	if other := openStore(t, t.TempDir()).Key("cursor"); bytes.Equal(other, key) {
		t.Error("two stores have the same cursor key")
	}

	// A store of the release before: no cursor_key row.
	old := t.TempDir()
	makeStore(t, old)
	if n := rawCount(t, old, all); n != 1 {
		t.Fatalf("test setup: %d messages", n)
	}
	execRaw(t, old, `DELETE FROM meta WHERE key = 'key_cursor'`)
	first := openStore(t, old)
	k1 := bytes.Clone(first.Key("cursor"))
	first.Close()
	if len(k1) != 32 {
		t.Fatalf("a store without a key got one of %d bytes", len(k1))
	}
	if k2 := openStore(t, old).Key("cursor"); !bytes.Equal(k1, k2) {
		t.Error("the key made for an older store was not kept")
	}
}

// TestBadCursorKeyRefused: a store whose kept cursor key is not one chatr
// made is refused, unchanged, rather than given a new key in silence (which
// would refuse every client's cursor) or used as it is.
func TestBadCursorKeyRefused(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"empty", ""},
		{"not hex", strings.Repeat("zz", 32)},
		{"short", strings.Repeat("ab", 16)},
		{"long", strings.Repeat("ab", 33)},
		{"upper case", strings.Repeat("AB", 32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			makeStore(t, dir)
			execRaw(t, dir, `UPDATE meta SET value = ? WHERE key = 'key_cursor'`, tc.value)
			// The read-only look at a WAL database may leave an empty
			// -wal and -shm; the database itself must not change.
			db := filepath.Join(dir, FileName)
			before, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open accepted cursor key %q", tc.value)
			}
			t.Log(err)
			for _, m := range []string{dir, "cursor key"} {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if after, _ := os.ReadFile(db); !bytes.Equal(before, after) {
				t.Error("a refused Open changed chatr.db")
			}
		})
	}
}

// execRaw runs one statement on the closed store in dir, as another
// program would, and checks it changed a row.
func execRaw(t *testing.T, dir, q string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		t.Fatalf("%s changed no row (%v)", q, err)
	}
}
