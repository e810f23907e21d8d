package clustertest

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	seedFlag  = flag.Uint64("clustertest.seed", 0, "seed of TestRandomFaults (0: CHATR_SEED, else random)")
	stepsFlag = flag.Int("clustertest.steps", 30, "steps of TestRandomFaults")
)

// randomSeed is -clustertest.seed, else $CHATR_SEED, else a fresh one.
func randomSeed(t *testing.T) uint64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	if s := os.Getenv("CHATR_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHATR_SEED=%q: %v", s, err)
		}
		return v
	}
	return rand.Uint64()
}

// TestRandomFaults runs a random sequence of sends, partitions, heals,
// kills, clean stops and restarts on 4 nodes, then heals everything and
// checks that every node holds every accepted message in the same order
// without gaps. Replay a failure with the seed it logs:
//
//	go test -race -run TestRandomFaults ./internal/clustertest -clustertest.seed=N
func TestRandomFaults(t *testing.T) {
	t.Parallel()
	seed := randomSeed(t)
	t.Logf("seed %d (replay: go test -race -run TestRandomFaults ./internal/clustertest -clustertest.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	const n = 4
	rooms := []string{"lobby", "dev"}
	c := Start(t, n)

	var running []int
	update := func() {
		running = running[:0]
		for i := range n {
			if c.Running(i) {
				running = append(running, i)
			}
		}
	}
	update()
	for step := range *stepsFlag {
		var did string
		switch r := rng.IntN(100); {
		case r < 35: // sends
			i := running[rng.IntN(len(running))]
			room := rooms[rng.IntN(len(rooms))]
			k := 1 + rng.IntN(8)
			for j := range k {
				if _, err := c.Post(i, room, fmt.Sprintf("user%d", i), fmt.Sprintf("step %d #%d", step, j)); err != nil {
					t.Fatalf("step %d: send to node %d: %v (seed %d)", step, i, err, seed)
				}
			}
			did = fmt.Sprintf("send %d to node %d in %s", k, i, room)
		case r < 50: // a new partition into two sides
			// Two non-empty sides: a random cut of a random order.
			perm := rng.Perm(n)
			k := 1 + rng.IntN(n-1)
			a, b := slices.Sorted(slices.Values(perm[:k])), slices.Sorted(slices.Values(perm[k:]))
			c.Partition(a, b)
			did = fmt.Sprintf("partition %v | %v", a, b)
		case r < 62:
			c.Heal()
			did = "heal"
		case r < 72: // take a node down, at most two at a time
			if len(running) <= n-2 {
				did = "(no kill: two nodes down already)"
				break
			}
			i := running[rng.IntN(len(running))]
			if rng.IntN(2) == 0 {
				c.Kill(i)
				did = fmt.Sprintf("kill node %d", i)
			} else {
				c.Stop(i)
				did = fmt.Sprintf("stop node %d", i)
			}
		case r < 82:
			var down []int
			for i := range n {
				if !c.Running(i) {
					down = append(down, i)
				}
			}
			if len(down) == 0 {
				did = "(no restart: all running)"
				break
			}
			i := down[rng.IntN(len(down))]
			c.Restart(i)
			did = fmt.Sprintf("restart node %d", i)
		default: // let time pass: failure detection (~3 s) and reconnects act
			d := time.Duration(200+rng.IntN(4000)) * time.Millisecond
			time.Sleep(d)
			did = fmt.Sprintf("wait %v", d)
		}
		update()
		t.Logf("step %2d: %s (running %v)", step, did, running)
	}

	t.Logf("end: heal, restart every node, converge")
	c.Heal()
	for i := range n {
		if !c.Running(i) {
			c.Restart(i)
		}
	}
	start := time.Now()
	c.WaitMembers(convergeTimeout)
	var summary []string
	hists := c.WaitConvergedRooms(convergeTimeout, rooms...)
	for _, room := range rooms {
		h := hists[room]
		if len(h) != len(c.Accepted(room)) {
			t.Errorf("room %s: history has %d messages, %d were accepted (seed %d)", room, len(h), len(c.Accepted(room)), seed)
		}
		summary = append(summary, fmt.Sprintf("%s: %d messages", room, len(h)))
	}
	t.Logf("converged %v after the last fault: %s", time.Since(start), strings.Join(summary, ", "))
	if t.Failed() {
		t.Logf("replay with -clustertest.seed=%d", seed)
	}
}
