package store

import "hash/maphash"

// blockFilter is a split-block Bloom filter: a key sets one bit in each of
// the eight words of one 64-byte block, so adding or testing a key touches
// one cache line, where a classic Bloom filter at the same rate of false
// positives touches 17 (the refFilter's cost, most of it cache misses,
// before this: BenchmarkRefFilterFresh). bits-and-blooms/bloom has no
// blocked kind, and blobloom, which is one, is not served here.
//
// At refBitsPerKey bits a key, one of about 11,000 keys never added tests
// positive (TestBlockFilterFalsePositives).
type blockFilter struct {
	blocks [][8]uint64
}

// refBitsPerKey is the size of a blockFilter per key it is made for.
const refBitsPerKey = 24

// refSeed keys the hash of every filter of this process: the filters are
// rebuilt from the log at start, and a client cannot aim its refs at one
// block without knowing it.
var refSeed = maphash.MakeSeed()

// newBlockFilter returns a filter for n keys.
func newBlockFilter(n uint) *blockFilter {
	return &blockFilter{blocks: make([][8]uint64, max(1, (n*refBitsPerKey+511)/512))}
}

// bytes is the memory of the filter's bits.
func (f *blockFilter) bytes() int64 { return int64(len(f.blocks)) * 64 }

// where returns the block of hash h and the eight bit positions (6 bits
// each) within its words. The block comes from the high half of h, the
// bits from a mix of all of it.
func (f *blockFilter) where(h uint64) (*[8]uint64, uint64) {
	b := &f.blocks[(h>>32)*uint64(len(f.blocks))>>32]
	// splitmix64's finalizer
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return b, h
}

func (f *blockFilter) add(h uint64) {
	b, bits := f.where(h)
	for i := range b {
		b[i] |= 1 << (bits >> (6 * i) & 63)
	}
}

func (f *blockFilter) has(h uint64) bool {
	b, bits := f.where(h)
	for i := range b {
		if b[i]&(1<<(bits>>(6*i)&63)) == 0 {
			return false
		}
	}
	return true
}
