// Package natstest runs real NATS JetStream clusters for tests: nats-server
// built from its Go module, every server on 127.0.0.1 (client and route
// ports chosen by the kernel), each with a file store in a temporary
// directory and sync_interval: always (an fsync after every write, as
// docs/nats.md recommends). Start runs the servers in the test process;
// StartProcesses runs each in a process of its own (the test binary again,
// see ServeIfChild), so that Stop is a kill -9.
package natstest

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds a server's start and the election of a meta leader.
const readyTimeout = 30 * time.Second

// Cluster is n nats-servers routed to each other, numbered from 0.
type Cluster struct {
	t    testing.TB
	name string

	mu      sync.Mutex
	servers []*server.Server // nil where stopped (in-process servers)
	procs   []*exec.Cmd      // nil where stopped (StartProcesses)
	opts    []*server.Options
	asProcs bool
}

// Start starts a cluster of n servers (n 1 runs one server with JetStream,
// no cluster) and waits until JetStream has a meta leader. They stop at
// the end of the test.
func Start(t testing.TB, n int) *Cluster { return start(t, n, false) }

// StartProcesses is Start with each server a process of its own; the test
// binary's TestMain must call ServeIfChild first.
func StartProcesses(t testing.TB, n int) *Cluster { return start(t, n, true) }

func start(t testing.TB, n int, procs bool) *Cluster {
	t.Helper()
	c := &Cluster{t: t, name: "chatrtest", servers: make([]*server.Server, n), procs: make([]*exec.Cmd, n),
		opts: make([]*server.Options, n), asProcs: procs}
	t.Cleanup(c.stopAll)
	ports := freePorts(t, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[n+i]))
	}
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       ports[i],
			NoSigs:     true,
			NoLog:      true,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			SyncAlways: true,
			// Small, fixed limits: tests store little.
			JetStreamMaxMemory: 64 << 20,
			JetStreamMaxStore:  1 << 30,
		}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: ports[n+i],
				Compression: server.CompressionOpts{Mode: server.CompressionOff}}
			o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		c.opts[i] = o
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.start(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.WaitReady()
	return c
}

// freePorts returns k ports free on 127.0.0.1 now.
func freePorts(t testing.TB, k int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range k {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func (c *Cluster) start(i int) error {
	if c.asProcs {
		return c.startProc(i)
	}
	o := *c.opts[i]
	s, err := server.NewServer(&o)
	if err != nil {
		return fmt.Errorf("natstest: server %d: %w", i, err)
	}
	go s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		return fmt.Errorf("natstest: server %d not ready for connections in %v", i, readyTimeout)
	}
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
	return nil
}

// WaitReady waits until every running server has JetStream current with a
// meta leader.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		ready := !c.asProcs || c.procsReady()
		c.mu.Lock()
		for _, s := range c.servers {
			if s != nil && len(c.servers) > 1 && !(s.JetStreamIsClustered() && s.JetStreamIsCurrent()) {
				ready = false
			}
		}
		c.mu.Unlock()
		if ready {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: JetStream has no meta leader after %v", readyTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URL is the client URL of every server, comma-separated, as --nats-url
// takes it.
func (c *Cluster) URL() string {
	var urls []string
	for i := range c.opts {
		urls = append(urls, c.ServerURL(i))
	}
	return strings.Join(urls, ",")
}

// ServerURL is the client URL of server i.
func (c *Cluster) ServerURL(i int) string {
	return "nats://127.0.0.1:" + strconv.Itoa(c.opts[i].Port)
}

// Stop stops server i (its store stays, for Restart): a shutdown of an
// in-process server, a kill -9 of a process.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s, p := c.servers[i], c.procs[i]
	c.servers[i], c.procs[i] = nil, nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
	if p != nil {
		p.Process.Kill()
		p.Wait()
	}
}

// Restart starts stopped server i again on its ports and store.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Cluster) stopAll() {
	for i := range c.servers {
		c.Stop(i)
	}
}
