package gateway

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxIovecs is the most buffers one writev takes (IOV_MAX on Linux).
const maxIovecs = 1024

// writeNow writes what the socket takes of bufs without waiting for it,
// and returns what is left (empty when all went). rc is the socket's.
func writeNow(rc syscall.RawConn, bufs [][]byte) ([][]byte, error) {
	for len(bufs) > 0 {
		batch := bufs[:min(len(bufs), maxIovecs)]
		var n int
		var werr error
		err := rc.Write(func(fd uintptr) bool {
			for {
				n, werr = unix.Writev(int(fd), batch)
				if werr != unix.EINTR {
					return true // done or not: never wait for the socket here
				}
			}
		})
		if err != nil {
			return bufs, err
		}
		if errors.Is(werr, unix.EAGAIN) {
			return bufs, nil
		}
		if werr != nil {
			return bufs, werr
		}
		bufs = consume(bufs, n)
		if n < size(batch) {
			return bufs, nil // the socket is full
		}
	}
	return bufs, nil
}

// canWriteNow reports whether writeNow works here.
const canWriteNow = true
