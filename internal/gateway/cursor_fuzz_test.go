package gateway

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"slices"
	"strings"
	"testing"

	"chatr/internal/client/clienttest"
	"chatr/internal/proto"
)

// sinceFixture is one test server holding messages in rooms a and b, a
// session kept open to probe it with joins of room a, and what such a
// join may replay. One fixture serves a whole fuzz run.
type sinceFixture struct {
	ts    *testServer
	probe *clienttest.Raw // the probe session, reused by every check
	roomA []proto.Message // room a's messages in replay order
	inA   map[string]bool // ids of room a
	inB   map[string]bool // ids of room b

	// Valid cursors: those the server handed out for rooms a and b.
	cursorsA, cursorsB []string
}

// newSinceFixture stores a, b, a, b batches so that the node's sequence
// numbers interleave the rooms (a: 1-3, 8-10; b: 4-7, 11-12), and collects
// the cursors a client of each room is given.
func newSinceFixture(tb testing.TB) *sinceFixture {
	tb.Helper()
	ts := newTestServer(tb, unlimited()...)
	fx := &sinceFixture{ts: ts, inA: map[string]bool{}, inB: map[string]bool{}}
	for _, batch := range []struct {
		room string
		n    int
	}{{"a", 3}, {"b", 4}, {"a", 3}, {"b", 2}} {
		for _, id := range ts.appendN(tb, batch.room, batch.n) {
			if batch.room == "a" {
				fx.inA[id] = true
			} else {
				fx.inB[id] = true
			}
		}
	}
	page, err := ts.srv.store.Latest(context.Background(), "a", 1000)
	if err != nil {
		tb.Fatalf("read room a: %v", err)
	}
	fx.roomA = page.Messages
	if len(fx.roomA) != len(fx.inA) {
		tb.Fatalf("room a holds %d messages, want %d", len(fx.roomA), len(fx.inA))
	}

	reader := ts.hello(tb, "reader")
	for _, room := range []string{"a", "b"} {
		_, msgs, synced := reader.Join(room, map[string]any{"history": 1000})
		var cursors []string
		for _, m := range msgs {
			cursors = append(cursors, m.Cursor)
		}
		cursors = append(cursors, synced.Cursor)
		if room == "a" {
			fx.cursorsA = cursors
		} else {
			fx.cursorsB = cursors
		}
	}
	fx.probe = fx.dialProbe(tb)
	return fx
}

// dialProbe opens the probe session: hello, nothing joined.
func (fx *sinceFixture) dialProbe(tb testing.TB) *clienttest.Raw {
	tb.Helper()
	return fx.ts.hello(tb, "prober")
}

// scopeA is the scope of room a's cursors on this server.
func (fx *sinceFixture) scopeA() proto.CursorScope { return fx.ts.hub.Scope("a") }

// check joins room a with since on the probe session and checks the
// answer: bad_request exactly when the cursor is not one of room a in this
// cluster; otherwise joined, precisely the room a messages the cursor
// lacks (never one of room b), and synced. The session must stay usable
// either way. It reports whether the join was accepted.
func (fx *sinceFixture) check(t *testing.T, since string) (accepted bool) {
	t.Helper()
	// Too large a frame closes the session by design (1009, tested
	// elsewhere); real cursors are far smaller.
	if len(since) > 16<<10 {
		return false
	}
	join, err := json.Marshal(map[string]string{"type": "join", "room": "a", "since": since, "ref": "j"})
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	// What the server reads: JSON turns invalid UTF-8 into U+FFFD.
	var in struct{ Since string }
	if err := json.Unmarshal(join, &in); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	want, perr := proto.DecodeCursor(fx.scopeA(), in.Since)

	if fx.probe == nil {
		// An earlier check failed and broke the session; go on with a new one.
		fx.probe = fx.dialProbe(t)
	}
	c := fx.probe.For(t)
	ok := false
	defer func() {
		if !ok {
			fx.probe.Conn.CloseNow()
			fx.probe = nil
		}
	}()
	c.Send(join)
	f := c.Next()
	if perr != nil {
		if f.Type != "error" || f.Code != proto.CodeBadRequest || f.Ref != "j" || f.Message == "" {
			t.Fatalf("join since %q (%s): got %s, want error bad_request with ref j", since, perr.Message, f)
		}
		c.Quiet()
		ok = true
		return false
	}

	if f.Type != "joined" || f.Room != "a" {
		t.Fatalf("join since %q (a cursor of room a): got %s, want joined a", since, f)
	}
	var got []string
	var synced clienttest.Frame
	for synced.Type == "" {
		f := c.Next()
		switch {
		case f.Type == "message":
			if f.Room != "a" || fx.inB[f.ID] || !fx.inA[f.ID] {
				t.Fatalf("join a since %q replayed %s, which is not of room a", since, f)
			}
			if _, derr := proto.DecodeCursor(fx.scopeA(), f.Cursor); derr != nil {
				t.Fatalf("join a since %q: message %s carries a cursor not valid for room a: %v", since, f.ID, derr)
			}
			got = append(got, f.ID)
		case f.Type == "synced" && f.Room == "a":
			synced = f
		case f.Type == "presence" && f.Room == "a":
			// The prober's own arrival may be announced; it is no replay.
		default:
			t.Fatalf("join a since %q: unexpected frame %s during the replay", since, f)
		}
	}
	var lacks []string
	for _, m := range fx.roomA {
		if m.Seq > want[m.Origin] {
			lacks = append(lacks, m.ID())
		}
	}
	if !slices.Equal(got, lacks) {
		t.Fatalf("join a since %q (vector %v) replayed %v, want what it lacks: %v", since, want, got, lacks)
	}
	if synced.Truncated {
		t.Fatalf("join a since %q: synced %s is truncated with %d messages", since, synced, len(fx.roomA))
	}
	end, derr := proto.DecodeCursor(fx.scopeA(), synced.Cursor)
	if derr != nil {
		t.Fatalf("join a since %q: synced cursor not valid for room a: %v", since, derr)
	}
	if !end.Covers(want) {
		t.Fatalf("join a since %q: synced cursor %v goes back behind the client's %v", since, end, want)
	}
	// Leave again, so the next check starts from a session that is in no
	// room (a second join of a joined room may say more than joined).
	c.Send(`{"type":"leave","room":"a"}`)
	for {
		f := c.Next()
		if f.Type == "left" && f.Room == "a" {
			break
		}
		if f.Type != "presence" {
			t.Fatalf("leave a: unexpected frame %s", f)
		}
	}
	c.Quiet()
	ok = true
	return true
}

// seeds are the cursors every run starts from: valid ones of room a and of
// room b, ones of another cluster and of another key, ones of the last
// release (version 2, a CRC-32 anyone can compute), truncations and
// mutations.
func (fx *sinceFixture) seeds() []string {
	node := fx.ts.origin
	stranger := strings.Repeat("ab", proto.NodeIDLen/2)
	other := fx.scopeA()
	other.Cluster = "elsewhere"
	noName := fx.scopeA()
	noName.Cluster = ""
	otherKey := fx.scopeA()
	otherKey.Key = []byte("not this node's key, of 32 bytes")
	out := []string{""}
	out = append(out, fx.cursorsA...)
	out = append(out, fx.cursorsB...)
	for _, v := range []proto.Vector{
		{node: 3},
		{node: 0},
		{node: 9, stranger: 4},
		{stranger: 1},
		{node: 1 << 63},
		{node: ^uint64(0)},
	} {
		out = append(out,
			proto.EncodeCursor(fx.scopeA(), v),          // made with the node's key: replays room a
			proto.EncodeCursor(fx.ts.hub.Scope("b"), v), // room b's
			proto.EncodeCursor(other, v),                // another cluster's
			proto.EncodeCursor(noName, v),               // no cluster name
			proto.EncodeCursor(otherKey, v),             // another key's
			legacyCursor(fx.ts.cfg.ClusterName, "a", node, 1))
	}
	last := fx.cursorsA[len(fx.cursorsA)-1]
	out = append(out,
		last[:len(last)-1], last[:len(last)/2], last[:1], last+"A", last+"=", last+" ",
		strings.ToUpper(last), "%"+last, last+last,
		"not-a-cursor", "====", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", strings.Repeat("_", 100),
		"\x00", "\xff\xfe", "é", "null",
		withCRC(append([]byte{2}, make([]byte, 8)...)),
		withCRC([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}))
	return out
}

// withCRC encodes body as a cursor with a CRC-32 after it, as the last
// release did (version 2).
func withCRC(body []byte) string {
	b := binary.BigEndian.AppendUint32(slices.Clone(body), crc32.ChecksumIEEE(body))
	return base64.RawURLEncoding.EncodeToString(b)
}

// mutations are every single-bit flip of a cursor: of its characters, of
// its decoded bytes (the MAC then fails), and of its decoded bytes with a
// CRC-32 over them, as the last release checked; and every truncation.
// (The parser behind the MAC is fuzzed in proto, which can seal a body.)
func mutations(cursor string) []string {
	var out []string
	for i := range len(cursor) {
		for bit := range 8 {
			b := []byte(cursor)
			b[i] ^= 1 << bit
			out = append(out, string(b))
		}
		out = append(out, cursor[:i])
	}
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(raw) < 16 {
		return out
	}
	body := raw[:len(raw)-16]
	for i := range len(raw) {
		for bit := range 8 {
			b := slices.Clone(raw)
			b[i] ^= 1 << bit
			out = append(out, base64.RawURLEncoding.EncodeToString(b))
			if i < len(body) {
				out = append(out, withCRC(b[:len(body)]))
			}
		}
	}
	return out
}

// FuzzJoinSince joins room a with any since: the node never crashes, the
// session stays usable, and the answer is bad_request or a replay of room
// a's messages alone, exactly those the cursor lacks.
func FuzzJoinSince(f *testing.F) {
	fx := newSinceFixture(f)
	for _, s := range fx.seeds() {
		f.Add(s)
	}
	for _, s := range mutations(fx.cursorsA[2])[:40] {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, since string) {
		fx.check(t, since)
	})
}

// TestJoinSinceMutations replays every single-bit mutation and truncation
// of valid cursors (of room a, of room b, and a forged two-origin one of
// room a) through the same check as FuzzJoinSince.
func TestJoinSinceMutations(t *testing.T) {
	t.Parallel()
	fx := newSinceFixture(t)
	bases := []string{
		fx.cursorsA[1],
		fx.cursorsA[len(fx.cursorsA)-1],
		fx.cursorsB[len(fx.cursorsB)-1],
		proto.EncodeCursor(fx.scopeA(), proto.Vector{fx.ts.origin: 2, strings.Repeat("cd", proto.NodeIDLen/2): 300}),
	}
	n, accepted := 0, 0
	for _, base := range bases {
		for _, s := range mutations(base) {
			if fx.check(t, s) {
				accepted++
			}
			n++
		}
	}
	t.Logf("%d mutated cursors checked: %d refused with bad_request, %d accepted as cursors of room a", n, n-accepted, accepted)
}
