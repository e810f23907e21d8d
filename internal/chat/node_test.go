package chat

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"chatr/internal/client/clienttest"
	"chatr/internal/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// TestPipeAgainstNode: two chats in one process talk through a real node.
func TestPipeAgainstNode(t *testing.T) {
	runPipePair(t, clienttest.StartNode(t).HTTP)
}

// TestChatCommandPipes: two `chatr chat` processes, one sending its input,
// the other printing it; both exit 0.
func TestChatCommandPipes(t *testing.T) {
	bin := proctest.NeedBinary(t)
	node := clienttest.StartNode(t)
	args := func(name string) []string {
		return []string{"chat", "--url", node.HTTP, "--name", name, "--room", "pipes", "--history", "0"}
	}

	bobCmd := exec.Command(bin, args("bob")...)
	bobIn, err := bobCmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	bob := proctest.Run(t, "bob", bobCmd)
	proctest.Eventually(t, 10*time.Second, joinedPipes(&bob.Stderr))

	ann := exec.Command(bin, args("ann")...)
	ann.Stdin = strings.NewReader("first line\nsecond line\n")
	var annOut, annErr bytes.Buffer
	ann.Stdout, ann.Stderr = &annOut, &annErr
	if err := ann.Run(); err != nil {
		t.Fatalf("ann: %v\nstderr:\n%s", err, annErr.String())
	}
	proctest.Eventually(t, 10*time.Second, printedLines(&bob.Stdout, 2))
	bobIn.Close()
	if !bob.Wait(10*time.Second) || !bob.Cmd.ProcessState.Success() {
		t.Fatalf("bob after his input ended: %v\nstderr:\n%s", bob.Cmd.ProcessState, bob.Stderr.String())
	}
	got := messageLines(t, bob.Stdout.String())
	if len(got) != 2 || got[0] != "ann: first line" || got[1] != "ann: second line" {
		t.Fatalf("bob printed %q", got)
	}
}

func TestChatCommandBadFlags(t *testing.T) {
	bin := proctest.NeedBinary(t)
	proctest.CheckUsageErrors(t, bin, []string{"chat"}, []proctest.UsageError{
		{Args: []string{"--name", "ann", "--room", "Lobby"}, Want: "--room"},
		{Args: []string{"--name", "<script>"}, Want: "--name"},
		{Args: []string{"--name", "ann", "--url", "ftp://x"}, Want: "--url"},
		{Args: []string{"--name", "ann", "--history", "-1"}, Want: "--history"},
		{Args: []string{"--name", "ann", "extra"}, Want: "unexpected argument"},
	})
}
