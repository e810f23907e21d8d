//go:build !linux

package netpoll

import "net"

// Poller is not available on this system: New returns ErrUnsupported.
type Poller struct{}

// Desc is a watched connection; there are none on this system.
type Desc struct{}

// New returns ErrUnsupported: there is no epoll here.
func New() (*Poller, error) { return nil, ErrUnsupported }

// Run returns at once.
func (p *Poller) Run() {}

// Add returns ErrUnsupported.
func (p *Poller) Add(conn net.Conn, handler func()) (*Desc, error) { return nil, ErrUnsupported }

// Len is 0.
func (p *Poller) Len() int { return 0 }

// Close does nothing.
func (p *Poller) Close() error { return nil }

// Resume returns ErrRemoved.
func (d *Desc) Resume() error { return ErrRemoved }

// Remove does nothing.
func (d *Desc) Remove() {}
