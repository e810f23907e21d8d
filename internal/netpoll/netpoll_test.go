package netpoll

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

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
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
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
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client, server := pipe(t)
	var calls atomic.Int32
	d, err := p.Add(server, func() { calls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	d.Remove()
	client.Write([]byte("x"))
	time.Sleep(50 * time.Millisecond) // a negative: nothing may happen
	if calls.Load() != 0 {
		t.Fatal("a removed connection fired")
	}
}

func TestUnsupportedConn(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := p.Add(a, func() {}); err != ErrUnsupported {
		t.Fatalf("Add(net.Pipe) = %v, want ErrUnsupported", err)
	}
}
