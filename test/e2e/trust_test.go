package e2e

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"chatr/internal/clustertest"
	"chatr/internal/proctest"
)

// joinLine is the line a node that made its own cluster secret prints.
var joinLine = regexp.MustCompile(`to add a node: chatr --cluster-addr HOST:7946 --join (\S+) --secret (\S+)`)

// rogueMeta is node meta as chatr's would be: the right cluster, protocol
// and a key, so that only the secret can keep the rogue out.
type rogueMeta struct{ meta []byte }

func (m rogueMeta) NodeMeta(int) []byte                  { return m.meta }
func (rogueMeta) NotifyMsg([]byte)                       {}
func (rogueMeta) GetBroadcasts(int, int) [][]byte        { return nil }
func (rogueMeta) LocalState(bool) []byte                 { return nil }
func (rogueMeta) MergeRemoteState(buf []byte, join bool) {}

// rogueMember joins the memberlist of addr knowing only the cluster name
// (which the API and the old peer-link answers gave away), with the real
// library, and reports how many members it sees after a moment.
func rogueMember(t *testing.T, addr string) *memberlist.Memberlist {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(nil)
	id := "fedcba987654"
	meta, _ := json.Marshal(map[string]any{"id": id, "name": "rogue", "http": "127.0.0.1:1", "proto": 2, "cluster": "chatr", "key": pub})
	cfg := memberlist.DefaultLANConfig()
	cfg.Name, cfg.Label = id, "chatr"
	cfg.BindAddr, cfg.BindPort, cfg.AdvertisePort = "127.0.0.1", 0, 0
	cfg.Delegate = rogueMeta{meta: meta}
	cfg.LogOutput = testWriter{t}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	ml.Join([]string{addr}) // its error is the point; the members say more
	return ml
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("rogue memberlist: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestStrangerCannotJoinByDefault: a node started in cluster mode with no
// secret makes one, keeps it and prints the line that adds a node; a
// second node started with that line joins. A stranger that knows the
// cluster name (and speaks memberlist with the real library) is refused:
// no node lists it, and it sees no one. After a restart the first node has
// the same secret.
func TestStrangerCannotJoinByDefault(t *testing.T) {
	needBinary(t)
	t.Parallel()
	nodes := newLocalNodes(t, 2)
	a, b := nodes[0], nodes[1]
	a.ownSecret = true
	a.start(t)
	var key, joinAddr string
	proctest.Eventually(t, startTimeout, func() error {
		m := joinLine.FindStringSubmatch(a.proc.Stdout.String())
		if m == nil {
			return fmt.Errorf("no join line printed yet: %q", a.proc.Stdout.String())
		}
		joinAddr, key = m[1], m[2]
		return nil
	})
	if joinAddr != a.gossip {
		t.Fatalf("the join line names %s, want the gossip address %s", joinAddr, a.gossip)
	}
	b.extra = []string{"--secret", key}
	b.start(t, joinAddr)
	apis := []clustertest.API{a.api(), b.api()}
	ids := []string{selfID(t, apis[0]), selfID(t, apis[1])}
	waitAlive(t, startTimeout, apis, ids)

	rogue := rogueMember(t, a.gossip)
	deadline := time.Now().Add(3 * time.Second) // a negative: give the join its chance
	for time.Now().Before(deadline) {
		if n := rogue.NumMembers(); n > 1 {
			t.Fatalf("the stranger sees %d members: it joined", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, api := range apis {
		ctx, cancel := reqCtx()
		v, err := api.Cluster(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if v.State("fedcba987654") != "" {
			t.Fatalf("a node lists the stranger: %s", v)
		}
	}

	a.proc.Stop(10 * time.Second)
	a.start(t, b.gossip)
	proctest.Eventually(t, startTimeout, func() error {
		ms := joinLine.FindAllStringSubmatch(a.proc.Stdout.String(), -1)
		if len(ms) == 0 {
			return fmt.Errorf("no join line printed after the restart")
		}
		if got := ms[len(ms)-1][2]; got != key {
			return fmt.Errorf("after a restart the secret is %s, not %s", got, key)
		}
		return nil
	})
	waitAlive(t, startTimeout, apis, ids)
}

// TestInsecureNoSecretSaysSo: a cluster node without a secret must be
// asked for, and says what it means on the console.
func TestInsecureNoSecretSaysSo(t *testing.T) {
	needBinary(t)
	t.Parallel()
	n := newLocalNodes(t, 1)[0]
	n.extra = []string{"--insecure-no-secret"}
	n.start(t)
	proctest.Eventually(t, startTimeout, func() error {
		if out := n.proc.Stdout.String(); !strings.Contains(out, "WARNING: --insecure-no-secret: anyone who reaches") {
			return fmt.Errorf("no warning on the console: %q", out)
		}
		return nil
	})
	if strings.Contains(n.proc.Stdout.String(), "to add a node") {
		t.Fatal("a node without a secret printed a join line")
	}
}
