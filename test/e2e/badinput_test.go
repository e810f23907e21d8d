package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	keyFile, _ := writeKey(t, "key")
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
	p1.extra = []string{"--insecure-no-secret"}
	p2.extra = []string{"--insecure-no-secret"}
	p1.start(t, p2.gossip)
	p2.start(t, p1.gossip)
	apiP1, apiP2 := p1.api(), p2.api()
	idP1, idP2 := selfID(t, apiP1), selfID(t, apiP2)
	waitAlive(t, startTimeout, []clustertest.API{apiP1, apiP2}, []string{idP1, idP2})
	garbageOnGossip(t, a.gossip)
	garbageOnGossip(t, p1.gossip)

	// The peer-link endpoint without an upgrade, with the old header
	// tokens, and strangers that upgrade and then speak garbage or TLS with
	// a key of their own: refused, with nothing of ours in the answer.
	linkURL := "http://" + a.http + "/chatr/peer/link"
	for _, h := range []http.Header{
		{},
		{"X-Chatr-Node": {"0123456789ab"}, "X-Chatr-Cluster": {"chatr"}, "X-Chatr-Auth": {"1.deadbeef"}},
	} {
		req, _ := http.NewRequest(http.MethodGet, linkURL, nil)
		req.Header = h
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("GET /chatr/peer/link: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || strings.Contains(string(body), idA) || strings.Contains(string(body), "chatr\"") {
			t.Errorf("GET /chatr/peer/link with headers %v: %d %q, want a refusal that names nothing", h, resp.StatusCode, body)
		}
	}
	strangerOnLink(t, a.http)
	strangerOnLink(t, p1.http)

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

// strangerOnLink opens the peer-link WebSocket of node addr as a stranger
// would and sends what no member sends: a text frame, bytes that are not
// TLS, a TLS handshake with a key of its own. The node must end each link
// at once, give nothing away, and not crash.
func strangerOnLink(t *testing.T, addr string) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 100<<10) // over a link message's limit too
	rand.Read(junk)
	for k, knock := range []func(ctx context.Context, conn *websocket.Conn) error{
		func(ctx context.Context, conn *websocket.Conn) error {
			return conn.Write(ctx, websocket.MessageText, []byte(`{"m":[{"o":"zz","s":0}]}`))
		},
		func(ctx context.Context, conn *websocket.Conn) error {
			return conn.Write(ctx, websocket.MessageBinary, junk[:512])
		},
		func(ctx context.Context, conn *websocket.Conn) error {
			return conn.Write(ctx, websocket.MessageBinary, junk)
		},
		func(ctx context.Context, conn *websocket.Conn) error {
			tc := tls.Client(websocket.NetConn(ctx, conn, websocket.MessageBinary), &tls.Config{
				MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
				Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
			if err := tc.HandshakeContext(ctx); err != nil {
				return err
			}
			_, err := tc.Read(make([]byte, 1)) // the refusal comes as an alert
			return err
		},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/chatr/peer/link", nil)
		if err != nil {
			cancel()
			t.Fatalf("open the peer-link WebSocket of %s: %v", addr, err)
		}
		conn.SetReadLimit(64 << 20)
		knock(ctx, conn)
		// The node ends the link: reads fail well before the context ends.
		var rerr error
		for rerr == nil {
			_, _, rerr = conn.Read(ctx)
		}
		if ctx.Err() != nil {
			t.Errorf("knock %d: the node kept a stranger's link open", k)
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
