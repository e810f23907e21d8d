// Package cluster is chatr's membership: which nodes form the cluster, which
// of them are alive, and how nodes find each other (join addresses, DNS names
// and mDNS on the LAN). It wraps hashicorp/memberlist, which no other chatr
// package imports, and prints the cluster view on the console when it changes.
package cluster

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/proto"
)

const (
	// ProtocolVersion is the cluster protocol carried in node meta; peers
	// speaking another version are refused. 2: peer links are TLS inside
	// the WebSocket, proved by the identity key in meta.
	ProtocolVersion = 2
	// DefaultPort is the gossip port used when an address gives none.
	DefaultPort = 7946
	// DefaultClusterName is the cluster name used when Config.ClusterName is empty.
	DefaultClusterName = "chatr"
	// ServiceName is the mDNS service nodes announce and browse for.
	ServiceName = "_chatr._tcp"
)

// ErrClosed is returned by Run after Shutdown.
var ErrClosed = errors.New("cluster: shut down")

// Config configures a Cluster. Zero values mean the documented defaults.
type Config struct {
	// NodeID is this node's id (12 lowercase hex characters, from the store).
	// It is memberlist's node name, so it must be unique in the cluster.
	NodeID string
	// NodeName is the display name used in console lines (default: host name).
	NodeName string
	// ClusterName isolates clusters (default "chatr"): it is memberlist's
	// label, so packets of other clusters are dropped, and it is checked in
	// node meta as well.
	ClusterName string
	// BindAddr is the gossip listener "host:port", TCP and UDP (default
	// ":7946"). Port 0 picks a free port; Addr reports it.
	BindAddr string
	// Advertise is the "ip:port" others should use to reach this node, when
	// the bind address is not reachable as is (optional).
	Advertise string
	// Join lists "host:port" addresses of any members, or "dns:NAME[:port]"
	// names whose every A/AAAA (port 7946 unless given) and SRV answer is
	// tried. They are retried with backoff until one answers, and again
	// whenever the node has lost contact with them.
	Join []string
	// DiscoverLAN announces this node and browses for others with mDNS
	// (service _chatr._tcp), joining discovered nodes of the same cluster.
	DiscoverLAN bool
	// SecretKey (nil, or 16, 24 or 32 bytes) encrypts and authenticates
	// gossip; peers without the same key are refused.
	SecretKey []byte
	// HTTPAddr is this node's HTTP "host:port" as peers and clients should
	// reach it; carried in node meta.
	HTTPAddr string
	// PublicKey is this node's identity key (Ed25519, 32 bytes), carried in
	// node meta so that peers can tell its peer links from an impostor's.
	PublicKey []byte
	// TLS says the HTTP listener serves TLS (carried in node meta).
	TLS bool
	// Log receives operational logs; memberlist's own log goes to it at
	// debug level. Nil discards.
	Log *slog.Logger
	// Console receives the start line and the "cluster view" lines (stdout
	// in production). Nil discards.
	Console io.Writer
	// Metrics registers the cluster metrics when non-nil.
	Metrics prometheus.Registerer
	// LocalState, when set, is sent to the peer in every push/pull exchange
	// (at join and every PushPullInterval). It must be quick and small
	// (well under 1 MB).
	LocalState func() []byte
	// MergeState, when set, is called with the remote node id and the
	// remote's LocalState after each push/pull exchange with a known member.
	// It runs on memberlist's goroutine: it must be quick and not block.
	MergeState func(nodeID string, state []byte)
	// Blocked is for tests: when it returns true for a remote gossip
	// address, packets to and from it are dropped and streams to it are
	// refused, simulating a partition. Incoming streams come from ephemeral
	// ports, so block both sides, as a real partition does.
	Blocked func(remoteGossipAddr string) bool

	// PushPullInterval is how often a full state exchange (including
	// LocalState) happens with one random member (default 10s).
	PushPullInterval time.Duration
	// ReconnectInterval is the longest wait between two attempts to reach
	// a join address, a discovered node or a failed member (default 3s).
	ReconnectInterval time.Duration
	// ReconnectTimeout is how long a failed member is retried and a failed
	// or left member stays in Members (default 24h).
	ReconnectTimeout time.Duration
}

// State is a member's state as this node sees it.
type State string

// Member states.
const (
	StateAlive State = "alive"
	StateDead  State = "dead"
	StateLeft  State = "left"
)

// Member is one node of the cluster.
type Member struct {
	ID     string    // node id
	Name   string    // display name
	HTTP   string    // HTTP address "host:port"
	Gossip string    // gossip address "ip:port"
	State  State     // alive, dead or left
	Since  time.Time // when this node saw the state begin
	Self   bool      // this node
	Key    []byte    // identity key (Ed25519 public key)
	TLS    bool      // its HTTP listener serves TLS
}

// EventKind says what happened to a member.
type EventKind int

// Event kinds.
const (
	Joined  EventKind = iota + 1 // came alive (first time or again)
	Left                         // left cleanly
	Failed                       // declared dead
	Updated                      // name or HTTP address changed
)

// String is the kind as console lines say it: joined, left, failed, updated.
func (k EventKind) String() string {
	switch k {
	case Joined:
		return "joined"
	case Left:
		return "left"
	case Failed:
		return "failed"
	case Updated:
		return "updated"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is a membership change of another member (never of this node).
type Event struct {
	Kind   EventKind
	Member Member
}

// Cluster is this node's membership in a chatr cluster.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	console io.Writer
	metrics *metrics
	ml      *memberlist.Memberlist
	addr    string // advertised gossip address
	started time.Time
	leaving atomic.Bool // set before Leave so peers can tell a clean leave from a crash

	mu         sync.Mutex
	members    map[string]*entry // other members by id
	self       Member
	joined     bool
	closed     bool // no more events, lines or subscribers
	subs       map[*subscriber]struct{}
	lines      chan string
	lastRefuse map[string]time.Time // rate limit of refusal log lines

	reconnect reconnector

	stopping bool          // guarded by mu
	stop     chan struct{} // closed when Shutdown starts
	running  bool
	wg       sync.WaitGroup // Run
	printed  chan struct{}  // closed when the console writer is done
	downOnce sync.Once
	downErr  error
}

type entry struct {
	Member
	leaving bool // its meta said it is leaving: its death is a clean leave
}

type subscriber struct {
	ch chan Event
}

// Failure detection is tuned from memberlist's DefaultLANConfig so that a
// crashed node is declared dead in about 3 s with a few nodes (kill -9 seen
// within 5 s), while staying quiet on a loaded 2-core machine:
//   - probeInterval 500ms (default 1s): each member is probed every
//     n*500ms, so a dead one is noticed within a second with 3 nodes;
//   - probeTimeout 250ms (default 500ms): LAN round trips are well under a
//     millisecond, and Lifeguard's awareness stretches it on a slow node;
//   - suspicionMult 4 (default): a suspect is declared dead after
//     4*max(1,log10(n))*probeInterval = 2s when it does not refute;
//   - gossipInterval 100ms (default 200ms): suspicions and deaths spread
//     to everyone in a few hundred ms.
const (
	probeInterval  = 500 * time.Millisecond
	probeTimeout   = 250 * time.Millisecond
	suspicionMult  = 4
	gossipInterval = 100 * time.Millisecond
	tcpTimeout     = 3 * time.Second
)

// New validates cfg, binds the gossip port and starts gossiping. It does not
// contact anyone: Run joins, reconnects and discovers.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:        cfg,
		log:        cfg.Log,
		console:    cfg.Console,
		started:    time.Now(),
		members:    make(map[string]*entry),
		subs:       make(map[*subscriber]struct{}),
		lines:      make(chan string, 256),
		lastRefuse: make(map[string]time.Time),
		stop:       make(chan struct{}),
		printed:    make(chan struct{}),
	}
	c.reconnect.init()
	if err := c.validateMeta(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	c.metrics = m

	host, port, _ := net.SplitHostPort(cfg.BindAddr)
	if host == "" {
		host = "0.0.0.0"
	}
	pn, _ := strconv.Atoi(port)
	mlLog := log.New(logWriter{c: c, from: "memberlist"}, "", 0)
	tr, err := newTransport(host, pn, mlLog, cfg.Blocked)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen on %s: %w", cfg.BindAddr, err)
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.Label = cfg.ClusterName
	mc.Transport = tr
	mc.BindAddr = host
	mc.BindPort = tr.port()
	mc.AdvertisePort = tr.port()
	if cfg.Advertise != "" {
		ah, ap, _ := net.SplitHostPort(cfg.Advertise)
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	} else if ip := net.ParseIP(host); ip.IsUnspecified() && ip.To4() == nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("cluster: bind address %s: set an advertise address when binding to [::]", cfg.BindAddr)
	}
	mc.ProbeInterval = probeInterval
	mc.ProbeTimeout = probeTimeout
	mc.SuspicionMult = suspicionMult
	mc.GossipInterval = gossipInterval
	mc.TCPTimeout = tcpTimeout
	mc.PushPullInterval = cfg.PushPullInterval
	mc.GossipToTheDeadTime = 15 * time.Second
	// A restarted node keeps its id; let it come back from another address
	// instead of being refused as a conflict until the dead entry is reaped.
	mc.DeadNodeReclaimTime = time.Second
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = append([]byte(nil), cfg.SecretKey...)
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	d := &delegate{c: c}
	mc.Delegate = d
	mc.Events = d
	mc.Alive = d
	mc.Merge = d
	mc.Conflict = d
	mc.Logger = mlLog

	c.self = Member{ID: cfg.NodeID, Name: cfg.NodeName, HTTP: cfg.HTTPAddr, State: StateAlive, Since: c.started, Self: true,
		Key: cfg.PublicKey, TLS: cfg.TLS}
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("cluster: start gossip on %s: %w", cfg.BindAddr, err)
	}
	c.ml = ml
	c.addr = ml.LocalNode().Address()
	c.self.Gossip = c.addr
	c.reconnect.setSelf(c.addr)
	c.joined = len(cfg.Join) == 0 && !cfg.DiscoverLAN
	c.updateGauges()

	fmt.Fprintf(c.console, "cluster: node %s (%s) in cluster %q, gossip %s, http %s\n",
		cfg.NodeID, cfg.NodeName, cfg.ClusterName, c.addr, orNone(cfg.HTTPAddr))
	go c.printLines()
	c.log.Info("cluster started", "node", cfg.NodeID, "name", cfg.NodeName, "cluster", cfg.ClusterName,
		"gossip", c.addr, "http", cfg.HTTPAddr, "join", cfg.Join, "discover_lan", cfg.DiscoverLAN,
		"encrypted", len(cfg.SecretKey) > 0)
	return c, nil
}

func (cfg *Config) setDefaults() error {
	if !proto.ValidNodeID(cfg.NodeID) {
		return fmt.Errorf("cluster: node id %q is not %d lowercase hex characters", cfg.NodeID, proto.NodeIDLen)
	}
	if cfg.NodeName == "" {
		cfg.NodeName, _ = os.Hostname()
		if cfg.NodeName == "" {
			cfg.NodeName = cfg.NodeID
		}
	}
	if len(cfg.NodeName) > 64 || strings.ContainsFunc(cfg.NodeName, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("cluster: node name %q: use at most 64 printable characters", cfg.NodeName)
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = DefaultClusterName
	}
	if !validClusterName(cfg.ClusterName) {
		return fmt.Errorf("cluster: cluster name %q: use 1-64 letters, digits, '_', '-' or '.'", cfg.ClusterName)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = ":" + strconv.Itoa(DefaultPort)
	}
	host, port, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("cluster: bind address %q: want host:port (%v)", cfg.BindAddr, err)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("cluster: bind address %q: host must be an IP address or empty", cfg.BindAddr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("cluster: bind address %q: bad port", cfg.BindAddr)
	}
	if cfg.Advertise != "" {
		host, port, err := net.SplitHostPort(cfg.Advertise)
		if err != nil || net.ParseIP(host) == nil || net.ParseIP(host).IsUnspecified() {
			return fmt.Errorf("cluster: advertise address %q: want ip:port with a reachable IP", cfg.Advertise)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("cluster: advertise address %q: bad port", cfg.Advertise)
		}
	}
	for _, j := range cfg.Join {
		if _, err := parseJoin(j); err != nil {
			return fmt.Errorf("cluster: join %q: %w", j, err)
		}
	}
	if len(cfg.PublicKey) != ed25519.PublicKeySize {
		return fmt.Errorf("cluster: public key is %d bytes: want an Ed25519 key of %d", len(cfg.PublicKey), ed25519.PublicKeySize)
	}
	switch len(cfg.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("cluster: secret key is %d bytes: want 16, 24 or 32", len(cfg.SecretKey))
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	if cfg.PushPullInterval <= 0 {
		cfg.PushPullInterval = 10 * time.Second
	}
	if cfg.ReconnectInterval <= 0 {
		cfg.ReconnectInterval = 3 * time.Second
	}
	if cfg.ReconnectTimeout <= 0 {
		cfg.ReconnectTimeout = 24 * time.Hour
	}
	cfg.Join = append([]string(nil), cfg.Join...)
	return nil
}

func validClusterName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// Addr is the gossip address "ip:port" other nodes use to reach this one
// (the advertised address; the real port when BindAddr asked for port 0).
func (c *Cluster) Addr() string { return c.addr }

// Joined reports whether this node has been in contact with at least one
// other member; it is true from the start when neither Join nor DiscoverLAN
// was given (a cluster of one by design). It never goes back to false.
func (c *Cluster) Joined() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joined
}

// Members lists every member known, this node included, with its state and
// since when, sorted by name then id. Failed and left members stay listed
// for ReconnectTimeout.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.members)+1)
	out = append(out, c.self)
	for _, e := range c.members {
		out = append(out, e.Member)
	}
	sortMembers(out)
	return out
}

func sortMembers(ms []Member) {
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].Name != ms[j].Name {
			return ms[i].Name < ms[j].Name
		}
		return ms[i].ID < ms[j].ID
	})
}

// Subscribe returns a channel of membership events of other members and a
// function that ends the subscription and closes the channel. The channel
// holds up to buf events (default 64); when it is full, new events are
// dropped, counted and logged, so a slow subscriber never stalls gossip.
// Shutdown closes every subscription.
func (c *Cluster) Subscribe(buf int) (<-chan Event, func()) {
	if buf <= 0 {
		buf = 64
	}
	s := &subscriber{ch: make(chan Event, buf)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	c.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if _, ok := c.subs[s]; ok {
				delete(c.subs, s)
				close(s.ch)
			}
		})
	}
}

// Run joins the cluster and keeps it whole until ctx is done or Shutdown is
// called: it retries the join addresses with backoff, reconnects to failed
// members and, with DiscoverLAN, announces and browses mDNS. It returns nil
// when ctx is done; it does not leave the cluster (Shutdown does).
func (c *Cluster) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.running {
		c.mu.Unlock()
		return errors.New("cluster: Run called twice")
	}
	c.running = true
	c.wg.Add(1)
	c.mu.Unlock()
	defer c.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	if c.cfg.DiscoverLAN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.discover(ctx)
		}()
	}
	c.reconnectLoop(ctx)
	wg.Wait()
	return nil
}

// Shutdown tells the cluster this node is leaving (waiting for the news to
// go out, at most until ctx is done), then stops gossip, discovery and Run.
// It is safe to call more than once; later calls return the first result.
func (c *Cluster) Shutdown(ctx context.Context) error {
	return c.shutdown(ctx, true)
}

// shutdown stops the cluster; without leave it is a crash as peers see it.
func (c *Cluster) shutdown(ctx context.Context, leave bool) error {
	c.downOnce.Do(func() {
		c.mu.Lock()
		c.stopping = true
		c.mu.Unlock()
		close(c.stop)
		c.wg.Wait() // Run's attempts end within tcpTimeout

		var errs []error
		if leave {
			wait := leaveWait(ctx)
			// The meta flag goes out first so peers tell this clean leave
			// from a crash when the leave (a dead message) arrives.
			c.leaving.Store(true)
			if err := c.ml.UpdateNode(wait); err != nil {
				c.log.Warn("cluster: announcing leave", "err", err)
			}
			if err := c.ml.Leave(wait); err != nil {
				errs = append(errs, fmt.Errorf("cluster: leave: %w", err))
			}
		}
		if err := c.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: shutdown: %w", err))
		}

		c.mu.Lock()
		c.closed = true
		c.self.State = StateLeft
		c.self.Since = time.Now()
		for s := range c.subs {
			close(s.ch)
			delete(c.subs, s)
		}
		close(c.lines)
		c.mu.Unlock()
		<-c.printed
		if leave {
			fmt.Fprintf(c.console, "cluster: node %s (%s) left cluster %q\n", c.cfg.NodeID, c.cfg.NodeName, c.cfg.ClusterName)
		}
		c.log.Info("cluster stopped", "left", leave)
		c.downErr = errors.Join(errs...)
	})
	return c.downErr
}

// leaveWait is how long each leave step may wait: half of what ctx leaves,
// at most 3s, at least 100ms.
func leaveWait(ctx context.Context) time.Duration {
	wait := 3 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	return max(wait, 100*time.Millisecond)
}

// printLines writes console lines in order, off memberlist's goroutines.
func (c *Cluster) printLines() {
	defer close(c.printed)
	for line := range c.lines {
		fmt.Fprintln(c.console, line)
	}
}
