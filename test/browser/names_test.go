package browser

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

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
