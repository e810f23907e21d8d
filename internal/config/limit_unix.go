//go:build unix

package config

import "syscall"

// openFileLimit returns how many files this process may open, 0 if unknown.
// Go raises the soft limit to the hard one at start.
func openFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Cur
}
