package store

import (
	"fmt"
	"hash/maphash"
	"math"
	"testing"
	"time"
)

// The filter may say "maybe" for a send it never saw, but never "no" for
// one it holds: a false "no" would store a re-sent message twice.
func TestRefFilterNeverMissesAnAddedSend(t *testing.T) {
	now := time.Now()
	f := newRefFilter(now)
	us := now.UnixMicro()
	// More than the first filter of a bucket holds, so buckets grow.
	const n = 3*refFirstCap + 17
	for i := 0; i < n; i++ {
		f.add("ann", "lobby", fmt.Sprint(i), us-int64(i)*1000)
	}
	for i := 0; i < n; i++ {
		created := us - int64(i)*1000
		if !f.mayHold("ann", "lobby", fmt.Sprint(i), created-1, created+1) {
			t.Fatalf("ref %d: filter says no, but it was added", i)
		}
		if !f.mayHold("ann", "lobby", fmt.Sprint(i), us-DedupWindow.Microseconds(), math.MaxInt64) {
			t.Fatalf("ref %d: filter says no for the dedup window of now", i)
		}
	}
	// Few false positives: sends never added, other sender, room or ref.
	fp := 0
	for i := 0; i < 10000; i++ {
		for _, k := range [][3]string{{"bob", "lobby", fmt.Sprint(i)}, {"ann", "dev", fmt.Sprint(i)}, {"ann", "lobby", fmt.Sprint(n + i)}} {
			if f.mayHold(k[0], k[1], k[2], us-DedupWindow.Microseconds(), math.MaxInt64) {
				fp++
			}
		}
	}
	if fp > 300 { // 1 % of 30,000; each filter is built for 0.1 %
		t.Errorf("%d false positives in 30000 look-ups", fp)
	}
}

// A bucket's first filter is sized by the bucket before it: at a steady
// rate each bucket is one filter.
func TestRefFilterSizedByTheBucketBefore(t *testing.T) {
	now := time.Now()
	f := newRefFilter(now)
	start := (bucketOf(now.UnixMicro()) - 3) * refSpan
	const perBucket = 50_000
	for i := range 3 * perBucket {
		f.add("ann", "lobby", fmt.Sprint(i), start+int64(i)*(refSpan/perBucket))
	}
	for k := bucketOf(start) + 1; k < bucketOf(start)+3; k++ {
		b := f.buckets[k]
		if b == nil || b.total != perBucket || len(b.filters) != 1 {
			t.Fatalf("bucket %d: %+v, want %d entries in one filter", k-bucketOf(start), b, perBucket)
		}
	}
	b := f.buckets[bucketOf(start)]
	if len(b.filters) < 2 || b.first != refFirstCap {
		t.Errorf("the first bucket, with none before it, has %d filters from %d: it should have grown from %d", len(b.filters), b.first, refFirstCap)
	}
}

// A block filter filled to what it was made for says "maybe" for about one
// key in 11,000 it never saw, and never "no" for one it holds.
func TestBlockFilterFalsePositives(t *testing.T) {
	const n = 100_000
	f := newBlockFilter(n)
	for i := range uint64(n) {
		f.add(maphash.Comparable(refSeed, i))
	}
	for i := range uint64(n) {
		if !f.has(maphash.Comparable(refSeed, i)) {
			t.Fatalf("key %d added, then not found", i)
		}
	}
	fp := 0
	for i := range uint64(1_000_000) {
		if f.has(maphash.Comparable(refSeed, n+i)) {
			fp++
		}
	}
	// 91 expected (9.1e-5, split blocks of 512 bits at 24 bits a key); a
	// classic filter of the same size would have 10.
	if fp > 200 {
		t.Errorf("%d false positives in 1,000,000 look-ups, want about 91", fp)
	}
	t.Logf("%d false positives in 1,000,000 look-ups", fp)
}

// The filter only answers for times it covers: before its horizon it says
// "maybe", so the store looks the copy up in SQLite.
func TestRefFilterHorizon(t *testing.T) {
	now := time.Now()
	f := newRefFilter(now)
	if f.horizon > now.Add(-refKeep).UnixMicro() {
		t.Fatalf("horizon %d is after now - refKeep", f.horizon)
	}
	old := f.horizon - 1
	f.add("ann", "lobby", "r1", old) // too old to keep
	if len(f.buckets) != 0 {
		t.Errorf("a send older than the horizon was kept")
	}
	if !f.mayHold("ann", "lobby", "anything", old-1, math.MaxInt64) {
		t.Errorf("a look-up reaching before the horizon got no")
	}
	if f.mayHold("ann", "lobby", "anything", f.horizon, math.MaxInt64) {
		t.Errorf("an empty filter said maybe inside its horizon")
	}
	// A send outside the asked time range is not a copy.
	us := now.UnixMicro()
	f.add("ann", "lobby", "r2", us)
	if f.mayHold("ann", "lobby", "r2", us+2*refSpan, math.MaxInt64) {
		t.Errorf("a send created before the range matched")
	}
	if f.mayHold("ann", "lobby", "r2", f.horizon, us-2*refSpan) {
		t.Errorf("a send created after the range matched")
	}
}

// As time passes, buckets behind the window are dropped and the horizon
// moves with them: memory follows the recent messages, not all of them.
func TestRefFilterExpires(t *testing.T) {
	start := time.Now()
	f := newRefFilter(start)
	for m := 0; m < 30; m++ {
		now := start.Add(time.Duration(m) * time.Minute)
		f.expire(now)
		f.add("ann", "lobby", fmt.Sprint(m), now.UnixMicro())
	}
	end := start.Add(29 * time.Minute)
	if want := int(refKeep.Microseconds()/refSpan) + 2; len(f.buckets) > want {
		t.Errorf("%d buckets kept, want at most %d", len(f.buckets), want)
	}
	if f.horizon > end.Add(-refKeep).UnixMicro() || f.horizon < end.Add(-refKeep).UnixMicro()-refSpan {
		t.Errorf("horizon %v, want about now - %v", time.UnixMicro(f.horizon), refKeep)
	}
	// Recent sends are still held; dropped ones are "maybe" through the
	// horizon, never "no".
	for m := 0; m < 30; m++ {
		us := start.Add(time.Duration(m) * time.Minute).UnixMicro()
		if !f.mayHold("ann", "lobby", fmt.Sprint(m), us-DedupWindow.Microseconds(), math.MaxInt64) {
			t.Errorf("send of minute %d: no", m)
		}
	}
	// The clock going back does not drop anything.
	n := len(f.buckets)
	f.expire(start)
	if len(f.buckets) != n {
		t.Errorf("expire with an earlier time dropped buckets")
	}
	// Its memory is counted, and given back with the buckets.
	if got, want := f.bytes.Load(), int64(n)*f.buckets[bucketOf(end.UnixMicro())].bytes; got != want || got <= 0 {
		t.Errorf("filter bytes %d, want %d (%d buckets of one filter)", got, want, n)
	}
	f.expire(end.Add(2 * refKeep))
	if len(f.buckets) != 0 || f.bytes.Load() != 0 {
		t.Errorf("after the window: %d buckets, %d bytes", len(f.buckets), f.bytes.Load())
	}
}

// BenchmarkRefFilterSteady is the look-up every send and every replicated
// message makes, once the filter holds a whole window at a steady rate:
// refKeep's worth of messages, perMinute a minute.
func BenchmarkRefFilterSteady(b *testing.B) {
	for _, perMinute := range []int{60_000, 1_200_000} { // 1k and 20k messages a second
		b.Run(fmt.Sprint("per_minute=", perMinute), func(b *testing.B) {
			now := time.Now()
			f := newRefFilter(now)
			minutes := int(refKeep / time.Minute)
			step := int64(time.Minute/time.Microsecond) / int64(perMinute)
			start := now.Add(-refKeep + time.Minute).UnixMicro()
			for i := range minutes * perMinute {
				f.add("bench", "lobby", fmt.Sprint(i), start+int64(i)*step)
			}
			filters := 0
			for _, bk := range f.buckets {
				filters += len(bk.filters)
			}
			us := now.UnixMicro()
			w := DedupWindow.Microseconds()
			b.ResetTimer()
			maybe := 0
			for i := 0; b.Loop(); i++ {
				if f.mayHold("bench", "lobby", fmt.Sprint("new", i), us-w, us+w) {
					maybe++
				}
			}
			b.ReportMetric(float64(maybe)/float64(b.N), "maybe/op")
			b.ReportMetric(float64(filters), "filters")
			b.ReportMetric(float64(f.bytes.Load())/(1<<20), "MiB")
		})
	}
}

// BenchmarkRefFilterFresh is the same look-up on a node that started a
// little while ago: n messages, all in its first bucket (the
// 11-second cluster runs of BENCHMARKS.md hold about 500,000), with no
// bucket before it to size the first filter by. It also times an add.
func BenchmarkRefFilterFresh(b *testing.B) {
	for _, n := range []int{50_000, 500_000} {
		b.Run(fmt.Sprint("messages=", n), func(b *testing.B) {
			now := time.Now()
			f := newRefFilter(now)
			us := now.UnixMicro()
			for i := range n {
				f.add("bench", "lobby", fmt.Sprint(i), us-int64(n-i))
			}
			filters := len(f.buckets[bucketOf(us)].filters)
			w := DedupWindow.Microseconds()
			maybe := 0
			for i := 0; b.Loop(); i++ {
				ref := fmt.Sprint("new", i)
				if f.mayHold("bench", "lobby", ref, us-w, math.MaxInt64) {
					maybe++
				}
				f.add("bench", "lobby", ref, us)
			}
			b.ReportMetric(float64(maybe)/float64(b.N), "maybe/op")
			b.ReportMetric(float64(filters), "filters")
		})
	}
}
