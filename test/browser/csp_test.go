package browser

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"chatr/internal/proctest"
)

// cspListenerJS runs in each document before its own scripts: it writes
// every securitypolicyviolation event of the page to the console, where
// watchCSP reads it next to the browser's own "Refused to ..." lines.
const cspListenerJS = `document.addEventListener('securitypolicyviolation', (e) => {
  console.error('securitypolicyviolation: ' + e.effectiveDirective + ' blocked ' + (e.blockedURI || 'inline') +
    ' at ' + e.sourceFile + ':' + e.lineNumber);
}, true);`

// cspWatch collects the CSP violations of one page from its console: the
// browser's log entries ("... violates the following Content Security
// Policy directive ...") and cspListenerJS's lines.
type cspWatch struct {
	mu       sync.Mutex
	seen     []string
	expected bool // the test provokes violations on purpose
	done     chan struct{}
}

// isViolation reports whether a console message tells of a CSP violation.
func isViolation(m chromedp.ConsoleMessage) bool {
	return strings.Contains(m.Text, "Content Security Policy") || strings.HasPrefix(m.Text, "securitypolicyviolation: ")
}

// watchCSP reads p's console until the page closes. When the test ends,
// any violation fails it (unless expectViolations), before the page is
// cancelled; then the reader is waited for.
func watchCSP(p *page, cancel context.CancelFunc) *cspWatch {
	w := &cspWatch{done: make(chan struct{})}
	messages := chromedp.Console(p.ctx) // subscribed now, before any navigation
	go func() {
		defer close(w.done)
		for m, err := range messages {
			if err != nil {
				return // the page closed
			}
			if isViolation(m) {
				w.mu.Lock()
				w.seen = append(w.seen, m.Text)
				w.mu.Unlock()
			}
		}
	}()
	p.t.Cleanup(func() {
		if v := w.violations(); len(v) > 0 && !w.isExpected() {
			p.t.Errorf("%s's page broke its Content-Security-Policy %d times:\n%s", p.name, len(v), strings.Join(v, "\n"))
		}
		cancel()
		<-w.done
	})
	return w
}

func (w *cspWatch) violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen...)
}

func (w *cspWatch) isExpected() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.expected
}

// expectViolations lets the page break its policy without failing the test.
func (w *cspWatch) expectViolations() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expected = true
}

// The page is served with its Content-Security-Policy and the other
// security headers, and works under them: a person joins and chats, and
// the console shows no violation (watchCSP fails the test on one, for
// every page of every browser test).
func TestPageWorksUnderItsPolicy(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, testTimeout)
	url := srv.url("/chatr/chatr.html?room=csp")
	ada := newPage(t, browser, url, "Ada", "")
	resp, err := chromedp.RunResponse(ada.ctx, chromedp.Navigate(url))
	if err != nil {
		t.Fatalf("load the page: %v", err)
	}
	const policy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
		"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
	for name, want := range map[string]string{
		"content-security-policy": policy,
		"x-content-type-options":  "nosniff",
		"referrer-policy":         "no-referrer",
	} {
		if got := header(resp.Headers, name); got != want {
			t.Errorf("the page's %s is %q, want %q", name, got, want)
		}
	}
	ada.do(chromedp.WaitVisible(chromedp.ID("name")), chromedp.SendKeys(chromedp.ID("name"), "Ada"+kb.Enter))
	ada.waitStatus("connected to ")
	// The stylesheet applied: chatr.css makes the layout a grid.
	if display, _ := eval[string](ada, `getComputedStyle(document.querySelector('.layout')).display`); display != "grid" {
		t.Errorf("chatr.css did not apply under the policy (.layout display %q)", display)
	}
	bob := openPage(t, browser, url, "Bob")
	ada.send("hello under a policy")
	bob.waitTexts("hello under a policy")
}

// header is the value of the response header name, whatever its case.
func header(h map[string]any, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

// The policy is enforced, and a violation is seen: an inline script that
// the page would run without the policy does not run, and watchCSP sees
// the refusal.
func TestPolicyBlocksInlineScript(t *testing.T) {
	requireBrowser(t)
	srv := startServer(t)
	browser := newBrowser(t, testTimeout)
	ada := openPage(t, browser, srv.url("/chatr/chatr.html?room=inline"), "Ada")
	ada.csp.expectViolations()
	ran, err := eval[bool](ada, `(() => {
		const s = document.createElement('script');
		s.textContent = 'window.__inlineRan = true';
		document.body.append(s);
		return window.__inlineRan === true;
	})()`)
	if err != nil {
		t.Fatal(err)
	}
	if ran {
		t.Errorf("an inline script ran under the page's policy")
	}
	t.Logf("the console showed: %q", waitViolations(t, ada, 2)) // the browser's line and the page's event
}

// waitViolations waits until p's console showed at least n violations.
func waitViolations(t *testing.T, p *page, n int) []string {
	t.Helper()
	var v []string
	proctest.Eventually(t, waitTimeout, func() error {
		if v = p.csp.violations(); len(v) < n {
			return fmt.Errorf("%s's console shows %d CSP violations, want %d: %q", p.name, len(v), n, v)
		}
		return nil
	})
	return v
}
