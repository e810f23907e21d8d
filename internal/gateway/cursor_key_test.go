package gateway

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"

	"chatr/internal/proto"
)

// TestStrangersCursorsRefused: only cursors made with this node's key are
// taken. A cursor handed out by another node with its own key (same
// cluster name, same room), and one a stranger builds from the public
// format of the last release, are refused over the WebSocket and the HTTP
// API with bad_request, as docs/cluster.md says; a forged cursor would have
// a node replay from wherever its author liked.
func TestStrangersCursorsRefused(t *testing.T) {
	t.Parallel()
	here, there := newTestServer(t), newTestServer(t)
	here.appendN(t, "lobby", 3)
	there.appendN(t, "lobby", 3)
	reader := there.hello(t, "reader")
	_, _, synced := reader.Join("lobby", map[string]any{"history": 10})
	if synced.Cursor == "" {
		t.Fatal("test setup: no cursor from the other node")
	}
	// Skip this node's first two messages: what a forger might want.
	forged := legacyCursor(here.cfg.ClusterName, "lobby", here.st.NodeID(), 2)

	c := here.hello(t, "ann")
	for _, tc := range []struct{ name, cursor string }{
		{"another node's", synced.Cursor},
		{"forged in the last release's format", forged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := c.For(t)
			c.Send(map[string]any{"type": "join", "room": "lobby", "since": tc.cursor, "ref": "j"})
			f := c.ExpectError(proto.CodeBadRequest, "j")
			if !strings.Contains(f.Message, "cursor is not valid here") {
				t.Errorf("error %q does not say the cursor is not valid here", f.Message)
			}
			t.Log(f.Message)
			c.Quiet()
			status, _, data := here.do(t, "GET", "/chatr/api/rooms/lobby/messages?since="+url.QueryEscape(tc.cursor), "", nil)
			if status != 400 {
				t.Errorf("GET since: status %d (%s), want 400", status, data)
			}
		})
	}
	// The node's own cursors still work.
	_, msgs, _ := c.Join("lobby", map[string]any{"history": 2})
	if len(msgs) != 2 {
		t.Fatalf("history 2 replayed %d messages", len(msgs))
	}
	if _, replay, _ := c.Join("lobby", map[string]any{"since": msgs[0].Cursor}); len(replay) != 1 || replay[0].ID != msgs[1].ID {
		t.Errorf("resume from the cursor of %s replayed %v, want [%s]", msgs[0].ID, ids(replay), msgs[1].ID)
	}
}

// legacyCursor builds, from its published layout, a cursor of the release
// before keyed cursors: version 2, an 8-byte SHA-256 tag of cluster and
// room, one (origin, seq) pair, and a CRC-32 anyone can compute.
func legacyCursor(cluster, room, origin string, seq uint64) string {
	tag := sha256.Sum256([]byte("chatr-cursor\x00" + cluster + "\x00" + room))
	b := append([]byte{2}, tag[:8]...)
	b = binary.AppendUvarint(b, 1)
	id, _ := hex.DecodeString(origin)
	b = append(b, id...)
	return withCRC(binary.AppendUvarint(b, seq))
}
