package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	"chatr/internal/client"
	"chatr/internal/proto"
)

// Config is one bench run. Connection i joins room i%Rooms on node
// (i/Rooms)%len(URLs), so every room has members on every node; the first
// Senders connections also send.
type Config struct {
	URLs        []string      // nodes: ws://, http:// or host:port
	Conns       int           // connections, at least 1
	Rooms       int           // rooms, 1 to Conns
	Senders     int           // connections that send, 0 to Conns
	Rate        float64       // messages per second, all senders together; 0 sends none
	Window      int           // most sends of one sender waiting for their ack; 0: no limit (open loop)
	Size        int           // bytes of a message text, 1 to 4096; texts are never below their ~30-byte header
	Duration    time.Duration // the whole run, ramp included
	Ramp        time.Duration // connections open evenly over this time, then sending starts
	Drain       time.Duration // after Duration, wait at most this long for deliveries in flight; 0 means DefaultDrain
	AllowRemote bool          // allow nodes that are not on this machine
	Failover    bool          // a connection its node drops resumes on the next node of URLs (see resume)
	Progress    io.Writer     // gets a progress line each second; nil for none
}

// Limits of a run.
const (
	DefaultDuration = 10 * time.Second
	DefaultDrain    = 5 * time.Second
	MaxDrain        = time.Minute
	MaxConns        = 1 << 20
)

// Validate checks c and returns the WebSocket URLs of its nodes. It refuses
// nodes that are not loopback unless AllowRemote is set, so a typo cannot
// turn the tool against someone else's server.
func (c *Config) Validate() ([]string, error) {
	switch {
	case len(c.URLs) == 0:
		return nil, errors.New("--url: give at least one node URL")
	case c.Conns < 1 || c.Conns > MaxConns:
		return nil, fmt.Errorf("--conns %d: must be from 1 to %d", c.Conns, MaxConns)
	case c.Rooms < 1 || c.Rooms > c.Conns:
		return nil, fmt.Errorf("--rooms %d: must be from 1 to --conns (%d)", c.Rooms, c.Conns)
	case c.Senders < 0 || c.Senders > c.Conns:
		return nil, fmt.Errorf("--senders %d: must be from 0 to --conns (%d)", c.Senders, c.Conns)
	case c.Rate < 0:
		return nil, fmt.Errorf("--rate %g: must be 0 or more messages per second", c.Rate)
	case c.Rate > 0 && c.Senders == 0:
		return nil, errors.New("--rate needs at least one sender (--senders)")
	case c.Window < 0:
		return nil, fmt.Errorf("--window %d: must be 0 (no limit) or more", c.Window)
	case c.Size < 1 || c.Size > proto.MaxTextBytes:
		return nil, fmt.Errorf("--size %d: must be from 1 to %d bytes", c.Size, proto.MaxTextBytes)
	case c.Duration <= 0:
		return nil, fmt.Errorf("--duration %s: must be above 0", c.Duration)
	case c.Ramp < 0 || c.Ramp >= c.Duration:
		return nil, fmt.Errorf("--ramp %s: must be from 0 to below --duration (%s)", c.Ramp, c.Duration)
	case c.Drain < 0 || c.Drain > MaxDrain:
		return nil, fmt.Errorf("--drain %s: must be from 0 to %s", c.Drain, MaxDrain)
	}
	if limit := openFileLimit(); limit > 0 && uint64(c.Conns)+64 > limit {
		return nil, fmt.Errorf("--conns %d: this process may open %d files (ulimit -n), too few for that many connections; run several bench processes", c.Conns, limit)
	}
	urls := make([]string, len(c.URLs))
	for i, raw := range c.URLs {
		u, err := client.WebSocketURL(raw)
		if err != nil {
			return nil, fmt.Errorf("--url: %w", err)
		}
		if !c.AllowRemote {
			if err := checkLoopback(u); err != nil {
				return nil, fmt.Errorf("--url: %w", err)
			}
		}
		urls[i] = u
	}
	return urls, nil
}

// checkLoopback returns an error unless the host of u is a loopback address
// or a name that resolves only to loopback addresses.
func checkLoopback(u string) error {
	pu, err := url.Parse(u)
	if err != nil {
		return err
	}
	host := pu.Hostname()
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address; pass --allow-remote to load a node on another machine", host)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return fmt.Errorf("%s resolves to %s, not a loopback address; pass --allow-remote to load a node on another machine", host, ip.IP)
		}
	}
	return nil
}
