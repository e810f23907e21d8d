package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	_ "modernc.org/sqlite"

	"chatr/internal/client/clienttest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
	"chatr/internal/secret"
)

// These tests run the real binary, as a user or a supervisor would: start
// it, talk to it over HTTP and WebSocket, kill it, start it again.

const (
	testVersion  = "v0.0.0-servetest"
	readyTimeout = 20 * time.Second // start-up, even on a loaded 2-core machine
	exitTimeout  = 20 * time.Second
)

// chatrBin is the binary under test, built once by TestMain.
var chatrBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatr-serve-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	chatrBin, err = proctest.Build(dir, "-ldflags", "-X main.version="+testVersion)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running chatr process.
type proc struct {
	*proctest.Process
	t    *testing.T
	addr string // HTTP address, host:port
}

// startProc starts chatr with args and env (added to this process's env)
// in a fresh working directory, until the test ends (proctest.Run).
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(chatrBin, args...)
	cmd.Dir = t.TempDir() // the default ./chatr-data must never land in the source tree
	cmd.Env = append(os.Environ(), env...)
	return &proc{Process: proctest.Run(t, "chatr", cmd), t: t}
}

// startNode starts `chatr serve` on a free port with its data in dir and
// waits until it is ready; the admin listener is on any free port (its
// default, the port + 10, may be another test's). A port taken by someone
// else between the probe and the start is retried with another.
func startNode(t *testing.T, dir string, extra ...string) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := proctest.FreeAddr(t)
		p := startProc(t, nil, append([]string{"serve", "--http", addr, "--data", dir, "--log-level", "warn", "--admin-http", "127.0.0.1:0"}, extra...)...)
		p.addr = addr
		err := p.ready()
		if err == nil {
			return p
		}
		if attempt < 3 && strings.Contains(p.Stderr.String(), "address already in use") {
			continue
		}
		t.Fatal(err)
	}
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady() {
	p.t.Helper()
	if err := p.ready(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proc) ready() error {
	if err := p.WaitReady("http://"+p.addr, readyTimeout); err != nil {
		return fmt.Errorf("chatr %w; stderr:\n%s", err, p.Stderr.String())
	}
	return nil
}

// kill ends the process with SIGKILL: a crash, with no chance to flush.
func (p *proc) kill() {
	p.t.Helper()
	if err := p.Kill(); err != nil {
		p.t.Fatalf("kill -9: %v", err)
	}
}

// waitExit waits for the process to end and returns its exit code.
func (p *proc) waitExit() int {
	p.t.Helper()
	if !p.Wait(exitTimeout) {
		p.t.Fatalf("chatr still runs %v later; stderr:\n%s", exitTimeout, p.Stderr.String())
	}
	return p.Cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop() int {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM: %v", err)
	}
	return p.waitExit()
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// post sends a message over the HTTP API and returns the stored message.
func (p *proc) post(room, sender, text string) proto.MessageJSON {
	p.t.Helper()
	body, _ := json.Marshal(map[string]string{"sender": sender, "text": text})
	resp, err := httpClient.Post("http://"+p.addr+"/chatr/api/rooms/"+room+"/messages", "application/json", bytes.NewReader(body))
	if err != nil {
		p.t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		p.t.Fatalf("POST %q = %d %s, want 201", text, resp.StatusCode, b)
	}
	var m proto.MessageJSON
	if err := json.Unmarshal(b, &m); err != nil || m.ID == "" {
		p.t.Fatalf("POST answer %s: %v", b, err)
	}
	return m
}

// history returns the newest messages of room, oldest first.
func (p *proc) history(room string) []proto.MessageJSON {
	p.t.Helper()
	var page struct {
		Messages []proto.MessageJSON `json:"messages"`
		Cursor   string              `json:"cursor"`
	}
	p.getJSON("/chatr/api/rooms/"+room+"/messages?limit=1000", &page)
	return page.Messages
}

func (p *proc) getJSON(path string, v any) {
	p.t.Helper()
	resp, err := httpClient.Get("http://" + p.addr + path)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		p.t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

// dial opens a session, says hello and joins room with no history.
func (p *proc) dial(name, room string) *clienttest.Raw {
	p.t.Helper()
	c := clienttest.DialRaw(p.t, p.addr, nil)
	c.Hello(name)
	c.Send(map[string]any{"type": "join", "room": room, "history": 0})
	c.Until("joined")
	c.Until("synced")
	return c
}

type sent struct{ id, text string }

// TestKill9AfterAckLosesNothing is the promise of an ack: a crash of the
// node right after it loses nothing. Each round pipelines sends, kills the
// node with SIGKILL as soon as some acks are in while others are still in
// flight, restarts it on the same data directory and checks every acked
// message is there, and that numbering continued without reuse.
func TestKill9AfterAckLosesNothing(t *testing.T) {
	dir := t.TempDir()
	var acked []sent
	ids := map[string]string{} // id -> text, across all rounds

	record := func(id, text string) {
		t.Helper()
		if prev, ok := ids[id]; ok && prev != text {
			t.Fatalf("id %s given to %q and again to %q: a number was reused after a crash", id, prev, text)
		}
		ids[id] = text
		acked = append(acked, sent{id, text})
	}

	const rounds, perRound, killAfter = 5, 20, 10
	for round := 0; round < rounds; round++ {
		n := startNode(t, dir)
		c := n.dial("crasher", "lobby")
		texts := map[string]string{} // ref -> text
		for i := 0; i < perRound; i++ {
			ref := fmt.Sprintf("r%d-%d", round, i)
			texts[ref] = fmt.Sprintf("ws round %d message %d", round, i)
			c.Send(map[string]any{"type": "send", "room": "lobby", "text": texts[ref], "ref": ref})
		}
		got := 0
		for got < killAfter {
			f, err := c.Read()
			if err != nil {
				t.Fatalf("round %d: reading acks: %v", round, err)
			}
			switch f.Type {
			case "ack":
				record(f.ID, texts[f.Ref])
				got++
			case "error":
				t.Fatalf("round %d: %v", round, f)
			}
		}
		n.kill() // right after the ack: no drain, no flush
	}

	// The same over HTTP: 201 means stored.
	for round := 0; round < rounds; round++ {
		n := startNode(t, dir)
		text := fmt.Sprintf("http round %d", round)
		m := n.post("lobby", "poster", text)
		n.kill()
		record(m.ID, text)
	}

	n := startNode(t, dir)
	have := map[string]proto.MessageJSON{}
	for _, m := range n.history("lobby") {
		have[m.ID] = m
	}
	for _, a := range acked {
		m, ok := have[a.id]
		if !ok {
			t.Errorf("acked message %s (%q) is gone after kill -9", a.id, a.text)
		} else if m.Text != a.text {
			t.Errorf("acked message %s is %q, want %q", a.id, m.Text, a.text)
		}
	}
	// No gaps: the node's messages are numbered 1..N.
	if len(have) < len(acked) {
		t.Errorf("history holds %d messages, %d were acked", len(have), len(acked))
	}
	node := strings.SplitN(acked[0].id, "-", 2)[0]
	for i := 1; i <= len(have); i++ {
		if _, ok := have[fmt.Sprintf("%s-%d", node, i)]; !ok {
			t.Errorf("message %s-%d is missing: a gap in numbering (history %d messages)", node, i, len(have))
		}
	}
}

// TestRestartKeepsHistory: a clean stop (SIGTERM, exit 0) and a start on
// the same directory keep the node id, the history, and the numbering.
func TestRestartKeepsHistory(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	var before []proto.MessageJSON
	for i := 0; i < 3; i++ {
		before = append(before, n.post("lobby", "ada", fmt.Sprint("before restart ", i)))
	}
	n.post("dev", "ada", "in another room")
	if !strings.Contains(n.Stdout.String(), "http://"+n.addr+"/chatr/chatr.html") {
		t.Errorf("the start line does not say where to point a browser:\n%s", n.Stdout.String())
	}
	if code := n.stop(); code != 0 {
		t.Fatalf("SIGTERM: exit code %d, want 0; stderr:\n%s", code, n.Stderr.String())
	}

	n = startNode(t, dir)
	got := n.history("lobby")
	if len(got) != len(before) {
		t.Fatalf("history after restart = %+v, want %+v", got, before)
	}
	for i := range before {
		if got[i] != before[i] {
			t.Errorf("history[%d] after restart = %+v, want %+v", i, got[i], before[i])
		}
	}
	after := n.post("lobby", "ada", "after restart")
	if want := before[0].Node + "-5"; after.ID != want || after.Node != before[0].Node {
		t.Errorf("first message after restart is %s, want %s (same node id, numbering continues)", after.ID, want)
	}
	if after.Created <= before[len(before)-1].Created {
		t.Errorf("created went backwards across a restart: %s after %s", after.Created, before[len(before)-1].Created)
	}
	var rooms struct {
		Rooms []struct {
			Room     string `json:"room"`
			Messages int    `json:"messages"`
		} `json:"rooms"`
	}
	n.getJSON("/chatr/api/rooms", &rooms)
	counts := map[string]int{}
	for _, r := range rooms.Rooms {
		counts[r.Room] = r.Messages
	}
	if counts["lobby"] != 4 || counts["dev"] != 1 {
		t.Errorf("rooms after restart = %+v, want lobby 4, dev 1", rooms.Rooms)
	}
	if code := n.stop(); code != 0 {
		t.Errorf("second SIGTERM: exit code %d, want 0", code)
	}
}

// TestSIGTERMDrain: on SIGTERM, connected clients are told to go elsewhere
// with close code 1001, and the process exits 0.
func TestSIGTERMDrain(t *testing.T) {
	n := startNode(t, t.TempDir())
	clients := []*clienttest.Raw{n.dial("one", "lobby"), n.dial("two", "dev")}
	if err := n.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		for {
			_, err := c.Read()
			if err == nil {
				continue // presence and the like, sent before the drain
			}
			if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
				t.Errorf("client %d: connection ended with %v (status %d), want close 1001", i, err, got)
			}
			break
		}
	}
	if code := n.waitExit(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0; stderr:\n%s", code, n.Stderr.String())
	}
}

// TestCorruptDataDirRefused: a data directory that is not a chatr store
// stops the node at start with a non-zero exit and a message that names
// the problem, and nothing in it is changed.
func TestCorruptDataDirRefused(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		mention []string
	}{
		{"garbage chatr.db", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "chatr.db"), bytes.Repeat([]byte("not sqlite\x00\xff"), 1000))
		}, []string{"store", "chatr.db"}},
		{"sqlite database of another program", func(t *testing.T, dir string) {
			db, err := sql.Open("sqlite", filepath.Join(dir, "chatr.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`CREATE TABLE accounts(id INTEGER PRIMARY KEY, owner TEXT); INSERT INTO accounts(owner) VALUES('x')`); err != nil {
				t.Fatal(err)
			}
		}, []string{"store", "chatr.db"}},
		{"other files and no chatr.db", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "thesis.tex"), []byte(`\documentclass{article}`))
		}, []string{"thesis.tex", "chatr"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			before := snapshot(t, dir)
			p := startProc(t, nil, "serve", "--http", proctest.FreeAddr(t), "--data", dir, "--admin-http", "off")
			code := p.waitExit()
			if code == 0 || code == -1 {
				t.Fatalf("exit code %d, want a non-zero exit", code)
			}
			stderr := p.Stderr.String()
			for _, m := range append(tc.mention, dir) {
				if !strings.Contains(stderr, m) {
					t.Errorf("stderr does not mention %q:\n%s", m, stderr)
				}
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Errorf("stderr holds a stack trace, not a message:\n%s", stderr)
			}
			if after := snapshot(t, dir); !equalMaps(before, after) {
				t.Errorf("the refused data directory was changed:\nbefore %v\nafter  %v", keysAndSizes(before), keysAndSizes(after))
			}
		})
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot maps each file of dir to its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keysAndSizes(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s(%d bytes, %x...)", k, len(v), v[:min(len(v), 24)]))
	}
	return strings.Join(parts, " ")
}

// TestBadFlags: a mistake in a flag or variable stops chatr with exit code
// 2 and a message naming it, before anything is opened or bound.
func TestBadFlags(t *testing.T) {
	shortKey := filepath.Join(t.TempDir(), "key")
	writeFile(t, shortKey, []byte("12345"))
	tests := []struct {
		name    string
		env     []string
		args    []string
		mention []string
	}{
		{"http not an address", nil, []string{"serve", "--http", "nonsense"}, []string{"--http", "nonsense"}},
		{"http port out of range", nil, []string{"serve", "--http", "127.0.0.1:70000"}, []string{"--http"}},
		{"admin-http not an address", nil, []string{"serve", "--admin-http", "nonsense"}, []string{"--admin-http", "nonsense"}},
		{"allow-framing not an origin", nil, []string{"serve", "--allow-framing", "example.com"}, []string{"--allow-framing", "example.com"}},
		{"log format xml", nil, []string{"serve", "--log-format", "xml"}, []string{"--log-format", "xml"}},
		{"send rate zero", nil, []string{"serve", "--send-rate", "0"}, []string{"--send-rate"}},
		{"send rate not a number", nil, []string{"serve", "--send-rate", "fast"}, []string{"send-rate"}},
		{"unknown flag", nil, []string{"serve", "--bogus-flag"}, []string{"bogus-flag"}},
		{"unknown flag without serve", nil, []string{"--bogus-flag"}, []string{"bogus-flag"}},
		{"secret of 5 bytes", nil, []string{"serve", "--secret-file", shortKey}, []string{"--secret-file", "holds 5"}},
		{"secret file missing", nil, []string{"serve", "--secret-file", shortKey + ".missing"}, []string{"--secret-file"}},
		{"stray argument", nil, []string{"serve", "lobby"}, []string{"lobby"}},
		{"unknown command", nil, []string{"srve"}, []string{"srve"}},
		{"bad env value", []string{"CHATR_SEND_RATE=fast"}, []string{"serve"}, []string{"CHATR_SEND_RATE"}},
		{"bad env log format", []string{"CHATR_LOG_FORMAT=xml"}, []string{"serve"}, []string{"xml"}},
		{"auth secret of 5 bytes", nil, []string{"serve", "--auth-hmac-secret-file", shortKey}, []string{"--auth-hmac-secret-file", "holds 5 bytes"}},
		{"auth previous secret alone", nil, []string{"serve", "--auth-hmac-previous-secret-file", shortKey}, []string{"needs --auth-hmac-secret-file"}},
		{"api keys without auth", []string{"CHATR_API_KEY_FILE=" + shortKey}, []string{"serve"}, []string{"--api-key-file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := filepath.Join(t.TempDir(), "data")
			args := tc.args
			if args[0] == "serve" {
				args = append(append([]string(nil), args...), "--data", data)
			}
			p := startProc(t, tc.env, args...)
			if code := p.waitExit(); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			stderr := p.Stderr.String()
			for _, m := range tc.mention {
				if !strings.Contains(stderr, m) {
					t.Errorf("stderr does not mention %q:\n%s", m, stderr)
				}
			}
			if _, err := os.Stat(data); err == nil {
				t.Errorf("a refused start made the data directory %s", data)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args    []string
		mention []string
	}{
		{[]string{"--help"}, []string{"-http", "-data", "-log-format", "-send-rate", "CHATR_", "chatr version"}},
		{[]string{"serve", "--help"}, []string{"-http", "-data", "-log-format", "-secret-file", "-secret ", "-insecure-no-secret",
			"-auth-hmac-secret-file", "-auth-public-key-file", "-auth-jwks-url", "-api-key-file"}},
		{[]string{"serve", "-h"}, []string{"-http"}},
		{[]string{"help"}, []string{"serve", "version", "secret", "token"}},
		{[]string{"token", "--help"}, []string{"Usage: chatr token", "-hmac-secret-file", "-sub", "-rooms", "-read", "-ttl", "-alg"}},
		{[]string{"version"}, []string{"chatr", testVersion}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			p := startProc(t, nil, tc.args...)
			if code := p.waitExit(); code != 0 {
				t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.Stderr.String())
			}
			out := p.Stdout.String() + p.Stderr.String()
			for _, m := range tc.mention {
				if !strings.Contains(out, m) {
					t.Errorf("output does not mention %q:\n%s", m, out)
				}
			}
			if _, err := os.Stat(filepath.Join(p.Cmd.Dir, "chatr-data")); err == nil {
				t.Error("help or version made a data directory")
			}
		})
	}
}

// TestSecretCommand: chatr secret prints a fresh key, one that --secret
// takes, different each time.
func TestSecretCommand(t *testing.T) {
	var keys []string
	for range 2 {
		p := startProc(t, nil, "secret")
		if code := p.waitExit(); code != 0 {
			t.Fatalf("exit code %d; stderr:\n%s", code, p.Stderr.String())
		}
		key := strings.TrimSpace(p.Stdout.String())
		if _, err := secret.Parse(key); err != nil {
			t.Fatalf("chatr secret printed %q: %v", key, err)
		}
		keys = append(keys, key)
	}
	if keys[0] == keys[1] {
		t.Fatalf("chatr secret printed %s twice", keys[0])
	}
	p := startProc(t, nil, "secret", "extra")
	if code := p.waitExit(); code != 2 {
		t.Fatalf("chatr secret extra: exit code %d, want 2", code)
	}
}

// TestEnvironment: every flag can be given as CHATR_<FLAG>; a flag on the
// command line wins over the variable.
func TestEnvironment(t *testing.T) {
	t.Run("CHATR_HTTP and CHATR_DATA", func(t *testing.T) {
		addr, dir := proctest.FreeAddr(t), t.TempDir()
		p := startProc(t, []string{"CHATR_HTTP=" + addr, "CHATR_DATA=" + dir, "CHATR_ADMIN_HTTP=127.0.0.1:0"}, "serve")
		p.addr = addr
		p.waitReady()
		p.post("lobby", "env", "hello")
		if _, err := os.Stat(filepath.Join(dir, "chatr.db")); err != nil {
			t.Errorf("CHATR_DATA was not used: %v", err)
		}
		if code := p.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
	})
	t.Run("flag wins over variable", func(t *testing.T) {
		addr := proctest.FreeAddr(t)
		p := startProc(t, []string{"CHATR_HTTP=nonsense", "CHATR_LOG_FORMAT=json"}, "serve", "--http", addr, "--data", t.TempDir(), "--admin-http", "127.0.0.1:0")
		p.addr = addr
		p.waitReady()
		if code := p.stop(); code != 0 {
			t.Errorf("exit code %d", code)
		}
		// CHATR_LOG_FORMAT=json still applies: log lines are JSON objects.
		for _, line := range strings.Split(strings.TrimSpace(p.Stderr.String()), "\n") {
			if line != "" && !json.Valid([]byte(line)) {
				t.Errorf("with CHATR_LOG_FORMAT=json, log line is not JSON: %s", line)
			}
		}
	})
}
