package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"chatr/internal/clustertest"
	"chatr/internal/proctest"
)

// TestKill9AndRestart runs three processes, kills one with SIGKILL, sends
// on the survivors, restarts it on its data directory and checks that it
// catches up fully and is a member again everywhere.
func TestKill9AndRestart(t *testing.T) {
	needBinary(t)
	t.Parallel()
	nodes := newLocalNodes(t, 3)
	others := func(i int) []string {
		var out []string
		for j, n := range nodes {
			if j != i {
				out = append(out, n.gossip)
			}
		}
		return out
	}
	started := time.Now()
	for i, n := range nodes {
		n.start(t, others(i)...)
	}
	apis := []clustertest.API{nodes[0].api(), nodes[1].api(), nodes[2].api()}
	var ids []string
	for _, a := range apis {
		ids = append(ids, selfID(t, a))
	}
	waitAlive(t, startTimeout, apis, ids)
	t.Logf("3 processes ready with 3 alive members in %v", time.Since(started))

	for i, a := range apis {
		post(t, a, "lobby", fmt.Sprintf("user%d", i+1), 10, "before")
	}
	waitSameHistory(t, convergeTimeout, apis, "lobby", 30)

	// kill -9 n2: the survivors declare it dead and print it.
	victim, survivors := nodes[1], []clustertest.API{apis[0], apis[2]}
	killed := time.Now()
	victim.kill9(t)
	detected := map[string]time.Duration{}
	proctest.Eventually(t, convergeTimeout, func() error {
		for _, a := range survivors {
			if _, ok := detected[a.Base]; ok {
				continue
			}
			ctx, cancel := reqCtx()
			v, err := a.Cluster(ctx)
			cancel()
			if err != nil {
				return err
			}
			if s := v.State(ids[1]); s != "dead" {
				return fmt.Errorf("%s sees %s as %q, want dead: %s", a.Base, ids[1], s, v)
			}
			detected[a.Base] = time.Since(killed)
		}
		return nil
	})
	var worst time.Duration
	for _, d := range detected {
		worst = max(worst, d)
	}
	t.Logf("kill -9 detected (state dead in /chatr/api/cluster): %v on %s, %v on %s (goal <= 5s)",
		detected[apis[0].Base].Round(time.Millisecond), nodes[0].name, detected[apis[2].Base].Round(time.Millisecond), nodes[2].name)
	if worst > 5*time.Second {
		t.Logf("note: detection took %v, over the 5 s goal (a loaded machine?)", worst)
	}
	for _, n := range []*localNode{nodes[0], nodes[2]} {
		proctest.Eventually(t, startTimeout, func() error {
			for _, line := range strings.Split(n.proc.Stdout.String(), "\n") {
				if strings.Contains(line, "cluster view") && strings.Contains(line, "failed") && strings.Contains(line, victim.name) {
					return nil
				}
			}
			return fmt.Errorf("%s printed no \"cluster view\" line with \"failed\" about %s", n.name, victim.name)
		})
	}

	// Messages while it is down, from both survivors at once.
	const perSurvivor = 250
	var wg sync.WaitGroup
	for k, a := range survivors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := postN(a, "lobby", fmt.Sprintf("survivor%d", k), perSurvivor, "while n2 is down"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	want := 30 + 2*perSurvivor
	waitSameHistory(t, convergeTimeout, survivors, "lobby", want)

	restarted := time.Now()
	victim.start(t, others(1)...)
	if id := selfID(t, apis[1]); id != ids[1] {
		t.Fatalf("restarted node has id %s, want %s (same data directory)", id, ids[1])
	}
	waitSameHistory(t, convergeTimeout, apis, "lobby", want)
	t.Logf("restarted node caught up on %d messages (%d missed) %v after its start", want, 2*perSurvivor, time.Since(restarted).Round(time.Millisecond))
	waitAlive(t, convergeTimeout, apis, ids)
	t.Logf("membership lists it alive again on all nodes %v after its start", time.Since(restarted).Round(time.Millisecond))

	// It takes part as before: its own numbering goes on where it stopped.
	ctx, cancel := reqCtx()
	m, err := apis[1].Post(ctx, "lobby", "user2", "back")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if wantID := ids[1] + "-11"; m.ID != wantID {
		t.Errorf("first message after the restart is %s, want %s", m.ID, wantID)
	}
	waitSameHistory(t, convergeTimeout, apis, "lobby", want+1)
}
