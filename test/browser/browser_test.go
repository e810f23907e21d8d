// Package browser tests the chatr web client in headless Chromium against the
// real chatr binary, the way a person uses it: type a name, chat, reload, and
// live through a server restart.
package browser

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"chatr/internal/natstest"
	"chatr/internal/proctest"
)

const (
	chromiumPath = "/usr/bin/chromium"
	testTimeout  = 30 * time.Second // bounds each test, browser included
	waitTimeout  = 10 * time.Second // bounds each wait for the page
)

// chatrBin is the binary that TestMain built; buildErr says why there is none.
var (
	chatrBin string
	buildErr error
)

// engine is the engine the chatr processes run on: local (the default) or
// nats (go test ./test/browser -args -engine nats; make test runs the suite
// so too): every server of one test then shares one JetStream server, and
// the cluster flags of a test's nodes give way to it.
var engine = flag.String("engine", "local", "engine of the chatr processes: local or nats")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

// natsOf is the JetStream server of each running test, by name.
var natsOf sync.Map

// engineArgs turns a test's flags into those of the engine under test:
// with nats, flags that make a local cluster (--cluster-addr, --join) go,
// and the test's JetStream server comes in.
func engineArgs(t *testing.T, args []string) []string {
	if *engine != "nats" {
		if slices.Contains(args, "--cluster-addr") {
			args = proctest.WithSecret(args)
		}
		return args
	}
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--cluster-addr" || args[i] == "--join" {
			i++
			continue
		}
		out = append(out, args[i])
	}
	c, ok := natsOf.Load(t.Name())
	if !ok {
		c, _ = natsOf.LoadOrStore(t.Name(), natstest.Start(t, 1))
		t.Cleanup(func() { natsOf.Delete(t.Name()) })
	}
	return append(out, "--engine", "nats", "--nats-url", c.(*natstest.Cluster).URL(), "--nats-replicas", "1")
}

func runTests(m *testing.M) int {
	if _, err := os.Stat(chromiumPath); err != nil {
		// Each test skips or fails on its own; building would be wasted.
		return m.Run()
	}
	// CHATR_BIN runs the tests against a binary built elsewhere, e.g. a release.
	if chatrBin = os.Getenv("CHATR_BIN"); chatrBin != "" {
		return m.Run()
	}
	defer proctest.RemoveBinary()
	chatrBin, buildErr = proctest.Binary()
	return m.Run()
}

// requireBrowser skips the test when there is no Chromium, except in CI,
// where a missing browser must not pass silently.
func requireBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %s is missing: install the chromium package", chromiumPath)
		}
		t.Skipf("%s is missing: install the chromium package to run the browser tests", chromiumPath)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// ---- the chatr server as a subprocess ----

// server is one chatr process; restart keeps its address, data directory
// and flags.
type server struct {
	addr string
	data string
	args []string          // flags beyond --http and --data
	proc *proctest.Process // nil while stopped
}

// startServer runs chatr on a free port with a fresh data directory and the
// extra flags, and waits until it is ready. It stops when the test ends
// (proctest.Run), which logs its output if the test failed.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	s := &server{addr: proctest.FreeAddr(t), data: t.TempDir(), args: args}
	s.start(t)
	return s
}

func (s *server) url(path string) string { return "http://" + s.addr + path }

func (s *server) start(t *testing.T) {
	t.Helper()
	// The admin listener on any free port: its default, the port + 10, may
	// be another test's.
	args := append([]string{"serve", "--http", s.addr, "--data", s.data, "--admin-http", "127.0.0.1:0"}, engineArgs(t, s.args)...)
	cmd := exec.Command(chatrBin, args...)
	s.proc = proctest.Run(t, "chatr on "+s.addr, cmd)
	if err := s.proc.WaitReady(s.url(""), waitTimeout); err != nil {
		t.Fatalf("chatr on %s: %v", s.addr, err)
	}
}

// stop sends SIGTERM, which lets chatr drain, and kills it if it hangs.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if s.proc == nil {
		return
	}
	defer func() { s.proc = nil }()
	if !s.proc.Stop(10 * time.Second) {
		t.Errorf("chatr did not exit within 10s of SIGTERM")
	}
}

// ---- the browser ----

// newBrowser starts one headless Chromium for the test, with its own profile.
// The returned context ends with the test or after testTimeout.
func newBrowser(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 640),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	// The first Run starts the browser; pages are later tabs of it.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// page is one tab in a browser context of its own, so that each page has its
// own localStorage and so its own remembered name.
type page struct {
	t    *testing.T
	ctx  context.Context
	name string
	url  string
	csp  *cspWatch // the page's CSP violations (csp_test.go)
}

// openPage opens the chat page and joins as name.
func openPage(t *testing.T, browser context.Context, url, name string) *page {
	t.Helper()
	return openPageWith(t, browser, url, name, "")
}

// openPageWith is openPage that first installs script (unless empty) to
// run before the page loads. Every page is watched for violations of its
// Content-Security-Policy: one fails the test (watchCSP).
func openPageWith(t *testing.T, browser context.Context, url, name, script string) *page {
	t.Helper()
	p := newPage(t, browser, url, name, script)
	p.do(chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), name+kb.Enter))
	p.waitStatus("connected to ")
	return p
}

// newPage opens a tab with script (unless empty) and the CSP watch
// installed before any document loads, and navigates nowhere yet.
func newPage(t *testing.T, browser context.Context, url, name, script string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	for _, s := range []string{cspListenerJS, script} {
		if s == "" {
			continue
		}
		if _, err := chromedp.Call(ctx, cdppage.AddScriptToEvaluateOnNewDocument,
			cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: s}); err != nil {
			t.Fatalf("%s's page: install a script: %v", name, err)
		}
	}
	p := &page{t: t, ctx: ctx, name: name, url: url}
	p.csp = watchCSP(p, cancel)
	return p
}

// close closes the tab, which closes its WebSocket.
func (p *page) close() {
	p.t.Helper()
	if err := chromedp.Cancel(p.ctx); err != nil {
		p.t.Fatalf("close %s's page: %v", p.name, err)
	}
}

func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.t.Fatalf("%s's page: %v", p.name, err)
	}
}

// eval runs a JavaScript expression in the page and decodes its result.
func eval[T any](p *page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// send types text and sends it with Enter, as a person does.
func (p *page) send(text string) {
	p.t.Helper()
	p.do(chromedp.SendKeys(chromedp.ID("text"), text+kb.Enter))
}

// sendByButton types text and clicks the send button.
func (p *page) sendByButton(text string) {
	p.t.Helper()
	p.do(chromedp.SendKeys(chromedp.ID("text"), text), chromedp.Click(chromedp.ID("send")))
}

type shown struct {
	ID     string `json:"id"`
	Sender string `json:"sender"`
	Text   string `json:"text"`
	Time   string `json:"time"`
}

// messages returns the messages on screen, top to bottom.
func (p *page) messages() ([]shown, error) {
	return eval[[]shown](p, `[...document.querySelectorAll('#messages .message')].map(e => ({
		id: e.dataset.id || '',
		sender: e.querySelector('.sender')?.textContent ?? '',
		text: e.querySelector('.text')?.textContent ?? '',
		time: e.querySelector('.time')?.textContent ?? '',
	}))`)
}

func (p *page) text(id string) string {
	s, _ := eval[string](p, fmt.Sprintf(`document.getElementById(%q)?.textContent ?? ''`, id))
	return s
}

// waitTexts waits until the page shows exactly these message texts, in order,
// and returns them.
func (p *page) waitTexts(want ...string) []shown {
	p.t.Helper()
	var got []shown
	proctest.Eventually(p.t, waitTimeout, func() error {
		var err error
		if got, err = p.messages(); err != nil || !equalTexts(got, want) {
			return fmt.Errorf("%s's page does not show messages %q (it shows %+v, err %v)", p.name, want, got, err)
		}
		return nil
	})
	return got
}

func (p *page) waitStatus(prefix string) {
	p.t.Helper()
	proctest.Eventually(p.t, waitTimeout, func() error {
		if status := p.text("status"); !strings.HasPrefix(status, prefix) {
			return fmt.Errorf("%s's #status does not start with %q (it says %q)", p.name, prefix, status)
		}
		return nil
	})
}

func (p *page) waitPresence(want ...string) {
	p.t.Helper()
	proctest.Eventually(p.t, waitTimeout, func() error {
		got, err := eval[[]string](p, `[...document.querySelectorAll('#presence li')].map(e => e.textContent)`)
		if err != nil || strings.Join(got, "\n") != strings.Join(want, "\n") {
			return fmt.Errorf("%s's #presence does not list %q (it lists %q, err %v)", p.name, want, got, err)
		}
		return nil
	})
}

func equalTexts(got []shown, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Text != want[i] {
			return false
		}
	}
	return true
}

func checkUnique(t *testing.T, msgs []shown) {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range msgs {
		if m.ID == "" {
			t.Errorf("message %q has no data-id", m.Text)
		}
		if seen[m.ID] {
			t.Errorf("message %s is shown twice", m.ID)
		}
		seen[m.ID] = true
	}
}

// ---- tests ----

// Two people in separate browsers talk both ways and see the same thread.
func TestTwoPagesExchangeMessages(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, testTimeout)
	url := srv.url("/chatr/chatr.html?room=two")

	ada := openPage(t, browser, url, "Ada")
	bob := openPage(t, browser, url, "Bob")

	ada.send("hello from Ada")
	bob.waitTexts("hello from Ada")
	bob.sendByButton("hi Ada, Bob here")

	for _, p := range []*page{ada, bob} {
		got := p.waitTexts("hello from Ada", "hi Ada, Bob here")
		checkUnique(t, got)
		if got[0].Sender != "Ada" || got[1].Sender != "Bob" {
			t.Errorf("%s's page shows senders %q and %q, want Ada and Bob", p.name, got[0].Sender, got[1].Sender)
		}
		for _, m := range got {
			if m.Time == "" {
				t.Errorf("%s's page shows message %s without a time", p.name, m.ID)
			}
		}
	}
	// Both pages agree on the ids, so they show the same stored messages.
	a, _ := ada.messages()
	b, _ := bob.messages()
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("the pages differ:\nAda: %+v\nBob: %+v", a, b)
	}
	if out := os.Getenv("CHATR_SCREENSHOT"); out != "" {
		png, err := chromedp.Run(bob.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Text that looks like HTML is shown as text and never runs.
func TestMessageTextIsNotHTML(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, testTimeout)
	url := srv.url("/chatr/chatr.html?room=xss")

	const attack = `<img src=x onerror="window.__xss=1">`
	ada := openPage(t, browser, url, "Ada")
	bob := openPage(t, browser, url, "Bob")
	ada.send(attack)

	for _, p := range []*page{ada, bob} {
		p.waitTexts(attack)
		injected, err := eval[bool](p, `typeof window.__xss !== 'undefined' || document.querySelector('#messages img') !== null`)
		if err != nil {
			t.Fatalf("%s's page: %v", p.name, err)
		}
		if injected {
			t.Errorf("%s's page turned the message into HTML", p.name)
		}
	}
}

// A reload keeps the name and shows the history, each message once.
func TestReloadShowsHistory(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, testTimeout)
	ada := openPage(t, browser, srv.url("/chatr/chatr.html?room=reload"), "Ada")

	ada.send("first")
	ada.send("second")
	before := ada.waitTexts("first", "second")

	ada.do(chromedp.Reload())
	ada.waitStatus("connected to ")
	after := ada.waitTexts("first", "second")
	checkUnique(t, after)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("history after reload differs:\nbefore: %+v\nafter:  %+v", before, after)
	}
	if name, _ := eval[string](ada, `document.getElementById('name').value`); name != "Ada" {
		t.Errorf("#name after reload = %q, want the remembered name Ada", name)
	}
}

// Presence lists everyone in the room, once each, and drops who leaves.
func TestPresenceShowsBothNames(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, testTimeout)
	url := srv.url("/chatr/chatr.html?room=presence")

	ada := openPage(t, browser, url, "Ada")
	bob := openPage(t, browser, url, "Bob")
	ada.waitPresence("Ada", "Bob")
	bob.waitPresence("Ada", "Bob")

	bob.close()
	ada.waitPresence("Ada")
}

// After a server restart the page reconnects by itself, resumes from its
// cursor without showing anything twice, sends what was typed while the
// server was down, and can send again.
func TestReconnectAfterServerRestart(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, 45*time.Second) // two server starts on top of the usual
	ada := openPage(t, browser, srv.url("/chatr/chatr.html?room=restart"), "Ada")

	ada.send("before restart 1")
	ada.send("before restart 2")
	before := ada.waitTexts("before restart 1", "before restart 2")

	srv.stop(t)
	ada.waitStatus("reconnecting")
	ada.send("while down") // waits in the outbox until the page has resumed
	srv.start(t)
	ada.waitStatus("reconnected to ")

	// A replayed duplicate would come before synced, so before the new
	// message below; by the time it shows, any duplicate would show too.
	ada.send("after restart")
	want := []string{"before restart 1", "before restart 2", "while down", "after restart"}
	after := ada.waitTexts(want...)
	checkUnique(t, after)
	if fmt.Sprint(before) != fmt.Sprint(after[:2]) {
		t.Errorf("messages before the restart changed:\nbefore: %+v\nafter:  %+v", before, after[:2])
	}
	proctest.Eventually(t, waitTimeout, func() error {
		if n := ada.outboxLen(); n != 0 {
			return fmt.Errorf("the outbox does not empty (it holds %d sends)", n)
		}
		return nil
	})

	// The server stored each message once too.
	if stored := storedTexts(t, srv, "restart"); strings.Join(stored, "\n") != strings.Join(want, "\n") {
		t.Errorf("server stored %q, want %q", stored, want)
	}
}

// When the node of the page shuts down, the page moves to another node of
// welcome.nodes by itself and carries on from its cursor there.
func TestFailoverToAnotherNode(t *testing.T) {
	requireBrowser(t)
	// The page comes from alpha, so beta must allow alpha's origin; both are
	// on 127.0.0.1 and differ only by port.
	gossip := proctest.FreeAddr(t)
	alpha := startServer(t, "--node", "alpha", "--cluster-addr", gossip, "--allowed-origins", "127.0.0.1")
	beta := startServer(t, "--node", "beta", "--cluster-addr", proctest.FreeAddr(t), "--join", gossip, "--allowed-origins", "127.0.0.1")
	proctest.Eventually(t, waitTimeout, func() error {
		if alive := aliveMembers(t, alpha); len(alive) != 2 {
			return fmt.Errorf("alpha does not see 2 alive members (it sees %q)", alive)
		}
		return nil
	})

	browser := newBrowser(t, 45*time.Second) // two nodes to start and one to drain
	ada := openPage(t, browser, alpha.url("/chatr/chatr.html?room=failover"), "Ada")
	ada.waitStatus("connected to alpha")
	ada.send("on alpha")
	before := ada.waitTexts("on alpha")

	alpha.stop(t) // drains: closes the page's WebSocket with 1001
	ada.waitStatus("reconnected to beta")
	ada.send("on beta")
	after := ada.waitTexts("on alpha", "on beta")
	// The page, from alpha, may read beta's API, as it does to fill a gap
	// once it is on beta: its policy (connect-src) and beta (CORS) allow it.
	ctx, cancel := context.WithTimeout(ada.ctx, waitTimeout)
	defer cancel()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch('http://`+beta.addr+`/chatr/api/rooms/failover/messages?limit=10')
		.then((r) => r.json()).then((p) => p.messages.length)`, chromedp.EvalAwaitPromise))
	if err != nil || n != 2 {
		t.Errorf("alpha's page reads beta's history: %d messages, %v; want 2", n, err)
	}
	checkUnique(t, after)
	if fmt.Sprint(before) != fmt.Sprint(after[:1]) {
		t.Errorf("the message from before the failover changed: %+v, then %+v", before, after[:1])
	}
	if stored := storedTexts(t, beta, "failover"); strings.Join(stored, "\n") != "on alpha\non beta" {
		t.Errorf("beta stored %q, want both messages once", stored)
	}
}

// aliveMembers lists the ids of the members that srv sees alive.
func aliveMembers(t *testing.T, srv *server) []string {
	t.Helper()
	resp, err := http.Get(srv.url("/chatr/api/cluster"))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Members []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"members"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	var ids []string
	for _, m := range body.Members {
		if m.State == "alive" {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// storedTexts reads the texts of the room's history through the HTTP API.
func storedTexts(t *testing.T, srv *server, room string) []string {
	t.Helper()
	var texts []string
	for _, m := range storedMessages(t, srv, room) {
		texts = append(texts, m.Text)
	}
	return texts
}
