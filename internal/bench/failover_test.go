package bench

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"chatr/internal/clustertest"
)

// failoverRun runs a 7-second bench with Failover over a 3-node cluster
// (in this process; --ack-replicas 1, so an acked message outlives its
// node) and kills node dead 2 s in. Connection i is on node (i/5)%3, so 10
// of its 30 connections are on each node; the 5 senders are on node 0.
func failoverRun(t *testing.T, dead int) *Report {
	c := clustertest.Start(t, 3, clustertest.WithArgs(append([]string{"--ack-replicas", "1"}, nodeArgs...)...))
	var urls []string
	for i := range c.N() {
		urls = append(urls, c.HTTPAddr(i))
	}
	killed := time.AfterFunc(2*time.Second, func() { c.Kill(dead) })
	defer killed.Stop()
	rep, err := Run(context.Background(), Config{
		URLs: urls, Conns: 30, Rooms: 5, Senders: 5, Rate: 200, Size: 64,
		Duration: 7 * time.Second, Ramp: 300 * time.Millisecond, Failover: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("report: %s", js)
	if rep.Resumed != 10 || rep.ResumeSeconds <= 0 || rep.Truncated != 0 || rep.ConnsDropped != 0 {
		t.Errorf("want the 10 connections of node %d resumed, in some time, without a gap, none dropped", dead)
	}
	if rep.Sent == 0 || rep.Unanswered != 0 || rep.Check.Lost != 0 || rep.Check.Late != 0 || rep.Check.Unexpected != 0 {
		t.Errorf("want every send answered and every acked message delivered to every member")
	}
	return rep
}

// TestFailoverResumesWithoutGap kills a node with receivers only: its
// connections resume on the other two and get, once, every message acked
// in their rooms, those sent while they were away included.
func TestFailoverResumesWithoutGap(t *testing.T) {
	rep := failoverRun(t, 2)
	if rep.Check.Duplicated != 0 || !rep.OK() {
		t.Errorf("want nothing duplicated and the report OK: %v", rep.Problems())
	}
}

// TestFailoverResendsUnacked kills the senders' node: they resume on the
// others and send what was not acked again with the same ref, so nothing
// acked is lost and every send is answered. (A message the dead node
// delivered to its own members but never passed on before it died comes
// to them again once re-sent: a duplicate the protocol cannot spare them.)
func TestFailoverResendsUnacked(t *testing.T) {
	rep := failoverRun(t, 0)
	if rep.Acked != rep.Sent {
		t.Errorf("acked %d of %d sends", rep.Acked, rep.Sent)
	}
}
