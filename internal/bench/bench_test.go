package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"chatr/internal/client/clienttest"
)

func TestLedgerCountsLostAndDuplicated(t *testing.T) {
	// Senders 0 and 1 in room 0, sender 2 in room 1.
	l := NewLedger([]int{0, 0, 1})
	r0 := l.AddReceiver(0)
	r1 := l.AddReceiver(0)
	other := l.AddReceiver(1)
	s0, s1, s2 := l.Sender(0), l.Sender(1), l.Sender(2)
	for i := int64(1); i <= 3; i++ {
		s0.Ack(s0.Next(i))
	}
	s1.Ack(s1.Next(10))
	s1.Next(11) // never acked: not expected, and no harm if delivered
	s2.Ack(s2.Next(20))

	// r0 gets everything, message 2 of sender 0 twice.
	for _, d := range []struct {
		sender int
		seq    uint64
	}{{0, 1}, {0, 2}, {0, 2}, {0, 3}, {1, 1}, {1, 2}} {
		r0.Deliver(d.sender, d.seq)
	}
	// r1 misses message 3 of sender 0.
	r1.Deliver(0, 1)
	r1.Deliver(0, 2)
	r1.Deliver(1, 1)
	// other gets its room's message, one from room 0, and one never sent.
	other.Deliver(2, 1)
	other.Deliver(0, 1)
	other.Deliver(2, 7)

	got := l.Check(false)
	want := Check{Expected: 4 + 4 + 1, Lost: 1, Duplicated: 1, Unexpected: 2}
	if got != want {
		t.Fatalf("Check(false) = %+v, want %+v", got, want)
	}
	// While deliveries still flow, r1's missing newest message may be late.
	want.Lost, want.Late = 0, 1
	if got := l.Check(true); got != want {
		t.Fatalf("Check(true) = %+v, want %+v", got, want)
	}
}

func TestLedgerGapIsLostEvenWhileFlowing(t *testing.T) {
	l := NewLedger([]int{0})
	r := l.AddReceiver(0)
	s := l.Sender(0)
	for i := int64(1); i <= 4; i++ {
		s.Ack(s.Next(i))
	}
	r.Deliver(0, 1)
	r.Deliver(0, 3) // 2 is missing before it, 4 after it
	want := Check{Expected: 4, Lost: 1, Late: 1}
	if got := l.Check(true); got != want {
		t.Fatalf("Check(true) = %+v, want %+v", got, want)
	}
}

func TestLedgerStoppedReceiver(t *testing.T) {
	l := NewLedger([]int{0})
	r := l.AddReceiver(0)
	s := l.Sender(0)
	s.Ack(s.Next(100))
	r.Deliver(0, 1)
	r.Stop(150)
	s.Ack(s.Next(200)) // sent after r left: not expected from it
	if got := l.Check(false); got != (Check{Expected: 1}) {
		t.Fatalf("Check() = %+v, want 1 expected and nothing wrong", got)
	}
}

func TestLedgerRejectsWildDeliveries(t *testing.T) {
	l := NewLedger([]int{0})
	r := l.AddReceiver(0)
	for _, d := range []struct {
		sender int
		seq    uint64
	}{{-1, 1}, {5, 1}, {0, 0}, {0, maxSeq + 1}} {
		if r.Deliver(d.sender, d.seq) {
			t.Errorf("Deliver(%d, %d) accepted", d.sender, d.seq)
		}
	}
	if got := l.Check(false); got.Unexpected != 4 {
		t.Fatalf("Check() = %+v, want 4 unexpected", got)
	}
}

func TestSenderLogAck(t *testing.T) {
	s := &SenderLog{}
	seq := s.Next(42)
	if at, ok := s.Ack(seq); !ok || at != 42 {
		t.Fatalf("Ack(%d) = %d, %v", seq, at, ok)
	}
	if _, ok := s.Ack(seq); ok {
		t.Fatal("a repeated ack was accepted")
	}
	if _, ok := s.Ack(9); ok {
		t.Fatal("an ack of a message never sent was accepted")
	}
}

func TestReportArithmetic(t *testing.T) {
	if got := perSecond(500, 2); got != 250 {
		t.Errorf("perSecond(500, 2) = %g", got)
	}
	if got := perSecond(500, 0); got != 0 {
		t.Errorf("perSecond over no time = %g, want 0", got)
	}

	h := hdrhistogram.New(minLatencyUS, maxLatencyUS, 3)
	for v := int64(1); v <= 1000; v++ {
		h.RecordValue(v * 1000) // 1 ms .. 1000 ms
	}
	l := summarize(h)
	near := func(got, want float64) bool { return got >= want*0.999 && got <= want*1.001 }
	if l.Count != 1000 || !near(l.P50, 500) || !near(l.P90, 900) || !near(l.P99, 990) ||
		!near(l.P999, 999) || !near(l.Max, 1000) {
		t.Errorf("summarize = %+v, want p50 500 p90 900 p99 990 p999 999 max 1000 ms", l)
	}

	rep := &Report{Config: ReportConfig{Rate: 100}, Sent: 1000, Acked: 990, Deliveries: 30000, SendSeconds: 10, DeliverySeconds: 12,
		ConnsEstablished: 3, Check: Check{Lost: 2, Duplicated: 1, Late: 5}}
	rep.finish()
	if rep.SentPerSec != 100 || rep.AckedPerSec != 99 || rep.DeliveriesPerS != 2500 {
		t.Errorf("rates = %g %g %g, want 100 99 2500", rep.SentPerSec, rep.AckedPerSec, rep.DeliveriesPerS)
	}
	if rep.OK() || len(rep.Problems()) != 3 {
		t.Errorf("problems of a report with lost, late and duplicated deliveries: %q", rep.Problems())
	}
	ok := &Report{Config: ReportConfig{Rate: 100}, ConnsEstablished: 3, Sent: 1}
	if !ok.OK() {
		t.Errorf("problems of a good report: %q", ok.Problems())
	}
	idle := &Report{Config: ReportConfig{Rate: 100}, ConnsEstablished: 3, ConnsFailed: 1}
	if len(idle.Problems()) != 2 {
		t.Errorf("problems of a run that failed a connection and sent nothing: %q", idle.Problems())
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	for _, want := range []string{"lost 2", "duplicated 1", "late 5", "FAILED", "2500.0/s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestRecorderClamps(t *testing.T) {
	r := newRecorder()
	r.record(3, -5, 0, 10, maxLatencyUS*2)
	h := r.merged()
	if h.TotalCount() != 4 || h.Min() < minLatencyUS || h.Max() < maxLatencyUS*999/1000 {
		t.Fatalf("count %d min %d max %d", h.TotalCount(), h.Min(), h.Max())
	}
}

func TestPayload(t *testing.T) {
	for _, size := range []int{1, 40, 64, 4096} {
		b := appendText(nil, 17, 123456, 1764300000123456789, size)
		if len(b) < size {
			t.Errorf("size %d: text has %d bytes", size, len(b))
		}
		s, seq, nanos, ok := parseText(b)
		if !ok || s != 17 || seq != 123456 || nanos != 1764300000123456789 {
			t.Errorf("size %d: parseText(%q) = %d %d %d %v", size, b, s, seq, nanos, ok)
		}
	}
	for _, bad := range []string{"", "hello", "b 1 2", "b 1 2 3", "b x 2 3 ", "b 1 2 99999999999999999999 "} {
		if _, _, _, ok := parseText([]byte(bad)); ok {
			t.Errorf("parseText(%q) accepted", bad)
		}
	}
}

func TestScan(t *testing.T) {
	cases := []struct {
		frame, typ, text, ref, code string
	}{
		{frame: `{"type":"message","room":"r","id":"a-1","sender":"s","text":"b 1 2 3 xx","created":"t","node":"a","cursor":"c"}`,
			typ: "message", text: "b 1 2 3 xx"},
		{frame: `{"type":"ack","ref":"17","id":"a-1","created":"t"}`, typ: "ack", ref: "17"},
		{frame: `{"type":"error","ref":"9","code":"rate_limited","message":"slow down"}`, typ: "error", ref: "9", code: "rate_limited"},
		{frame: `{"type":"message","text":"say \"hi\""}`, typ: "message", text: `say "hi"`},
		{frame: `{ "type": "ack", "ref": "5" }`, typ: "ack", ref: "5"},
		{frame: `{"type":"presence","room":"r","joined":[{"name":"n","node":"a"}],"left":[]}`, typ: "presence"},
		{frame: `not json`, typ: "undecodable"},
	}
	for _, c := range cases {
		f := scan([]byte(c.frame))
		if f.typ != c.typ || string(f.text) != c.text || string(f.ref) != c.ref || f.code != c.code {
			t.Errorf("scan(%s) = %+v", c.frame, f)
		}
	}
}

func TestValidate(t *testing.T) {
	good := func() Config {
		return Config{URLs: []string{"ws://127.0.0.1:5080/chatr/ws"}, Conns: 10, Rooms: 2, Senders: 2,
			Rate: 100, Size: 64, Duration: time.Second}
	}
	if _, err := (&Config{}).Validate(); err == nil {
		t.Error("the empty config is valid")
	}
	cases := []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" for valid
	}{
		{"good", func(*Config) {}, ""},
		{"http URL and localhost", func(c *Config) { c.URLs = []string{"http://localhost:5080", "[::1]:5081"} }, ""},
		{"remote URL", func(c *Config) { c.URLs = []string{"ws://192.0.2.1:5080/chatr/ws"} }, "--allow-remote"},
		{"remote URL allowed", func(c *Config) { c.URLs = []string{"ws://192.0.2.1:5080"}; c.AllowRemote = true }, ""},
		{"no URL", func(c *Config) { c.URLs = nil }, "--url"},
		{"bad scheme", func(c *Config) { c.URLs = []string{"ftp://127.0.0.1"} }, "scheme"},
		{"negative conns", func(c *Config) { c.Conns = -1 }, "--conns -1"},
		{"more rooms than conns", func(c *Config) { c.Rooms = 11 }, "--rooms"},
		{"no rooms", func(c *Config) { c.Rooms = 0 }, "--rooms"},
		{"more senders than conns", func(c *Config) { c.Senders = 11 }, "--senders"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "--rate"},
		{"negative window", func(c *Config) { c.Window = -1 }, "--window"},
		{"window", func(c *Config) { c.Window = 8 }, ""},
		{"rate without senders", func(c *Config) { c.Senders = 0 }, "--senders"},
		{"idle", func(c *Config) { c.Senders, c.Rate = 0, 0 }, ""},
		{"size too big", func(c *Config) { c.Size = 5000 }, "--size"},
		{"no duration", func(c *Config) { c.Duration = 0 }, "--duration"},
		{"ramp past duration", func(c *Config) { c.Ramp = 2 * time.Second }, "--ramp"},
		{"too many conns for the fd limit", func(c *Config) { c.Conns = MaxConns }, "--conns"},
	}
	for _, c := range cases {
		cfg := good()
		c.change(&cfg)
		_, err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one about %s", c.name, err, c.want)
		}
	}
}

func TestSourceAddresses(t *testing.T) {
	urls := []string{"ws://127.0.0.1:5080/chatr/ws"}
	if clients, _ := sourceAddrs(urls, 100); clients != nil {
		t.Error("100 connections spread over source addresses")
	}
	clients, per := sourceAddrs(urls, 70000)
	if want := (70000 + per - 1) / per; len(clients) != want {
		t.Errorf("70000 connections: %d source addresses, want %d", len(clients), want)
	}
	for k, ip := range clients {
		if !ip.Equal(net.IPv4(127, 0, 0, byte(k+1))) {
			t.Errorf("source address %d is %v", k, ip)
		}
	}
	if clients, _ := sourceAddrs([]string{"ws://[::1]:5080/chatr/ws"}, 70000); clients != nil {
		t.Error("IPv6 node: spread over 127.0.0.x")
	}
}

// TestRunAgainstFake runs a short bench against the in-process fake node.
func TestRunAgainstFake(t *testing.T) {
	node := clienttest.NewFakeNode(t)
	var progress bytes.Buffer
	rep, err := Run(context.Background(), Config{
		URLs: []string{node.URL}, Conns: 20, Rooms: 3, Senders: 4, Rate: 400, Size: 100,
		Duration: 1500 * time.Millisecond, Ramp: 200 * time.Millisecond, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, 20)
	if !strings.Contains(progress.String(), "conns 20") {
		t.Errorf("progress lines:\n%s", progress.String())
	}
}

// checkReport checks what every good run reports.
func checkReport(t *testing.T, rep *Report, conns int64) {
	t.Helper()
	js, _ := json.MarshalIndent(rep, "", "  ")
	if rep.ConnsEstablished != conns || rep.ConnsFailed != 0 || rep.ConnsDropped != 0 {
		t.Errorf("connections: %s", js)
	}
	if rep.Sent == 0 || rep.Acked != rep.Sent || rep.Deliveries == 0 || rep.DeliveriesPerS <= 0 {
		t.Errorf("messages: %s", js)
	}
	if rep.Check != (Check{Expected: rep.Check.Expected}) || rep.Check.Expected == 0 {
		t.Errorf("check: %s", js)
	}
	if rep.Latency.Count != rep.Deliveries || rep.Latency.P50 <= 0 || rep.Latency.Max < rep.Latency.P99 {
		t.Errorf("latency: %s", js)
	}
	if !rep.OK() {
		t.Errorf("report not OK: %s", js)
	}
}
