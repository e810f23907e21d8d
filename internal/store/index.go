package store

import (
	"fmt"
	"hash/maphash"

	"github.com/google/btree"

	"chatr/internal/proto"
)

// index is the store's view of the log in memory: where each message of
// each origin is, and each room's messages in history order, so that no
// read scans the log. It costs about 40 bytes a message (BENCHMARKS.md):
// 8 for the position, 24 for the room entry, and the tree around it.
// Texts stay on disk. It is rebuilt from the log at Open.
//
// The writer changes it under Store.mu; readers read it under the read
// lock and then read the records without it.
type index struct {
	origins []string          // by origin number
	nums    map[string]uint16 // origin -> number
	// logs is, per origin number, the slot of sequence i+1 at i:
	// sequences are held without gaps.
	logs  [][]slot
	rooms map[string]*btree.BTreeG[entry]
	// replaces is message key -> the id of the copy it hid (few).
	replaces map[uint64]string
	// hidden is, per room, the keys of its hidden copies, oldest first (few).
	hidden map[string][]uint64
	seed   maphash.Seed
	free   *btree.FreeListG[entry]
}

// slot is where a message is and when it was made.
type slot struct {
	pos     uint64 // with hiddenBit set on a hidden copy
	created int64
}

// entry is a message in its room's tree, ordered as history lists it: by
// (created, origin, seq).
type entry struct {
	created int64
	key     uint64 // origin number << seqBits | seq
	ref     uint64 // hash of the author and ref of its send; 0 for none
}

const (
	seqBits = 48
	seqMask = 1<<seqBits - 1
	// maxOrigins is the most origins one store can hold: node ids ever
	// seen in the cluster. The last number is the pivots'.
	maxOrigins  = 1<<(64-seqBits) - 1
	pivotOrigin = maxOrigins
	hiddenBit   = 1 << 63
)

func newIndex() *index {
	return &index{nums: map[string]uint16{}, rooms: map[string]*btree.BTreeG[entry]{},
		replaces: map[uint64]string{}, hidden: map[string][]uint64{}, seed: maphash.MakeSeed(),
		free: btree.NewFreeListG[entry](btree.DefaultFreeListSize)}
}

func (ix *index) less(a, b entry) bool {
	if a.created != b.created {
		return a.created < b.created
	}
	if oa, ob := a.key>>seqBits, b.key>>seqBits; oa != ob {
		switch {
		case oa == pivotOrigin: // first of its time
			return true
		case ob == pivotOrigin:
			return false
		}
		return ix.origins[oa] < ix.origins[ob]
	}
	return a.key&seqMask < b.key&seqMask
}

// num is the number of origin, made when it is new.
func (ix *index) num(origin string) (uint16, error) {
	if n, ok := ix.nums[origin]; ok {
		return n, nil
	}
	if len(ix.origins) == maxOrigins {
		return 0, fmt.Errorf("the store holds messages of %d origins, the most it can", maxOrigins)
	}
	n := uint16(len(ix.origins))
	ix.origins = append(ix.origins, origin)
	ix.nums[origin] = n
	ix.logs = append(ix.logs, nil)
	return n, nil
}

// key is the entry key of (origin, seq); ok is false for an origin the
// index has never held.
func (ix *index) key(origin string, seq uint64) (uint64, bool) {
	n, ok := ix.nums[origin]
	return uint64(n)<<seqBits | seq, ok
}

// holds reports whether the index holds (origin, seq) as a message of room.
func (ix *index) holds(room, origin string, seq uint64) bool {
	sl, ok := ix.at(origin, seq)
	if !ok {
		return false
	}
	key, _ := ix.key(origin, seq)
	t := ix.rooms[room]
	return t != nil && t.Has(entry{created: sl.created, key: key})
}

// at returns the slot of (origin, seq); ok is false when the index does
// not hold it.
func (ix *index) at(origin string, seq uint64) (slot, bool) {
	n, known := ix.nums[origin]
	if !known || seq == 0 || seq > uint64(len(ix.logs[n])) {
		return slot{}, false
	}
	return ix.logs[n][seq-1], true
}

// slotOf is the slot of the message of key.
func (ix *index) slotOf(key uint64) slot {
	return ix.logs[key>>seqBits][key&seqMask-1]
}

func (sl slot) hidden() bool     { return sl.pos&hiddenBit != 0 }
func (sl slot) position() uint64 { return sl.pos &^ hiddenBit }

// refHash is the entry's hash of a send's author and ref.
func (ix *index) refHash(m *proto.Message) uint64 {
	if m.Ref == "" {
		return 0
	}
	var h maphash.Hash
	h.SetSeed(ix.seed)
	h.WriteString(author(m))
	h.WriteByte(0)
	h.WriteString(m.Ref)
	return h.Sum64() | 1 // never 0
}

// add puts m, stored at p, in the index. Its sequence must follow the
// last one held of its origin.
func (ix *index) add(m *proto.Message, p uint64) error {
	if m.Seq > seqMask {
		return fmt.Errorf("message %s: sequence over %d", m.ID(), uint64(seqMask))
	}
	n, err := ix.num(m.Origin)
	if err != nil {
		return err
	}
	switch held := uint64(len(ix.logs[n])); {
	case m.Seq <= held:
		return fmt.Errorf("message %s is in the log twice", m.ID())
	case m.Seq != held+1:
		return fmt.Errorf("message %s does not follow %s-%d: the log has a gap", m.ID(), m.Origin, held)
	}
	if m.Hidden {
		p |= hiddenBit
	}
	ix.logs[n] = append(ix.logs[n], slot{pos: p, created: m.Created})
	t := ix.rooms[m.Room]
	if t == nil {
		t = btree.NewWithFreeListG(16, ix.less, ix.free)
		ix.rooms[m.Room] = t
	}
	key := uint64(n)<<seqBits | m.Seq
	t.ReplaceOrInsert(entry{created: m.Created, key: key, ref: ix.refHash(m)})
	if m.Replaces != "" {
		ix.replaces[key] = m.Replaces
	}
	if m.Hidden {
		ix.hidden[m.Room] = append(ix.hidden[m.Room], key)
	}
	return nil
}

// hide marks (origin, seq) of room a hidden copy. It reports whether it
// was shown before.
func (ix *index) hide(room, origin string, seq uint64) bool {
	n, ok := ix.nums[origin]
	if !ok || seq == 0 || seq > uint64(len(ix.logs[n])) || ix.logs[n][seq-1].hidden() {
		return false
	}
	ix.logs[n][seq-1].pos |= hiddenBit
	ix.hidden[room] = append(ix.hidden[room], uint64(n)<<seqBits|seq)
	return true
}

// setReplaces records that (origin, seq) names the copy replaces.
func (ix *index) setReplaces(origin string, seq uint64, replaces string) {
	if key, ok := ix.key(origin, seq); ok {
		ix.replaces[key] = replaces
	}
}

// first is the entry that sorts before every message made at created.
func first(created int64) entry {
	return entry{created: created, key: pivotOrigin << seqBits}
}

// entryOf is the room entry of (origin, seq), made at created.
func (ix *index) entryOf(origin string, seq uint64, created int64) (entry, bool) {
	key, ok := ix.key(origin, seq)
	return entry{created: created, key: key}, ok
}
