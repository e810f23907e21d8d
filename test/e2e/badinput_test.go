package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/clustertest"
	"chatr/internal/proctest"
)

func writeKey(t *testing.T, name string) (string, []byte) {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

// TestBadPeers checks that a node of another cluster and a node with
// another secret are refused (and say so in a log), and that garbage on
// the gossip port and on the peer-link endpoint crashes nothing.
func TestBadPeers(t *testing.T) {
	needBinary(t)
	t.Parallel()
	keyFile, key := writeKey(t, "key")
	otherKeyFile, _ := writeKey(t, "other-key")
	nodes := newLocalNodes(t, 6)
	a, b, other, wrong := nodes[0], nodes[1], nodes[2], nodes[3]
	a.extra = []string{"--secret-file", keyFile}
	b.extra = []string{"--secret-file", keyFile}
	other.extra = []string{"--secret-file", keyFile, "--cluster", "other"}
	wrong.extra = []string{"--secret-file", otherKeyFile}
	a.start(t, b.gossip)
	b.start(t, a.gossip)
	apiA, apiB := a.api(), b.api()
	idA, idB := selfID(t, apiA), selfID(t, apiB)
	waitAlive(t, startTimeout, []clustertest.API{apiA, apiB}, []string{idA, idB})

	// The intruders knock on a.
	other.start(t, a.gossip)
	wrong.start(t, a.gossip)
	idOther, idWrong := selfID(t, other.api()), selfID(t, wrong.api())
	logs := func() string {
		var all strings.Builder
		for _, n := range nodes[:4] {
			all.WriteString(n.proc.Stderr.String())
		}
		return all.String()
	}
	proctest.Eventually(t, convergeTimeout, func() error {
		l := logs()
		for _, reason := range []string{"cluster", "secret"} {
			if !hasLine(l, "refused peer", "reason="+reason) {
				return fmt.Errorf("no log line on any stderr says a peer was refused with reason=%s", reason)
			}
		}
		return nil
	})
	for _, line := range strings.Split(logs(), "\n") {
		if strings.Contains(line, "refused peer") {
			t.Logf("refusal logged: %s", line)
			break
		}
	}
	checkNotMembers := func() {
		t.Helper()
		waitAlive(t, startTimeout, []clustertest.API{apiA, apiB}, []string{idA, idB})
		for _, n := range []*localNode{a, b} {
			ctx, cancel := reqCtx()
			v, err := n.api().Cluster(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{idOther, idWrong} {
				if s := v.State(id); s != "" {
					t.Errorf("%s lists refused node %s (state %s): %s", n.name, id, s, v)
				}
			}
		}
		for _, n := range []*localNode{other, wrong} {
			ctx, cancel := reqCtx()
			err := n.api().Ready(ctx)
			cancel()
			if err == nil {
				t.Errorf("refused node %s says it is ready (joined)", n.name)
			}
		}
	}
	checkNotMembers()

	// Garbage on the gossip port of a (gossip encrypted) and of a node of
	// a plain pair (gossip in clear, so memberlist parses it further).
	p1, p2 := nodes[4], nodes[5]
	p1.start(t, p2.gossip)
	p2.start(t, p1.gossip)
	apiP1, apiP2 := p1.api(), p2.api()
	idP1, idP2 := selfID(t, apiP1), selfID(t, apiP2)
	waitAlive(t, startTimeout, []clustertest.API{apiP1, apiP2}, []string{idP1, idP2})
	garbageOnGossip(t, a.gossip)
	garbageOnGossip(t, p1.gossip)

	// The peer-link endpoint without credentials, and with bad ones.
	linkURL := "http://" + a.http + "/chatr/peer/link"
	for _, h := range []http.Header{
		{},
		{"X-Chatr-Node": {"0123456789ab"}, "X-Chatr-Cluster": {"chatr"}},
		{"X-Chatr-Node": {"0123456789ab"}, "X-Chatr-Cluster": {"chatr"}, "X-Chatr-Auth": {"1.deadbeef"}},
		{"X-Chatr-Node": {"not an id"}, "X-Chatr-Cluster": {"chatr"}, "X-Chatr-Auth": {"garbage"}},
	} {
		req, _ := http.NewRequest(http.MethodGet, linkURL, nil)
		req.Header = h
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("GET /chatr/peer/link: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET /chatr/peer/link with headers %v: %d, want 403", h, resp.StatusCode)
		}
	}

	// An authenticated follower that sends garbage on its link.
	garbageOnLink(t, a.http, key)

	for _, n := range []*localNode{a, p1} {
		if !n.proc.Running() {
			t.Fatalf("%s exited after the garbage", n.name)
		}
	}
	// Still ready, still a member with b, still replicating both ways.
	checkNotMembers()
	post(t, apiA, "lobby", "alice", 3, "after garbage from a")
	post(t, apiB, "lobby", "bob", 3, "after garbage from b")
	waitSameHistory(t, convergeTimeout, []clustertest.API{apiA, apiB}, "lobby", 6)
	waitAlive(t, startTimeout, []clustertest.API{apiP1, apiP2}, []string{idP1, idP2})
	post(t, apiP1, "lobby", "carol", 3, "after garbage from p1")
	post(t, apiP2, "lobby", "dave", 3, "after garbage from p2")
	waitSameHistory(t, convergeTimeout, []clustertest.API{apiP1, apiP2}, "lobby", 6)
}

// garbageOnGossip sends a node's gossip port TCP streams and UDP packets
// made of each message type byte followed by junk.
func garbageOnGossip(t *testing.T, addr string) {
	t.Helper()
	junk := make([]byte, 4096)
	rand.Read(junk)
	for typ := range 256 {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v (node down?)", addr, err)
		}
		conn.SetDeadline(time.Now().Add(time.Second))
		conn.Write(append([]byte{byte(typ)}, junk[:1+typ*13%len(junk)]...))
		conn.Close()
	}
	udp, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for typ := range 256 {
		udp.Write(append([]byte{byte(typ)}, junk[:1+typ*5%1200]...))
	}
}

// garbageOnLink opens a peer link to node addr as a follower holding the
// secret, then writes frames a follower never sends: the node must end the
// link, not crash. The token is built as the replication package builds
// it; a 101 refused with 403 means that format changed.
func garbageOnLink(t *testing.T, addr string, secret []byte) {
	t.Helper()
	const fake = "0123456789ab"
	for k, frame := range [][]byte{
		[]byte("not json {"),
		[]byte(`{"m":[{"o":"zz","s":0}]}`),
		[]byte(`{"a":null}`),
		make([]byte, 100<<10), // over the link's read limit
	} {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, secret)
		fmt.Fprintf(mac, "chatr-peer\x00%s\x00%s\x00%s", "chatr", fake, ts)
		h := http.Header{"X-Chatr-Node": {fake}, "X-Chatr-Cluster": {"chatr"},
			"X-Chatr-Auth": {ts + "." + hex.EncodeToString(mac.Sum(nil))}}
		conn, resp, err := websocket.Dial(ctx, "ws://"+addr+"/chatr/peer/link?since=&skip=", &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			cancel()
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("open a peer link as a follower with the secret: %v (HTTP %d; did the link auth format change?)", err, status)
		}
		conn.SetReadLimit(64 << 20)
		if err := conn.Write(ctx, websocket.MessageText, frame); err != nil {
			t.Logf("frame %d: write: %v", k, err)
		}
		// The node ends the link: reads fail well before the context ends.
		var rerr error
		for rerr == nil {
			_, _, rerr = conn.Read(ctx)
		}
		if ctx.Err() != nil {
			t.Errorf("frame %d: the node kept the link open after garbage", k)
		}
		conn.CloseNow()
		cancel()
	}
}

func hasLine(text string, subs ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			return true
		}
	}
	return false
}
