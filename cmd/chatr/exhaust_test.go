package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"chatr/internal/client/clienttest"
	"chatr/internal/proctest"
)

// dialerFrom makes connections from the loopback address ip (127.0.0.2,
// ...: Linux routes all of 127.0.0.0/8 to lo), so one test is many clients.
func dialerFrom(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
}

// idleConns opens n connections from ip to addr, each asking GET /healthz
// and then kept alive, idle, until the test ends; at most 32 dial at once.
// It returns how many were answered with each status (0: no answer).
func idleConns(t *testing.T, addr, ip string, n int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	statuses := map[int]int{}
	var kept []net.Conn
	t.Cleanup(func() {
		for _, c := range kept {
			c.Close()
		}
	})
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range work {
				status := 0
				c, err := dialerFrom(ip).Dial("tcp", addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(2 * time.Second))
					fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: chatr\r\n\r\n")
					if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						status = resp.StatusCode
					}
				}
				mu.Lock()
				statuses[status]++
				if status == http.StatusOK {
					c.SetDeadline(time.Time{})
					kept = append(kept, c)
				} else if c != nil {
					c.Close()
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	return statuses
}

// Idle connections cannot exhaust a node. The node may open 1024 files
// (ulimit -n), so its default --max-conns is 768; three addresses open
// 2,000 kept-alive HTTP connections, twice its files, and keep them idle.
// Each address gets at most --max-conns-per-ip (200) of them, the others
// are answered 429 and closed, and a real client from a fourth address is
// served at once, over HTTP and WebSocket. Before every connection counted,
// the node ran out of files and stopped accepting anyone.
func TestIdleConnectionsDoNotExhaust(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("opens 2,000 connections")
	}
	const perIP = 200
	addr, admin := proctest.FreeAddr(t), proctest.FreeAddr(t)
	// The GETs of one address are limited too (--get-rate); lifted here,
	// so that the connections, not their requests, meet the limits.
	cmd := exec.Command("sh", "-c", `ulimit -n 1024 && exec "$0" "$@"`, chatrBin,
		"serve", "--http", addr, "--admin-http", admin, "--data", t.TempDir(), "--log-level", "warn", "--max-conns-per-ip", fmt.Sprint(perIP),
		"--get-rate", "1000000", "--get-burst", "1000000")
	cmd.Dir = t.TempDir()
	p := &proc{Process: proctest.Run(t, "chatr", cmd), t: t, addr: addr}
	p.waitReady()

	attackers := []struct {
		ip string
		n  int
	}{{"127.0.0.1", 1200}, {"127.0.0.2", 400}, {"127.0.0.3", 400}}
	var wg sync.WaitGroup
	results := make([]map[int]int, len(attackers))
	for i, a := range attackers {
		wg.Go(func() { results[i] = idleConns(t, addr, a.ip, a.n) })
	}
	wg.Wait()
	for i, a := range attackers {
		t.Logf("%s: %d connections answered %v", a.ip, a.n, results[i])
		if got := results[i][http.StatusOK]; got > perIP || got == 0 {
			t.Errorf("%s: %d of %d idle connections served, want 1 to %d", a.ip, got, a.n, perIP)
		}
		if results[i][http.StatusTooManyRequests] == 0 {
			t.Errorf("%s: none of %d connections was answered 429", a.ip, a.n)
		}
	}

	// A real client, from an address of its own, is served within a second.
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dialerFrom("127.0.0.9").DialContext}}
	start := time.Now()
	resp, err := fresh.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("a real client's GET /healthz after %v: %v", time.Since(start), err)
	}
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != 200 || took > time.Second {
		t.Fatalf("a real client's GET /healthz: %s after %v, want 200 within 1s", resp.Status, took)
	}
	start = time.Now()
	c := clienttest.DialRaw(t, "http://"+addr, &clienttest.RawOptions{HTTPClient: fresh})
	c.Hello("real")
	if took := time.Since(start); took > time.Second {
		t.Fatalf("a real client's WebSocket hello took %v, want within 1s", took)
	}

	// The node counted what it refused (its admin listener says).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/metrics", nil)
	resp, err = fresh.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `chatr_limit_refused_total{limit="max_conns_per_ip"}`) {
		t.Fatalf("/metrics has no chatr_limit_refused_total{limit=\"max_conns_per_ip\"}")
	}
}
