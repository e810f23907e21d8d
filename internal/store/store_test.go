package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// Two replicating peers. Their ids sort around any random local id only by
// chance, which the ordering tests take into account.
const (
	peerA = "aaaaaaaaaaaa"
	peerB = "bbbbbbbbbbbb"
)

// openStore opens a store in dir and closes it at the end of the test.
func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustAppend(t testing.TB, s *Store, room, text string) proto.Message {
	t.Helper()
	m, err := s.Append(context.Background(), room, "tester", text)
	if err != nil {
		t.Fatalf("Append(%s, %q): %v", room, text, err)
	}
	return m
}

func draft(room, sender, text string) proto.Message {
	return proto.Message{Room: room, Sender: sender, Text: text}
}

func ids(ms []proto.Message) []string {
	out := make([]string, len(ms))
	for i := range ms {
		out[i] = ms[i].ID()
	}
	return out
}

// rawCount counts the messages in the log files that match, read outside
// the store: what a process opening the files after a crash would see.
func rawCount(t testing.TB, dir string, match func(proto.Message) bool) int {
	t.Helper()
	n, err := countRows(dir, match)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// countRows is rawCount for goroutines other than the test's.
func countRows(dir string, match func(proto.Message) bool) (int, error) {
	msgs, err := onDisk(dir)
	n := 0
	for _, m := range msgs {
		if match(m) {
			n++
		}
	}
	return n, err
}

// all matches every message.
func all(proto.Message) bool { return true }

// is matches the message with m's id.
func is(m proto.Message) func(proto.Message) bool {
	return func(o proto.Message) bool { return o.Origin == m.Origin && o.Seq == m.Seq }
}

// onDisk reads the messages in the log files of dir, without the store.
func onDisk(dir string) ([]proto.Message, error) {
	paths, err := filepath.Glob(filepath.Join(dir, logDirName, "*.log"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []proto.Message
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		_, recs, _, err := segRecords(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, r := range recs {
			if r.kind == recMessage {
				out = append(out, r.msg)
			}
		}
	}
	return out, nil
}

// segRecords reads a segment's data without the store: the offset of each
// batch, its records, and where the batches end (at zeros, or at the first
// batch that does not check out: a torn write).
func segRecords(data []byte) (batches []int, recs []record, end int, err error) {
	off := segHeader
	for off < len(data) {
		n, err := batchFrame(data[off:])
		if err != nil || n == 0 {
			break
		}
		batches = append(batches, off)
		at, err := batchRecords(data, off, off+batchHeader+n, func(_ int, r record) error {
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			return nil, nil, 0, fmt.Errorf("at %d: %w", at, err)
		}
		off += batchHeader + n
	}
	return batches, recs, off, nil
}

func TestAppendNumbersAndTimes(t *testing.T) {
	s := openStore(t, t.TempDir())
	if !proto.ValidNodeID(s.NodeID()) {
		t.Fatalf("NodeID() = %q, not a node id", s.NodeID())
	}
	before := time.Now().UnixMicro()
	var prev proto.Message
	for i := 1; i <= 3; i++ {
		m := mustAppend(t, s, "lobby", fmt.Sprint("hello ", i))
		if m.Seq != uint64(i) || m.Origin != s.NodeID() {
			t.Fatalf("append %d got id %s, want %s", i, m.ID(), proto.MessageID(s.NodeID(), uint64(i)))
		}
		if m.Room != "lobby" || m.Sender != "tester" || m.Text != fmt.Sprint("hello ", i) {
			t.Fatalf("append %d returned %+v", i, m)
		}
		if i > 1 && m.Created <= prev.Created {
			t.Fatalf("created went from %d to %d", prev.Created, m.Created)
		}
		if m.Created < before-1_000_000 || m.Created > time.Now().UnixMicro()+1_000_000 {
			t.Fatalf("created %d is not the current time", m.Created)
		}
		prev = m
	}
	if v := s.Vector(); !reflect.DeepEqual(v, proto.Vector{s.NodeID(): 3}) {
		t.Errorf("Vector() = %v, want %s:3", v, s.NodeID())
	}
	// Numbering is per node, not per room.
	if m := mustAppend(t, s, "other", "x"); m.Seq != 4 {
		t.Errorf("append in another room got seq %d, want 4", m.Seq)
	}
}

// TestAckAfterCommit: when Append returns, or AppendAsync calls done, the
// message is committed: another connection to the file sees it.
func TestAckAfterCommit(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for i := 0; i < 5; i++ {
		m := mustAppend(t, s, "lobby", "sync")
		if n := rawCount(t, dir, is(m)); n != 1 {
			t.Fatalf("after Append returned %s, a fresh connection sees %d rows", m.ID(), n)
		}
	}
	type result struct {
		m       proto.Message
		err     error
		visible int
	}
	results := make(chan result, 50)
	for i := 0; i < 50; i++ {
		err := s.AppendAsync(context.Background(), draft("lobby", "tester", fmt.Sprint(i)), func(m proto.Message, err error) {
			r := result{m: m, err: err}
			if err == nil {
				// Checked inside done, before anyone could be told "ack".
				r.visible, r.err = countRows(dir, is(m))
			}
			results <- r
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.visible != 1 {
			t.Fatalf("done was called for %s before it was committed", r.m.ID())
		}
	}
}

// TestAppendAsyncOrder: messages queued by one goroutine are numbered in the
// order they were queued, whatever the batching.
func TestAppendAsyncOrder(t *testing.T) {
	s := openStore(t, t.TempDir())
	const n = 300
	var mu sync.Mutex
	got := map[string]uint64{}
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		text := fmt.Sprint(i)
		if err := s.AppendAsync(context.Background(), draft("lobby", "a", text), func(m proto.Message, err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[text] = m.Seq
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if got[fmt.Sprint(i)] != uint64(i+1) {
			t.Fatalf("message queued %d-th got seq %d, want %d", i, got[fmt.Sprint(i)], i+1)
		}
	}
}

func TestRestartKeepsHistoryAndNumbering(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := s.NodeID()
	var sent []proto.Message
	for i := 0; i < 3; i++ {
		sent = append(sent, mustAppend(t, s, "lobby", fmt.Sprint("m", i)))
	}
	sent = append(sent, mustAppend(t, s, "dev", "in dev"))
	if _, err := s.Insert(context.Background(), []proto.Message{{Origin: peerA, Seq: 1, Room: "lobby", Sender: "p", Text: "peer", Created: 5}}); err != nil {
		t.Fatal(err)
	}
	roomsBefore := s.Rooms()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Append(context.Background(), "lobby", "a", "late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}

	for restart := 1; restart <= 2; restart++ {
		s2, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("reopen %d: %v", restart, err)
		}
		if s2.NodeID() != id {
			t.Fatalf("node id changed across restart: %s -> %s", id, s2.NodeID())
		}
		p, err := s2.Latest(context.Background(), "lobby", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) != 3+restart {
			t.Fatalf("after restart %d lobby holds %v", restart, ids(p.Messages))
		}
		for _, m := range sent[:3] {
			if !containsMsg(p.Messages, m) {
				t.Fatalf("after restart %d, %s (%q) is missing or changed", restart, m.ID(), m.Text)
			}
		}
		if restart == 1 && !reflect.DeepEqual(s2.Rooms(), roomsBefore) {
			t.Errorf("Rooms after restart = %+v, before %+v", s2.Rooms(), roomsBefore)
		}
		if v := s2.Vector(); v[id] != uint64(len(sent)) || v[peerA] != 1 {
			t.Errorf("Vector after restart = %v", v)
		}
		m := mustAppend(t, s2, "lobby", fmt.Sprint("after restart ", restart))
		if want := uint64(len(sent) + 1); m.Seq != want {
			t.Fatalf("after restart %d the next seq is %d, want %d (no reuse)", restart, m.Seq, want)
		}
		if m.Created <= sent[len(sent)-1].Created {
			t.Fatalf("created went backwards across restart: %d after %d", m.Created, sent[len(sent)-1].Created)
		}
		sent = append(sent, m)
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func containsMsg(ms []proto.Message, want proto.Message) bool {
	for _, m := range ms {
		if m == want {
			return true
		}
	}
	return false
}

func peerMsg(origin string, seq uint64, room string, created int64) proto.Message {
	return proto.Message{Origin: origin, Seq: seq, Room: room, Sender: "peer", Text: fmt.Sprintf("%s-%d", origin, seq), Created: created}
}

func TestInsertReplicated(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())

	got, err := s.Insert(ctx, []proto.Message{peerMsg(peerA, 1, "lobby", 10), peerMsg(peerA, 2, "lobby", 20), peerMsg(peerB, 1, "dev", 15)})
	if err != nil || len(got) != 3 {
		t.Fatalf("Insert = %v, %v; want 3 stored", ids(got), err)
	}
	// Repeats are dropped.
	got, err = s.Insert(ctx, []proto.Message{peerMsg(peerA, 1, "lobby", 10), peerMsg(peerA, 2, "lobby", 20)})
	if err != nil || len(got) != 0 {
		t.Fatalf("Insert of repeats = %v, %v; want nothing new", ids(got), err)
	}
	// Another message under a held id is a conflict, refused and never
	// dropped silently; the held one stays.
	for _, change := range []func(*proto.Message){
		func(m *proto.Message) { m.Text = "rewritten" },
		func(m *proto.Message) { m.Room = "dev" },
		func(m *proto.Message) { m.Sender = "mallory" },
		func(m *proto.Message) { m.Created++ },
		func(m *proto.Message) { m.Ref = "r9" },
	} {
		changed := peerMsg(peerA, 2, "lobby", 20)
		change(&changed)
		got, err = s.Insert(ctx, []proto.Message{changed})
		if !errors.Is(err, ErrConflict) || len(got) != 0 {
			t.Fatalf("Insert of %+v under a held id = %v, %v; want ErrConflict", changed, ids(got), err)
		}
	}
	if p, _ := s.Range(ctx, peerA, 2, 1); len(p) != 1 || p[0] != peerMsg(peerA, 2, "lobby", 20) {
		t.Fatalf("after the conflicts, %s-2 is %+v; want the one held first", peerA, p)
	}
	// A batch that overlaps what is held stores only the new part.
	got, err = s.Insert(ctx, []proto.Message{peerMsg(peerA, 2, "lobby", 20), peerMsg(peerA, 3, "lobby", 30)})
	if err != nil || !reflect.DeepEqual(ids(got), []string{peerA + "-3"}) {
		t.Fatalf("overlapping Insert = %v, %v; want only %s-3", ids(got), err, peerA)
	}
	// A gap is refused: seq 5 cannot follow 3.
	got, err = s.Insert(ctx, []proto.Message{peerMsg(peerA, 5, "lobby", 50)})
	if !errors.Is(err, ErrGap) || len(got) != 0 {
		t.Fatalf("Insert with a gap = %v, %v; want ErrGap", ids(got), err)
	}
	// A gap in the middle of a batch keeps what came before it, and stops.
	got, err = s.Insert(ctx, []proto.Message{peerMsg(peerA, 4, "lobby", 40), peerMsg(peerA, 6, "lobby", 60), peerMsg(peerA, 7, "lobby", 70)})
	if !errors.Is(err, ErrGap) || len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("Insert 4,6,7 = %v, %v; want 4 stored, then ErrGap", ids(got), err)
	}
	if v := s.Vector(); v[peerA] != 4 || v[peerB] != 1 {
		t.Fatalf("Vector = %v, want %s:4 %s:1", v, peerA, peerB)
	}
	log, err := s.Range(ctx, peerA, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{peerA + "-1", peerA + "-2", peerA + "-3", peerA + "-4"}; !reflect.DeepEqual(ids(log), want) {
		t.Fatalf("log of %s = %v, want %v", peerA, ids(log), want)
	}
	if log[1].Text != peerA+"-2" {
		t.Errorf("a repeat overwrote a stored message: %q", log[1].Text)
	}
	if !reflect.DeepEqual(log[0], peerMsg(peerA, 1, "lobby", 10)) {
		t.Errorf("replicated message stored as %+v", log[0])
	}

	// Our own messages coming back from a peer are not stored twice, and
	// never change what we hold: an echo as held is ignored, a changed one
	// is a conflict, one we never wrote is refused.
	own := mustAppend(t, s, "lobby", "mine")
	if got, err = s.Insert(ctx, []proto.Message{own}); err != nil || len(got) != 0 {
		t.Fatalf("Insert of our own message = %v, %v; want it ignored", ids(got), err)
	}
	echo := own
	echo.Text = "echoed by a peer"
	if got, err = s.Insert(ctx, []proto.Message{echo}); !errors.Is(err, ErrConflict) || len(got) != 0 {
		t.Fatalf("Insert of our own message changed = %v, %v; want ErrConflict", ids(got), err)
	}
	forged := own
	forged.Seq, forged.Created = 2, 253402300799000000 // 9999-12-31
	if got, err = s.Insert(ctx, []proto.Message{forged}); !errors.Is(err, ErrOwnOrigin) || len(got) != 0 {
		t.Fatalf("Insert of an own message we never wrote = %v, %v; want ErrOwnOrigin", ids(got), err)
	}
	mine, _ := s.Range(ctx, s.NodeID(), 1, 10)
	if len(mine) != 1 || mine[0] != own {
		t.Fatalf("own log after echo = %+v, want only %+v", mine, own)
	}
	if next := mustAppend(t, s, "lobby", "next"); next.Seq != 2 {
		t.Fatalf("after an echo the next own seq is %d, want 2", next.Seq)
	}
	if got, err := s.Insert(ctx, nil); err != nil || got != nil {
		t.Errorf("Insert(nil) = %v, %v", got, err)
	}
}

// history builds a room whose messages come from three origins with
// interleaved creation times, and returns them in (created, id) order.
func history(t *testing.T, s *Store) []proto.Message {
	t.Helper()
	ctx := context.Background()
	// Creation times interleave across origins; 300 is shared by A and B, so
	// the id breaks the tie. The local node's messages are created now, after
	// all of these.
	a := []proto.Message{peerMsg(peerA, 1, "lobby", 100), peerMsg(peerA, 2, "lobby", 300), peerMsg(peerA, 3, "other", 350), peerMsg(peerA, 4, "lobby", 500)}
	b := []proto.Message{peerMsg(peerB, 1, "lobby", 200), peerMsg(peerB, 2, "lobby", 300), peerMsg(peerB, 3, "lobby", 400)}
	// B first, so insertion order is not creation order.
	if _, err := s.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Insert(ctx, a); err != nil {
		t.Fatal(err)
	}
	want := []proto.Message{a[0], b[0], a[1], b[1], b[2], a[3]}
	for i := 0; i < 3; i++ {
		want = append(want, mustAppend(t, s, "lobby", fmt.Sprint("local ", i)))
	}
	mustAppend(t, s, "other", "not in lobby")
	return want
}

// roomVector computes the vector of every message in ms.
func vectorOf(ms []proto.Message) proto.Vector {
	v := proto.Vector{}
	for _, m := range ms {
		if m.Seq > v[m.Origin] {
			v[m.Origin] = m.Seq
		}
	}
	return v
}

func TestLatestAndBefore(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	all := history(t, s)
	roomVec := vectorOf(all)

	for _, limit := range []int{1, 2, 5, len(all), 1000} {
		p, err := s.Latest(ctx, "lobby", limit)
		if err != nil {
			t.Fatal(err)
		}
		want := all[max(0, len(all)-limit):]
		if !reflect.DeepEqual(p.Messages, want) {
			t.Errorf("Latest(%d) = %v, want %v (oldest first, by created then id)", limit, ids(p.Messages), ids(want))
		}
		// Latest is the state of the room now: its vector covers all of it.
		if !reflect.DeepEqual(p.Vector, roomVec) {
			t.Errorf("Latest(%d).Vector = %v, want the room vector %v", limit, p.Vector, roomVec)
		}
	}
	p, err := s.Latest(ctx, "empty", 50)
	if err != nil || len(p.Messages) != 0 || len(p.Vector) != 0 {
		t.Errorf("Latest(empty room) = %+v, %v", p, err)
	}

	for i := range all {
		for _, limit := range []int{1, 3, 100} {
			p, err := s.Before(ctx, "lobby", all[i].Origin, all[i].Seq, limit)
			if err != nil {
				t.Fatal(err)
			}
			want := all[max(0, i-limit):i]
			if len(p.Messages) != len(want) || len(want) > 0 && !reflect.DeepEqual(p.Messages, want) {
				t.Errorf("Before(%s, %d) = %v, want %v", all[i].ID(), limit, ids(p.Messages), ids(want))
			}
			if p.Vector != nil {
				t.Errorf("Before(%s).Vector = %v: a page of the past must not move a cursor", all[i].ID(), p.Vector)
			}
		}
	}
	// Paging back from the newest with Before walks the whole room once.
	var walked []proto.Message
	cur := all[len(all)-1]
	walked = append(walked, cur)
	for {
		p, err := s.Before(ctx, "lobby", cur.Origin, cur.Seq, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) == 0 {
			break
		}
		walked = append(append([]proto.Message(nil), p.Messages...), walked...)
		cur = p.Messages[0]
	}
	if !reflect.DeepEqual(walked, all) {
		t.Errorf("paging back = %v, want %v", ids(walked), ids(all))
	}

	for _, tc := range []struct {
		room, origin string
		seq          uint64
	}{
		{"lobby", peerA, 99},
		{"lobby", peerA, 3}, // exists, but in another room
		{"nowhere", peerA, 1},
		{"lobby", "cccccccccccc", 1},
	} {
		if _, err := s.Before(ctx, tc.room, tc.origin, tc.seq, 10); !errors.Is(err, ErrNotFound) {
			t.Errorf("Before(%s, %s-%d) = %v, want ErrNotFound", tc.room, tc.origin, tc.seq, err)
		}
	}
}

// TestSince checks the replay a reconnecting client gets: every message its
// cursor lacks, once, in order; and a Vector that covers what it got.
func TestSince(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	all := history(t, s)
	roomVec := vectorOf(all)

	// A cursor that covers a prefix of the room in (created, id) order; it
	// must get exactly the rest.
	for k := 0; k <= len(all); k++ {
		cursor := vectorOf(all[:k])
		for _, limit := range []int{1, 2, 4, 1000} {
			p, err := s.Since(ctx, "lobby", cursor, limit, false)
			if err != nil {
				t.Fatal(err)
			}
			rest := all[k:]
			want := rest[:min(limit, len(rest))]
			if len(p.Messages) != len(want) || len(want) > 0 && !reflect.DeepEqual(p.Messages, want) {
				t.Fatalf("Since(prefix %d, limit %d) = %v, want %v", k, limit, ids(p.Messages), ids(want))
			}
			if p.Truncated != (len(rest) > limit) {
				t.Errorf("Since(prefix %d, limit %d).Truncated = %v with %d left", k, limit, p.Truncated, len(rest))
			}
			// The vector covers everything returned and before it, and no
			// message after it, so a resume neither repeats nor skips.
			if wantVec := vectorOf(all[:k+len(want)]); !vecEqual(p.Vector, wantVec) {
				t.Errorf("Since(prefix %d, limit %d).Vector = %v, want %v", k, limit, p.Vector, wantVec)
			}
		}
		// newest mode: the last limit messages; the gap is given up, so the
		// vector covers the whole room.
		p, err := s.Since(ctx, "lobby", cursor, 2, true)
		if err != nil {
			t.Fatal(err)
		}
		rest := all[k:]
		want := rest[max(0, len(rest)-2):]
		if len(p.Messages) != len(want) || len(want) > 0 && !reflect.DeepEqual(p.Messages, want) {
			t.Fatalf("Since(prefix %d, newest 2) = %v, want %v", k, ids(p.Messages), ids(want))
		}
		if p.Truncated != (len(rest) > 2) {
			t.Errorf("Since(prefix %d, newest 2).Truncated = %v with %d left", k, p.Truncated, len(rest))
		}
		if !p.Vector.Covers(roomVec) {
			t.Errorf("Since(prefix %d, newest 2).Vector = %v does not cover the room %v", k, p.Vector, roomVec)
		}
	}

	// Paging forward with the returned vector walks the room exactly once.
	var got []proto.Message
	cursor := proto.Vector{}
	for i := 0; ; i++ {
		p, err := s.Since(ctx, "lobby", cursor, 2, false)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Messages...)
		cursor = p.Vector
		if !p.Truncated {
			break
		}
		if i > len(all) {
			t.Fatal("paging forward does not end")
		}
	}
	if !reflect.DeepEqual(got, all) {
		t.Errorf("paging forward = %v, want %v", ids(got), ids(all))
	}
	if !vecEqual(cursor, roomVec) {
		t.Errorf("final cursor %v, want %v", cursor, roomVec)
	}

	// A cursor ahead of this node (from a node that holds more), or naming
	// origins this node has never seen, replays nothing and is kept.
	ahead := roomVec.Clone()
	ahead[peerA] += 10
	ahead["cccccccccccc"] = 7
	p, err := s.Since(ctx, "lobby", ahead, 10, false)
	if err != nil || len(p.Messages) != 0 || p.Truncated || !p.Vector.Covers(ahead) {
		t.Errorf("Since(ahead) = %v truncated %v vector %v, %v; want nothing and the cursor kept", ids(p.Messages), p.Truncated, p.Vector, err)
	}
	// New messages after the cursor are exactly what the next resume gets.
	m := mustAppend(t, s, "lobby", "after")
	p, err = s.Since(ctx, "lobby", roomVec, 10, false)
	if err != nil || !reflect.DeepEqual(p.Messages, []proto.Message{m}) {
		t.Errorf("Since(room vector) after one more = %v, %v; want [%s]", ids(p.Messages), err, m.ID())
	}
	// The empty cursor replays the whole room.
	p, err = s.Since(ctx, "empty", proto.Vector{}, 10, false)
	if err != nil || len(p.Messages) != 0 || p.Truncated {
		t.Errorf("Since(empty room) = %+v, %v", p, err)
	}
}

func vecEqual(a, b proto.Vector) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

func TestRoomsAndRange(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	if r := s.Rooms(); len(r) != 0 {
		t.Fatalf("Rooms() of a new store = %+v", r)
	}
	all := history(t, s)
	rooms := s.Rooms()
	names := make([]string, len(rooms))
	for i, r := range rooms {
		names[i] = r.Room
	}
	if !reflect.DeepEqual(names, []string{"lobby", "other"}) {
		t.Fatalf("Rooms() = %+v, want lobby and other by name", rooms)
	}
	if rooms[0].Messages != int64(len(all)) || rooms[0].Last != all[len(all)-1].Created {
		t.Errorf("lobby = %+v, want %d messages, last %d", rooms[0], len(all), all[len(all)-1].Created)
	}
	if rooms[1].Messages != 2 {
		t.Errorf("other = %+v, want 2 messages", rooms[1])
	}

	log, err := s.Range(ctx, peerA, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{peerA + "-2", peerA + "-3"}; !reflect.DeepEqual(ids(log), want) {
		t.Errorf("Range(%s, 2, 2) = %v, want %v (across rooms, in seq order)", peerA, ids(log), want)
	}
	if log[1].Room != "other" {
		t.Errorf("Range lost the room: %+v", log[1])
	}
	log, _ = s.Range(ctx, s.NodeID(), 1, 100)
	if len(log) != 4 {
		t.Errorf("Range(self) = %v, want 4", ids(log))
	}
	for i, m := range log {
		if m.Seq != uint64(i+1) {
			t.Errorf("Range(self)[%d] = %s", i, m.ID())
		}
	}
	if log, err := s.Range(ctx, peerA, 5, 10); err != nil || len(log) != 0 {
		t.Errorf("Range past the end = %v, %v", ids(log), err)
	}
	if log, err := s.Range(ctx, "cccccccccccc", 1, 10); err != nil || len(log) != 0 {
		t.Errorf("Range(unknown origin) = %v, %v", ids(log), err)
	}
}

// commitLog collects the commit stream, as the hub reads it.
type commitLog struct {
	mu  sync.Mutex
	got []Committed
}

func (c *commitLog) add(b []Committed) {
	c.mu.Lock()
	c.got = append(c.got, b...)
	c.mu.Unlock()
}

func (c *commitLog) snapshot() []Committed {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Committed(nil), c.got...)
}

// follow collects the commit stream of s from now on, on a goroutine of
// its own, as the hub does.
func follow(t *testing.T, s *Store) *commitLog {
	f := s.Follow(true)
	log := &commitLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer f.Close()
		for {
			b, err := f.Next(ctx)
			if err != nil {
				return
			}
			log.add(b)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return log
}

// TestCommitStream: the hub learns of every stored message once, in
// commit order, with the vector of its room right after it: the cursor a
// client holds once it has that message.
func TestCommitStream(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	log := follow(t, s)

	// One Insert is one batch holding several rooms and origins.
	batch := []proto.Message{
		peerMsg(peerA, 1, "lobby", 10), peerMsg(peerB, 1, "lobby", 11), peerMsg(peerA, 2, "dev", 12),
		peerMsg(peerB, 2, "lobby", 13), peerMsg(peerA, 3, "lobby", 14), peerMsg(peerB, 3, "dev", 15),
	}
	if _, err := s.Insert(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Repeats and refused messages are not reported.
	s.Insert(ctx, batch[:2])
	s.Insert(ctx, []proto.Message{peerMsg(peerA, 9, "lobby", 99)})
	var sent []proto.Message
	sent = append(sent, batch...)
	for i := 0; i < 20; i++ {
		room := []string{"lobby", "dev", "x"}[i%3]
		sent = append(sent, mustAppend(t, s, room, fmt.Sprint(i)))
	}
	// Many async appends end up in shared batches.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 0; i < 100; i++ {
		wg.Add(1)
		room := []string{"lobby", "dev"}[i%2]
		s.AppendAsync(ctx, draft(room, "a", fmt.Sprint(i)), func(m proto.Message, err error) {
			defer wg.Done()
			mu.Lock()
			sent = append(sent, m)
			mu.Unlock()
		})
	}
	wg.Wait()

	proctest.Eventually(t, 5*time.Second, func() error {
		if n := len(log.snapshot()); n < len(sent) {
			return fmt.Errorf("the stream carried %d of %d messages", n, len(sent))
		}
		return nil
	})
	got := log.snapshot()
	if len(got) != len(sent) {
		t.Fatalf("the stream carried %d messages, %d were stored", len(got), len(sent))
	}
	// Replay the reports: each message is new, follows its origin's last,
	// and carries its room's vector.
	rooms := map[string]proto.Vector{}
	held := proto.Vector{}
	seen := map[string]bool{}
	for i, c := range got {
		m := c.Msg
		if seen[m.ID()] {
			t.Fatalf("report %d: %s reported twice", i, m.ID())
		}
		seen[m.ID()] = true
		if m.Seq != held[m.Origin]+1 {
			t.Fatalf("report %d: %s after %s-%d: not in commit order", i, m.ID(), m.Origin, held[m.Origin])
		}
		held[m.Origin] = m.Seq
		if rooms[m.Room] == nil {
			rooms[m.Room] = proto.Vector{}
		}
		rooms[m.Room][m.Origin] = m.Seq
		if !vecEqual(c.RoomVector, rooms[m.Room]) {
			t.Fatalf("report %d: %s in %s has RoomVector %v, want %v", i, m.ID(), m.Room, c.RoomVector, rooms[m.Room])
		}
	}
	for i, m := range sent {
		if !seen[m.ID()] {
			t.Errorf("stored message %d %s was never reported", i, m.ID())
		}
	}
	// The vectors handed out are the store's: they match Latest.
	for room, v := range rooms {
		p, err := s.Latest(ctx, room, 1)
		if err != nil || !vecEqual(p.Vector, v) {
			t.Errorf("Latest(%s).Vector = %v, the stream said %v", room, p.Vector, v)
		}
	}
	// A receiver may keep the vector: later commits must not change it.
	first := got[0].RoomVector.Clone()
	mustAppend(t, s, "lobby", "later")
	if !vecEqual(log.snapshot()[0].RoomVector, first) {
		t.Error("a RoomVector in the stream changed after a later commit")
	}
}

// TestConcurrentAppends: many senders at once; every message is durable,
// numbered without gaps or repeats, and survives a restart. Run with -race.
func TestConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const senders, each = 16, 40
	var mu sync.Mutex
	acked := map[uint64]proto.Message{}
	var wg sync.WaitGroup
	for g := 0; g < senders; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for i := 0; i < each; i++ {
				room := fmt.Sprintf("room%d", (g+i)%4)
				m, err := s.Append(context.Background(), room, fmt.Sprint("sender", g), fmt.Sprint(g, "/", i))
				if err != nil {
					t.Error(err)
					return
				}
				if m.Seq <= last {
					t.Errorf("sender %d got seq %d after %d", g, m.Seq, last)
				}
				last = m.Seq
				mu.Lock()
				if prev, dup := acked[m.Seq]; dup {
					t.Errorf("seq %d given twice: %q and %q", m.Seq, prev.Text, m.Text)
				}
				acked[m.Seq] = m
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	check := func(s *Store, when string) {
		t.Helper()
		log, err := s.Range(context.Background(), s.NodeID(), 1, senders*each+10)
		if err != nil {
			t.Fatal(err)
		}
		if len(log) != senders*each {
			t.Fatalf("%s: log holds %d messages, want %d", when, len(log), senders*each)
		}
		for i, m := range log {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: log[%d] = %s: a gap", when, i, m.ID())
			}
			if m != acked[m.Seq] {
				t.Fatalf("%s: stored %+v, acked %+v", when, m, acked[m.Seq])
			}
			if i > 0 && m.Created <= log[i-1].Created {
				t.Fatalf("%s: created of %s is not after %s", when, m.ID(), log[i-1].ID())
			}
		}
		var total int64
		for _, r := range s.Rooms() {
			total += r.Messages
		}
		if total != senders*each {
			t.Errorf("%s: Rooms() counts %d messages", when, total)
		}
	}
	check(s, "before restart")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir)
	check(s2, "after restart")
}

// TestCloseCommitsQueued: Close waits for queued writes; none is lost or
// left without an answer.
func TestCloseCommitsQueued(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var acked []uint64
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		if err := s.AppendAsync(context.Background(), draft("lobby", "a", "x"), func(m proto.Message, err error) {
			defer wg.Done()
			if err == nil {
				mu.Lock()
				acked = append(acked, m.Seq)
				mu.Unlock()
			}
		}); err != nil {
			wg.Done()
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(acked) != 200 {
		t.Fatalf("%d of 200 queued writes acked by Close", len(acked))
	}
	if n := rawCount(t, dir, all); n != 200 {
		t.Fatalf("after Close the file holds %d messages, 200 were acked", n)
	}
}

// TestCorruptDataDirRefused: a data directory that is not a chatr store is
// refused with an error that says so, and nothing in it is changed: the
// store never resets someone's data.
func TestCorruptDataDirRefused(t *testing.T) {
	garbage := bytes.Repeat([]byte("this is not a database \x00\x01\x02\xff"), 300)
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		mention []string // each must appear in the error
	}{
		{"garbage chatr.db", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, FileName), garbage)
		}, []string{FileName}},
		{"truncated chatr store", func(t *testing.T, dir string) {
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 200; i++ {
				mustAppend(t, s, "lobby", strings.Repeat("x", 1000))
			}
			s.Close()
			os.Remove(filepath.Join(dir, FileName+"-wal"))
			os.Remove(filepath.Join(dir, FileName+"-shm"))
			b, err := os.ReadFile(filepath.Join(dir, FileName))
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, FileName), b[:len(b)/2])
		}, []string{FileName}},
		{"sqlite database of another program", func(t *testing.T, dir string) {
			db, err := sql.Open("sqlite", filepath.Join(dir, FileName))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, q := range []string{
				`CREATE TABLE invoices(id INTEGER PRIMARY KEY, customer TEXT, amount REAL)`,
				`INSERT INTO invoices(customer, amount) VALUES('acme', 12.5), ('globex', 99)`,
			} {
				if _, err := db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
		}, []string{FileName, "not a chatr store"}},
		{"sqlite database with a meta table of another program", func(t *testing.T, dir string) {
			db, err := sql.Open("sqlite", filepath.Join(dir, FileName))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, q := range []string{
				`CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
				`INSERT INTO meta VALUES('app', 'other')`,
			} {
				if _, err := db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
		}, []string{FileName, "not a chatr store"}},
		{"other files but no chatr.db", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "notes.txt"), []byte("my notes\n"))
			if err := os.Mkdir(filepath.Join(dir, "photos"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "photos", "cat.jpg"), garbage)
		}, []string{"notes.txt", "not a chatr data directory"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			before := snapshotDir(t, dir)
			s, err := Open(dir, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open accepted a directory that is not a chatr store")
			}
			for _, m := range append([]string{dir}, tc.mention...) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			// Opening twice does not wear it down either.
			if s, err := Open(dir, Options{}); err == nil {
				s.Close()
				t.Fatal("second Open accepted it")
			}
			after := snapshotDir(t, dir)
			if !reflect.DeepEqual(before, after) {
				t.Errorf("a refused Open changed the directory:\n%s", diffDirs(before, after))
			}
		})
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshotDir maps each file under dir to its content.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[strings.TrimPrefix(p, dir)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffDirs(before, after map[string]string) string {
	var lines []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			lines = append(lines, "removed "+p)
		case a != b:
			first := 0
			for first < len(a) && first < len(b) && a[first] == b[first] {
				first++
			}
			lines = append(lines, fmt.Sprintf("changed %s: %d -> %d bytes, first difference at byte %d", p, len(b), len(a), first))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			lines = append(lines, fmt.Sprintf("created %s (%d bytes)", p, len(a)))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestOpenErrors(t *testing.T) {
	// A data path that is a file, not a directory.
	f := filepath.Join(t.TempDir(), "file")
	writeFile(t, f, []byte("x"))
	if s, err := Open(f, Options{}); err == nil {
		s.Close()
		t.Error("Open(a file) succeeded")
	}
	// A new directory, nested, is made.
	dir := filepath.Join(t.TempDir(), "a", "b")
	s := openStore(t, dir)
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Errorf("no %s in a new data directory: %v", FileName, err)
	}
	// Two stores have different node ids.
	if s2 := openStore(t, t.TempDir()); s2.NodeID() == s.NodeID() {
		t.Error("two new stores got the same node id")
	}
}

// TestSendRefDedup: a send repeated with the same ref by the same sender in
// the same room (a client re-sending after a lost ack) stores nothing new
// and gets the first message back, also after a restart and when the first
// copy came from another node.
func TestSendRefDedup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendRef := func(s *Store, room, sender, text, ref string) proto.Message {
		t.Helper()
		ch := make(chan proto.Message, 1)
		if err := s.AppendAsync(ctx, proto.Message{Room: room, Sender: sender, Text: text, Ref: ref}, func(m proto.Message, err error) {
			if err != nil {
				t.Error(err)
			}
			ch <- m
		}); err != nil {
			t.Fatal(err)
		}
		return <-ch
	}
	first := appendRef(s, "lobby", "ada", "hello", "r1")
	if again := appendRef(s, "lobby", "ada", "hello", "r1"); again.ID() != first.ID() || again.Created != first.Created {
		t.Fatalf("re-send got %s, want the first message %s", again.ID(), first.ID())
	}
	// Other sender, other room, other ref, or no ref: a new message each.
	distinct := []proto.Message{
		appendRef(s, "lobby", "bob", "hello", "r1"),
		appendRef(s, "dev", "ada", "hello", "r1"),
		appendRef(s, "lobby", "ada", "hello", "r2"),
		appendRef(s, "lobby", "ada", "hello", ""),
		appendRef(s, "lobby", "ada", "hello", ""),
	}
	for i, m := range distinct {
		if m.Seq != uint64(i+2) {
			t.Errorf("distinct send %d got %s, want seq %d", i, m.ID(), i+2)
		}
	}
	// Many copies of one send in one batch store it once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for i := 0; i < 20; i++ {
		wg.Add(1)
		s.AppendAsync(ctx, proto.Message{Room: "lobby", Sender: "cy", Text: "burst", Ref: "same"}, func(m proto.Message, err error) {
			defer wg.Done()
			mu.Lock()
			got[m.ID()]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(got) != 1 {
		t.Errorf("20 copies of one send stored as %v", got)
	}
	// The first copy arrived from a peer: a re-send here gets it.
	if _, err := s.Insert(ctx, []proto.Message{{Origin: peerA, Seq: 1, Room: "lobby", Sender: "dee", Text: "x", Created: time.Now().UnixMicro(), Ref: "p1"}}); err != nil {
		t.Fatal(err)
	}
	if m := appendRef(s, "lobby", "dee", "x", "p1"); m.ID() != peerA+"-1" {
		t.Errorf("re-send of a message stored on another node got %s, want %s-1", m.ID(), peerA)
	}
	n := rawCount(t, dir, all)
	s.Close()
	s2 := openStore(t, dir)
	if m := appendRef(s2, "lobby", "ada", "hello", "r1"); m.ID() != first.ID() {
		t.Errorf("re-send after a restart got %s, want %s", m.ID(), first.ID())
	}
	if after := rawCount(t, dir, all); after != n {
		t.Errorf("re-sends stored %d new rows", after-n)
	}
}

// TestOpenStoreOfPreviousSchema: a data directory made by the first release
// (messages without the ref column, schema "1") must either keep working or
// be refused at Open with a clear error; it must not open and then fail
// every send.
func TestOpenStoreOfPreviousSchema(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`PRAGMA journal_mode=WAL`,
		`CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE messages(
			origin TEXT NOT NULL, seq INTEGER NOT NULL, room TEXT NOT NULL,
			sender TEXT NOT NULL, text TEXT NOT NULL, created INTEGER NOT NULL,
			PRIMARY KEY(origin, seq)) WITHOUT ROWID`,
		`CREATE INDEX messages_room ON messages(room, created, origin, seq)`,
		`CREATE TABLE room_heads(
			room TEXT NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL,
			created INTEGER NOT NULL, count INTEGER NOT NULL,
			PRIMARY KEY(room, origin)) WITHOUT ROWID`,
		`INSERT INTO meta VALUES('magic', 'chatr-store'), ('schema', '1'), ('node_id', '0123456789ab')`,
		`INSERT INTO messages VALUES('0123456789ab', 1, 'lobby', 'ada', 'from the first release', 1000)`,
		`INSERT INTO room_heads VALUES('lobby', '0123456789ab', 1, 1000, 1)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, err := Open(dir, Options{})
	if err != nil {
		if !strings.Contains(err.Error(), "schema") {
			t.Fatalf("Open refused the old store without saying why: %v", err)
		}
		return // refused clearly: acceptable
	}
	t.Cleanup(func() { s.Close() })
	p, err := s.Latest(context.Background(), "lobby", 10)
	if err != nil || len(p.Messages) != 1 {
		t.Errorf("old history after Open = %v, %v", ids(p.Messages), err)
	}
	m, err := s.Append(context.Background(), "lobby", "ada", "after upgrade")
	if err != nil {
		t.Fatalf("Open accepted a store of the previous schema, then Append fails: %v", err)
	}
	if m.Seq != 2 {
		t.Errorf("first append after upgrade got seq %d, want 2", m.Seq)
	}
	// A resume reads the hidden copies through the index the last
	// migration made.
	if p, err := s.Since(context.Background(), "lobby", proto.Vector{"0123456789ab": 1}, 10, true); err != nil || len(p.Messages) != 1 {
		t.Errorf("resume after upgrade = %v, %v", ids(p.Messages), err)
	}
}

// appendDraft stores draft as a new local message and returns it.
func appendDraft(t *testing.T, s *Store, d proto.Message) proto.Message {
	t.Helper()
	ch := make(chan proto.Message, 1)
	if err := s.AppendAsync(context.Background(), d, func(m proto.Message, err error) {
		if err != nil {
			t.Errorf("append %+v: %v", d, err)
		}
		ch <- m
	}); err != nil {
		t.Fatal(err)
	}
	return <-ch
}

// With auth on a message keeps its sender's user id, and a ref is unique
// per user: two people who share a display name and happen to use one ref
// are two messages, a user's re-send is one; after a restart too.
func TestUserAndRefsPerUser(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	ann := appendDraft(t, s, proto.Message{Room: "lobby", Sender: "Ann", User: "u-ann", Text: "hi", Ref: "r1"})
	other := appendDraft(t, s, proto.Message{Room: "lobby", Sender: "Ann", User: "u-other", Text: "hi", Ref: "r1"})
	if ann.User != "u-ann" || other.User != "u-other" || ann.ID() == other.ID() {
		t.Fatalf("two users with one name and ref: %+v, %+v; want two messages, each with its user", ann, other)
	}
	if again := appendDraft(t, s, proto.Message{Room: "lobby", Sender: "Ann", User: "u-ann", Text: "hi", Ref: "r1"}); again.ID() != ann.ID() {
		t.Fatalf("a user's re-send was stored again as %s, want %s", again.ID(), ann.ID())
	}
	s.Close()
	s = openStore(t, dir)
	if again := appendDraft(t, s, proto.Message{Room: "lobby", Sender: "Ann", User: "u-other", Text: "hi", Ref: "r1"}); again.ID() != other.ID() {
		t.Fatalf("after a restart, a user's re-send was stored again as %s, want %s", again.ID(), other.ID())
	}
	p, err := s.Latest(context.Background(), "lobby", 10)
	if err != nil || len(p.Messages) != 2 || p.Messages[0].User != "u-ann" || p.Messages[1].User != "u-other" {
		t.Fatalf("history %+v, %v", p.Messages, err)
	}
}
