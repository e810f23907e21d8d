package cluster

import (
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport is memberlist's transport as chatr builds it: memberlist's own
// TCP+UDP NetTransport, wrapped by a partition simulator when tests ask.
type transport interface {
	memberlist.Transport
	port() int
}

// newTransport binds host:port (port 0: a free port, the same for TCP and
// UDP, retried as memberlist does since the two binds can race).
func newTransport(host string, port int, logger *log.Logger, blocked func(string) bool) (transport, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var nt *memberlist.NetTransport
	var err error
	for range tries {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{host}, BindPort: port, Logger: logger,
		})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if blocked == nil {
		return netTransport{nt}, nil
	}
	t := &blockingTransport{
		inner:   nt,
		blocked: blocked,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		stop:    make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t, nil
}

type netTransport struct{ *memberlist.NetTransport }

func (t netTransport) port() int { return t.GetAutoBindPort() }

// blockingTransport drops packets to and from addresses Blocked names and
// refuses streams to them, so tests can cut links between in-process nodes.
type blockingTransport struct {
	inner   *memberlist.NetTransport
	blocked func(string) bool
	packets chan *memberlist.Packet
	streams chan net.Conn
	stop    chan struct{}
	wg      sync.WaitGroup
}

func (t *blockingTransport) port() int { return t.inner.GetAutoBindPort() }

func (t *blockingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *blockingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.blocked(addr) {
		return time.Now(), nil // lost on the way, as in a partition
	}
	return t.inner.WriteTo(b, addr)
}

func (t *blockingTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *blockingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.blocked(addr) {
		return nil, fmt.Errorf("dial %s: blocked (simulated partition)", addr)
	}
	return t.inner.DialTimeout(addr, timeout)
}

func (t *blockingTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops the listeners first (memberlist still reads our channels
// then), then the forwarders.
func (t *blockingTransport) Shutdown() error {
	err := t.inner.Shutdown()
	close(t.stop)
	t.wg.Wait()
	return err
}

func (t *blockingTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case p := <-t.inner.PacketCh():
			if p.From != nil && t.blocked(p.From.String()) {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.stop:
				return
			}
		case <-t.stop:
			return
		}
	}
}

func (t *blockingTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case conn := <-t.inner.StreamCh():
			if t.blocked(conn.RemoteAddr().String()) {
				_ = conn.Close()
				continue
			}
			select {
			case t.streams <- conn:
			case <-t.stop:
				_ = conn.Close()
				return
			}
		case <-t.stop:
			return
		}
	}
}
