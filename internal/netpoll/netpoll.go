// Package netpoll tells when idle connections become readable, with one
// epoll instance and one goroutine for all of them, so that an idle
// WebSocket costs no goroutine and no read buffer. A connection's handler
// runs in a goroutine of its own only while it has something to read.
//
// It works on Linux. Elsewhere New returns ErrUnsupported, and callers read
// each connection in a goroutine of its own instead.
package netpoll

import "errors"

// ErrUnsupported is returned by New where there is no epoll, and by Add for
// a connection without a file descriptor (the caller then reads in a
// goroutine of its own).
var ErrUnsupported = errors.New("netpoll: not supported for this connection or system")

// ErrRemoved is returned by Resume after Remove, or once the connection is
// closed.
var ErrRemoved = errors.New("netpoll: connection no longer watched")
