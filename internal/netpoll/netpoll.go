// Package netpoll tells when idle connections become readable, with one
// epoll instance and one goroutine for all of them, so that an idle
// WebSocket costs no goroutine and no read buffer. A connection's handler
// runs in a goroutine of its own only while it has something to read.
package netpoll

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrUnsupported is returned by Add for a connection without a file
// descriptor (the caller then reads in a goroutine of its own).
var ErrUnsupported = errors.New("netpoll: connection has no file descriptor")

// Poller watches connections for readability.
type Poller struct {
	epfd   int
	wake   int // eventfd that ends the wait loop on Close
	nextID atomic.Uint64
	closed atomic.Bool
	done   chan struct{}

	mu    sync.Mutex
	descs map[uint64]*Desc
}

// Desc is one watched connection. Its handler fires once per Resume: the
// registration is one-shot, so one goroutine at a time reads the connection.
type Desc struct {
	p       *Poller
	id      uint64
	fd      int
	handler func()
}

// New starts a poller.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setID(&ev, 0) // id 0 is the wake-up
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("netpoll: epoll_ctl: %w", err)
	}
	p := &Poller{epfd: epfd, wake: wake, done: make(chan struct{}), descs: map[uint64]*Desc{}}
	go p.loop()
	return p, nil
}

// Ids, not file descriptors, name registrations in events: a descriptor
// number is reused as soon as it is closed, an id never is, so an event
// still in flight for a closed connection cannot wake its successor.
func setID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func getID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func (p *Poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := 0; i < n; i++ {
			id := getID(&events[i])
			if id == 0 {
				if p.closed.Load() {
					return
				}
				continue
			}
			p.mu.Lock()
			d := p.descs[id]
			p.mu.Unlock()
			if d != nil {
				go d.handler()
			}
		}
	}
}

// fdOf returns the descriptor of conn without duplicating it.
func fdOf(conn net.Conn) (int, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, ErrUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, ErrUnsupported
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil || fd < 0 {
		return 0, ErrUnsupported
	}
	return fd, nil
}

// Add watches conn and calls handler, in a new goroutine, when it is
// readable (or closed by the peer). After each call the watch is paused
// until Resume.
func (p *Poller) Add(conn net.Conn, handler func()) (*Desc, error) {
	fd, err := fdOf(conn)
	if err != nil {
		return nil, err
	}
	d := &Desc{p: p, id: p.nextID.Add(1), fd: fd, handler: handler}
	p.mu.Lock()
	p.descs[d.id] = d
	p.mu.Unlock()
	if err := d.ctl(unix.EPOLL_CTL_ADD); err != nil {
		p.mu.Lock()
		delete(p.descs, d.id)
		p.mu.Unlock()
		return nil, err
	}
	return d, nil
}

func (d *Desc) ctl(op int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setID(&ev, d.id)
	if err := unix.EpollCtl(d.p.epfd, op, d.fd, &ev); err != nil {
		return fmt.Errorf("netpoll: epoll_ctl: %w", err)
	}
	return nil
}

// Resume re-arms the watch after a handler call.
func (d *Desc) Resume() error { return d.ctl(unix.EPOLL_CTL_MOD) }

// Remove stops watching. Call it before closing the connection.
func (d *Desc) Remove() {
	d.p.mu.Lock()
	delete(d.p.descs, d.id)
	d.p.mu.Unlock()
	unix.EpollCtl(d.p.epfd, unix.EPOLL_CTL_DEL, d.fd, nil)
}

// Len is the number of watched connections.
func (p *Poller) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.descs)
}

// Close stops the poller. Watched connections are not closed.
func (p *Poller) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	var one [8]byte
	one[0] = 1
	unix.Write(p.wake, one[:])
	<-p.done
	unix.Close(p.wake)
	return unix.Close(p.epfd)
}
