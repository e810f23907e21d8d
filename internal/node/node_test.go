package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/client/clienttest"
	"chatr/internal/config"
	"chatr/internal/node"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

const timeout = 10 * time.Second

func noEnv(string) string { return "" }

type running struct {
	n       *node.Node
	console *proctest.Buffer // the node's console, read while it writes
	base    string           // http://host:port
	admin   string           // http://host:port of the admin listener, "" when off
	stop    func() error
}

// start runs a node on a loopback port with its data in dir until stop (or
// the end of the test).
func start(t *testing.T, dir string, args ...string) *running {
	t.Helper()
	cfg, err := config.Parse(append([]string{"--http", "127.0.0.1:0", "--data", dir, "--node", "n1"}, args...), noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	console := &proctest.Buffer{}
	n, err := node.New(cfg, slog.New(slog.DiscardHandler), console)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(3 * timeout):
				runErr = fmt.Errorf("Run did not return after its context ended")
			}
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	r := &running{n: n, console: console, base: "http://" + n.HTTPAddr(), stop: stop}
	if a := n.AdminAddr(); a != "" {
		r.admin = "http://" + a
	}
	proctest.Eventually(t, timeout, func() error {
		resp, err := http.Get(r.base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/healthz answered %s", resp.Status)
		}
		return nil
	})
	return r
}

// dial opens a session with the node, with no hello yet.
func (r *running) dial(t *testing.T) *clienttest.Raw {
	t.Helper()
	return clienttest.DialRaw(t, r.base, nil)
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func post(t *testing.T, base, room, sender, text string) string {
	t.Helper()
	body := fmt.Sprintf(`{"sender":%q,"text":%q}`, sender, text)
	resp, err := http.Post(base+"/chatr/api/rooms/"+room+"/messages", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 {
		t.Fatalf("POST: %d %s", resp.StatusCode, data)
	}
	var m struct{ ID string }
	json.Unmarshal(data, &m)
	return m.ID
}

func messageIDs(t *testing.T, base, room string) []string {
	t.Helper()
	status, data := get(t, base+"/chatr/api/rooms/"+room+"/messages?limit=1000")
	if status != 200 {
		t.Fatalf("GET messages: %d %s", status, data)
	}
	var page struct{ Messages []struct{ ID string } }
	json.Unmarshal(data, &page)
	var out []string
	for _, m := range page.Messages {
		out = append(out, m.ID)
	}
	return out
}

// A node serves chat; cancelling its context drains it: sessions are
// closed with 1001 and Run returns nil.
func TestNodeServesAndDrains(t *testing.T) {
	t.Parallel()
	r := start(t, t.TempDir())
	if line := r.console.String(); !strings.Contains(line, "serving http://"+r.n.HTTPAddr()+"/chatr/chatr.html") || !strings.Contains(line, r.n.ID()) {
		t.Errorf("start line %q does not say where to point a browser", line)
	}
	if !proto.ValidNodeID(r.n.ID()) {
		t.Errorf("node id %q", r.n.ID())
	}
	if status, _ := get(t, r.base+"/readyz"); status != 200 {
		t.Fatalf("/readyz %d", status)
	}
	// Metrics are on the admin listener, which the console names.
	if !strings.Contains(r.console.String(), "admin (metrics, profiles, cluster view) on "+r.admin+"\n") {
		t.Errorf("the console %q does not say where the admin listener is (%s)", r.console.String(), r.admin)
	}
	if status, data := get(t, r.admin+"/metrics"); status != 200 || !bytes.Contains(data, []byte("chatr_")) || !bytes.Contains(data, []byte("go_goroutines")) {
		t.Fatalf("/metrics on the admin listener %d", status)
	}
	if status, _ := get(t, r.base+"/metrics"); status != http.StatusNotFound {
		t.Errorf("/metrics on the public listener %d, want 404", status)
	}

	c := r.dial(t)
	c.Send(`{"type":"hello","name":"alice"}`)
	w, _ := c.Until("welcome")
	if w.Node != r.n.ID() {
		t.Fatalf("welcome node %q, want %q", w.Node, r.n.ID())
	}
	c.Send(`{"type":"join","room":"lobby"}`)
	c.Until("synced")
	c.Send(`{"type":"send","room":"lobby","text":"hi","ref":"1"}`)
	ack, _ := c.Until("ack")
	if ack.ID != r.n.ID()+"-1" {
		t.Fatalf("ack %+v", ack)
	}
	if ids := messageIDs(t, r.base, "lobby"); len(ids) != 1 || ids[0] != ack.ID {
		t.Fatalf("stored %v", ids)
	}

	idle := r.dial(t) // no hello yet
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	for _, cl := range []*clienttest.Raw{c, idle} {
		for {
			_, err := cl.Read()
			if err != nil {
				if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
					t.Fatalf("closed with %d (%v), want 1001", got, err)
				}
				break
			}
		}
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Run returned %v after a drain", err)
		}
	case <-time.After(3 * timeout):
		t.Fatal("Run did not return")
	}
	if _, err := net.DialTimeout("tcp", r.n.HTTPAddr(), time.Second); err == nil {
		t.Fatal("the HTTP listener is still open after Run returned")
	}
}

// welcome.nodes and the cluster view give an HTTP address a client can
// fail over to: the one the node listens on.
func TestAdvertisedHTTPAddress(t *testing.T) {
	t.Parallel()
	r := start(t, t.TempDir())
	c := r.dial(t)
	c.Send(`{"type":"hello","name":"alice"}`)
	w, _ := c.Until("welcome")
	if len(w.Nodes) != 1 || w.Nodes[0].ID != r.n.ID() {
		t.Fatalf("welcome nodes %+v", w.Nodes)
	}
	if w.Nodes[0].HTTP != r.n.HTTPAddr() {
		t.Errorf("welcome.nodes[0].http = %q, want the listening address %q", w.Nodes[0].HTTP, r.n.HTTPAddr())
	}
	_, data := get(t, r.base+"/chatr/api/cluster")
	var view struct {
		Self    string
		Members []struct{ ID, HTTP, State string }
	}
	json.Unmarshal(data, &view)
	if view.Self != r.n.ID() || len(view.Members) != 1 || view.Members[0].State != "alive" {
		t.Fatalf("cluster view %s", data)
	}
	if view.Members[0].HTTP != r.n.HTTPAddr() {
		t.Errorf("cluster members[0].http = %q, want the listening address %q", view.Members[0].HTTP, r.n.HTTPAddr())
	}
}

// A restart on the same data directory keeps the node id, the history and
// the numbering.
func TestRestartKeepsHistory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := start(t, dir)
	id := r.n.ID()
	var want []string
	for i := range 3 {
		want = append(want, post(t, r.base, "lobby", "bob", fmt.Sprint("before ", i)))
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	r = start(t, dir)
	if r.n.ID() != id {
		t.Fatalf("node id %q after a restart, was %q", r.n.ID(), id)
	}
	want = append(want, post(t, r.base, "lobby", "bob", "after"))
	if want[3] != id+"-4" {
		t.Fatalf("first id after the restart %q, want %s-4", want[3], id)
	}
	if got := messageIDs(t, r.base, "lobby"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("history after restart %v, want %v", got, want)
	}
}

// A single node's cursor resumes after a restart (its key is kept in the
// store), and a cursor of another single node is refused.
func TestCursorSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := start(t, dir)
	post(t, r.base, "lobby", "bob", "before")
	cursor := pageCursor(t, r.base, "?limit=10")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	r = start(t, dir)
	after := post(t, r.base, "lobby", "bob", "after")
	status, data := get(t, r.base+"/chatr/api/rooms/lobby/messages?since="+url.QueryEscape(cursor))
	if status != 200 {
		t.Fatalf("since the cursor from before the restart: %d %s", status, data)
	}
	var page struct{ Messages []struct{ ID string } }
	json.Unmarshal(data, &page)
	if len(page.Messages) != 1 || page.Messages[0].ID != after {
		t.Errorf("since the cursor from before the restart: %s, want %s alone", data, after)
	}

	other := start(t, t.TempDir())
	post(t, other.base, "lobby", "bob", "elsewhere")
	if status, data := get(t, r.base+"/chatr/api/rooms/lobby/messages?since="+url.QueryEscape(pageCursor(t, other.base, "?limit=10"))); status != 400 {
		t.Errorf("another node's cursor: %d %s, want 400", status, data)
	}
}

// pageCursor is the cursor of a page of lobby.
func pageCursor(t *testing.T, base, query string) string {
	t.Helper()
	status, data := get(t, base+"/chatr/api/rooms/lobby/messages"+query)
	var page struct{ Cursor string }
	if err := json.Unmarshal(data, &page); status != 200 || err != nil || page.Cursor == "" {
		t.Fatalf("GET messages%s: %d %s", query, status, data)
	}
	return page.Cursor
}

// Acked WebSocket sends survive a drain that happens while they are
// being sent.
func TestDrainKeepsAckedMessages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := start(t, dir, "--send-rate", "100000", "--send-burst", "100000")
	c := r.dial(t)
	c.Send(`{"type":"hello","name":"alice"}`)
	c.Until("welcome")
	c.Send(`{"type":"join","room":"lobby"}`)
	c.Until("synced")
	for i := range 50 {
		c.Send(fmt.Sprintf(`{"type":"send","room":"lobby","text":"m%d","ref":"r%d"}`, i, i))
	}
	var acked []string
	for len(acked) < 5 {
		ack, _ := c.Until("ack")
		acked = append(acked, ack.ID)
	}
	go r.stop()
	for {
		f, err := c.Read()
		if err != nil {
			break
		}
		if f.Type == "ack" {
			acked = append(acked, f.ID)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	r = start(t, dir)
	stored := map[string]bool{}
	for _, id := range messageIDs(t, r.base, "lobby") {
		stored[id] = true
	}
	for _, id := range acked {
		if !stored[id] {
			t.Errorf("acked message %s lost in the drain", id)
		}
	}
}

// A data directory that is not a chatr store is refused, and left as it was.
func TestBadDataDirRefused(t *testing.T) {
	t.Parallel()
	parse := func(dir string) config.Config {
		cfg, err := config.Parse([]string{"--http", "127.0.0.1:0", "--data", dir}, noEnv, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o600)
	if _, err := node.New(parse(foreign), slog.New(slog.DiscardHandler), io.Discard); err == nil {
		t.Fatal("a directory of other files was taken as a data directory")
	}

	corrupt := t.TempDir()
	junk := bytes.Repeat([]byte("not sqlite "), 500)
	path := filepath.Join(corrupt, "chatr.db")
	os.WriteFile(path, junk, 0o600)
	_, err := node.New(parse(corrupt), slog.New(slog.DiscardHandler), io.Discard)
	if err == nil {
		t.Fatal("a corrupt chatr.db was opened")
	}
	if !strings.Contains(err.Error(), corrupt) {
		t.Errorf("error %q does not name the directory", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, junk) {
		t.Fatal("the refused chatr.db was modified")
	}
}

// A busy admin port fails New with an error naming --admin-http, and
// leaves the data directory and the HTTP port free; --admin-http off
// binds nothing, and says so.
func TestBusyAdminPort(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := httpLn.Addr().String()
	httpLn.Close()
	dir := t.TempDir()
	cfg, err := config.Parse([]string{"--http", httpAddr, "--admin-http", ln.Addr().String(), "--data", dir}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, err = node.New(cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--admin-http") || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("busy admin port: %v, want an error naming --admin-http and %s", err, ln.Addr())
	}
	// The store and the HTTP listener were closed: both open again.
	r := start(t, dir, "--http", httpAddr, "--admin-http", "off")
	if r.admin != "" || !strings.Contains(r.console.String(), "admin listener off") {
		t.Errorf("--admin-http off: admin on %q, console %q", r.admin, r.console.String())
	}
}

// A busy HTTP port fails New with an error naming --http, and leaves the
// data directory usable.
func TestBusyPort(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	cfg, err := config.Parse([]string{"--http", ln.Addr().String(), "--data", dir}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, err = node.New(cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--http") {
		t.Fatalf("busy port: %v, want an error naming --http", err)
	}
	// The store was closed: the directory opens again.
	start(t, dir)
}
