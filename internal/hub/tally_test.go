package hub

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestTallyActsAsAMap drives a tally and a map with the same random
// changes and checks they always agree, keys sorted and none at zero.
func TestTallyActsAsAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tl tally
	m := map[string]int{}
	for step := range 5000 {
		k := fmt.Sprintf("k%d", rng.IntN(6))
		d := rng.IntN(5) - 2
		tl = tl.add(k, d)
		if m[k]+d > 0 {
			m[k] += d
		} else {
			delete(m, k)
		}
		if len(tl) != len(m) {
			t.Fatalf("step %d: %d keys, want %d", step, len(tl), len(m))
		}
		for i, e := range tl {
			if e.n <= 0 || m[e.key] != e.n || tl.get(e.key) != e.n {
				t.Fatalf("step %d: %s=%d, want %d", step, e.key, e.n, m[e.key])
			}
			if i > 0 && tl[i-1].key >= e.key {
				t.Fatalf("step %d: keys out of order: %v", step, tl)
			}
		}
	}
	if (tally{}).first() != "" || (tally{{"b", 1}, {"c", 2}}).first() != "b" {
		t.Fatal("first is not the smallest key")
	}
}
