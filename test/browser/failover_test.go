package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"chatr/internal/proctest"
)

// recorderJS runs in each document of a recorded page before chatr.js: it
// wraps WebSocket so that the test sees every socket the client dials and
// every frame it sends and receives, with the time. The client works as
// without it.
const recorderJS = `(() => {
  if (window.__chatrWS) return;
  const Native = window.WebSocket;
  const rec = { log: [], sockets: [] };
  window.__chatrWS = rec;
  class Recorded extends Native {
    constructor(...args) {
      super(...args);
      const socket = rec.sockets.push(this) - 1;
      this.__socket = socket;
      rec.log.push({ t: Date.now(), socket, dir: 'dial', data: String(args[0]) });
      this.addEventListener('message', (ev) => rec.log.push({ t: Date.now(), socket, dir: 'in', data: String(ev.data) }));
      this.addEventListener('close', (ev) => rec.log.push({ t: Date.now(), socket, dir: 'close', code: ev.code }));
    }
    send(data) {
      rec.log.push({ t: Date.now(), socket: this.__socket, dir: 'out', data: String(data) });
      return super.send(data);
    }
  }
  window.WebSocket = Recorded;
})()`

// wsEvent is one entry of recorderJS's log; t is the browser's wall clock
// in Unix milliseconds.
type wsEvent struct {
	T      int64  `json:"t"`
	Socket int    `json:"socket"`
	Dir    string `json:"dir"` // dial, in, out, close
	Data   string `json:"data"`
	Code   int    `json:"code"`
}

// wsFrame holds the fields of a protocol frame that the test looks at.
type wsFrame struct {
	Type string `json:"type"`
	Room string `json:"room"`
	Text string `json:"text"`
	Ref  string `json:"ref"`
	ID   string `json:"id"`
	Node string `json:"node"`
}

func (e wsEvent) frame() wsFrame {
	var f wsFrame
	_ = json.Unmarshal([]byte(e.Data), &f)
	return f
}

// openRecordedPage is openPage with recorderJS installed before the page
// loads.
func openRecordedPage(t *testing.T, browser context.Context, url, name string) *page {
	t.Helper()
	return openPageWith(t, browser, url, name, recorderJS)
}

func (p *page) wsLog() []wsEvent {
	p.t.Helper()
	log, err := eval[[]wsEvent](p, `window.__chatrWS.log`)
	if err != nil {
		p.t.Fatalf("%s's page: read the WebSocket log: %v", p.name, err)
	}
	return log
}

// waitShows waits until the page shows exactly the texts of want, in any
// order, each once, and returns what it shows.
func (p *page) waitShows(want ...string) []shown {
	p.t.Helper()
	sorted := slices.Sorted(slices.Values(want))
	var got []shown
	proctest.Eventually(p.t, waitTimeout, func() error {
		var err error
		if got, err = p.messages(); err != nil || !slices.Equal(sortedTexts(got), sorted) {
			return fmt.Errorf("%s's page does not show each of %q once (it shows %+v, err %v)", p.name, want, got, err)
		}
		return nil
	})
	return got
}

func (p *page) outboxLen() int {
	n, _ := eval[int](p, `document.querySelectorAll('#outbox > *').length`)
	return n
}

func sortedTexts(msgs []shown) []string {
	texts := make([]string, len(msgs))
	for i, m := range msgs {
		texts[i] = m.Text
	}
	slices.Sort(texts)
	return texts
}

func ids(msgs []shown) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// storedMessages reads up to 1000 messages of room through the HTTP API.
func storedMessages(t *testing.T, srv *server, room string) []shown {
	t.Helper()
	resp, err := http.Get(srv.url("/chatr/api/rooms/" + room + "/messages?limit=1000"))
	if err != nil {
		t.Fatalf("GET messages: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Messages []shown `json:"messages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET messages: status %s: %v", resp.Status, err)
	}
	return body.Messages
}

// TestFailoverAfterKill9 is the browser test of client failover: page X is
// on node alpha, page Y on node beta, and alpha dies with SIGKILL. X must
// carry on on beta by itself and miss nothing: the messages Y sent during
// the outage show once, X's sends that alpha never acked are re-sent and
// stored once, X stays present for Y, and leaves Y's list when it goes.
func TestFailoverAfterKill9(t *testing.T) {
	requireBrowser(t)
	const (
		xName = "Xavier"
		yName = "Yvonne"
		room  = "lobby"
	)
	// No --allowed-origins: beta accepts WebSockets from pages of any member
	// it has seen, alpha's included.
	gossip := proctest.FreeAddr(t)
	alpha := startServer(t, "--node", "alpha", "--cluster-addr", gossip)
	beta := startServer(t, "--node", "beta", "--cluster-addr", proctest.FreeAddr(t), "--join", gossip)
	for _, s := range []*server{alpha, beta} {
		proctest.Eventually(t, waitTimeout, func() error {
			if alive := aliveMembers(t, s); len(alive) != 2 {
				return fmt.Errorf("%s does not see 2 alive members (it sees %q)", s.addr, alive)
			}
			return nil
		})
	}

	browser := newBrowser(t, 90*time.Second)
	x := openRecordedPage(t, browser, alpha.url("/chatr/chatr.html"), xName)
	y := openRecordedPage(t, browser, beta.url("/chatr/chatr.html"), yName)
	x.waitStatus("connected to alpha")
	y.waitStatus("connected to beta")
	x.waitPresence(xName, yName)
	y.waitPresence(xName, yName)

	// Both nodes hold the history from before the kill: with --ack-replicas
	// 0 an acked message that alpha had not yet copied would be lost with it.
	const (
		xBefore   = "x: before the kill"
		yBefore   = "y: before the kill"
		xInFlight = "x: sent to alpha, never acked"
		xTyped    = "x: typed while disconnected"
		xAfter    = "x: after the failover"
		yAfter    = "y: after the failover"
		yBarrier  = "y: after alpha was declared dead"
	)
	// Y's messages while alpha is frozen can reach X only by its resume on
	// beta; those right after the kill most likely too.
	yFrozen := []string{"y: while alpha is frozen 1", "y: while alpha is frozen 2"}
	yOutage := []string{"y: after the kill 1", "y: after the kill 2", "y: after the kill 3"}
	x.send(xBefore)
	y.waitShows(xBefore)
	y.send(yBefore)
	x.waitShows(xBefore, yBefore)

	// Text typed the moment X sees its socket close: a MutationObserver on
	// #status runs before any reconnect can, so the send waits in the outbox.
	armed, err := eval[bool](x, `(() => {
		const status = document.getElementById('status');
		const obs = new MutationObserver(() => {
			if (status.dataset.state === 'connected') return;
			obs.disconnect();
			document.getElementById('text').value = `+jsString(xTyped)+`;
			document.getElementById('composer').requestSubmit();
			window.__typed = { t: Date.now(), status: status.textContent,
				outbox: document.querySelectorAll('#outbox > *').length };
		});
		obs.observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
		return true;
	})()`)
	if err != nil || !armed {
		t.Fatalf("X's page: watch #status: %v", err)
	}

	// An unacked send at the moment of the kill, deterministically: alpha is
	// frozen, so the send reaches its socket but is never read, let alone
	// stored or acked. The freeze is kept short, so that it does not make
	// beta suspect alpha before the kill.
	if err := alpha.proc.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP alpha: %v", err)
	}
	t.Cleanup(func() {
		// A test that stops early must not leave alpha frozen: SIGTERM would
		// wait for it in vain.
		if alpha.proc != nil {
			_ = alpha.proc.Cmd.Process.Kill()
		}
	})
	if _, err := eval[bool](x, `(() => {
		document.getElementById('text').value = `+jsString(xInFlight)+`;
		document.getElementById('composer').requestSubmit();
		return true;
	})()`); err != nil {
		t.Fatalf("X's page: send to the frozen alpha: %v", err)
	}
	proctest.Eventually(t, waitTimeout, func() error {
		left, err := eval[bool](x, `(() => {
			const r = window.__chatrWS, s = r.sockets[r.sockets.length - 1];
			return r.log.some((e) => e.dir === 'out' && e.data.includes('"type":"send"') && e.data.includes(`+jsString(xInFlight)+`))
				&& s.bufferedAmount === 0;
		})()`)
		if err != nil || !left {
			return fmt.Errorf("X's send to the frozen alpha has not left the browser (err %v)", err)
		}
		return nil
	})
	if n := x.outboxLen(); n != 1 {
		t.Fatalf("X's outbox holds %d sends before the kill, want the 1 unacked one", n)
	}
	y.sendQuickly(yFrozen...)
	waitStored(t, beta, room, yFrozen...)

	killed := time.Now()
	if err := alpha.proc.Kill(); err != nil {
		t.Fatalf("kill -9 alpha: %v", err)
	}
	alpha.proc = nil

	// Y talks while X fails over.
	ySent := y.sendQuickly(yOutage...)

	x.waitStatus("reconnected to beta")
	type typedState struct {
		T      int64  `json:"t"`
		Status string `json:"status"`
		Outbox int    `json:"outbox"`
	}
	typed, err := eval[typedState](x, `window.__typed || {}`)
	if err != nil || typed.T == 0 {
		t.Fatalf("X's page did not type %q when its socket closed (err %v)", xTyped, err)
	}
	if typed.Outbox != 2 {
		t.Errorf("X's outbox held %d sends while disconnected (status %q), want 2 unacked", typed.Outbox, typed.Status)
	}

	// The messages are there: those from the outage once, X's unacked ones
	// once. Two more live messages make sure that a duplicate replayed
	// late would show too.
	outage := slices.Concat([]string{xBefore, yBefore, xInFlight, xTyped}, yFrozen, yOutage)
	x.waitShows(outage...)
	x.send(xAfter)
	y.send(yAfter)
	all := slices.Concat(outage, []string{xAfter, yAfter})
	xs := x.waitShows(all...)
	ys := y.waitShows(all...)
	checkUnique(t, xs)
	checkUnique(t, ys)
	if !slices.Equal(ids(xs), ids(ys)) {
		t.Errorf("X and Y show different messages or orders:\nX: %+v\nY: %+v", xs, ys)
	}
	stored := storedMessages(t, beta, room)
	if !slices.Equal(sortedTexts(stored), slices.Sorted(slices.Values(all))) {
		t.Errorf("beta stored %+v, want each of %q once", stored, all)
	}
	if !slices.Equal(ids(stored), ids(xs)) {
		t.Errorf("beta's history and X's page differ:\nbeta: %+v\nX:    %+v", stored, xs)
	}
	betaID := nodeID(t, beta)
	for _, m := range xs {
		// What X sent after alpha froze was stored by beta, not by alpha.
		if (m.Text == xInFlight || m.Text == xTyped || m.Text == xAfter) && !strings.HasPrefix(m.ID, betaID+"-") {
			t.Errorf("message %q has id %s, want one of beta (%s)", m.Text, m.ID, betaID)
		}
		if wantSender := map[bool]string{true: xName, false: yName}[strings.HasPrefix(m.Text, "x:")]; m.Sender != wantSender {
			t.Errorf("message %q shows sender %q, want %q", m.Text, m.Sender, wantSender)
		}
	}
	for _, p := range []*page{x, y} {
		proctest.Eventually(t, waitTimeout, func() error {
			if n := p.outboxLen(); n != 0 {
				return fmt.Errorf("%s's outbox does not empty (it holds %d sends)", p.name, n)
			}
			return nil
		})
	}

	// Neither node sent either page a message twice, even where the page
	// would have hidden it.
	for _, p := range []*page{x, y} {
		frames := map[string]int{}
		for _, e := range p.wsLog() {
			if f := e.frame(); e.Dir == "in" && f.Type == "message" {
				frames[f.ID]++
			}
		}
		for id, n := range frames {
			if n > 1 {
				t.Errorf("%s's page received message %s %d times", p.name, id, n)
			}
		}
	}

	// What X did on the wire: the in-flight send went to alpha, then again to
	// beta with the same ref; the typed one went once, to beta.
	log := x.wsLog()
	var sockets []string // URL per socket
	refs := map[string][]string{}
	sendSockets := map[string][]int{}
	var closedAt, welcomedAt, syncedAt int64
	betaSocket := -1
	replayed := map[string]bool{} // texts that came on beta's socket before its synced
	for _, e := range log {
		switch e.Dir {
		case "dial":
			sockets = append(sockets, e.Data)
		case "out":
			if f := e.frame(); f.Type == "send" {
				refs[f.Text] = append(refs[f.Text], f.Ref)
				sendSockets[f.Text] = append(sendSockets[f.Text], e.Socket)
			}
		case "close":
			if e.Socket == 0 && closedAt == 0 {
				closedAt = e.T
			}
		case "in":
			f := e.frame()
			if f.Type == "welcome" && e.Socket > 0 && strings.Contains(sockets[e.Socket], beta.addr) && welcomedAt == 0 {
				welcomedAt, betaSocket = e.T, e.Socket
			}
			if f.Type == "synced" && e.Socket == betaSocket && syncedAt == 0 {
				syncedAt = e.T
			}
			if f.Type == "message" && e.Socket == betaSocket && syncedAt == 0 {
				replayed[f.Text] = true
			}
		}
	}
	if r := refs[xInFlight]; len(r) != 2 || r[0] != r[1] || r[0] == "" {
		t.Errorf("X sent %q with refs %q, want twice with the same ref", xInFlight, r)
	} else if s := sendSockets[xInFlight]; s[0] != 0 || s[1] != betaSocket {
		t.Errorf("X sent %q on sockets %v, want on alpha's (0) then on beta's (%d)", xInFlight, s, betaSocket)
	}
	if s := sendSockets[xTyped]; len(s) != 1 || s[0] != betaSocket {
		t.Errorf("X sent %q on sockets %v, want once on beta's (%d)", xTyped, s, betaSocket)
	}
	if welcomedAt == 0 || syncedAt == 0 {
		t.Fatalf("X's WebSocket log shows no welcome and synced from beta: %+v", log)
	}
	for _, text := range yFrozen {
		if !replayed[text] {
			t.Errorf("X did not get %q in its replay on beta", text)
		}
	}
	if ySent >= welcomedAt {
		// Not an error: they then came live, and were checked all the same.
		t.Logf("Y's messages after the kill went out %d ms after X was back on beta", ySent-welcomedAt)
	}
	ms := func(at int64) int64 { return at - killed.UnixMilli() }
	t.Logf("failover_ms=%d (kill -9 of alpha to X's \"reconnected to beta\"); socket closed after %d ms, stream resumed (synced) after %d ms; X dialed %q",
		ms(welcomedAt), ms(closedAt), ms(syncedAt), sockets)

	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		log, _ := eval[[]wsEvent](y, `window.__chatrWS.log`)
		for _, e := range log {
			if f := e.frame(); f.Type == "joined" || f.Type == "presence" {
				t.Logf("Y's socket %d got %s", e.Socket, e.Data)
			}
		}
	})

	// Presence: X is on beta now, so Y keeps listing X, also once beta has
	// declared alpha dead and dropped alpha's people.
	proctest.Eventually(t, waitTimeout, func() error {
		if alive := aliveMembers(t, beta); len(alive) != 1 {
			return fmt.Errorf("beta does not declare alpha dead (alive: %q)", alive)
		}
		return nil
	})
	// A round trip through beta after the membership change, so that beta
	// has acted on it before presence is checked.
	y.send(yBarrier)
	final := slices.Concat(all, []string{yBarrier})
	checkUnique(t, x.waitShows(final...))
	checkUnique(t, y.waitShows(final...))
	y.waitPresence(xName, yName)
	x.waitPresence(xName, yName)
	var seen []string
	for _, e := range y.wsLog() {
		if f := e.frame(); f.Type == "presence" {
			seen = append(seen, e.Data)
		}
	}
	t.Logf("presence frames on Y so far (a left of %s on alpha means beta dropped alpha's people before X came back): %s", xName, strings.Join(seen, " "))

	// And when X goes, Y does not keep a ghost of it.
	x.close()
	y.waitPresence(yName)
}

// sendQuickly sends texts from the page in one go, through the composer as
// a person's sends, but without the time that typing takes. It returns the
// page's clock after the last one.
func (p *page) sendQuickly(texts ...string) int64 {
	p.t.Helper()
	at, err := eval[int64](p, `(() => {
		const text = document.getElementById('text'), form = document.getElementById('composer');
		for (const t of `+jsStrings(texts)+`) { text.value = t; form.requestSubmit(); }
		return Date.now();
	})()`)
	if err != nil {
		p.t.Fatalf("%s's page: send %q: %v", p.name, texts, err)
	}
	return at
}

// waitStored waits until srv holds each of texts in room.
func waitStored(t *testing.T, srv *server, room string, texts ...string) {
	t.Helper()
	proctest.Eventually(t, waitTimeout, func() error {
		stored := storedMessages(t, srv, room)
		have := map[string]bool{}
		for _, m := range stored {
			have[m.Text] = true
		}
		for _, text := range texts {
			if !have[text] {
				return fmt.Errorf("%s does not hold %q (it holds %+v)", srv.addr, text, stored)
			}
		}
		return nil
	})
}

// nodeID asks srv for its node id.
func nodeID(t *testing.T, srv *server) string {
	t.Helper()
	resp, err := http.Get(srv.url("/chatr/api/cluster"))
	if err != nil {
		t.Fatalf("GET cluster: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Self string `json:"self"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Self == "" {
		t.Fatalf("GET cluster: status %s: %v", resp.Status, err)
	}
	return body.Self
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// jsStrings writes ss as a JavaScript array literal.
func jsStrings(ss []string) string {
	b, _ := json.Marshal(ss)
	return string(b)
}
