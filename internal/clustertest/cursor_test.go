package clustertest

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"chatr/internal/proto"
)

// secretFile writes a fresh 32-byte --secret-file and returns its path.
func secretFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCursorKeyOfTheSecret: with --secret-file, a cursor handed out by one
// node resumes on another node of the cluster, before and after that node
// restarts, since each derives the cursor key from the secret; a node of a
// cluster of the same name but another secret refuses it. (Without a
// secret, the resume tests above move cursors between nodes.)
func TestCursorKeyOfTheSecret(t *testing.T) {
	t.Parallel()
	c := Start(t, 2, WithArgs("--secret-file", secretFile(t)))
	ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout)
	defer cancel()
	c.MustPost(0, "lobby", "ann", "one")
	c.WaitConverged("lobby", convergeTimeout)
	_, cursor, err := c.API(0).Page(ctx, "lobby", "")
	if err != nil || cursor == "" {
		t.Fatalf("page of node 0: cursor %q, %v", cursor, err)
	}
	two := c.MustPost(1, "lobby", "bob", "two")
	c.WaitConverged("lobby", convergeTimeout)
	check := func(when string) {
		t.Helper()
		msgs, _, err := c.API(1).Page(ctx, "lobby", cursor)
		if err != nil {
			t.Fatalf("%s: node 1 refused node 0's cursor: %v", when, err)
		}
		if len(msgs) != 1 || msgs[0].ID != two.ID {
			t.Fatalf("%s: node 1 replayed %v after node 0's cursor, want [%s]", when, messageIDs(msgs), two.ID)
		}
	}
	check("running")
	c.Stop(1)
	c.Restart(1)
	check("after a restart")

	stranger := Start(t, 1, WithArgs("--secret-file", secretFile(t)))
	_, _, err = stranger.API(0).Page(ctx, "lobby", cursor)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 400 || se.Code != proto.CodeBadRequest {
		t.Fatalf("a node with another secret answered the cursor with %v, want 400 bad_request", err)
	}
}

func messageIDs(ms []proto.MessageJSON) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}
