package cluster

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"chatr/internal/proctest"
)

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// lines returns the lines of what b holds that contain sub.
func lines(b *proctest.Buffer, sub string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

// node is a Cluster under test with its captured console and log.
type node struct {
	*Cluster
	console *proctest.Buffer
	logs    *proctest.Buffer
	reg     *prometheus.Registry
}

func nodeID(name string) string { return fmt.Sprintf("%012x", []byte(name)[:min(6, len(name))]) }

// startNode starts a Cluster named name on 127.0.0.1 and runs it until the
// test ends. mod adjusts the config.
func startNode(t *testing.T, name string, mod func(*Config)) *node {
	t.Helper()
	n := &node{console: &proctest.Buffer{}, logs: &proctest.Buffer{}, reg: prometheus.NewRegistry()}
	level := slog.LevelInfo
	var w io.Writer = n.logs
	if os.Getenv("CHATR_TEST_DEBUG") != "" {
		level = slog.LevelDebug
		w = io.MultiWriter(n.logs, os.Stderr)
	}
	cfg := Config{
		PublicKey: testKey(),
		NodeID:    nodeID(name),
		NodeName:  name,
		BindAddr:  "127.0.0.1:0",
		HTTPAddr:  "127.0.0.1:5080",
		Console:   n.console,
		Log:       slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("node", name),
		Metrics:   n.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New %s: %v", name, err)
	}
	n.Cluster = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil && err != ErrClosed {
			t.Errorf("Run %s: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = c.Shutdown(sctx)
	})
	return n
}

// states maps member names to their states as n sees them.
func (n *node) states() map[string]State {
	out := map[string]State{}
	for _, m := range n.Members() {
		out[m.Name] = m.State
	}
	return out
}

func (n *node) sees(name string, s State) bool { return n.states()[name] == s }

// allAlive is a condition: each of nodes lists len(nodes) alive members.
func allAlive(nodes ...*node) func() error {
	return func() error {
		for _, n := range nodes {
			if k := n.aliveCount(); k != len(nodes) {
				return fmt.Errorf("%s lists %d alive members, want %d: %v", n.cfg.NodeName, k, len(nodes), n.states())
			}
		}
		return nil
	}
}

func (n *node) aliveCount() int {
	k := 0
	for _, m := range n.Members() {
		if m.State == StateAlive {
			k++
		}
	}
	return k
}

// kill stops n as a crash does: no leave message.
func (n *node) kill(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.shutdown(ctx, false); err != nil {
		t.Fatalf("kill: %v", err)
	}
}

func waitEvent(t *testing.T, ch <-chan Event, kind EventKind, name string) Event {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed waiting for %s %s", name, kind)
			}
			if ev.Kind == kind && ev.Member.Name == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event for %s", kind, name)
		}
	}
}

func TestJoinLeaveFailRejoin(t *testing.T) {
	a := startNode(t, "a1", nil)
	events, cancel := a.Subscribe(16)
	defer cancel()
	b := startNode(t, "b2", func(c *Config) { c.Join = []string{a.Addr()} })
	c := startNode(t, "c3", func(c *Config) { c.Join = []string{a.Addr()} })
	nodes := []*node{a, b, c}

	proctest.Eventually(t, 10*time.Second, func() error {
		for _, n := range nodes {
			if !n.Joined() {
				return fmt.Errorf("%s has not joined", n.cfg.NodeName)
			}
		}
		return allAlive(nodes...)()
	})
	for _, n := range nodes {
		ms := n.Members()
		if len(ms) != 3 || ms[0].Name != "a1" || ms[1].Name != "b2" || ms[2].Name != "c3" {
			t.Fatalf("%s members: %+v", n.Cluster.cfg.NodeName, ms)
		}
		for _, m := range ms {
			if m.Self != (m.Name == n.Cluster.cfg.NodeName) || m.HTTP != "127.0.0.1:5080" || m.Gossip == "" || m.Since.IsZero() {
				t.Fatalf("%s: bad member %+v", n.Cluster.cfg.NodeName, m)
			}
		}
	}
	ev := waitEvent(t, events, Joined, "b2")
	if ev.Member.ID != nodeID("b2") || ev.Member.Gossip != b.Addr() {
		t.Fatalf("join event %+v, want id %s gossip %s", ev, nodeID("b2"), b.Addr())
	}

	// Start line, then one view line per change.
	start := lines(a.console, "cluster: node ")
	if len(start) != 1 || !strings.Contains(start[0], nodeID("a1")) || !strings.Contains(start[0], "(a1)") ||
		!strings.Contains(start[0], `"chatr"`) || !strings.Contains(start[0], a.Addr()) || !strings.Contains(start[0], "127.0.0.1:5080") {
		t.Fatalf("start line: %q", start)
	}
	proctest.Eventually(t, 5*time.Second, func() error {
		for _, n := range nodes {
			if l := lines(n.console, "cluster view"); len(l) != 2 {
				return fmt.Errorf("%s printed view lines %q, want two", n.cfg.NodeName, l)
			}
		}
		return nil
	})
	view := regexp.MustCompile(`^cluster view: 3 members \[a1 \(this\), b2, c3\] after (b2|c3) joined$`)
	if last := lines(a.console, "cluster view")[1]; !view.MatchString(last) {
		t.Fatalf("a1 view line %q does not match %v", last, view)
	}
	if l := lines(b.console, "cluster view"); !strings.Contains(l[1], "3 members [a1, b2 (this), c3]") {
		t.Fatalf("b2 view lines %q", l)
	}

	// Clean leave.
	ctx, cancelCtx := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelCtx()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown c3: %v", err)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("second shutdown c3: %v", err)
	}
	waitEvent(t, events, Left, "c3")
	proctest.Eventually(t, 5*time.Second, func() error {
		if !a.sees("c3", StateLeft) || !b.sees("c3", StateLeft) {
			return fmt.Errorf("c3 has not left on a1 (%v) and b2 (%v)", a.states(), b.states())
		}
		return nil
	})
	for _, n := range []*node{a, b} {
		l := lines(n.console, "cluster view")
		if len(l) != 3 || !strings.HasSuffix(l[2], "2 members [a1"+self(n, "a1")+", b2"+self(n, "b2")+"] after c3 left") {
			t.Fatalf("%s view lines after leave: %q", n.cfg.NodeName, l)
		}
	}
	if c.states()["c3"] != StateLeft {
		t.Fatalf("c3 sees itself %v after Shutdown", c.states()["c3"])
	}

	// Crash: no leave message; peers must declare it dead.
	bAddr, bID := b.Addr(), b.cfg.NodeID
	killed := time.Now()
	b.kill(t)
	waitEvent(t, events, Failed, "b2")
	t.Logf("kill detected after %v", time.Since(killed).Round(10*time.Millisecond))
	if d := time.Since(killed); d > 6*time.Second {
		t.Errorf("kill noticed after %v, want about 3s", d)
	}
	proctest.Eventually(t, time.Second, func() error {
		if !strings.HasSuffix(a.console.String(), "cluster view: 1 member [a1 (this)] after b2 failed\n") {
			return fmt.Errorf("a1 has not printed the failure of b2: %q", lines(a.console, "cluster view"))
		}
		return nil
	})
	if !a.sees("b2", StateDead) {
		t.Fatalf("a1 after b2 failed: %v", a.states())
	}

	// The same node comes back on the same address, joining no one: a1's
	// reconnect loop finds it.
	restarted := time.Now()
	b2 := startNode(t, "b2", func(c *Config) { c.NodeID = bID; c.BindAddr = bAddr })
	waitEvent(t, events, Joined, "b2")
	proctest.Eventually(t, 10*time.Second, func() error {
		if !a.sees("b2", StateAlive) || !b2.sees("a1", StateAlive) {
			return fmt.Errorf("a1 (%v) and the new b2 (%v) do not see each other alive", a.states(), b2.states())
		}
		return nil
	})
	t.Logf("restarted node rejoined after %v", time.Since(restarted).Round(10*time.Millisecond))
	if got := value(a.metrics.members.WithLabelValues("alive")); got != 2 {
		t.Errorf("alive gauge %v, want 2", got)
	}
	if got := value(a.metrics.members.WithLabelValues("left")); got != 1 {
		t.Errorf("left gauge %v, want 1", got)
	}
}

func self(n *node, name string) string {
	if n.cfg.NodeName == name {
		return " (this)"
	}
	return ""
}

// partition is a set of links cut between in-process nodes: nodes in
// different groups cannot talk.
type partition struct {
	mu    sync.Mutex
	group map[string]int // gossip address -> group
}

func (p *partition) blocked(self *string, remote string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.group[*self] != p.group[remote]
}

func (p *partition) set(addr string, g int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.group[addr] = g
}

func TestPartitionHeal(t *testing.T) {
	p := &partition{group: map[string]int{}}
	var nodes []*node
	for i, name := range []string{"a1", "b2", "c3"} {
		addr := new(string)
		n := startNode(t, name, func(c *Config) {
			c.Blocked = func(remote string) bool { return p.blocked(addr, remote) }
			if i > 0 {
				c.Join = []string{nodes[0].Addr()}
			}
		})
		p.mu.Lock()
		*addr = n.Addr()
		p.mu.Unlock()
		nodes = append(nodes, n)
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	proctest.Eventually(t, 10*time.Second, allAlive(a, b, c))

	cut := time.Now()
	p.set(c.Addr(), 1)
	proctest.Eventually(t, 15*time.Second, func() error {
		if !a.sees("c3", StateDead) || !b.sees("c3", StateDead) || !c.sees("a1", StateDead) || !c.sees("b2", StateDead) {
			return fmt.Errorf("the sides do not see each other dead: a1 %v, b2 %v, c3 %v", a.states(), b.states(), c.states())
		}
		return nil
	})
	t.Logf("partition seen after %v", time.Since(cut).Round(10*time.Millisecond))
	if !strings.Contains(c.console.String(), "cluster view: 1 member [c3 (this)] after") {
		t.Fatalf("c3 console: %q", lines(c.console, "cluster view"))
	}

	p.set(c.Addr(), 0)
	healed := time.Now()
	proctest.Eventually(t, 15*time.Second, allAlive(a, b, c)) // the two sides merge by themselves
	t.Logf("healed after %v", time.Since(healed).Round(10*time.Millisecond))
	if !strings.HasSuffix(c.console.String(), "] after a1 joined\n") && !strings.HasSuffix(c.console.String(), "] after b2 joined\n") {
		t.Fatalf("c3 console after heal: %q", lines(c.console, "cluster view"))
	}
}

func TestRefusedPeers(t *testing.T) {
	key1 := bytes.Repeat([]byte{1}, 32)
	key2 := bytes.Repeat([]byte{2}, 16)
	cases := []struct {
		name    string
		a, b    func(*Config)
		reason  string
		logText string
	}{
		{"other secret", func(c *Config) { c.SecretKey = key1 }, func(c *Config) { c.SecretKey = key2 }, "secret", "refused peer"},
		{"no secret", func(c *Config) { c.SecretKey = key1 }, func(c *Config) {}, "secret", "refused peer"},
		{"secret with a node that has none", func(c *Config) {}, func(c *Config) { c.SecretKey = key1 }, "secret", "refused peer"},
		{"other cluster", func(c *Config) {}, func(c *Config) { c.ClusterName = "other" }, "cluster", "refused peer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := startNode(t, "a1", tc.a)
			b := startNode(t, "b2", func(c *Config) { tc.b(c); c.Join = []string{a.Addr()} })
			proctest.Eventually(t, 10*time.Second, func() error {
				refused, failed := value(a.metrics.refused.WithLabelValues(tc.reason)), value(b.metrics.joinFailures)
				if refused == 0 || failed == 0 {
					return fmt.Errorf("a1 refused b2 %v times (reason %s), b2 failed to join %v times; want both > 0", refused, tc.reason, failed)
				}
				return nil
			})
			if !strings.Contains(a.logs.String(), tc.logText) || !strings.Contains(a.logs.String(), "reason="+tc.reason) {
				t.Fatalf("a1 log has no refusal line:\n%s", a.logs.String())
			}
			// A few more failed attempts, and still strangers.
			proctest.Eventually(t, 10*time.Second, func() error {
				if n := value(b.metrics.joinFailures); n < 3 {
					return fmt.Errorf("b2 failed to join %v times, want it to try again: 3 or more", n)
				}
				return nil
			})
			if len(a.Members()) != 1 || len(b.Members()) != 1 || b.Joined() {
				t.Fatalf("refused peer became a member: a1 %v, b2 %v joined=%v", a.states(), b.states(), b.Joined())
			}
		})
	}
}

func TestMetaChecks(t *testing.T) {
	a := startNode(t, "a1", nil)
	d := &delegate{c: a.Cluster}
	key, _ := json.Marshal(testKey())
	good := fmt.Sprintf(`{"id":%q,"name":"b2","proto":2,"cluster":"chatr","key":%s}`, nodeID("b2"), key)
	cases := []struct {
		name string
		node string
		meta string
		ok   bool
	}{
		{"good", nodeID("b2"), good, true},
		{"other cluster", nodeID("b2"), strings.Replace(good, `"chatr"`, `"other"`, 1), false},
		{"other protocol", nodeID("b2"), strings.Replace(good, `"proto":2`, `"proto":1`, 1), false},
		{"no identity key", nodeID("b2"), strings.Replace(good, `"key":`, `"nokey":`, 1), false},
		{"short identity key", nodeID("b2"), strings.Replace(good, string(key), `"AAAA"`, 1), false},
		{"id mismatch", nodeID("c3"), good, false},
		{"not json", nodeID("b2"), "\x00\x01garbage", false},
		{"empty", nodeID("b2"), "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := value(a.metrics.refused.WithLabelValues("meta"))
			n := &memberlist.Node{Name: tc.node, Addr: net.IPv4(127, 0, 0, 9), Port: 7946, Meta: []byte(tc.meta)}
			err := d.NotifyAlive(n)
			merr := d.NotifyMerge([]*memberlist.Node{n})
			if (err == nil) != tc.ok || (merr == nil) != tc.ok {
				t.Fatalf("NotifyAlive: %v, NotifyMerge: %v, want ok=%v", err, merr, tc.ok)
			}
			if after := value(a.metrics.refused.WithLabelValues("meta")); !tc.ok && after != before+2 {
				t.Fatalf("refused counter %v -> %v", before, after)
			}
		})
	}
	if !strings.Contains(a.logs.String(), "refused peer") {
		t.Fatalf("no refusal log line:\n%s", a.logs.String())
	}
}

func TestGarbage(t *testing.T) {
	for _, secret := range [][]byte{nil, bytes.Repeat([]byte{7}, 16)} {
		t.Run(fmt.Sprintf("secret=%v", secret != nil), func(t *testing.T) {
			mod := func(c *Config) { c.SecretKey = secret }
			a := startNode(t, "a1", mod)
			b := startNode(t, "b2", func(c *Config) { mod(c); c.Join = []string{a.Addr()} })
			proctest.Eventually(t, 10*time.Second, allAlive(a, b))

			rng := rand.New(rand.NewPCG(1, 2))
			random := func(n int) []byte {
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(rng.UintN(256))
				}
				return p
			}
			label := append([]byte{244, 5}, "chatr"...)
			payloads := [][]byte{
				{}, {0}, {244}, {244, 0}, {244, 200, 'x'}, label,
				append(append([]byte{}, label...), 6, 0xff, 0xff, 0xff, 0xff), // push/pull claiming a huge state
				append(append([]byte{}, label...), 10, 0, 0, 0, 40),           // "encrypted", short
				append(append([]byte{}, label...), 7, 200, 0, 1),              // compound with missing parts
				append(append([]byte{}, label...), 9, 0x80, 0x80),             // "compressed" junk
				append(append([]byte{}, label...), random(3000)...),
				random(1), random(64), random(1400), random(65000),
			}
			for i := 0; i < 50; i++ {
				p := append(append([]byte{}, label...), byte(rng.UintN(14)))
				payloads = append(payloads, append(p, random(int(rng.UintN(600)))...))
			}
			for _, p := range payloads {
				if u, err := net.Dial("udp", a.Addr()); err == nil {
					_, _ = u.Write(p)
					_ = u.Close()
				}
				conn, err := net.DialTimeout("tcp", a.Addr(), time.Second)
				if err != nil {
					t.Fatalf("dial gossip port: %v", err)
				}
				_, _ = conn.Write(p)
				if tc, ok := conn.(*net.TCPConn); ok && len(p)%2 == 0 {
					_ = tc.CloseWrite() // half-close: the node sees EOF mid-message
				}
				_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				_, _ = conn.Read(make([]byte, 64))
				_ = conn.Close()
			}
			// Still working: the pair stays whole and a newcomer joins.
			c := startNode(t, "c3", func(c *Config) { mod(c); c.Join = []string{a.Addr()} })
			proctest.Eventually(t, 10*time.Second, allAlive(a, b, c))
		})
	}
}

func TestStateExchangeAndSubscriber(t *testing.T) {
	type got struct{ id, state string }
	var mu sync.Mutex
	var merged []got
	a := startNode(t, "a1", func(c *Config) {
		c.LocalState = func() []byte { return []byte("vv-of-a1") }
		c.MergeState = func(id string, st []byte) {
			mu.Lock()
			defer mu.Unlock()
			merged = append(merged, got{id, string(st)})
		}
		c.PushPullInterval = 500 * time.Millisecond
	})
	slow, cancelSlow := a.Subscribe(1) // never read: must not stall a1
	defer cancelSlow()
	b := startNode(t, "b2", func(c *Config) {
		c.Join = []string{a.Addr()}
		c.LocalState = func() []byte { return []byte("vv-of-b2") }
	})
	_ = startNode(t, "c3", func(c *Config) { c.Join = []string{a.Addr()} })
	proctest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range merged {
			if g != (got{nodeID("b2"), "vv-of-b2"}) {
				t.Fatalf("merged %+v", g)
			}
		}
		if len(merged) == 0 {
			return fmt.Errorf("a1 has not merged b2's state")
		}
		return nil
	})
	proctest.Eventually(t, 10*time.Second, func() error {
		if k, dropped := a.aliveCount(), value(a.metrics.dropped); k != 3 || dropped < 1 {
			return fmt.Errorf("a1 lists %d alive members and dropped %v events, want 3 and at least 1", k, dropped)
		}
		return nil
	})
	if len(slow) != 1 {
		t.Fatalf("slow subscriber holds %d events, want 1", len(slow))
	}
	cancelSlow()
	cancelSlow()
	if _, ok := <-slow; !ok {
		t.Fatal("buffered event lost at cancel")
	}
	if _, ok := <-slow; ok {
		t.Fatal("channel not closed by cancel")
	}
	if !strings.Contains(a.logs.String(), "subscriber is full") {
		t.Fatalf("no drop log line")
	}
	_ = b
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no node id", func(c *Config) { c.NodeID = "" }, "node id"},
		{"short node id", func(c *Config) { c.NodeID = "abc" }, "node id"},
		{"upper node id", func(c *Config) { c.NodeID = "ABCDEF012345" }, "node id"},
		{"bad cluster", func(c *Config) { c.ClusterName = "a b" }, "cluster name"},
		{"long name", func(c *Config) { c.NodeName = strings.Repeat("x", 65) }, "node name"},
		{"bind without port", func(c *Config) { c.BindAddr = "127.0.0.1" }, "bind address"},
		{"bind host name", func(c *Config) { c.BindAddr = "example.com:7946" }, "bind address"},
		{"bind bad port", func(c *Config) { c.BindAddr = "127.0.0.1:99999" }, "bind address"},
		{"advertise name", func(c *Config) { c.Advertise = "example.com:7946" }, "advertise"},
		{"advertise no port", func(c *Config) { c.Advertise = "10.0.0.1:0" }, "advertise"},
		{"join empty", func(c *Config) { c.Join = []string{""} }, "join"},
		{"join dns empty", func(c *Config) { c.Join = []string{"dns:"} }, "join"},
		{"join bad port", func(c *Config) { c.Join = []string{"10.0.0.1:x"} }, "join"},
		{"secret size", func(c *Config) { c.SecretKey = []byte("short") }, "secret key"},
		{"meta too big", func(c *Config) { c.HTTPAddr = strings.Repeat("h", 600) }, "meta"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{NodeID: nodeID("a1"), BindAddr: "127.0.0.1:0", PublicKey: testKey()}
			tc.mod(&cfg)
			c, err := New(cfg)
			if err == nil {
				_ = c.Shutdown(context.Background())
				t.Fatal("New accepted a bad config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// The port is in use: a clear error, not a panic.
	a := startNode(t, "a1", nil)
	if _, err := New(Config{NodeID: nodeID("b2"), BindAddr: a.Addr(), PublicKey: testKey()}); err == nil || !strings.Contains(err.Error(), a.Addr()) {
		t.Fatalf("bind to a used port: %v", err)
	}
}

func TestRunAfterShutdown(t *testing.T) {
	c, err := New(Config{NodeID: nodeID("a1"), BindAddr: "127.0.0.1:0", PublicKey: testKey()})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Joined() {
		t.Fatal("a node without join or discovery should be joined at once")
	}
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); err != ErrClosed {
		t.Fatalf("Run after Shutdown: %v", err)
	}
	ch, cancel := c.Subscribe(1)
	cancel()
	if _, ok := <-ch; ok {
		t.Fatal("subscription after Shutdown is open")
	}
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1.
func freePort(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

func TestJoinRetriedUntilAnswered(t *testing.T) {
	addr := freePort(t)
	// b2 names a1 twice (as an address and by a name) and itself too, as a
	// shared join list does; a1 is not up yet.
	b := startNode(t, "b2", func(c *Config) {
		c.BindAddr = freePort(t)
		c.Join = []string{addr, "localhost" + addr[strings.LastIndexByte(addr, ':'):], c.BindAddr}
	})
	proctest.Eventually(t, 10*time.Second, func() error {
		if n := value(b.metrics.joinFailures); n < 3 {
			return fmt.Errorf("b2 failed to join %v times, want a few: 3 or more", n)
		}
		return nil
	})
	if b.Joined() {
		t.Fatal("b2 joined with no one to join")
	}
	a := startNode(t, "a1", func(c *Config) { c.BindAddr = addr })
	up := time.Now()
	proctest.Eventually(t, 10*time.Second, func() error {
		if !b.Joined() {
			return fmt.Errorf("b2 has not joined a1 since it is up")
		}
		return allAlive(a, b)()
	})
	t.Logf("joined %v after a1 came up", time.Since(up).Round(10*time.Millisecond))
	if strings.Contains(b.logs.String(), "addr="+b.Addr()) {
		t.Fatalf("b2 tried to join itself:\n%s", b.logs.String())
	}
}

// testKey is an identity key for a test member.
func testKey() []byte {
	pub, _, _ := ed25519.GenerateKey(nil)
	return pub
}
