package natsengine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"chatr/internal/natstest"
	"chatr/internal/proto"
	"chatr/internal/store"
)

func msgAt(room string, seq uint64) proto.Message {
	return proto.Message{Room: room, Seq: seq, Text: fmt.Sprint("m", seq)}
}

func seqs(ms []proto.Message) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Seq)
	}
	return out
}

// TestTails: the rules that keep a tail a suffix of its room with no hole.
func TestTails(t *testing.T) {
	t.Run("serves only once made and while the feed runs", func(t *testing.T) {
		tl := newTails(0, 0)
		if _, ok := tl.read("a", 0, 0, 10, true); ok {
			t.Fatal("read served with no feed and no tail")
		}
		tl.start(11) // the feed starts after sequence 10
		tl.make("a", []proto.Message{msgAt("a", 3), msgAt("a", 7)}, 7, true)
		got, ok := tl.read("a", 0, 7, 10, true)
		if !ok || !slices.Equal(seqs(got), []uint64{3, 7}) {
			t.Fatalf("latest: %v %v", seqs(got), ok)
		}
		tl.take(11, ptr(msgAt("b", 11)))
		tl.take(12, ptr(msgAt("a", 12)))
		if got, ok := tl.read("a", 7, 12, 10, false); !ok || !slices.Equal(seqs(got), []uint64{12}) {
			t.Fatalf("after 7: %v %v", seqs(got), ok)
		}
		if _, ok := tl.read("a", 0, 13, 10, true); ok {
			t.Fatal("served a read whose newest message (13) the feed has not taken")
		}
		tl.stop()
		if _, ok := tl.read("a", 0, 12, 10, true); ok {
			t.Fatal("served with the feed stopped")
		}
		tl.start(13) // right after its last: kept
		if _, ok := tl.read("a", 0, 12, 10, true); !ok {
			t.Fatal("a feed that goes on where it stopped dropped the tail")
		}
		tl.stop()
		tl.start(20) // a jump: dropped
		if _, ok := tl.read("a", 0, 12, 10, true); ok {
			t.Fatal("a feed that starts again after a gap kept the tail")
		}
	})
	t.Run("not made when the feed took a newer message of the room", func(t *testing.T) {
		tl := newTails(0, 0)
		tl.start(1)
		tl.take(5, ptr(msgAt("a", 5)))
		tl.make("a", []proto.Message{msgAt("a", 2)}, 2, true) // read before 5 was stored
		if _, ok := tl.read("a", 0, 2, 10, true); ok {
			t.Fatal("made a tail from a read that lacks a message the feed took (a hole)")
		}
		tl.make("a", []proto.Message{msgAt("a", 2), msgAt("a", 5)}, 5, true)
		if got, ok := tl.read("a", 0, 5, 10, true); !ok || !slices.Equal(seqs(got), []uint64{2, 5}) {
			t.Fatalf("%v %v", seqs(got), ok)
		}
	})
	t.Run("a read ahead of the feed is not appended twice", func(t *testing.T) {
		tl := newTails(0, 0)
		tl.start(1)
		tl.make("a", []proto.Message{msgAt("a", 1), msgAt("a", 2)}, 2, true) // the feed is at 0
		tl.take(1, ptr(msgAt("a", 1)))
		tl.take(2, ptr(msgAt("a", 2)))
		tl.take(3, ptr(msgAt("a", 3)))
		if got, ok := tl.read("a", 0, 3, 10, true); !ok || !slices.Equal(seqs(got), []uint64{1, 2, 3}) {
			t.Fatalf("%v %v", seqs(got), ok)
		}
	})
	t.Run("a part of a room serves only what it holds", func(t *testing.T) {
		tl := newTails(0, 0)
		tl.start(7)
		tl.make("a", []proto.Message{msgAt("a", 4), msgAt("a", 6)}, 6, false) // older ones exist
		if _, ok := tl.read("a", 0, 6, 3, true); ok {
			t.Fatal("latest 3 served from a tail of 2 that is not the whole room")
		}
		if got, ok := tl.read("a", 0, 6, 2, true); !ok || len(got) != 2 {
			t.Fatalf("latest 2: %v %v", seqs(got), ok)
		}
		if _, ok := tl.read("a", 3, 6, 10, false); ok {
			t.Fatal("after 3 served: the tail may lack messages between 3 and 4")
		}
		if got, ok := tl.read("a", 4, 6, 10, false); !ok || !slices.Equal(seqs(got), []uint64{6}) {
			t.Fatalf("after 4: %v %v", seqs(got), ok)
		}
	})
	t.Run("trimmed to tailMax, then serves after what it dropped", func(t *testing.T) {
		tl := newTails(0, 0)
		tl.start(1)
		tl.make("a", nil, 0, true)
		for seq := uint64(1); seq <= tailMax+10; seq++ {
			tl.take(seq, ptr(msgAt("a", seq)))
		}
		got, ok := tl.read("a", 0, tailMax+10, tailMax, true)
		if !ok || len(got) != tailMax || got[0].Seq != 11 {
			t.Fatalf("latest: %d messages from %v, %v", len(got), seqs(got[:1]), ok)
		}
		if _, ok := tl.read("a", 9, tailMax+10, 10, false); ok {
			t.Fatal("after 9 served: 10 was trimmed")
		}
		if got, ok := tl.read("a", 10, tailMax+10, 10, false); !ok || len(got) != tailMax {
			t.Fatalf("after 10: %d, %v", len(got), ok)
		}
		if _, ok := tl.read("a", 0, tailMax+10, tailMax+1, true); ok {
			t.Fatal("latest tailMax+1 served from a trimmed tail")
		}
	})
	t.Run("shows no more than the stream keeps", func(t *testing.T) {
		tl := newTails(3, 0) // --history-max-per-room 3
		tl.start(6)
		var five []proto.Message
		for seq := uint64(1); seq <= 5; seq++ {
			five = append(five, msgAt("a", seq))
		}
		tl.make("a", five, 5, false)
		if got, ok := tl.read("a", 0, 5, 50, true); !ok || !slices.Equal(seqs(got), []uint64{3, 4, 5}) {
			t.Fatalf("latest 50 with 3 a room kept: %v %v", seqs(got), ok)
		}
		tl.take(6, ptr(msgAt("a", 6)))
		if got, ok := tl.read("a", 1, 6, 50, false); !ok || !slices.Equal(seqs(got), []uint64{4, 5, 6}) {
			t.Fatalf("after 1: %v %v", seqs(got), ok)
		}

		tl = newTails(0, time.Hour) // --history-max-age 1h
		tl.start(3)
		old, fresh := msgAt("b", 1), msgAt("b", 2)
		old.Created, fresh.Created = time.Now().Add(-2*time.Hour).UnixMicro(), time.Now().UnixMicro()
		tl.make("b", []proto.Message{old, fresh}, 2, true)
		if got, ok := tl.read("b", 0, 2, 50, true); !ok || !slices.Equal(seqs(got), []uint64{2}) {
			t.Fatalf("latest with a message past the age limit: %v %v", seqs(got), ok)
		}
		if got, ok := tl.read("b", 0, 2, 50, false); !ok || !slices.Equal(seqs(got), []uint64{2}) {
			t.Fatalf("after 0 with a message past the age limit: %v %v", seqs(got), ok)
		}
	})
	t.Run("bounded in bytes, least lately read first", func(t *testing.T) {
		tl := newTails(0, 0)
		tl.start(1)
		big := proto.Message{Text: string(make([]byte, 1<<20))}
		for i := range 40 { // 40 MiB offered, 32 MiB kept
			room := fmt.Sprint("r", i)
			m := big
			m.Room, m.Seq = room, uint64(i+1)
			tl.make(room, []proto.Message{m}, m.Seq, true)
			tl.take(m.Seq, &m)
			if i == 0 {
				continue
			}
			tl.read("r0", 0, m.Seq, 1, true) // r0 is read all along
		}
		if tl.bytes > tailBytes {
			t.Fatalf("tails hold %d bytes, over %d", tl.bytes, tailBytes)
		}
		if _, ok := tl.read("r0", 0, 40, 1, true); !ok {
			t.Error("the room read most lately was dropped")
		}
		if _, ok := tl.read("r1", 0, 40, 1, true); ok {
			t.Error("the room read least lately was kept")
		}
	})
	t.Run("forgetting the rooms seen stays safe", func(t *testing.T) {
		tl := newTails(0, 0)
		tl.start(1)
		tl.take(1, ptr(msgAt("a", 1)))
		tl.seen = make(map[string]uint64, seenMax)
		for i := range seenMax {
			tl.seen[fmt.Sprint("x", i)] = 1
		}
		tl.take(2, ptr(msgAt("b", 2))) // full: forgets, floor 1
		tl.make("a", nil, 0, true)     // a read that missed a's message 1
		if _, ok := tl.read("a", 0, 0, 10, true); ok {
			t.Fatal("made a tail that lacks a message taken before the rooms seen were forgotten")
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestTailsServeAsTheStream: with the live feed running, joins and
// resumes served from the tails return what reads of the stream return,
// across rooms written in turns, while messages keep coming.
func TestTailsServeAsTheStream(t *testing.T) {
	c := natstest.Start(t, 3)
	e := open(t, c, "TAILS")
	direct := open(t, c, "TAILS") // no feed: reads the stream every time
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Follow(ctx, 0, func([]store.Committed) {}, func() {})
	waitFeed(t, e)

	rng := rand.New(rand.NewPCG(1, 2))
	rooms := []string{"a", "b", "c.d", "e"}
	for i := range 30 { // some history before the first read
		if _, err := post(t, e, rooms[i%len(rooms)], "ann", fmt.Sprint("early ", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	served := 0
	for i := range 300 {
		room := rooms[rng.IntN(len(rooms))]
		if rng.IntN(3) == 0 {
			if _, err := post(t, e, room, "bob", fmt.Sprint("m", i), ""); err != nil {
				t.Fatal(err)
			}
			continue
		}
		limit := 1 + rng.IntN(tailMax+20)
		want, err := direct.Latest(ctx, room, limit)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := e.tails.read(room, 0, newestSeq(want.Messages), limit, true); ok {
			served++
		}
		got, err := e.Latest(ctx, room, limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seqs(got.Messages), seqs(want.Messages)) {
			t.Fatalf("read %d, latest %d of %s: %v, the stream has %v", i, limit, room, seqs(got.Messages), seqs(want.Messages))
		}
		if len(want.Messages) > 0 {
			have := want.Messages[rng.IntN(len(want.Messages))].Seq
			cur := proto.Vector{e.origin: have}
			for _, newest := range []bool{true, false} {
				lim := 1 + rng.IntN(10)
				w, err := direct.Since(ctx, room, cur, lim, newest)
				if err != nil {
					t.Fatal(err)
				}
				g, err := e.Since(ctx, room, cur, lim, newest)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(seqs(g.Messages), seqs(w.Messages)) || g.Truncated != w.Truncated || g.Vector[e.origin] != w.Vector[e.origin] {
					t.Fatalf("since %d (limit %d, newest %v) in %s: %v %v %v, the stream has %v %v %v", have, lim, newest, room,
						seqs(g.Messages), g.Truncated, g.Vector, seqs(w.Messages), w.Truncated, w.Vector)
				}
			}
		}
	}
	if served == 0 {
		t.Fatal("no read was served from a tail")
	}
	t.Logf("%d reads could be served from tails", served)
}

// waitFeed waits until e's live feed runs.
func waitFeed(t *testing.T, e *Engine) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, ok := e.tails.at(0); ok {
			return
		}
	}
	t.Fatal("the live feed did not start in 20 s")
}

// TestLastStored: readers that come while an ask is out wait for the next
// one (its answer covers what was acked before they came), and all of
// them share it.
func TestLastStored(t *testing.T) {
	var asks atomic.Int64
	release := make(chan struct{})
	l := &lastStored{ask: func(context.Context) (uint64, error) {
		n := asks.Add(1)
		if n == 1 {
			<-release
		}
		return uint64(n), nil
	}}
	first := make(chan uint64)
	go func() {
		seq, _ := l.last(context.Background())
		first <- seq
	}()
	for asks.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// Ask 1 is out: these came after it began.
	var wg sync.WaitGroup
	got := make([]uint64, 100)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = l.last(context.Background())
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if seq := <-first; seq != 1 {
		t.Fatalf("the first reader got ask %d", seq)
	}
	for i, seq := range got {
		if seq < 2 {
			t.Fatalf("reader %d, come while ask 1 was out, got its answer", i)
		}
	}
	if n := asks.Load(); n > 3 {
		t.Errorf("101 readers made %d asks, want 2 (3 at most)", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.last(ctx); err == nil {
		t.Error("a reader whose context ended got no error")
	}
}
