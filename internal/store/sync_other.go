//go:build !linux

package store

import "os"

// noFollow is left out where the system has no O_NOFOLLOW at hand; the
// data directory's rules (files.go) keep links out of it there too.
const noFollow = 0

// datasync makes f durable.
func datasync(f *os.File) error { return f.Sync() }
