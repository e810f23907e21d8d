package clustertest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// TestStoppedNodeHandsOverWhatItAcked: a node stopped as with SIGTERM while
// a client sends to it leaves no acked message behind. It refuses new
// sends (unavailable, naming the other nodes) before it leaves the cluster,
// and leaves only once its peers hold what it acked: after it has exited,
// without a restart, the other nodes list every message it acked.
// (Before, it left first and kept acking sends its peers no longer
// followed: those came back only with the node.)
func TestStoppedNodeHandsOverWhatItAcked(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, c.HTTPAddr(0), "ann", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if err := conn.JoinHistory(ctx, "lobby", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ReadUntil(ctx, client.IsType(client.TypeSynced, "lobby")); err != nil {
		t.Fatal(err)
	}

	// The sender sends without waiting for acks; the reader collects them
	// until the node closes the session.
	var mu sync.Mutex
	var acked []string
	var refused []client.Frame
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			f, err := conn.Read(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			switch {
			case f.Type == client.TypeAck:
				acked = append(acked, f.ID)
			case f.Type == client.TypeError && f.Code == proto.CodeUnavailable:
				refused = append(refused, f)
			}
			mu.Unlock()
		}
	}()
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for i := 0; ; i++ {
			if conn.Send(ctx, "lobby", fmt.Sprint("m", i), fmt.Sprint("r", i)) != nil {
				return
			}
			select {
			case <-readDone:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	proctest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 50 {
			return fmt.Errorf("%d acks so far", len(acked))
		}
		return nil
	})
	c.Stop(0) // returns once the node has exited
	<-readDone
	<-sendDone

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d sends acked, %d refused as the node stopped", len(acked), len(refused))
	for _, f := range refused {
		if len(f.Nodes) != 2 || slices.ContainsFunc(f.Nodes, func(m proto.Member) bool { return m.ID == c.ID(0) }) {
			t.Fatalf("a send refused while stopping names nodes %v, want the two others", f.Nodes)
		}
	}
	for _, i := range []int{1, 2} {
		h, err := c.History(i, "lobby")
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, m := range h {
			have[m.ID] = true
		}
		for _, id := range acked {
			if !have[id] {
				t.Fatalf("node %d lacks %s, acked by node 0 before it stopped (it holds %d of %d)", i, id, len(h), len(acked))
			}
		}
	}
}

// TestPartialPartitionRoutedAround: with only the link between nodes 0 and
// 1 cut, both still reach node 2, so SWIM's indirect probes keep them
// alive to each other; node 0 must still get node 1's messages, through
// node 2, while the cut lasts.
func TestPartialPartitionRoutedAround(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	c.CutLink(0, 1)
	var ids []string
	for i := range 10 {
		ids = append(ids, c.MustPost(1, "lobby", "bob", fmt.Sprint("through 2, #", i)).ID)
	}
	proctest.Eventually(t, 20*time.Second, func() error {
		h, err := c.History(0, "lobby")
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, m := range h {
			have[m.ID] = true
		}
		for _, id := range ids {
			if !have[id] {
				return fmt.Errorf("node 0 lacks %s of node 1", id)
			}
		}
		return nil
	})
	// The two still see each other alive: it was routed around, not healed
	// by a failure verdict.
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	v, err := c.API(0).Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Alive()[c.ID(1)] {
		t.Fatalf("node 0 no longer sees node 1 alive: %+v", v)
	}
}
