package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"chatr/internal/clustertest"
	"chatr/internal/proctest"
)

// curlFetch is a clustertest.Fetch that runs curl inside host i's network
// namespace, the only place its 10.77.0.x addresses are reachable from.
// curl is waited for here, so it is run with ip netns exec directly rather
// than registered with the LAN for killing at cleanup.
func curlFetch(lan *clustertest.LAN, i int) clustertest.Fetch {
	return func(ctx context.Context, method, url string, body []byte) (int, []byte, error) {
		args := []string{"netns", "exec", lan.Namespace(i), "curl", "-sS", "--max-time", "10",
			"-X", method, "-o", "-", "-w", "\n%{http_code}"}
		if body != nil {
			args = append(args, "-H", "Content-Type: application/json", "--data-binary", "@-")
		}
		cmd := exec.CommandContext(ctx, "ip", append(args, url)...)
		cmd.Stdin = bytes.NewReader(body)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return 0, nil, fmt.Errorf("curl in %s: %v: %s", lan.Namespace(i), err, strings.TrimSpace(stderr.String()))
		}
		k := bytes.LastIndexByte(out, '\n')
		if k < 0 {
			return 0, nil, fmt.Errorf("curl in %s: no status in %q", lan.Namespace(i), out)
		}
		status, err := strconv.Atoi(string(out[k+1:]))
		if err != nil {
			return 0, nil, fmt.Errorf("curl in %s: status %q: %v", lan.Namespace(i), out[k+1:], err)
		}
		return status, out[:k], nil
	}
}

// TestLANDiscoveryPartition starts the binary in three network namespaces
// on one virtual LAN with --discover lan and no --join: they find each
// other with mDNS. Then host 2's link goes down: both sides keep accepting
// messages; the link comes back: they re-merge and converge. Multicast
// never leaves these namespaces. Skipped when not root or without ip (but
// failed when CI is set), like every LAN test.
func TestLANDiscoveryPartition(t *testing.T) {
	needBinary(t)
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		const why = "e2e: the LAN test reads the nodes with curl inside the namespaces; curl is missing"
		if os.Getenv("CI") != "" {
			t.Fatal(why + ", and CI must run this test")
		}
		t.Skip(why)
	}
	lan := clustertest.NewLAN(t, 3) // its cleanup runs last: after our processes stop
	var apis []clustertest.API
	started := time.Now()
	for i := range 3 {
		addr := lan.Addr(i)
		cmd := lan.Command(i, binary, "serve", "--http", addr+":5080", "--cluster-addr", addr+":7946",
			"--discover", "lan", "--data", t.TempDir(), "--node", fmt.Sprintf("lan%d", i+1),
			"--shutdown-timeout", "3s", "--send-rate", "1000000", "--send-burst", "1000000", "--secret", proctest.TestSecret)
		startProc(t, fmt.Sprintf("lan%d", i+1), cmd)
		apis = append(apis, clustertest.API{Base: "http://" + addr + ":5080", Fetch: curlFetch(lan, i)})
	}
	var ids []string
	for _, a := range apis {
		ids = append(ids, selfID(t, a))
	}
	waitAlive(t, convergeTimeout, apis, ids)
	t.Logf("3 nodes found each other with mDNS alone in %v", time.Since(started).Round(time.Millisecond))

	for i, a := range apis {
		post(t, a, "lobby", fmt.Sprintf("user%d", i+1), 5, "before the cut")
	}
	waitSameHistory(t, convergeTimeout, apis, "lobby", 15)

	lan.Cut(2)
	cut := time.Now()
	// Both sides accept messages while apart.
	for i, a := range apis {
		post(t, a, "lobby", fmt.Sprintf("user%d", i+1), 5, "during the cut")
	}
	// Each side sees the other gone.
	proctest.Eventually(t, convergeTimeout, func() error {
		for i, gone := range map[int][]int{0: {2}, 1: {2}, 2: {0, 1}} {
			ctx, cancel := reqCtx()
			v, err := apis[i].Cluster(ctx)
			cancel()
			if err != nil {
				return err
			}
			for _, j := range gone {
				if v.Alive()[ids[j]] {
					return fmt.Errorf("lan%d still sees lan%d alive: %s", i+1, j+1, v)
				}
			}
		}
		return nil
	})
	t.Logf("each side declared the other gone %v after the cut", time.Since(cut).Round(time.Millisecond))
	waitSameHistory(t, convergeTimeout, apis[:2], "lobby", 25)
	ctx, cancel := reqCtx()
	h2, err := apis[2].History(ctx, "lobby")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if len(h2) != 20 {
		t.Fatalf("cut-off lan3 holds %d messages, want 20 (15 before, its own 5)", len(h2))
	}

	lan.Heal(2)
	healed := time.Now()
	waitAlive(t, convergeTimeout, apis, ids)
	t.Logf("membership re-merged %v after the heal", time.Since(healed).Round(time.Millisecond))
	waitSameHistory(t, convergeTimeout, apis, "lobby", 30)
	t.Logf("all 3 nodes hold the same 30 messages %v after the heal", time.Since(healed).Round(time.Millisecond))
}
