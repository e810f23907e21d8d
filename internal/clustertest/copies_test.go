package clustertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/proctest"
)

// A client re-sends on another node while the first copy is cut off with
// its node: both nodes store a copy. After the heal every node lists the
// send once (the earlier copy), and a client that was shown the later copy
// is told to drop it.
func TestCopiesOfAResendShownOnce(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(i int, name string) *client.Conn {
		conn, err := client.Dial(ctx, "http://"+c.HTTPAddr(i), name, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		if err := conn.JoinHistory(ctx, "lobby", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ReadUntil(ctx, client.IsType(client.TypeSynced, "lobby")); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	send := func(conn *client.Conn) string {
		if err := conn.Send(ctx, "lobby", "only once", "r1"); err != nil {
			t.Fatal(err)
		}
		fs, err := conn.ReadUntil(ctx, func(f client.Frame) bool { return f.Type == client.TypeAck && f.Ref == "r1" })
		if err != nil {
			t.Fatalf("no ack: %v (read %v)", err, fs)
		}
		return fs[len(fs)-1].ID
	}

	watcher := dial(1, "wes")
	c.Partition([]int{0}, []int{1, 2})
	first := send(dial(0, "rita"))
	second := send(dial(1, "rita")) // node 1 cannot know the first copy
	if first == second {
		t.Fatalf("both sends acked as %s: the test did not make two copies", first)
	}
	c.Heal()
	proctest.Eventually(t, convergeTimeout, func() error {
		for i := range c.N() {
			h, err := c.History(i, "lobby")
			if err != nil {
				return err
			}
			var got []string
			for _, m := range h {
				if m.Text == "only once" {
					got = append(got, m.ID)
				}
			}
			if len(got) != 1 || got[0] != first {
				return fmt.Errorf("node %d lists %v, want only the first copy %s", i, got, first)
			}
		}
		return nil
	})
	// The watcher on node 1 was shown the second copy live; the first one
	// comes with the order to drop it.
	fs, err := watcher.ReadUntil(ctx, func(f client.Frame) bool { return f.Type == client.TypeMessage && f.ID == first })
	if err != nil {
		t.Fatalf("watcher: %v (read %v)", err, fs)
	}
	if got := fs[len(fs)-1].Replaces; got != second {
		t.Fatalf("the first copy replaces %q, want %s", got, second)
	}
}
