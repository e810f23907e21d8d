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

// Poller watches connections for readability. New makes it; Run waits for
// events (one goroutine for every connection) until Close.
type Poller struct {
	epfd   int
	wake   int // eventfd that ends the wait loop on Close
	nextID atomic.Uint64
	closed atomic.Bool

	mu      sync.Mutex
	descs   map[uint64]*Desc
	runDone chan struct{} // closed when Run returns; nil until it starts
}

// Desc is one watched connection. Its handler fires once per Resume: the
// registration is one-shot, so one goroutine at a time reads the connection.
//
// Its life is explicit: every epoll_ctl on it runs under mu and inside the
// connection's RawConn.Control, which keeps the descriptor number from being
// closed (and handed to a new connection) while the call runs; after Remove,
// or once the connection is closed, Resume fails instead of touching
// whatever connection now has that number.
type Desc struct {
	p       *Poller
	id      uint64
	rc      syscall.RawConn
	handler func()

	mu      sync.Mutex
	removed bool
}

// New makes a poller. Nothing waits for events until Run.
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
	return &Poller{epfd: epfd, wake: wake, descs: map[uint64]*Desc{}}, nil
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

// Run calls the handlers of readable connections, each in a new goroutine,
// until Close. Run it once.
func (p *Poller) Run() {
	p.mu.Lock()
	if p.closed.Load() || p.runDone != nil {
		p.mu.Unlock()
		return
	}
	done := make(chan struct{})
	p.runDone = done
	p.mu.Unlock()
	defer close(done)
	events := make([]unix.EpollEvent, 256)
	for !p.closed.Load() {
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
				continue // the wake-up of Close: the loop condition ends it
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

// Add watches conn and calls handler, in a new goroutine, when it is
// readable (or closed by the peer). After each call the watch is paused
// until Resume.
func (p *Poller) Add(conn net.Conn, handler func()) (*Desc, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, ErrUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, ErrUnsupported
	}
	d := &Desc{p: p, id: p.nextID.Add(1), rc: rc, handler: handler}
	p.mu.Lock()
	p.descs[d.id] = d
	p.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ctl(unix.EPOLL_CTL_ADD); err != nil {
		d.removed = true
		p.mu.Lock()
		delete(p.descs, d.id)
		p.mu.Unlock()
		if errors.Is(err, ErrRemoved) {
			return nil, ErrUnsupported // closed already: nothing to watch
		}
		return nil, err
	}
	return d, nil
}

// ctl runs epoll_ctl for d while the descriptor cannot be closed. d.mu is
// held. A closed connection gives ErrRemoved.
func (d *Desc) ctl(op int) error {
	var err error
	cerr := d.rc.Control(func(fd uintptr) {
		if op == unix.EPOLL_CTL_DEL {
			err = unix.EpollCtl(d.p.epfd, op, int(fd), nil)
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
		setID(&ev, d.id)
		err = unix.EpollCtl(d.p.epfd, op, int(fd), &ev)
	})
	if cerr != nil {
		return ErrRemoved
	}
	if err != nil {
		return fmt.Errorf("netpoll: epoll_ctl: %w", err)
	}
	return nil
}

// Resume re-arms the watch after a handler call. It fails with ErrRemoved
// after Remove or once the connection is closed.
func (d *Desc) Resume() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removed {
		return ErrRemoved
	}
	return d.ctl(unix.EPOLL_CTL_MOD)
}

// Remove stops watching; the handler is not called again. Call it before
// closing the connection (a closed one is dropped by the kernel anyway).
func (d *Desc) Remove() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removed {
		return
	}
	d.removed = true
	d.p.mu.Lock()
	delete(d.p.descs, d.id)
	d.p.mu.Unlock()
	_ = d.ctl(unix.EPOLL_CTL_DEL)
}

// Len is the number of watched connections.
func (p *Poller) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.descs)
}

// Close stops the poller and waits for Run to return. Watched connections
// are not closed.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed.Swap(true) {
		p.mu.Unlock()
		return nil
	}
	done := p.runDone
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1
	unix.Write(p.wake, one[:])
	if done != nil {
		<-done
	}
	unix.Close(p.wake)
	return unix.Close(p.epfd)
}
