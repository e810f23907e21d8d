package hub

import "sort"

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
		return append(t[:i], t[i+1:]...)
	case ok:
		t[i].n += delta
		return t
	case delta <= 0:
		return t
	}
	t = append(t, tallyEntry{})
	copy(t[i+1:], t[i:])
	t[i] = tallyEntry{key, delta}
	return t
}

// first is the smallest key, or "".
func (t tally) first() string {
	if len(t) == 0 {
		return ""
	}
	return t[0].key
}

func (t tally) find(key string) (int, bool) {
	i := sort.Search(len(t), func(i int) bool { return t[i].key >= key })
	return i, i < len(t) && t[i].key == key
}
