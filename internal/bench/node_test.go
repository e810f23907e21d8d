package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"chatr/internal/client/clienttest"
)

func TestMain(m *testing.M) { clienttest.Main(m) }

// nodeArgs lift the node's per-session send limit (20 a second by
// default) above what the bench senders send.
var nodeArgs = []string{"--send-rate", "10000", "--send-burst", "1000"}

// TestBenchAgainstNode runs a 5-second bench against a real node.
func TestBenchAgainstNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	node := clienttest.StartNode(t, nodeArgs...)
	var progress bytes.Buffer
	rep, err := Run(context.Background(), Config{
		URLs: []string{node.HTTP}, Conns: 50, Rooms: 5, Senders: 5, Rate: 500, Size: 128,
		Duration: 5 * time.Second, Ramp: 500 * time.Millisecond, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Logf("progress:\n%s\nreport:\n%s", progress.String(), text.String())
	checkReport(t, rep, 50)
	if n := strings.Count(progress.String(), "\n"); n < 4 {
		t.Errorf("%d progress lines in 5 s, want one a second", n)
	}
}

// TestBenchCommand runs `chatr bench --json` and checks its flags.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	bin, err := clienttest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	node := clienttest.StartNode(t, nodeArgs...)
	cmd := exec.Command(bin, "bench", "--url", node.WS, "--conns", "10", "--rooms", "2", "--senders", "2",
		"--rate", "100", "--duration", "2s", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chatr bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout.String())
	}
	checkReport(t, &rep, 10)

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--url", "ws://192.0.2.1:5080/chatr/ws"}, "--allow-remote"},
		{[]string{"--conns", "-5"}, "--conns -5"},
		{[]string{"--rooms", "0"}, "--rooms"},
		{[]string{"--duration", "soon"}, "invalid value"},
		{[]string{"--no-such-flag"}, "not defined"},
	}
	for _, b := range bad {
		cmd := exec.Command(bin, append([]string{"bench", "--quiet"}, b.args...)...)
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); err == nil || code != 2 || !strings.Contains(string(out), b.want) {
			t.Errorf("chatr bench %s: exit %d, output %q; want exit 2 and %q", strings.Join(b.args, " "), code, out, b.want)
		}
	}
}
