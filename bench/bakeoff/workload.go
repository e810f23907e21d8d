package main

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The bench's names, shaped like `chatr bench`'s: node ids of 12 hex
// digits, rooms "bench-<12 hex>-k", senders of ~8 characters, a decimal
// ref per send and a 64-byte text.
var (
	origins = [3]string{"a1b2c3d4e5f6", "0f1e2d3c4b5a", "99aa88bb77cc"} // [0] is this node
	padding = strings.Repeat("x", 64)
)

const (
	benchRooms   = 25
	benchSenders = 60
	textLen      = 64
)

// gen makes the messages of a run: this node's and two peers', each
// origin's seqs from 1 and its created rising, ~40 µs apart (25k msg/s).
type gen struct {
	rng     *rand.Rand
	rooms   []string
	senders []string
	seq     map[string]uint64
	clock   map[string]int64
	ref     []uint64
}

func newGen(rooms int, seed uint64) *gen {
	g := &gen{rng: rand.New(rand.NewPCG(seed, 7)), seq: map[string]uint64{}, clock: map[string]int64{}, ref: make([]uint64, benchSenders)}
	for k := range rooms {
		g.rooms = append(g.rooms, fmt.Sprintf("bench-5eed%08x-%d", seed, k))
	}
	for i := range benchSenders {
		g.senders = append(g.senders, fmt.Sprintf("bench%03d", i))
	}
	now := time.Now().UnixMicro()
	// A peer's clock runs a little behind ours: its messages land a few
	// places before the end of a room's order, as replicated ones do.
	g.clock[origins[0]], g.clock[origins[1]], g.clock[origins[2]] = now, now-1500, now-3000
	return g
}

func (g *gen) next(origin string) Message {
	g.seq[origin]++
	g.clock[origin] += 30 + g.rng.Int64N(20)
	s := g.rng.IntN(benchSenders)
	g.ref[s]++
	seq := g.seq[origin]
	text := "bench " + origin + " " + strconv.FormatUint(seq, 10) + " "
	text += padding[:textLen-len(text)]
	return Message{
		Origin: origin, Seq: seq, Room: g.rooms[g.rng.IntN(len(g.rooms))],
		Sender: g.senders[s], Text: text, Created: g.clock[origin],
		Ref: strconv.FormatUint(g.ref[s], 10),
	}
}

// workload is a sequence of commits.
type workload struct {
	name string
	note string
	// cap bounds a run's wall time: slow combinations stop there.
	cap     time.Duration
	batches func(g *gen, n int) [][]Message
}

func localBatches(size int) func(*gen, int) [][]Message {
	return func(g *gen, n int) [][]Message {
		var out [][]Message
		for n > 0 {
			b := make([]Message, min(size, n))
			for i := range b {
				b[i] = g.next(origins[0])
			}
			out, n = append(out, b), n-len(b)
		}
		return out
	}
}

// replBatches: 512 messages of one peer per commit, the two peers in turn
// (a follower storing what two links bring).
func replBatches(g *gen, n int) [][]Message {
	var out [][]Message
	for k := 0; n > 0; k++ {
		b := make([]Message, min(512, n))
		for i := range b {
			b[i] = g.next(origins[1+k%2])
		}
		out, n = append(out, b), n-len(b)
	}
	return out
}

// mixBatches: one node of three in the closed loop, where the writer
// drains what is queued: 32 local sends and 32 messages of each peer per
// commit (1/3 local, 2/3 replicated; ~96 a commit at ~24k msg/s and a few
// ms a commit).
func mixBatches(per int) func(*gen, int) [][]Message {
	return func(g *gen, n int) [][]Message {
		var out [][]Message
		for n > 0 {
			var b []Message
			for _, o := range origins {
				for range per {
					if len(b) < n {
						b = append(b, g.next(o))
					}
				}
			}
			out, n = append(out, b), n-len(b)
		}
		return out
	}
}

var workloads = []workload{
	{"local-b1", "local sends with a ref, 1 per commit", 15 * time.Second, localBatches(1)},
	{"local-b16", "local sends with a ref, 16 per commit", 40 * time.Second, localBatches(16)},
	{"local-b256", "local sends with a ref, 256 per commit", 40 * time.Second, localBatches(256)},
	{"repl-512", "replicated, 512 of one peer per commit", 40 * time.Second, replBatches},
	{"mix-3node", "32 local + 32 + 32 replicated per commit", 40 * time.Second, mixBatches(32)},
}

func findWorkload(name string) (workload, error) {
	for _, w := range workloads {
		if w.name == name {
			return w, nil
		}
	}
	return workload{}, fmt.Errorf("no workload %q", name)
}

// roomOrder returns each room's messages in history order (created,
// origin, seq), for the expected answers of reads.
func roomOrder(batches [][]Message) map[string][]Message {
	rooms := map[string][]Message{}
	for _, b := range batches {
		for _, m := range b {
			rooms[m.Room] = append(rooms[m.Room], m)
		}
	}
	for _, ms := range rooms {
		sort.Slice(ms, func(i, j int) bool { return earlier(&ms[i], &ms[j]) })
	}
	return rooms
}

// cursorBefore is the cursor of a client that holds all of ms but the
// last k.
func cursorBefore(ms []Message, k int) map[string]uint64 {
	c := map[string]uint64{}
	for _, m := range ms[:len(ms)-k] {
		c[m.Origin] = max(c[m.Origin], m.Seq)
	}
	return c
}
