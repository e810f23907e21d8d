package netpoll

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// newPoller starts a poller that runs until the test ends.
func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	go p.Run()
	t.Cleanup(func() { p.Close() })
	return p
}

// fdNumber is the descriptor number of conn.
func fdNumber(t *testing.T, conn net.Conn) int {
	t.Helper()
	rc, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func pipe(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestReadableFiresOncePerResume(t *testing.T) {
	p := newPoller(t)
	client, server := pipe(t)
	fired := make(chan struct{}, 10)
	d, err := p.Add(server, func() { fired <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
		t.Fatal("fired before anything was written")
	case <-time.After(50 * time.Millisecond):
	}
	client.Write([]byte("hello"))
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("not fired after a write")
	}
	// One-shot: unread data does not fire again until Resume.
	select {
	case <-fired:
		t.Fatal("fired twice without Resume")
	case <-time.After(50 * time.Millisecond):
	}
	if err := d.Resume(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired: // the data is still unread: level-triggered
	case <-time.After(5 * time.Second):
		t.Fatal("not fired after Resume with unread data")
	}
	buf := make([]byte, 5)
	server.Read(buf)
	d.Resume()
	client.Close()
	select {
	case <-fired: // peer closed
	case <-time.After(5 * time.Second):
		t.Fatal("not fired when the peer closed")
	}
	d.Remove()
	if p.Len() != 0 {
		t.Fatalf("Len = %d after Remove", p.Len())
	}
}

func TestRemovedDescNeverFires(t *testing.T) {
	p := newPoller(t)
	client, server := pipe(t)
	var calls atomic.Int32
	d, err := p.Add(server, func() { calls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	d.Remove()
	client.Write([]byte("x"))
	// A barrier instead of a sleep: a second connection written after the
	// first is woken only after the poller has waited past that write.
	client2, server2 := pipe(t)
	barrier := make(chan struct{}, 1)
	if _, err := p.Add(server2, func() { barrier <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	client2.Write([]byte("y"))
	select {
	case <-barrier:
	case <-time.After(5 * time.Second):
		t.Fatal("the barrier connection was never woken")
	}
	if calls.Load() != 0 {
		t.Fatal("a removed connection fired")
	}
}

func TestUnsupportedConn(t *testing.T) {
	p := newPoller(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := p.Add(a, func() {}); err != ErrUnsupported {
		t.Fatalf("Add(net.Pipe) = %v, want ErrUnsupported", err)
	}
}

// TestResumeAfterCloseSparesTheNextConnection: a session's reader may call
// Resume just after its teardown removed and closed the connection. The
// kernel hands the closed descriptor's number to the next connection; the
// late Resume must fail, not re-register that connection under the dead
// one's id (which would leave its reads never woken).
func TestResumeAfterCloseSparesTheNextConnection(t *testing.T) {
	p := newPoller(t)
	_, serverA := pipe(t)
	dA, err := p.Add(serverA, func() {})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	clientB, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer clientB.Close()
	fdA := fdNumber(t, serverA)
	dA.Remove()
	serverA.Close()
	serverB, err := ln.Accept() // takes the lowest free number: A's
	if err != nil {
		t.Fatal(err)
	}
	defer serverB.Close()
	if fdB := fdNumber(t, serverB); fdB != fdA {
		t.Fatalf("the new connection got descriptor %d, not the closed one's %d: the test needs the reuse", fdB, fdA)
	}
	fired := make(chan struct{}, 1)
	if _, err := p.Add(serverB, func() { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := dA.Resume(); !errors.Is(err, ErrRemoved) {
		t.Fatalf("Resume after Remove and Close = %v, want ErrRemoved", err)
	}
	clientB.Write([]byte("x"))
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection that reused the descriptor was never woken")
	}
}

// TestResumeOfAClosedConnectionFails: a connection closed without Remove
// (the kernel drops it from epoll) cannot be re-armed.
func TestResumeOfAClosedConnectionFails(t *testing.T) {
	p := newPoller(t)
	_, server := pipe(t)
	d, err := p.Add(server, func() {})
	if err != nil {
		t.Fatal(err)
	}
	server.Close()
	if err := d.Resume(); !errors.Is(err, ErrRemoved) {
		t.Fatalf("Resume of a closed connection = %v, want ErrRemoved", err)
	}
}
