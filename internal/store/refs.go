package store

import (
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
)

// refFilter sits in front of the look-ups for an earlier copy of a send
// (same sender, room and ref, see findCopy): it answers "maybe" or "surely
// not", so the writer walks the room's window of the index only for the
// few messages that may have a copy.
//
// It holds a Bloom filter of every message with a ref created since horizon,
// in buckets of one minute of creation time, so old buckets are dropped as
// time passes and memory stays proportional to the messages of the last
// DedupWindow or so. Only the writer goroutine uses it.
type refFilter struct {
	horizon int64 // µs: every message with a ref created at or after it is in the filter
	buckets map[int64]*refBucket
	key     []byte       // reused scratch for the key
	bytes   atomic.Int64 // memory of the filters' bits, for /metrics
}

// refBucket is a scalable Bloom filter: when the last filter is full, a
// new one twice its size is added, so the false positive rate stays at
// refFalsePositive per filter whatever the message rate. Its first filter
// holds a quarter more than the minute before it took, so at a steady rate a
// bucket is one or two filters, not the dozen that doubling from
// refFirstCap makes at 20k messages a second: every look-up tests each
// filter of the window (BenchmarkRefFilterSteady).
type refBucket struct {
	filters []*bloom.BloomFilter
	n, cap  uint  // entries in the last filter and its capacity
	total   uint  // entries in all its filters
	first   uint  // the capacity of its first filter
	bytes   int64 // memory of its filters' bits
}

const (
	refSpan     = int64(time.Minute / time.Microsecond) // a bucket's span of creation time, in µs
	refFirstCap = 4096
	// refFalsePositive is per filter: a look-up tests every filter of every
	// bucket in its span (a local send: the 15 or so of the dedup window,
	// each a few filters at a high rate), so the chance that one of them
	// says "maybe" is about a hundred times this. At 0.001 it was about 8 %
	// at 250k msg/s, and each "maybe" walks the room's window of the index:
	// 80 % of the writer's CPU (BenchmarkAppendWithRef).
	refFalsePositive = 1e-5
	// refKeep is how far back of now the filter stays complete: the dedup
	// window, plus room for creation times a little behind this node's clock.
	refKeep = DedupWindow + 5*time.Minute
)

// newRefFilter returns an empty filter complete from now - refKeep on.
func newRefFilter(now time.Time) *refFilter {
	f := &refFilter{buckets: map[int64]*refBucket{}}
	f.horizon = bucketOf(now.Add(-refKeep).UnixMicro()) * refSpan
	return f
}

func bucketOf(us int64) int64 {
	b := us / refSpan
	if us < 0 && us%refSpan != 0 {
		b-- // floor, for times before 1970
	}
	return b
}

// refHashes is the number of hash functions of every filter: all share it,
// so a key's locations are computed once for all of them.
var _, refHashes = bloom.EstimateParameters(refFirstCap, refFalsePositive)

// keyOf is the filter's key of a send, in a buffer reused by the next call.
func (f *refFilter) keyOf(sender, room, ref string) []byte {
	f.key = append(append(append(append(append(f.key[:0], sender...), 0), room...), 0), ref...)
	return f.key
}

// add records a stored message with a ref, created at us.
func (f *refFilter) add(sender, room, ref string, us int64) {
	if us < f.horizon {
		return // older than anything the filter answers for
	}
	k := bucketOf(us)
	b := f.buckets[k]
	if b == nil {
		b = &refBucket{first: refFirstCap}
		if prev := f.buckets[k-1]; prev != nil {
			b.first = max(refFirstCap, prev.total+prev.total/4) // room for a rate a little higher
		}
		f.buckets[k] = b
	}
	if b.n == b.cap {
		b.cap = max(b.first, 2*b.cap)
		m, _ := bloom.EstimateParameters(b.cap, refFalsePositive)
		b.filters = append(b.filters, bloom.New(m, refHashes))
		b.n = 0
		b.bytes += int64(m / 8)
		f.bytes.Add(int64(m / 8))
	}
	b.filters[len(b.filters)-1].Add(f.keyOf(sender, room, ref))
	b.n++
	b.total++
}

// mayHold reports whether a message of sender and room with ref, created
// strictly between lo and hi, may have been added. False means surely not.
func (f *refFilter) mayHold(sender, room, ref string, lo, hi int64) bool {
	if lo < f.horizon {
		return true // the filter does not reach back that far: ask the store
	}
	locs := bloom.Locations(f.keyOf(sender, room, ref), refHashes)
	for k, b := range f.buckets {
		start := k * refSpan
		if start+refSpan <= lo || start >= hi {
			continue
		}
		for _, bf := range b.filters {
			if bf.TestLocations(locs) {
				return true
			}
		}
	}
	return false
}

// expire drops the buckets that fell out of the window behind now.
func (f *refFilter) expire(now time.Time) {
	h := bucketOf(now.Add(-refKeep).UnixMicro())
	if h*refSpan <= f.horizon {
		return
	}
	f.horizon = h * refSpan
	for k, b := range f.buckets {
		if k < h {
			f.bytes.Add(-b.bytes)
			delete(f.buckets, k)
		}
	}
}
