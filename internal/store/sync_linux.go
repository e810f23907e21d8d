package store

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// noFollow makes an open fail on a symbolic link.
const noFollow = syscall.O_NOFOLLOW

// datasync makes f's data durable, and the metadata needed to read it back
// (its size), not its times.
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
