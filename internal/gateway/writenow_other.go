//go:build !linux

package gateway

import (
	"errors"
	"syscall"
)

// writeNow is not available here: every write waits (canWriteNow).
func writeNow(rc syscall.RawConn, bufs [][]byte) ([][]byte, error) {
	return bufs, errors.New("no non-blocking writev on this system")
}

const canWriteNow = false
