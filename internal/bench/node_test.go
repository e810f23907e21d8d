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
	"chatr/internal/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// nodeArgs lift the node's per-session send limit (20 a second by
// default) above what the bench senders send.
var nodeArgs = []string{"--send-rate", "10000", "--send-burst", "1000"}

// TestBenchAgainstNode runs a 5-second bench against a real node.
func TestBenchAgainstNode(t *testing.T) {
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
	bin := proctest.NeedBinary(t)
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

	proctest.CheckUsageErrors(t, bin, []string{"bench", "--quiet"}, []proctest.UsageError{
		{Args: []string{"--url", "ws://192.0.2.1:5080/chatr/ws"}, Want: "--allow-remote"},
		{Args: []string{"--conns", "-5"}, Want: "--conns -5"},
		{Args: []string{"--rooms", "0"}, Want: "--rooms"},
		{Args: []string{"--duration", "soon"}, Want: "invalid value"},
		{Args: []string{"--no-such-flag"}, Want: "not defined"},
	})
}
