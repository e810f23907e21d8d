package browser

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"chatr/internal/proctest"
)

// postText stores a message over the HTTP API, as another program would.
func postText(t *testing.T, srv *server, room, sender, text string) {
	t.Helper()
	body := fmt.Sprintf(`{"sender":%q,"text":%q}`, sender, text)
	resp, err := http.Post(srv.url("/chatr/api/rooms/"+room+"/messages"), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %q: %s", text, resp.Status)
	}
}

// A page away for longer than --replay-max allows resumes with the newest
// messages and a gap marker; the marker's button pages back through the
// HTTP API until every message shows, once and in order.
func TestGapIsFilledFromTheAPI(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t, "--replay-max", "5")
	browser := newBrowser(t, 60*time.Second)
	ada := openPage(t, browser, srv.url("/chatr/chatr.html?room=gap"), "Ada")
	postText(t, srv, "gap", "Bob", "old 1")
	postText(t, srv, "gap", "Bob", "old 2")
	ada.waitTexts("old 1", "old 2")

	// Keep the page away: its reconnects go to a path of the node that is
	// no WebSocket (404; a closed port would break the page's
	// Content-Security-Policy) until the test lets them through again.
	if _, err := eval[bool](ada, `window.__ws = WebSocket; window.WebSocket = class extends window.__ws {
		constructor(url, p) { super(String(url).replace('/chatr/ws', '/chatr/nowhere'), p); } }; true`); err != nil {
		t.Fatal(err)
	}
	srv.stop(t)
	ada.waitStatus("reconnecting")
	srv.start(t)
	want := []string{"old 1", "old 2"}
	for i := 1; i <= 12; i++ {
		text := fmt.Sprintf("missed %d", i)
		postText(t, srv, "gap", "Bob", text)
		want = append(want, text)
	}
	if _, err := eval[bool](ada, `window.WebSocket = window.__ws; true`); err != nil {
		t.Fatal(err)
	}
	ada.waitStatus("reconnected to ")

	// The replay brought the newest 5, after a gap marker.
	ada.waitTexts(append([]string{"old 1", "old 2"}, want[len(want)-5:]...)...)
	if n, _ := eval[int](ada, `document.querySelectorAll('#messages .gap').length`); n != 1 {
		t.Fatalf("%d gap markers, want 1", n)
	}

	ada.do(chromedp.Click(chromedp.CSS(".gap .load-earlier")))
	defer func() {
		if t.Failed() {
			t.Logf("#error says %q", ada.text("error"))
		}
	}()
	got := ada.waitTexts(want...)
	checkUnique(t, got)
	proctest.Eventually(t, waitTimeout, func() error {
		gaps, err := eval[int](ada, `document.querySelectorAll('#messages .gap').length`)
		if err != nil || gaps != 0 {
			return fmt.Errorf("the gap marker does not go once filled (%d left, err %v)", gaps, err)
		}
		return nil
	})
}

// A page whose cursor the node refuses (here the node restarts on a new
// data directory, so under another cursor key: what every page open during
// an upgrade to keyed cursors meets) joins again with the recent history,
// keeps what it shows, shows no error, and gets new messages.
func TestRefusedCursorJoinsWithHistory(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, 45*time.Second) // two server starts on top of the usual
	ada := openPage(t, browser, srv.url("/chatr/chatr.html?room=rekey"), "Ada")
	postText(t, srv, "rekey", "bob", "under the old key")
	ada.waitTexts("under the old key")

	srv.stop(t)
	srv.data = t.TempDir()
	srv.start(t)
	postText(t, srv, "rekey", "bob", "under the new key")
	ada.waitStatus("reconnected to ")
	ada.waitTexts("under the old key", "under the new key")
	if e := ada.text("error"); e != "" {
		t.Errorf("the page shows the error %q", e)
	}
	ada.send("after the rejoin")
	ada.waitTexts("under the old key", "under the new key", "after the rejoin")
}
