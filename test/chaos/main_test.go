// Package chaos is chatr's seeded fault-injection suite: real chatr
// processes, each in a network namespace of its own (as root), with
// clients in one more namespace that send over the WebSocket and over
// HTTP, fail over and resume, while a schedule drawn from one seed kills,
// pauses, stops, restarts, isolates and partitions the nodes. At the end
// every acked message must be on every node exactly once, the nodes'
// histories identical, their logs without gaps, every client's view
// complete and without repeats, and no one left in presence.
//
// It runs only when CHATR_CHAOS is set: `make test` runs one short seed as
// a step of its own (so that it does not share two cores with the rest of
// go test ./... and its timing stays its own), and `make chaos` runs
// longer ones. Every failure names its seed and the command that replays
// that schedule.
package chaos

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"chatr/internal/proctest"
)

var (
	seedFlag     = flag.Uint64("chaos.seed", 0, "seed of the schedule and the clients (0: $CHATR_SEED, else a fresh one)")
	durationFlag = flag.Duration("chaos.duration", 0, "length of the fault phase (0: $CHAOS_DURATION, else 70s)")
	nodesFlag    = flag.Int("chaos.nodes", 0, "number of nodes, 3 or more (0: $CHAOS_NODES, else 3)")
)

// defaultDuration is the fault phase of `make test`: room for about seven
// faults, one of each kind, so that the whole test stays near two minutes
// on a loaded 2-core machine.
const defaultDuration = 70 * time.Second

// TestMain removes the chatr binary that proctest.Binary built, if any. It
// builds nothing itself: without CHATR_CHAOS the suite skips, and go test
// ./... need not wait for a build.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	proctest.RemoveBinary()
	os.Exit(code)
}

// config is what one run is made of; the same config replays the same
// schedule of faults and sends.
type config struct {
	seed     uint64
	duration time.Duration
	nodes    int
}

// loadConfig reads the flags, else the environment, else the defaults.
func loadConfig(t *testing.T) config {
	t.Helper()
	c := config{seed: *seedFlag, duration: *durationFlag, nodes: *nodesFlag}
	if c.seed == 0 {
		if s := os.Getenv("CHATR_SEED"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil || v == 0 {
				t.Fatalf("chaos: CHATR_SEED=%q: want a whole number above 0", s)
			}
			c.seed = v
		} else {
			c.seed = rand.Uint64()%1_000_000_000 + 1 // short enough to type
		}
	}
	if c.duration == 0 {
		if s := os.Getenv("CHAOS_DURATION"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				t.Fatalf("chaos: CHAOS_DURATION=%q: want a duration such as 5m", s)
			}
			c.duration = d
		} else {
			c.duration = defaultDuration
		}
	}
	if c.nodes == 0 {
		if s := os.Getenv("CHAOS_NODES"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("chaos: CHAOS_NODES=%q: want a number", s)
			}
			c.nodes = n
		} else {
			c.nodes = 3
		}
	}
	if c.nodes < 3 || c.nodes > 9 {
		t.Fatalf("chaos: %d nodes: want 3 to 9", c.nodes)
	}
	return c
}

// replay is the command that runs this config again.
func (c config) replay() string {
	return fmt.Sprintf("make chaos SEED=%d DURATION=%v NODES=%d", c.seed, c.duration, c.nodes)
}

func (c config) String() string {
	return fmt.Sprintf("seed %d, %d nodes, %v of faults (replay: %s)", c.seed, c.nodes, c.duration, c.replay())
}
