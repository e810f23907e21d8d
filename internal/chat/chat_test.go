package chat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/client/clienttest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// session is one chat.Run in the background.
type session struct {
	out, errOut proctest.Buffer
	done        chan error
}

func start(t *testing.T, cfg Config, in io.Reader) *session {
	t.Helper()
	s := &session{done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { s.done <- Run(ctx, cfg, in, &s.out, &s.errOut) }()
	return s
}

// wait returns what Run returned, failing the test if it runs too long.
func (s *session) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("chat did not end; stderr:\n%s", s.errOut.String())
		return nil
	}
}

// joinedPipes is a condition for proctest.Eventually: stderr, bob's, says
// he joined room pipes.
func joinedPipes(stderr fmt.Stringer) func() error {
	return func() error {
		if !strings.Contains(stderr.String(), "* joined pipes") {
			return fmt.Errorf("bob has not joined pipes: his stderr says %q", stderr.String())
		}
		return nil
	}
}

// printedLines is a condition for proctest.Eventually: out, bob's, holds n
// lines or more.
func printedLines(out fmt.Stringer, n int) func() error {
	return func() error {
		if got := strings.Count(out.String(), "\n"); got < n {
			return fmt.Errorf("bob printed %d of %d lines: %q", got, n, out.String())
		}
		return nil
	}
}

// messageLines returns the "sender: text" parts of the message lines of s,
// checking the HH:MM:SS before them.
func messageLines(t *testing.T, out string) []string {
	t.Helper()
	re := regexp.MustCompile(`^\d\d:\d\d:\d\d (.*)$`)
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		m := re.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("output line %q is not HH:MM:SS sender: text", l)
		}
		lines = append(lines, m[1])
	}
	return lines
}

func pipeConfig(url, name string) Config {
	return Config{URL: url, Name: name, Room: "pipes", History: 0, AckTimeout: 5 * time.Second}
}

// runPipePair has bob listen while ann pipes lines, and checks that bob
// prints exactly those lines and that both exit cleanly.
func runPipePair(t *testing.T, url string) {
	bobIn, bobInput := io.Pipe()
	bob := start(t, pipeConfig(url, "bob"), bobIn)
	proctest.Eventually(t, 10*time.Second, joinedPipes(&bob.errOut))

	lines := []string{"hello", "  spaced out  ", "ünïcode ✓", "/not a command in a pipe"}
	ann := start(t, pipeConfig(url, "ann"), strings.NewReader(strings.Join(lines, "\n")+"\n\n"))
	if err := ann.wait(t); err != nil {
		t.Fatalf("ann: %v\nstderr:\n%s", err, ann.errOut.String())
	}
	var want []string
	for _, l := range lines {
		want = append(want, "ann: "+l)
	}
	proctest.Eventually(t, 10*time.Second, printedLines(&bob.out, len(want)))
	bobInput.Close()
	if err := bob.wait(t); err != nil {
		t.Fatalf("bob: %v\nstderr:\n%s", err, bob.errOut.String())
	}
	if got := messageLines(t, bob.out.String()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob printed %q, want %q", got, want)
	}
	if !strings.Contains(bob.errOut.String(), "* ann joined") {
		t.Errorf("bob did not show ann joining:\n%s", bob.errOut.String())
	}
}

func TestPipeAgainstFake(t *testing.T) {
	runPipePair(t, clienttest.NewFakeNode(t).URL)
}

// TestResumeAfterDrop drops every connection halfway: both sides
// reconnect, and bob still prints each of ann's lines once.
func TestResumeAfterDrop(t *testing.T) {
	node := clienttest.NewFakeNode(t)
	bobIn, bobInput := io.Pipe()
	bob := start(t, pipeConfig(node.URL, "bob"), bobIn)
	proctest.Eventually(t, 10*time.Second, joinedPipes(&bob.errOut))
	annIn, annInput := io.Pipe()
	ann := start(t, pipeConfig(node.URL, "ann"), annIn)
	var want []string
	for i := range 20 {
		if i == 10 {
			proctest.Eventually(t, 10*time.Second, func() error {
				if n := strings.Count(bob.out.String(), "\n"); n != 10 {
					return fmt.Errorf("bob printed %d lines, want the first 10: %q", n, bob.out.String())
				}
				return nil
			})
			node.DropAll()
		}
		fmt.Fprintf(annInput, "line %d\n", i)
		want = append(want, fmt.Sprintf("ann: line %d", i))
	}
	annInput.Close()
	if err := ann.wait(t); err != nil {
		t.Fatalf("ann: %v\nstderr:\n%s", err, ann.errOut.String())
	}
	proctest.Eventually(t, 10*time.Second, printedLines(&bob.out, len(want)))
	bobInput.Close()
	if err := bob.wait(t); err != nil {
		t.Fatalf("bob: %v", err)
	}
	if got := messageLines(t, bob.out.String()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob printed %q, want %q", got, want)
	}
	if !strings.Contains(bob.errOut.String(), "reconnecting") {
		t.Errorf("bob never reconnected:\n%s", bob.errOut.String())
	}
}

// TestHistoryDump: with no input, chat prints the history and exits.
func TestHistoryDump(t *testing.T) {
	node := clienttest.NewFakeNode(t)
	ann := start(t, pipeConfig(node.URL, "ann"), strings.NewReader("one\ntwo\n"))
	if err := ann.wait(t); err != nil {
		t.Fatal(err)
	}
	cfg := pipeConfig(node.URL, "cat")
	cfg.History = 50
	dump := start(t, cfg, strings.NewReader(""))
	if err := dump.wait(t); err != nil {
		t.Fatal(err)
	}
	if got := messageLines(t, dump.out.String()); fmt.Sprint(got) != "[ann: one ann: two]" {
		t.Fatalf("history %q", got)
	}
}

func TestTooLongLineFails(t *testing.T) {
	node := clienttest.NewFakeNode(t)
	ann := start(t, pipeConfig(node.URL, "ann"), strings.NewReader("ok\n"+strings.Repeat("x", 5000)+"\n"))
	err := ann.wait(t)
	if err == nil || !strings.Contains(ann.errOut.String(), "line 2 is 5000 bytes") {
		t.Fatalf("err %v, stderr:\n%s", err, ann.errOut.String())
	}
	if msgs := node.Messages("pipes"); len(msgs) != 1 || msgs[0].Text != "ok" {
		t.Fatalf("stored %+v, want only the good line", msgs)
	}
}

func TestUnreachableNode(t *testing.T) {
	err := Run(context.Background(), pipeConfig("ws://127.0.0.1:1/chatr/ws", "ann"), strings.NewReader("x\n"), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v, want a dial error naming the node", err)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Name = "" }, "--name"},
		{func(c *Config) { c.Name = "a<b" }, "--name"},
		{func(c *Config) { c.Room = "Lobby" }, "--room"},
		{func(c *Config) { c.URL = "ftp://x" }, "--url"},
		{func(c *Config) { c.History = -1 }, "--history"},
		{func(c *Config) { c.AckTimeout = 0 }, "--ack-timeout"},
	}
	for _, c := range cases {
		cfg := pipeConfig("http://127.0.0.1:5080", "ann")
		if err := cfg.Validate(); err != nil {
			t.Fatalf("good config: %v", err)
		}
		c.change(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one about %s", err, c.want)
		}
	}
}

func TestNodeURL(t *testing.T) {
	cases := []struct{ reached, http, want string }{
		{"ws://127.0.0.1:5080/chatr/ws", "127.0.0.1:5081", "ws://127.0.0.1:5081/chatr/ws"},
		{"ws://10.0.0.1:5080/chatr/ws", ":5082", "ws://10.0.0.1:5082/chatr/ws"},
		{"wss://a.example:443/chatr/ws", "0.0.0.0:5083", "wss://a.example:5083/chatr/ws"},
		{"ws://127.0.0.1:5080/chatr/ws", "http://10.1.1.1:5084/", "ws://10.1.1.1:5084/chatr/ws"},
		{"ws://127.0.0.1:5080/chatr/ws", "", ""},
	}
	for _, c := range cases {
		got, ok := nodeURL(c.reached, c.http)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("nodeURL(%q, %q) = %q, %v; want %q", c.reached, c.http, got, ok, c.want)
		}
	}
}

func TestClean(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"hi\x1b[2Jthere\nfake line\u009b", "hi [2Jthere fake line "},
		// A right-to-left override would show "invoice_exe.pdf".
		{"invoice_\u202efdp.exe", "invoice_fdp.exe"},
		{"invoice_\u202efdp\u202c.exe", "invoice_fdp.exe"}, // paired, as misleading
		{"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061cx", "x"},
		{"محمد: سلام", "محمد: سلام"}, // right-to-left text itself stays
	} {
		if got := clean(tc.in); got != tc.want {
			t.Errorf("clean(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
}

// A message is printed as it was typed: "invoice_\u202efdp.exe" does not
// read as a PDF in a terminal that reorders text.
func TestPrintedWithoutBidiControls(t *testing.T) {
	var out strings.Builder
	c := &chat{cfg: pipeConfig("ws://x", "ann"), info: io.Discard, out: &out, name: "ann",
		urls: []string{"ws://x"}, members: map[proto.Person]bool{}}
	f := client.Frame{Type: client.TypeMessage, Room: "pipes", ID: "b-1", Sender: "rita", Text: "invoice_\u202efdp.exe",
		Created: "2026-11-24T10:00:00.000000Z"}
	if err := c.handle(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasSuffix(got, " rita: invoice_fdp.exe\n") {
		t.Fatalf("printed %+q, want the line without the override", got)
	}
}

// TestResendAfterLoss: of the lines unacked when the connection is lost,
// those the resumed room shows stored are done, and the others are sent
// again, in order and with their refs, before newer lines.
func TestResendAfterLoss(t *testing.T) {
	c := &chat{cfg: pipeConfig("ws://x", "ann"), info: io.Discard, out: io.Discard, name: "ann",
		urls: []string{"ws://x"}, members: map[proto.Person]bool{}}
	c.pending = []*outgoing{{ref: "l1", text: "a"}, {ref: "l2", text: "b"}, {ref: "l3", text: "c"}}
	c.queue = []*outgoing{{ref: "l4", text: "d"}}
	c.handle(context.Background(), client.Frame{Type: client.TypeAck, Ref: "l1", ID: "n-1"})
	if err := c.lost(errors.New("connection reset")); err != nil {
		t.Fatal(err)
	}
	// The replay after the resumed join: "a" (acked) and "c" were stored.
	for _, f := range []client.Frame{
		{Type: client.TypeJoined, Room: "pipes"},
		{Type: client.TypeMessage, Room: "pipes", ID: "n-1", Sender: "ann", Text: "a", Cursor: "1"},
		{Type: client.TypeMessage, Room: "pipes", ID: "n-2", Sender: "ann", Text: "c", Cursor: "2"},
		{Type: client.TypeSynced, Room: "pipes", Cursor: "2"},
	} {
		if err := c.handle(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	var queue []string
	for _, o := range c.queue {
		queue = append(queue, o.ref+":"+o.text)
	}
	if len(c.pending) != 0 || fmt.Sprint(queue) != "[l2:b l4:d]" || c.cursor != "2" {
		t.Fatalf("pending %d, queue %q, cursor %q; want 0, [l2:b l4:d], 2", len(c.pending), queue, c.cursor)
	}
}

// TestShuttingDownNodeSendsLinesElsewhere: a line answered unavailable by
// a node that is shutting down (the error names the other nodes) is not
// lost: it is queued again with its ref, and the chat moves to the next
// node. Without nodes (replicas not reached in time), it is sent again
// later on the same node.
func TestShuttingDownNodeSendsLinesElsewhere(t *testing.T) {
	c := &chat{cfg: pipeConfig("ws://x", "ann"), info: io.Discard, out: io.Discard, name: "ann",
		urls: []string{"ws://x", "ws://y"}, members: map[proto.Person]bool{}}
	c.pending = []*outgoing{{ref: "l1", text: "a"}, {ref: "l2", text: "b"}}
	other := []proto.Member{{ID: "0123456789ab", Name: "y", HTTP: "y:5080"}}
	if err := c.handle(context.Background(), client.Frame{Type: client.TypeError, Ref: "l2", Code: proto.CodeUnavailable, Nodes: other}); err != nil {
		t.Fatal(err)
	}
	if c.failed != 0 || len(c.queue) != 1 || c.queue[0].ref != "l2" || c.next != 1 {
		t.Fatalf("failed %d, queue %v, next %d; want 0, [l2], 1", c.failed, c.queue, c.next)
	}
	if !c.pending[0].stale {
		t.Fatalf("l1, sent on the node that is going, is not marked for a resend")
	}
	c.pending = []*outgoing{{ref: "l3", text: "c"}}
	if err := c.handle(context.Background(), client.Frame{Type: client.TypeError, Ref: "l3", Code: proto.CodeUnavailable}); err != nil {
		t.Fatal(err)
	}
	if c.failed != 0 || c.queue[0].ref != "l3" || !c.pausedUntil.After(time.Now()) {
		t.Fatalf("failed %d, queue %v, paused until %v; want l3 queued again after a pause", c.failed, c.queue, c.pausedUntil)
	}
}

// TestWithdrawnCopyIsNamed: a printed message later named hidden (or
// replaced) is pointed out, since a terminal cannot take a line back.
func TestWithdrawnCopyIsNamed(t *testing.T) {
	var info strings.Builder
	c := &chat{cfg: pipeConfig("ws://x", "ann"), info: &info, out: io.Discard, name: "ann",
		urls: []string{"ws://x"}, members: map[proto.Person]bool{}}
	for _, f := range []client.Frame{
		{Type: client.TypeMessage, Room: "pipes", ID: "b-1", Sender: "rita", Text: "hi"},
		{Type: client.TypeMessage, Room: "pipes", ID: "b-2", Sender: "rita", Text: "yo"},
		{Type: client.TypeHidden, Room: "pipes", ID: "b-1"},
		{Type: client.TypeMessage, Room: "pipes", ID: "a-1", Sender: "rita", Text: "yo", Replaces: "b-2"},
	} {
		if err := c.handle(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	want := `* ignore "rita: hi": it repeated an earlier copy of the same message` + "\n" +
		`* ignore "rita: yo": it repeated this message` + "\n"
	if info.String() != want {
		t.Fatalf("status lines:\n%s\nwant:\n%s", info.String(), want)
	}
}
