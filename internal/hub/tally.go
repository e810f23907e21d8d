package hub

import (
	"slices"
	"strings"
)

// tally counts by key (a person's sessions by node, a lookalike key's
// names) in a slice sorted by key. Nearly every tally in a room holds one
// key, for which a map would cost a table of eight slots; a tally costs
// one small slice. The zero tally is empty.
type tally []tallyEntry

type tallyEntry struct {
	key string
	n   int
}

// get returns the count of key.
func (t tally) get(key string) int {
	if i, ok := t.find(key); ok {
		return t[i].n
	}
	return 0
}

// add changes the count of key by delta and returns the tally, without
// the key once its count is zero or less.
func (t tally) add(key string, delta int) tally {
	i, ok := t.find(key)
	switch {
	case ok && t[i].n+delta <= 0:
		return slices.Delete(t, i, i+1) // clears the freed slot: no key kept
	case ok:
		t[i].n += delta
		return t
	case delta <= 0:
		return t
	}
	return slices.Insert(t, i, tallyEntry{key, delta})
}

// first is the smallest key, or "".
func (t tally) first() string {
	if len(t) == 0 {
		return ""
	}
	return t[0].key
}

func (t tally) find(key string) (int, bool) {
	return slices.BinarySearchFunc(t, key, func(e tallyEntry, k string) int { return strings.Compare(e.key, k) })
}
