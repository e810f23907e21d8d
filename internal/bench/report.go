package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is the result of a run. Its JSON form is what --json prints.
type Report struct {
	Config ReportConfig `json:"config"`

	ConnsEstablished int64 `json:"conns_established"`
	ConnsFailed      int64 `json:"conns_failed"`  // dial, hello or join failed
	ConnsDropped     int64 `json:"conns_dropped"` // closed by the node during the run

	Sent       int64            `json:"sent"`
	Acked      int64            `json:"acked"`
	Unanswered int64            `json:"unanswered"` // sends with neither ack nor error at the end
	Errors     map[string]int64 `json:"errors"`     // error frames by code, and dial/drop failures

	// ErrorExamples holds the first error message of each kind of Errors.
	ErrorExamples map[string]string `json:"error_examples,omitempty"`

	Deliveries int64 `json:"deliveries"`

	// SendSeconds is how long messages were sent; DeliverySeconds runs from
	// the first send to the last delivery.
	SendSeconds     float64 `json:"send_seconds"`
	DeliverySeconds float64 `json:"delivery_seconds"`
	SentPerSec      float64 `json:"sent_per_sec"`
	AckedPerSec     float64 `json:"acked_per_sec"`
	DeliveriesPerS  float64 `json:"deliveries_per_sec"`

	Latency    Latency `json:"latency"`     // send to delivery
	AckLatency Latency `json:"ack_latency"` // send to ack

	Check Check `json:"check"`

	// With --failover: Resumed counts connections that lost their node and
	// were back in their room on another (synced); ResumeSeconds runs from
	// the first drop to the last of those synced; Truncated counts resumes
	// whose replay could not reach back to the cursor (a gap).
	Resumed       int64   `json:"resumed,omitempty"`
	ResumeSeconds float64 `json:"resume_seconds,omitempty"`
	Truncated     int64   `json:"truncated,omitempty"`
}

// ReportConfig is the part of the configuration a report repeats.
type ReportConfig struct {
	URLs     []string `json:"urls"`
	Conns    int      `json:"conns"`
	Rooms    int      `json:"rooms"`
	Senders  int      `json:"senders"`
	Rate     float64  `json:"rate"`
	Window   int      `json:"window,omitempty"` // most unacked sends per sender; 0: none
	Size     int      `json:"size"`
	Duration string   `json:"duration"`
	Ramp     string   `json:"ramp"`
	Failover bool     `json:"failover,omitempty"`
}

// OK reports whether the run went as it should: every connection opened
// and stayed, messages were sent if asked for, and the check found nothing
// wrong.
func (r *Report) OK() bool { return len(r.Problems()) == 0 }

// Problems lists what went wrong, for people.
func (r *Report) Problems() []string {
	var p []string
	add := func(cond bool, format string, args ...any) {
		if cond {
			p = append(p, fmt.Sprintf(format, args...))
		}
	}
	k := r.Check
	add(r.ConnsEstablished == 0, "no connection opened")
	add(r.ConnsFailed > 0, "%d connections failed to open", r.ConnsFailed)
	add(r.ConnsDropped > 0, "%d connections were closed by the node", r.ConnsDropped)
	add(r.Config.Rate > 0 && r.ConnsEstablished > 0 && r.Sent == 0,
		"nothing was sent: opening the connections took the whole run (raise --duration)")
	add(r.Unanswered > 0, "%d sends got neither ack nor error by the end (the node was behind)", r.Unanswered)
	add(r.Truncated > 0, "%d resumes replayed with a gap (truncated)", r.Truncated)
	add(k.Lost > 0, "%d deliveries lost", k.Lost)
	add(k.Late > 0, "%d deliveries late: still on their way when the drain ended, the node was behind (raise --drain or lower the load)", k.Late)
	add(k.Duplicated > 0, "%d deliveries duplicated", k.Duplicated)
	add(k.Unexpected > 0, "%d deliveries unexpected", k.Unexpected)
	return p
}

// finish computes the rates from the counts and durations.
func (r *Report) finish() {
	r.SentPerSec = perSecond(r.Sent, r.SendSeconds)
	r.AckedPerSec = perSecond(r.Acked, r.SendSeconds)
	r.DeliveriesPerS = perSecond(r.Deliveries, r.DeliverySeconds)
}

// perSecond returns n per second over secs, 0 for an empty interval.
func perSecond(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

// Latency summarizes a latency histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// summarize reads the percentiles of h, which holds microseconds.
func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

func (l Latency) String() string {
	if l.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms  (%d samples)",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "chatr bench: %d conns to %s, %d rooms, %d senders at %g msg/s, %d-byte messages, %s (ramp %s)\n",
		c.Conns, strings.Join(c.URLs, ","), c.Rooms, c.Senders, c.Rate, c.Size, c.Duration, c.Ramp)
	fmt.Fprintf(&b, "connections  established %d  failed %d  dropped %d\n",
		r.ConnsEstablished, r.ConnsFailed, r.ConnsDropped)
	fmt.Fprintf(&b, "messages     sent %d (%.1f/s)  acked %d (%.1f/s)  unanswered %d\n",
		r.Sent, r.SentPerSec, r.Acked, r.AckedPerSec, r.Unanswered)
	if len(r.Errors) > 0 {
		codes := make([]string, 0, len(r.Errors))
		for code := range r.Errors {
			codes = append(codes, code)
		}
		sort.Strings(codes)
		for _, code := range codes {
			fmt.Fprintf(&b, "errors       %s: %d", code, r.Errors[code])
			if ex := r.ErrorExamples[code]; ex != "" {
				fmt.Fprintf(&b, " (first: %s)", ex)
			}
			b.WriteString("\n")
		}
	}
	if c.Failover {
		fmt.Fprintf(&b, "failover     resumed %d in %.2f s (first drop to last synced)  truncated %d\n",
			r.Resumed, r.ResumeSeconds, r.Truncated)
	}
	fmt.Fprintf(&b, "deliveries   %d (%.1f/s over %.2f s)\n", r.Deliveries, r.DeliveriesPerS, r.DeliverySeconds)
	fmt.Fprintf(&b, "latency      %s\n", r.Latency)
	fmt.Fprintf(&b, "ack latency  %s\n", r.AckLatency)
	fmt.Fprintf(&b, "check        expected %d  lost %d  duplicated %d  unexpected %d  late %d\n",
		r.Check.Expected, r.Check.Lost, r.Check.Duplicated, r.Check.Unexpected, r.Check.Late)
	if problems := r.Problems(); len(problems) > 0 {
		b.WriteString("result       FAILED: " + strings.Join(problems, "; ") + "\n")
	} else {
		b.WriteString("result       ok\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// recorder collects latencies from many goroutines into a few histograms
// guarded by their own locks, so that receivers rarely wait for each other
// and memory does not grow with the number of connections.
type recorder struct {
	shards [16]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
	}
}

// Latencies from 1 µs to 1 minute, with 3 significant digits.
const (
	minLatencyUS = 1
	maxLatencyUS = int64(time.Minute / time.Microsecond)
)

func newRecorder() *recorder {
	r := &recorder{}
	for i := range r.shards {
		r.shards[i].h = hdrhistogram.New(minLatencyUS, maxLatencyUS, 3)
	}
	return r
}

// record adds latencies in microseconds to shard k (any number), clamped
// to the histogram's range.
func (r *recorder) record(k int, us ...int64) {
	s := &r.shards[k%len(r.shards)]
	s.mu.Lock()
	for _, v := range us {
		s.h.RecordValue(min(max(v, minLatencyUS), maxLatencyUS))
	}
	s.mu.Unlock()
}

// merged returns one histogram of everything recorded.
func (r *recorder) merged() *hdrhistogram.Histogram {
	h := hdrhistogram.New(minLatencyUS, maxLatencyUS, 3)
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		h.Merge(s.h)
		s.mu.Unlock()
	}
	return h
}
