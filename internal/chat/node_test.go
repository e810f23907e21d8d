package chat

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"chatr/internal/client/clienttest"
)

func TestMain(m *testing.M) { clienttest.Main(m) }

// TestPipeAgainstNode: two chats in one process talk through a real node.
func TestPipeAgainstNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	runPipePair(t, clienttest.StartNode(t).HTTP)
}

// TestChatCommandPipes: two `chatr chat` processes, one sending its input,
// the other printing it; both exit 0.
func TestChatCommandPipes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	bin, err := clienttest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	node := clienttest.StartNode(t)
	args := func(name string) []string {
		return []string{"chat", "--url", node.HTTP, "--name", name, "--room", "pipes", "--history", "0"}
	}

	bob := exec.Command(bin, args("bob")...)
	var bobOut, bobErr buffer
	bob.Stdout, bob.Stderr = &bobOut, &bobErr
	bobIn, err := bob.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bob.Process.Kill() })
	clienttest.Eventually(t, 10*time.Second, "bob joins", func() bool {
		return strings.Contains(bobErr.String(), "* joined pipes")
	})

	ann := exec.Command(bin, args("ann")...)
	ann.Stdin = strings.NewReader("first line\nsecond line\n")
	var annOut, annErr bytes.Buffer
	ann.Stdout, ann.Stderr = &annOut, &annErr
	if err := ann.Run(); err != nil {
		t.Fatalf("ann: %v\nstderr:\n%s", err, annErr.String())
	}
	clienttest.Eventually(t, 10*time.Second, "bob prints both lines", func() bool {
		return strings.Count(bobOut.String(), "\n") >= 2
	})
	bobIn.Close()
	if err := bob.Wait(); err != nil {
		t.Fatalf("bob: %v\nstderr:\n%s", err, bobErr.String())
	}
	got := messageLines(t, bobOut.String())
	if len(got) != 2 || got[0] != "ann: first line" || got[1] != "ann: second line" {
		t.Fatalf("bob printed %q", got)
	}
}

func TestChatCommandBadFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, err := clienttest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--name", "ann", "--room", "Lobby"}, "--room"},
		{[]string{"--name", "<script>"}, "--name"},
		{[]string{"--name", "ann", "--url", "ftp://x"}, "--url"},
		{[]string{"--name", "ann", "--history", "-1"}, "--history"},
		{[]string{"--name", "ann", "extra"}, "unexpected argument"},
	}
	for _, b := range bad {
		cmd := exec.Command(bin, append([]string{"chat"}, b.args...)...)
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); err == nil || code != 2 || !strings.Contains(string(out), b.want) {
			t.Errorf("chatr chat %s: exit %d, output %q; want exit 2 and %q", strings.Join(b.args, " "), code, out, b.want)
		}
	}
}
