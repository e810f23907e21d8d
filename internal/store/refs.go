package store

import (
	"hash/maphash"
	"sync/atomic"
	"time"
)

// refFilter sits in front of the look-ups for an earlier copy of a send
// (same sender, room and ref, see findCopy): it answers "maybe" or "surely
// not", so the writer walks the room's window of the index only for the
// few messages that may have a copy.
//
// It holds a Bloom filter (blockFilter) of every message with a ref created
// since horizon, in buckets of five minutes of creation time, so old buckets
// are dropped as time passes and memory stays proportional to the messages
// of the last DedupWindow or so. A look-up tests each filter of each bucket
// in its time range: a local send's three or so, a replicated message's
// five. Only the writer goroutine uses it.
type refFilter struct {
	horizon int64 // µs: every message with a ref created at or after it is in the filter
	buckets map[int64]*refBucket
	key     []byte       // reused scratch for the key
	bytes   atomic.Int64 // memory of the filters' bits, for /metrics
}

// refBucket is a scalable Bloom filter: when the last filter is full, a
// new one twice its size is added, so the rate of false positives stays
// that of one filter whatever the message rate. Its first filter holds a
// quarter more than the bucket before it took, so at a steady rate a
// bucket is one or two filters (BenchmarkRefFilterSteady).
type refBucket struct {
	filters []*blockFilter
	n, cap  uint  // entries in the last filter and its capacity
	total   uint  // entries in all its filters
	first   uint  // the capacity of its first filter
	bytes   int64 // memory of its filters' bits
}

const (
	refSpan     = int64(5 * time.Minute / time.Microsecond) // a bucket's span of creation time, in µs
	refFirstCap = 16384                                     // 48 KiB of bits
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

// hashOf is the filters' hash of a send.
func (f *refFilter) hashOf(sender, room, ref string) uint64 {
	f.key = append(append(append(append(append(f.key[:0], sender...), 0), room...), 0), ref...)
	return maphash.Bytes(refSeed, f.key)
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
		bf := newBlockFilter(b.cap)
		b.filters = append(b.filters, bf)
		b.n = 0
		b.bytes += bf.bytes()
		f.bytes.Add(bf.bytes())
	}
	b.filters[len(b.filters)-1].add(f.hashOf(sender, room, ref))
	b.n++
	b.total++
}

// mayHold reports whether a message of sender and room with ref, created
// strictly between lo and hi, may have been added. False means surely not.
func (f *refFilter) mayHold(sender, room, ref string, lo, hi int64) bool {
	if lo < f.horizon {
		return true // the filter does not reach back that far: ask the store
	}
	h := f.hashOf(sender, room, ref)
	for k, b := range f.buckets {
		start := k * refSpan
		if start+refSpan <= lo || start >= hi {
			continue
		}
		for _, bf := range b.filters {
			if bf.has(h) {
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
