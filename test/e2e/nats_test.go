package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"chatr/internal/bench"
	"chatr/internal/client/clienttest"
	"chatr/internal/natsengine"
	"chatr/internal/natstest"
	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// natsNodes starts a 3-server JetStream cluster (in this process) and two
// chatr processes with --engine nats on it (and extra flags).
func natsNodes(t *testing.T, extra ...string) (*natstest.Cluster, *clienttest.Node, *clienttest.Node) {
	return natsNodesOn(t, natstest.Start, extra...)
}

// natsNodesOn is natsNodes on a cluster that start makes (natstest.Start,
// or StartProcesses for servers that can be killed with -9).
func natsNodesOn(t *testing.T, start func(testing.TB, int) *natstest.Cluster, extra ...string) (*natstest.Cluster, *clienttest.Node, *clienttest.Node) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := start(t, 3)
	args := append([]string{"--engine", "nats", "--nats-url", c.URL(), "--nats-replicas", "3"}, extra...)
	return c, clienttest.StartNode(t, args...), clienttest.StartNode(t, args...)
}

// TestNATSEngine: two chatr nodes on one NATS stream are one chat. A
// message sent on one reaches the other's sessions live and is in its
// history; a re-send with the same ref on the other node is the same
// message; a cursor from one resumes on the other; welcome names the
// engine.
func TestNATSEngine(t *testing.T) {
	_, a, b := natsNodes(t)
	ann := clienttest.DialRaw(t, a.WS, nil)
	if w := ann.Hello("ann"); !strings.Contains(string(w.Raw), `"engine":"nats"`) {
		t.Fatalf("welcome %s does not name the engine", w)
	}
	bob := clienttest.DialRaw(t, b.WS, nil)
	bob.Hello("bob")
	ann.Join("lobby", nil)
	bob.Join("lobby", nil)

	ack, mine, _ := ann.Say("lobby", "hello from a", "r1")
	got, _ := bob.Until("message")
	if got.ID != ack.ID || got.Text != "hello from a" || got.Sender != "ann" {
		t.Fatalf("bob got %s, want %s", got, mine)
	}

	// The same send again, on the other node: the same message, acked.
	ann2 := clienttest.DialRaw(t, b.WS, nil)
	ann2.Hello("ann")
	ann2.Join("lobby", map[string]any{"history": 0})
	ann2.Send(map[string]any{"type": "send", "room": "lobby", "text": "hello from a", "ref": "r1"})
	if again := ann2.Expect("ack"); again.ID != ack.ID {
		t.Fatalf("re-send acked as %s, want %s", again.ID, ack.ID)
	}

	// Messages bob missed while away come back when he resumes on a.
	cursor := got.Cursor
	bob.Conn.CloseNow()
	for i := range 3 {
		ann.Say("lobby", fmt.Sprint("missed ", i), fmt.Sprint("m", i))
	}
	back := clienttest.DialRaw(t, a.WS, nil)
	back.Hello("bob")
	_, replay, synced := back.Join("lobby", map[string]any{"since": cursor})
	if len(replay) != 3 || replay[0].Text != "missed 0" || replay[2].Text != "missed 2" || synced.Truncated {
		t.Fatalf("resume replayed %v (synced %s), want the 3 missed", replay, synced)
	}

	// History over the HTTP API of either node.
	for _, n := range []*clienttest.Node{a, b} {
		resp, err := http.Get(n.HTTP + "/chatr/api/rooms/lobby/messages?limit=2")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var page struct{ Messages []proto.MessageJSON }
		if err := json.Unmarshal(body, &page); err != nil || len(page.Messages) != 2 || page.Messages[1].Text != "missed 2" {
			t.Fatalf("GET messages on %s: %d %s", n.HTTP, resp.StatusCode, body)
		}
	}
}

// TestNATSPresence: with the NATS engine, people on one chatr node are in
// the presence of the others; a chatr node killed with -9 leaves every
// other node's presence within natsengine.PresenceTTL and a heartbeat.
func TestNATSPresence(t *testing.T) {
	_, a, b := natsNodes(t)
	ann := clienttest.DialRaw(t, a.WS, nil)
	ann.Hello("ann")
	ann.Join("lobby", nil)
	bob := clienttest.DialRaw(t, b.WS, nil)
	bob.Hello("bob")
	joined, _, _ := bob.Join("lobby", nil)
	named := func(ps []proto.Person) bool {
		return slices.ContainsFunc(ps, func(p proto.Person) bool { return p.Name == "ann" })
	}
	if !named(joined.Presence) {
		waitPresence(t, bob, "joined", named, natsengine.PresenceHeartbeat+5*time.Second)
	}
	if err := a.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitPresence(t, bob, "left", named, natsengine.PresenceTTL+natsengine.PresenceHeartbeat+5*time.Second)
	t.Logf("ann left bob's presence %v after node a was killed", time.Since(killed).Round(time.Millisecond))
}

// waitPresence reads c's frames until a presence frame whose joined (or
// left) people match, within d.
func waitPresence(t *testing.T, c *clienttest.Raw, which string, match func([]proto.Person) bool, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		f, err := c.ReadWithin(time.Until(deadline))
		if err != nil {
			break
		}
		if f.Type == "presence" && (which == "joined" && match(f.Joined) || which == "left" && match(f.Left)) {
			return
		}
	}
	t.Fatalf("no presence frame with %s matching within %v", which, d)
}

// TestNATSFaults: a NATS server killed with -9 during a steady stream of
// sends costs no acked message (a send NATS did not store is answered
// unavailable, and sent again with the same ref); with two of three
// servers killed the stream has no quorum and sends are answered
// unavailable, nothing is acked that is not stored, and all is well again
// once they are back.
func TestNATSFaults(t *testing.T) {
	c, a, b := natsNodesOn(t, natstest.StartProcesses, "--send-rate", "1000", "--send-burst", "100")
	ann := clienttest.DialRaw(t, a.WS, &clienttest.RawOptions{Timeout: 30 * time.Second})
	ann.Hello("ann")
	ann.Join("lobby", map[string]any{"history": 0})
	// bob, on the other chatr node, watches live through it all.
	bob := clienttest.DialRaw(t, b.WS, &clienttest.RawOptions{Timeout: 30 * time.Second})
	bob.Hello("bob")
	bob.Join("lobby", map[string]any{"history": 0})
	acked := map[string]string{} // ref -> id
	unavailable := 0
	send := func(ref string, tries int) bool {
		for range tries {
			ann.Send(map[string]any{"type": "send", "room": "lobby", "text": "t " + ref, "ref": ref})
			for {
				f := ann.Next()
				if f.Type == "ack" && f.Ref == ref {
					if id, ok := acked[ref]; ok && id != f.ID {
						t.Fatalf("ref %s acked as %s and %s", ref, id, f.ID)
					}
					acked[ref] = f.ID
					return true
				}
				if f.Type == "error" && f.Ref == ref {
					if f.Code != proto.CodeUnavailable {
						t.Fatalf("send %s: %s", ref, f)
					}
					unavailable++
					time.Sleep(200 * time.Millisecond)
					break
				}
			}
		}
		return false
	}
	for i := range 150 {
		if i == 50 {
			c.Stop(0)
		}
		if !send(fmt.Sprint("s", i), 50) {
			t.Fatalf("send s%d not acked after 50 tries", i)
		}
	}
	c.Stop(1) // one of three left: no quorum
	if send("q", 3) {
		t.Fatal("a send was acked with one NATS server of three")
	}
	ready := func(want int) func() error {
		return func() error {
			resp, err := http.Get(a.HTTP + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				return fmt.Errorf("/readyz %d, want %d", resp.StatusCode, want)
			}
			return nil
		}
	}
	proctest.Eventually(t, 15*time.Second, ready(http.StatusServiceUnavailable))
	c.Restart(0)
	c.Restart(1)
	proctest.Eventually(t, 30*time.Second, ready(http.StatusOK))
	if !send("q", 100) || !send("after", 50) {
		t.Fatal("sends not acked once the servers are back")
	}
	t.Logf("%d sends answered unavailable and sent again", unavailable)

	// Every acked message is in the history, once. Right after the
	// servers came back, a read may be answered 503 (no current replica
	// yet), as a client is told to try again shortly; never a page with
	// holes.
	var page struct{ Messages []proto.MessageJSON }
	proctest.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get(a.HTTP + "/chatr/api/rooms/lobby/messages?limit=1000")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("GET messages: %d %s", resp.StatusCode, body)
		}
		return json.NewDecoder(resp.Body).Decode(&page)
	})
	seen := map[string]int{}
	for _, m := range page.Messages {
		seen[m.ID]++
	}
	for ref, id := range acked {
		if seen[id] != 1 {
			t.Errorf("acked %s (%s) is in the history %d times", ref, id, seen[id])
		}
	}
	if len(page.Messages) != len(acked) {
		t.Errorf("history holds %d messages, %d were acked", len(page.Messages), len(acked))
	}

	// bob got every acked message live, once, in order: delivery came back
	// without a gap after each outage.
	live := map[string]int{}
	var last uint64
	for len(live) < len(acked) {
		f, err := bob.ReadWithin(20 * time.Second)
		if err != nil {
			t.Fatalf("bob got %d of %d acked messages live: %v", len(live), len(acked), err)
		}
		if f.Type != "message" {
			continue
		}
		live[f.ID]++
		if _, seq, _ := proto.ParseMessageID(f.ID); seq <= last {
			t.Errorf("live out of order: %s after seq %d", f.ID, last)
		} else {
			last = seq
		}
	}
	for ref, id := range acked {
		if live[id] != 1 {
			t.Errorf("acked %s (%s) came to bob live %d times", ref, id, live[id])
		}
	}
}

// TestNATSMembersAndFailover: chatr nodes on one NATS account see each
// other (console lines, /chatr/api/cluster, welcome.nodes); when one is
// killed with -9, its clients resume on the other with no gap or repeat.
func TestNATSMembersAndFailover(t *testing.T) {
	_, a, b := natsNodes(t, "--send-rate", "1000", "--send-burst", "100")
	proctest.Eventually(t, 15*time.Second, func() error {
		if !strings.Contains(a.Process.Stdout.String(), "cluster view: 2 members") {
			return fmt.Errorf("no cluster view line of 2 members on a:\n%s", a.Process.Stdout.String())
		}
		var v proto.ClusterView
		resp, err := http.Get(a.HTTP + "/chatr/api/cluster")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return err
		}
		if len(v.Alive()) != 2 || v.NATS != nil {
			return fmt.Errorf("cluster view %+v: want 2 alive members and no NATS address in public", v)
		}
		return nil
	})
	w := clienttest.DialRaw(t, a.WS, nil).Hello("ann")
	if len(w.Nodes) != 2 {
		t.Fatalf("welcome.nodes %v, want both nodes", w.Nodes)
	}

	// Connection i is on node (i/2)%2: the senders (0, 1) on a, half the
	// receivers on b, which dies 2 s in.
	time.AfterFunc(2*time.Second, func() { b.Process.Kill() })
	rep, err := bench.Run(context.Background(), bench.Config{URLs: []string{a.WS, b.WS}, Conns: 20, Rooms: 2,
		Senders: 2, Rate: 100, Size: 64, Duration: 6 * time.Second, Ramp: 200 * time.Millisecond, Failover: true})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Logf("bench:\n%s", text.String())
	if rep.Resumed != 10 || !rep.OK() || rep.Acked == 0 {
		t.Errorf("want the 10 connections of b resumed on a, nothing lost or repeated: %v", rep.Problems())
	}
	proctest.Eventually(t, natsengine.MemberTTL+5*time.Second, func() error {
		if !strings.Contains(a.Process.Stdout.String(), "cluster view: 1 member [") {
			return fmt.Errorf("a did not see b die:\n%s", a.Process.Stdout.String())
		}
		return nil
	})
}
