package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// convergeTimeout bounds how long replication may take to bring every node
// to the same history once sends stop (a healed partition included).
const convergeTimeout = 45 * time.Second

// sendOnEach posts per messages to every listed node, the nodes in
// parallel, each node's sends in order.
func sendOnEach(t *testing.T, c *Cluster, room string, nodes []int, per int, tag string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range per {
				if _, err := c.Post(i, room, fmt.Sprintf("user%d", i), fmt.Sprintf("%s from node %d #%d", tag, i, k)); err != nil {
					errs <- fmt.Errorf("node %d send %d: %w", i, k, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// perOrigin counts a history's messages by origin node.
func perOrigin(h []proto.MessageJSON) map[string]int {
	out := map[string]int{}
	for _, m := range h {
		out[m.Node]++
	}
	return out
}

func TestConvergence(t *testing.T) {
	t.Parallel()
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c := Start(t, n)
			t.Logf("%d nodes up and joined in %v", n, time.Since(start))
			const per = 20
			start = time.Now()
			sendOnEach(t, c, "lobby", all(n), per, "hello")
			t.Logf("%d sends took %v", n*per, time.Since(start))
			start = time.Now()
			h := c.WaitConverged("lobby", convergeTimeout)
			t.Logf("converged in %v on %d messages", time.Since(start), len(h))
			if len(h) != n*per {
				t.Fatalf("history has %d messages, want %d", len(h), n*per)
			}
			counts := perOrigin(h)
			for i := range n {
				if counts[c.ID(i)] != per {
					t.Errorf("node %d (%s) is the origin of %d messages, want %d", i, c.ID(i), counts[c.ID(i)], per)
				}
			}
		})
	}
}

func TestPartitionAndHeal(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	sendOnEach(t, c, "lobby", all(3), 5, "before")
	c.WaitConverged("lobby", convergeTimeout)

	c.Partition([]int{0, 1}, []int{2})
	// Both sides keep accepting (201) while cut off from each other.
	sendOnEach(t, c, "lobby", all(3), 10, "during")
	// Side {0,1} replicates within itself; node 2 holds only what it had
	// and its own messages.
	proctest.Eventually(t, convergeTimeout, func() error {
		h0, err := c.History(0, "lobby")
		if err != nil {
			return err
		}
		h1, err := c.History(1, "lobby")
		if err != nil {
			return err
		}
		if len(h0) != 15+20 {
			return fmt.Errorf("node 0 holds %d messages, want 35", len(h0))
		}
		return SameHistory(h0, h1)
	})
	if h2, err := c.History(2, "lobby"); err != nil {
		t.Fatal(err)
	} else if len(h2) != 15+10 {
		t.Fatalf("node 2, cut off, holds %d messages, want its own and the earlier ones: 25", len(h2))
	}
	// Membership notices the split: each side declares the other dead.
	proctest.Eventually(t, convergeTimeout, func() error {
		for i, gone := range map[int][]int{0: {2}, 1: {2}, 2: {0, 1}} {
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			v, err := c.API(i).Cluster(ctx)
			cancel()
			if err != nil {
				return err
			}
			for _, j := range gone {
				if v.Alive()[c.ID(j)] {
					return fmt.Errorf("node %d still sees node %d alive: %s", i, j, v)
				}
			}
		}
		return nil
	})

	healed := time.Now()
	c.Heal()
	// Membership re-merges by itself (the reconnect loop), then histories.
	c.WaitMembers(convergeTimeout)
	t.Logf("membership re-merged %v after the heal", time.Since(healed))
	h := c.WaitConverged("lobby", convergeTimeout)
	t.Logf("histories converged %v after the heal", time.Since(healed))
	if len(h) != 45 {
		t.Fatalf("history has %d messages, want 45", len(h))
	}
	sendOnEach(t, c, "lobby", all(3), 2, "after")
	c.WaitConverged("lobby", convergeTimeout)
}

func TestKillAndRestart(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	sendOnEach(t, c, "lobby", all(3), 10, "before")
	c.WaitConverged("lobby", convergeTimeout)

	id2 := c.ID(2)
	killed := time.Now()
	c.Kill(2)
	proctest.Eventually(t, convergeTimeout, func() error {
		for _, i := range []int{0, 1} {
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			v, err := c.API(i).Cluster(ctx)
			cancel()
			if err != nil {
				return err
			}
			if s := v.State(id2); s != "dead" {
				return fmt.Errorf("node %d sees node 2 as %q, want dead: %s", i, s, v)
			}
		}
		return nil
	})
	t.Logf("node 2 declared dead by both others %v after the kill", time.Since(killed))

	sendOnEach(t, c, "lobby", []int{0, 1}, 100, "while down")
	c.WaitConverged("lobby", convergeTimeout)

	restarted := time.Now()
	c.Restart(2)
	if c.ID(2) != id2 {
		t.Fatalf("node 2 restarted as %s, want its old id %s (same data directory)", c.ID(2), id2)
	}
	h := c.WaitConverged("lobby", convergeTimeout)
	t.Logf("node 2 caught up %d messages %v after the restart", len(h), time.Since(restarted))
	if len(h) != 230 {
		t.Fatalf("history has %d messages, want 230", len(h))
	}
	c.WaitMembers(convergeTimeout)
	t.Logf("membership whole again %v after the restart", time.Since(restarted))

	// Its own numbering continues where it stopped: 11, not 1.
	m := c.MustPost(2, "lobby", "user2", "back")
	if want := proto.MessageID(id2, 11); m.ID != want {
		t.Fatalf("first message after restart is %s, want %s", m.ID, want)
	}
	c.WaitConverged("lobby", convergeTimeout)
}

// joinAndWait joins room on conn and returns the joined frame.
func joinAndWait(ctx context.Context, conn *client.Conn, room string) (client.Frame, error) {
	if err := conn.JoinHistory(ctx, room, 0); err != nil {
		return client.Frame{}, err
	}
	frames, err := conn.ReadUntil(ctx, client.IsType(client.TypeJoined, room))
	if err != nil {
		return client.Frame{}, err
	}
	return frames[len(frames)-1], nil
}

func hasPerson(ps []proto.Person, name, node string) bool {
	return slices.Contains(ps, proto.Person{Name: name, Node: node})
}

func TestPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"stopped", "cut away"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			c := Start(t, 2)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			alice, err := client.Dial(ctx, c.HTTPAddr(0), "alice", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer alice.CloseNow()
			if _, err := joinAndWait(ctx, alice, "lobby"); err != nil {
				t.Fatal(err)
			}

			// A client joining lobby on node 1 lists alice of node 0 once
			// node 0's presence has come over the peer link.
			var bob *client.Conn
			proctest.Eventually(t, convergeTimeout, func() error {
				if bob != nil {
					bob.CloseNow()
				}
				bob, err = client.Dial(ctx, c.HTTPAddr(1), "bob", nil)
				if err != nil {
					return err
				}
				joined, err := joinAndWait(ctx, bob, "lobby")
				if err != nil {
					return err
				}
				if !hasPerson(joined.Presence, "alice", c.ID(0)) {
					return fmt.Errorf("joined.presence on node 1 is %v, want alice of node %s", joined.Presence, c.ID(0))
				}
				return nil
			})
			defer bob.CloseNow()

			gone := time.Now()
			if how == "stopped" {
				c.Stop(0)
			} else {
				c.Partition([]int{0}, []int{1})
			}
			rctx, rcancel := context.WithTimeout(ctx, convergeTimeout)
			defer rcancel()
			_, err = bob.ReadUntil(rctx, func(f client.Frame) bool {
				return f.Type == client.TypePresence && f.Room == "lobby" && hasPerson(f.Left, "alice", c.ID(0))
			})
			if err != nil {
				t.Fatalf("no presence frame with alice of node 0 in left: %v", err)
			}
			t.Logf("bob saw alice leave %v after node 0 was %s", time.Since(gone), how)
		})
	}
}

func TestAckReplicas(t *testing.T) {
	t.Parallel()
	c := Start(t, 2, WithArgs("--ack-replicas", "1"))

	// Each 201 comes only once node 1 holds the message.
	for k := range 5 {
		m := c.MustPost(0, "lobby", "alice", fmt.Sprintf("replicated %d", k))
		h, err := c.History(1, "lobby")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(h, func(x proto.MessageJSON) bool { return x.ID == m.ID }) {
			t.Fatalf("node 0 answered 201 for %s before node 1 held it", m.ID)
		}
	}

	// Cut from its only peer, node 0 cannot reach --ack-replicas 1: the
	// send is answered with an error within the ack timeout (5 s).
	c.Partition([]int{0}, []int{1})
	start := time.Now()
	_, err := c.Post(0, "lobby", "alice", "alone")
	took := time.Since(start)
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("send on a node cut from every peer: got %v, want an error answer", err)
	}
	t.Logf("send without a replica answered %d %s (%q) after %v", se.Status, se.Code, se.Message, took)
	if se.Status != http.StatusServiceUnavailable || se.Code != proto.CodeUnavailable {
		t.Errorf("send without a replica: got %d %s, want 503 unavailable", se.Status, se.Code)
	}
	if took > 5*time.Second+2*time.Second {
		t.Errorf("send without a replica answered after %v, want within the 5s ack timeout", took)
	}

	// The message was stored on node 0 all the same; after the heal both
	// nodes hold it, and sends are acked again.
	c.Heal()
	c.WaitMembers(convergeTimeout)
	c.MustPost(0, "lobby", "alice", "together again")
	h := c.WaitConverged("lobby", convergeTimeout)
	if len(h) != 7 {
		t.Errorf("history has %d messages, want 7 (the unreplicated send is kept)", len(h))
	}
}

// TestCatchUpFromAnotherPeer: messages of an origin that is down reach a
// node from a peer that holds them (DESIGN.md: nodes serve the logs of
// other origins too).
func TestCatchUpFromAnotherPeer(t *testing.T) {
	t.Parallel()
	c := Start(t, 3)
	c.Partition([]int{0, 1}, []int{2})
	sendOnEach(t, c, "lobby", []int{0}, 20, "only 0 and 1 see this")
	proctest.Eventually(t, convergeTimeout, func() error {
		h, err := c.History(1, "lobby")
		if err == nil && len(h) != 20 {
			err = fmt.Errorf("node 1 holds %d messages, want 20", len(h))
		}
		return err
	})
	c.Kill(0)
	c.Heal()
	// Node 0 stays down: node 2 can get its messages only from node 1.
	h := c.WaitConverged("lobby", convergeTimeout)
	if len(h) != 20 || perOrigin(h)[c.ID(0)] != 20 {
		t.Fatalf("after the heal the nodes hold %d messages (%v), want node 0's 20", len(h), perOrigin(h))
	}
}
