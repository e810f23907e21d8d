package natstest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// childEnv carries a server's options to the test binary run as a server.
const childEnv = "CHATR_NATSTEST_SERVER"

// ServerOptions is what a server process needs of server.Options.
type ServerOptions struct {
	Name        string
	Port        int
	ClusterName string
	ClusterPort int
	Routes      string
	StoreDir    string
	// HTTPPort, when not 0, serves the monitoring endpoints (/jsz, /varz)
	// on 127.0.0.1.
	HTTPPort int
	// UntilSignal makes Serve wait for SIGINT or SIGTERM, not for stdin.
	UntilSignal bool `json:"-"`
}

// ServeIfChild runs a nats-server and never returns when this process is
// one that StartProcesses started; otherwise it returns at once. Call it
// first in TestMain.
func ServeIfChild() {
	raw := os.Getenv(childEnv)
	if raw == "" {
		return
	}
	var co ServerOptions
	if err := json.Unmarshal([]byte(raw), &co); err != nil {
		fmt.Fprintln(os.Stderr, "natstest child:", err)
		os.Exit(2)
	}
	if err := Serve(co); err != nil {
		fmt.Fprintln(os.Stderr, "natstest child:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// Serve runs one nats-server with JetStream (sync_interval: always) on
// 127.0.0.1, prints "ready" once it takes clients, and returns when stdin
// closes or says anything (or, with UntilSignal, at SIGINT or SIGTERM).
func Serve(co ServerOptions) error {
	o := &server.Options{ServerName: co.Name, Host: "127.0.0.1", Port: co.Port, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: co.StoreDir, SyncAlways: true, JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30}
	if co.HTTPPort > 0 {
		o.HTTPHost, o.HTTPPort = "127.0.0.1", co.HTTPPort
	}
	if co.ClusterPort > 0 {
		o.Cluster = server.ClusterOpts{Name: co.ClusterName, Host: "127.0.0.1", Port: co.ClusterPort,
			Compression: server.CompressionOpts{Mode: server.CompressionOff}}
		o.Routes = server.RoutesFromStr(co.Routes)
	}
	s, err := server.NewServer(o)
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		return fmt.Errorf("not ready for clients in %v", readyTimeout)
	}
	fmt.Println("ready")
	if co.UntilSignal {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
	} else {
		// The parent holds stdin open; when it goes, so does this server.
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	s.Shutdown()
	return nil
}

// startProc starts server i as a process: the test binary, told by the
// environment to serve (ServeIfChild).
func (c *Cluster) startProc(i int) error {
	o := c.opts[i]
	co := ServerOptions{Name: o.ServerName, Port: o.Port, StoreDir: o.StoreDir}
	if o.Cluster.Port > 0 {
		var routes []string
		for _, u := range o.Routes {
			routes = append(routes, u.String())
		}
		co.ClusterName, co.ClusterPort, co.Routes = o.Cluster.Name, o.Cluster.Port, strings.Join(routes, ",")
	}
	b, _ := json.Marshal(co)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	_ = stdin // kept open for the life of the process
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("natstest: server %d: %w", i, err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("natstest: server %d: %w", i, err)
		}
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("natstest: server %d not ready in %v", i, readyTimeout)
	}
	c.mu.Lock()
	c.procs[i] = cmd
	c.mu.Unlock()
	return nil
}

// procsReady reports whether JetStream answers through every running
// server process (which it does once there is a meta leader).
func (c *Cluster) procsReady() bool {
	c.mu.Lock()
	var urls []string
	for i, p := range c.procs {
		if p != nil {
			urls = append(urls, c.ServerURL(i))
		}
	}
	c.mu.Unlock()
	for _, u := range urls {
		nc, err := nats.Connect(u, nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = js.AccountInfo(ctx)
		cancel()
		nc.Close()
		if err != nil {
			return false
		}
	}
	return true
}
