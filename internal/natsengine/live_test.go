package natsengine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"chatr/internal/natstest"
	"chatr/internal/store"
)

// TestFeedRemade: the live feed's consumer deleted on the server while
// messages keep coming (nats.go makes it again from the last message it
// delivered, unplaced) delivers every message once, in stream order, and
// the tails go on serving what the stream holds.
func TestFeedRemade(t *testing.T) {
	c := natstest.Start(t, 3)
	e := open(t, c, "REMADE")
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []uint64
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		e.Follow(ctx, 0, func(b []store.Committed) {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range b {
				got = append(got, c.Msg.Seq)
			}
		}, func() {})
	}()
	defer func() { cancel(); <-followed }()
	waitFeed(t, e)
	if _, err := e.Latest(ctx, "a", 10); err != nil { // the room's tail
		t.Fatal(err)
	}

	var sent []uint64
	deleted := 0
	for i := range 60 {
		// Sent again with its ref while NATS says it did not store it, as
		// a client does (a publish right after the deletes was once not
		// answered).
		m, err := post(t, e, "a", "ann", fmt.Sprint("m", i), fmt.Sprint("r", i))
		for try := 0; err != nil && try < 20; try++ {
			time.Sleep(100 * time.Millisecond)
			m, err = post(t, e, "a", "ann", fmt.Sprint("m", i), fmt.Sprint("r", i))
		}
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m.Seq)
		if i%20 == 10 { // delete every consumer of the stream: the feed's among them
			lister := e.stream.ListConsumers(ctx)
			for ci := range lister.Info() {
				if err := e.stream.DeleteConsumer(ctx, ci.Name); err == nil {
					deleted++
				}
			}
		}
	}
	if deleted < 3 {
		t.Fatalf("%d consumers deleted, want the feed's at least 3 times", deleted)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(sent) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("the feed delivered %v, the stream took %v", got, sent)
	}
	p, err := e.Latest(ctx, "a", 10)
	if err != nil || len(p.Messages) != 10 || p.Messages[9].Seq != sent[59] || p.Messages[0].Seq != sent[50] {
		t.Fatalf("latest 10 after the remakes: %v %v", seqs(p.Messages), err)
	}
}
