package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// The on-disk rules. A data directory holds the history and the key that
// makes cursors unforgeable, so no other user of the machine may read or
// change it:
//
//   - A missing data directory is made 0700 (its missing parents too).
//   - An existing one that is a symbolic link, or that the group or others
//     may write to, is refused: whoever can write there can swap chatr.db
//     or plant a link for SQLite to follow. Since nobody else can write
//     there once this holds, no link can appear between the checks below
//     and SQLite's open.
//   - chatr.db, chatr.db-wal and chatr.db-shm must be regular files, not
//     links (never followed: a link would have the node write its log into
//     someone else's file).
//   - chatr.db is made 0600 before SQLite opens it, and SQLite gives -wal
//     and -shm the mode of the database. Files of an older release (0644)
//     lose their group and other bits at Open, with one log line.
//
// Windows has no such modes (Go reports every directory there as 0777):
// there the links are refused, and access is left to the ACLs.

// dataFiles are the files SQLite keeps in a data directory.
var dataFiles = []string{FileName, FileName + "-wal", FileName + "-shm"}

// unixModes is whether file modes say who may read and write.
const unixModes = runtime.GOOS != "windows"

// prepareDir makes dir (0700) when it is missing and refuses one that is a
// link, not a directory, or writable by others.
func prepareDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create data directory %s: %w", dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := filepath.EvalSymlinks(dir)
		if err != nil {
			target, _ = os.Readlink(dir)
		}
		return fmt.Errorf("data directory %s is a symbolic link to %s: chatr follows no links in its data directory; use the directory itself (%s)", dir, target, target)
	case !fi.IsDir():
		return fmt.Errorf("data directory %s is not a directory", dir)
	case unixModes && fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("data directory %s is writable by group or others (mode %04o), who could then replace the store: run chmod go-w %s", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// checkFiles refuses store files that are links or not regular files,
// without following or opening them (opening a named pipe would block).
func checkFiles(dir string) error {
	for _, name := range dataFiles {
		path := filepath.Join(dir, name)
		fi, err := os.Lstat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			return fmt.Errorf("%s is a symbolic link to %s: chatr follows no links in its data directory; put the file itself there", name, target)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("%s is not a regular file but %s: not a chatr data directory", name, kind(fi.Mode()))
		}
	}
	return nil
}

// kind names a file type for people.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}

// tightenModes takes the group and other bits off the store files that
// have them (stores of releases that made them 0644), and says so once.
func tightenModes(dir string, log *slog.Logger) error {
	if !unixModes {
		return nil
	}
	var changed []string
	for _, name := range dataFiles {
		path := filepath.Join(dir, name)
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			if err := os.Chmod(path, perm&0o700); err != nil {
				return fmt.Errorf("make %s private (chmod go-rwx): %w", path, err)
			}
			changed = append(changed, fmt.Sprintf("%s %04o -> %04o", name, perm, perm&0o700))
		}
	}
	if len(changed) > 0 {
		log.Warn("store files were open to other users; took away their group and other permissions", "dir", dir, "files", strings.Join(changed, ", "))
	}
	return nil
}

// createDB makes an empty chatr.db of mode 0600 for SQLite to open, so
// that its -wal and -shm are 0600 too. O_EXCL fails on a link.
func createDB(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// The umask may have taken bits the owner needs.
	err = f.Chmod(0o600)
	return errors.Join(err, f.Close())
}
