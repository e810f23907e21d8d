package clustertest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/proctest"
)

// dialLobby opens a session on node i as name and joins the lobby: from
// since, or with the 10 newest messages. It does not wait for the replay.
func dialLobby(ctx context.Context, t *testing.T, c *Cluster, i int, name, since string) *client.Conn {
	t.Helper()
	conn, err := client.Dial(ctx, "http://"+c.HTTPAddr(i), name, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	if since == "" {
		err = conn.JoinHistory(ctx, "lobby", 10)
	} else {
		err = conn.Join(ctx, "lobby", since)
	}
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// syncedLobby reads until the lobby is synced and returns what came.
func syncedLobby(ctx context.Context, t *testing.T, conn *client.Conn) []client.Frame {
	t.Helper()
	fs, err := conn.ReadUntil(ctx, client.IsType(client.TypeSynced, "lobby"))
	if err != nil {
		t.Fatalf("no synced: %v (read %v)", err, fs)
	}
	return fs
}

// sendOnce sends "only once" with ref r1 and returns the id it is acked with.
func sendOnce(ctx context.Context, t *testing.T, conn *client.Conn) string {
	t.Helper()
	if err := conn.Send(ctx, "lobby", "only once", "r1"); err != nil {
		t.Fatal(err)
	}
	fs, err := conn.ReadUntil(ctx, func(f client.Frame) bool { return f.Type == client.TypeAck && f.Ref == "r1" })
	if err != nil {
		t.Fatalf("no ack: %v (read %v)", err, fs)
	}
	return fs[len(fs)-1].ID
}

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
		conn := dialLobby(ctx, t, c, i, name, "")
		syncedLobby(ctx, t, conn)
		return conn
	}
	send := func(conn *client.Conn) string { return sendOnce(ctx, t, conn) }

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

// The hidden copy reaches a client that saw the earlier copy first: a
// client on node 0 is shown copy 1 live, the sender re-sends on node 1
// (cut off) as copy 2, and the client fails over to node 1 and is shown
// copy 2 there. When node 1 learns copy 1, it hides copy 2; the client
// holds copy 1 already, so the message frame that says `replaces` is not
// for it: it must get a `hidden` frame for copy 2 instead. A client that
// was away then is told on its resume, on any node.
func TestHiddenCopyReachesAClientThatSawTheEarlierOne(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dial := func(i int, name, since string) *client.Conn { return dialLobby(ctx, t, c, i, name, since) }
	synced := func(conn *client.Conn) []client.Frame { return syncedLobby(ctx, t, conn) }
	send := func(conn *client.Conn) string { return sendOnce(ctx, t, conn) }
	hiddenIn := func(fs []client.Frame, id string) bool {
		for _, f := range fs {
			if f.Type == "hidden" && f.ID == id || f.Type == client.TypeMessage && f.Replaces == id {
				return true
			}
		}
		return false
	}

	live := dial(0, "wes", "") // stays on: told live
	synced(live)
	away := dial(0, "ava", "") // goes away before the heal: told on resume
	synced(away)
	c.Partition([]int{0, 2}, []int{1})
	first := send(dial(0, "rita", ""))
	for _, w := range []*client.Conn{live, away} {
		if _, err := w.ReadUntil(ctx, func(f client.Frame) bool { return f.ID == first }); err != nil {
			t.Fatalf("copy 1 not shown on node 0: %v", err)
		}
	}
	rita := dial(1, "rita", "")
	synced(rita)
	second := send(rita)
	if first == second {
		t.Fatalf("both sends acked as %s: the test did not make two copies", first)
	}
	// Both fail over to node 1 and are shown copy 2 there.
	var cursorAway string
	for i, w := range []*client.Conn{live, away} {
		w.CloseNow()
		next := dial(1, []string{"wes", "ava"}[i], w.Cursor("lobby"))
		fs := synced(next)
		if !slices.ContainsFunc(fs, func(f client.Frame) bool { return f.ID == second }) {
			t.Fatalf("copy 2 not replayed on node 1: %v", fs)
		}
		if i == 0 {
			live = next
		} else {
			cursorAway = next.Cursor("lobby")
			next.CloseNow()
		}
	}
	// And one the other way round: shown copy 2 on node 1, then copy 1 on
	// node 0, which is told when copy 2 comes in, hidden from the start.
	ida := dial(1, "ida", "")
	if fs := synced(ida); !slices.ContainsFunc(fs, func(f client.Frame) bool { return f.ID == second }) {
		t.Fatalf("copy 2 not in node 1's history: %v", fs)
	}
	ida.CloseNow()
	ida = dial(0, "ida", ida.Cursor("lobby"))
	if fs := synced(ida); !slices.ContainsFunc(fs, func(f client.Frame) bool { return f.ID == first }) {
		t.Fatalf("copy 1 not replayed on node 0: %v", fs)
	}
	c.Heal()
	for _, w := range []*client.Conn{live, ida} {
		fs, err := w.ReadUntil(ctx, func(f client.Frame) bool { return hiddenIn([]client.Frame{f}, second) })
		if err != nil {
			t.Fatalf("a client was never told to drop copy 2 %s: %v (read %v)", second, err, fs)
		}
	}
	proctest.Eventually(t, convergeTimeout, func() error {
		for i := range c.N() {
			h, err := c.History(i, "lobby")
			if err != nil {
				return err
			}
			if len(h) != 1 || h[0].ID != first {
				return fmt.Errorf("node %d lists %v, want only copy 1 %s", i, h, first)
			}
		}
		return nil
	})
	for i := range c.N() {
		back := dial(i, "ava", cursorAway)
		if fs := synced(back); !hiddenIn(fs, second) {
			t.Fatalf("a resume on node %d did not name copy 2 %s: %v", i, second, fs)
		}
		back.CloseNow()
	}
}
