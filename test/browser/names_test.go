package browser

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"chatr/internal/proctest"
)

// post sends a message over the HTTP API, as a program would.
func post(t *testing.T, srv *server, room, sender, text string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"sender": sender, "text": text})
	resp, err := http.Post(srv.url("/chatr/api/rooms/"+room+"/messages"), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("post as %q: %v", sender, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("post as %q: %s", sender, resp.Status)
	}
}

// isolation is how the page lays out one message and the presence list.
type isolation struct {
	Text string `json:"text"` // what the message's .text holds
	// dir and computed unicode-bidi of the sender, the text and each
	// presence entry.
	SenderDir, SenderBidi string
	TextDir, TextBidi     string
	Presence              []string
	// Where the time is, next to the sender (left to right page).
	SenderRight, TimeLeft float64
}

// A right-to-left name cannot move the time after it, and a bidi override
// cannot reorder a text: names and texts are isolated, overrides dropped
// (issue "Who is who": invoice_\u202efdp.exe must not pass for a PDF).
func TestNamesAndTextsAreIsolated(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, testTimeout)
	url := srv.url("/chatr/chatr.html?room=bidi")
	ada := openPage(t, browser, url, "Ada")
	openPage(t, browser, url, "محمد")
	ada.waitPresence("Ada", "محمد")

	post(t, srv, "bidi", "محمد", "invoice_\u202efdp.exe")
	ada.waitTexts("invoice_fdp.exe")
	var got isolation
	proctest.Eventually(t, waitTimeout, func() error {
		var err error
		got, err = eval[isolation](ada, `(() => {
			const m = document.querySelector('#messages .message');
			const who = m.querySelector('.sender'), body = m.querySelector('.text');
			const bidi = (e) => getComputedStyle(e).unicodeBidi;
			return {
				text: body.textContent,
				SenderDir: who.dir, SenderBidi: bidi(who),
				TextDir: body.dir, TextBidi: bidi(body),
				Presence: [...document.querySelectorAll('#presence li')].map((li) => li.dir + ' ' + bidi(li)),
				SenderRight: who.getBoundingClientRect().right,
				TimeLeft: m.querySelector('.time').getBoundingClientRect().left,
			};
		})()`)
		return err
	})
	if got.Text != "invoice_fdp.exe" {
		t.Errorf("the text shows %+q, want the override dropped", got.Text)
	}
	if got.SenderDir != "auto" || got.SenderBidi != "isolate" || got.TextDir != "auto" || got.TextBidi != "isolate" {
		t.Errorf("sender dir=%q unicode-bidi=%q, text dir=%q unicode-bidi=%q; want auto and isolate", got.SenderDir, got.SenderBidi, got.TextDir, got.TextBidi)
	}
	if strings.Join(got.Presence, ",") != "auto isolate,auto isolate" {
		t.Errorf("presence entries %q, want each dir=auto, unicode-bidi: isolate", got.Presence)
	}
	if got.TimeLeft < got.SenderRight {
		t.Errorf("the time starts at x=%v, left of the Arabic sender's end at %v: the name reordered it", got.TimeLeft, got.SenderRight)
	}
}

// A name that looks like that of someone in the room is refused at join:
// the page says why and waits for another name, which then joins.
func TestLookalikeNameIsRefused(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, testTimeout)
	url := srv.url("/chatr/chatr.html?room=who")
	ada := openPage(t, browser, url, "ada")

	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	imp := &page{t: t, ctx: ctx, name: "ADA", url: url}
	imp.do(chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "ADA"+kb.Enter))
	imp.waitStatus("choose another name")
	if e := imp.text("error"); !strings.Contains(e, `"ADA" looks like "ada", already here`) {
		t.Errorf("the page says %q, want why the name was refused", e)
	}
	ada.waitPresence("ada")
	if n, _ := eval[int](imp, `document.querySelectorAll('#presence li').length`); n != 0 {
		t.Errorf("the refused page lists %d people, want none: it joined nothing", n)
	}

	if _, err := eval[string](imp, `document.getElementById('name').value = ''`); err != nil {
		t.Fatalf("clear the name: %v", err)
	}
	imp.do(chromedp.SendKeys(chromedp.ID("name"), "Bob"+kb.Enter))
	imp.waitPresence("ada", "Bob")
	ada.waitPresence("ada", "Bob")
	imp.send("hi, Bob here")
	ada.waitTexts("hi, Bob here")
	if m, _ := ada.messages(); len(m) != 1 || m[0].Sender != "Bob" {
		t.Errorf("ada's page shows %s", fmt.Sprint(m))
	}
}
