package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"chatr/internal/proto"
)

// Two copies of one send (same sender, room and ref, stored on two nodes
// because the client re-sent it before the first copy spread): every node
// shows the earlier and hides the later, whichever order it stores them in.
func TestCopiesOfOneSendSettleTheSameWay(t *testing.T) {
	// Long ago (the store looks each copy up) and now (its ref filter
	// answers first).
	for _, base := range []int64{1_000_000, time.Now().UnixMicro()} {
		settleCopies(t, base)
	}
}

func settleCopies(t *testing.T, base int64) {
	ctx := context.Background()
	first := proto.Message{Origin: "aaaaaaaaaaaa", Seq: 1, Room: "lobby", Sender: "ann", Text: "hi", Created: base, Ref: "r1"}
	second := proto.Message{Origin: "bbbbbbbbbbbb", Seq: 1, Room: "lobby", Sender: "ann", Text: "hi", Created: base + 500_000, Ref: "r1"}
	other := proto.Message{Origin: "bbbbbbbbbbbb", Seq: 2, Room: "lobby", Sender: "ann", Text: "other", Created: base + 600_000, Ref: "r2"}
	for _, order := range [][]proto.Message{{first, second, other}, {second, other, first}} {
		dir := t.TempDir()
		s := openStore(t, dir)
		commits := s.Follow(false)
		for _, m := range order {
			if _, err := s.Insert(ctx, []proto.Message{m}); err != nil {
				t.Fatal(err)
			}
		}
		p, err := s.Latest(ctx, "lobby", 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(p.Messages); len(got) != 2 || got[0] != first.ID() || got[1] != other.ID() {
			t.Fatalf("order %s,%s,%s: listed %v, want %s and %s", order[0].ID(), order[1].ID(), order[2].ID(), got, first.ID(), other.ID())
		}
		// A resume from nothing lists the shown copy only, too.
		p, err = s.Since(ctx, "lobby", proto.Vector{}, 10, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(p.Messages); len(got) != 2 || got[0] != first.ID() {
			t.Fatalf("since: %v", got)
		}
		// Whatever the order, the shown copy names the hidden one, so a
		// client that saw the hidden copy elsewhere drops it on resume.
		if p.Messages[0].Replaces != second.ID() {
			t.Fatalf("the shown copy replaces %q, want %s", p.Messages[0].Replaces, second.ID())
		}
		// The log served to peers keeps both copies.
		r, err := s.Range(ctx, second.Origin, 1, 10)
		if err != nil {
			t.Fatalf("range of %s: %v", second.Origin, err)
		}
		if len(r) != 2 {
			t.Fatalf("range of %s: %d messages, want 2", second.Origin, len(r))
		}
		// The room list counts each send once, now and after a restart.
		if rs := s.Rooms(); len(rs) != 1 || rs[0].Messages != 2 {
			t.Errorf("rooms %+v, want lobby with 2 messages", rs)
		}
		if err := s.Close(); err != nil { // the writer is done: the stream is complete
			t.Fatal(err)
		}
		committed := drain(t, commits)
		s2 := openStore(t, dir)
		if rs := s2.Rooms(); len(rs) != 1 || rs[0].Messages != 2 {
			t.Errorf("after a restart: rooms %+v, want lobby with 2 messages", rs)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
		for _, c := range committed {
			switch c.Msg.ID() {
			case second.ID():
				if order[0].ID() == first.ID() && !c.Msg.Hidden {
					t.Errorf("the later copy stored second was not hidden")
				}
			case first.ID():
				if order[0].ID() == second.ID() && c.Msg.Replaces != second.ID() {
					t.Errorf("the earlier copy stored second replaces %q, want %s", c.Msg.Replaces, second.ID())
				}
			}
		}
	}
}

// A resume whose cursor covers a hidden copy is told its id, after a
// restart too (the store remembers which rooms have hidden copies); a
// cursor that does not cover it, or a room without any, is told nothing.
// Copies with one ref but another text are two messages, both shown.
func TestSinceNamesCoveredHiddenCopies(t *testing.T) {
	ctx := context.Background()
	base := time.Now().UnixMicro()
	first := proto.Message{Origin: "aaaaaaaaaaaa", Seq: 1, Room: "lobby", Sender: "ann", Text: "hi", Created: base, Ref: "r1"}
	second := proto.Message{Origin: "bbbbbbbbbbbb", Seq: 1, Room: "lobby", Sender: "ann", Text: "hi", Created: base + 500_000, Ref: "r1"}
	twin := proto.Message{Origin: "bbbbbbbbbbbb", Seq: 2, Room: "lobby", Sender: "ann", Text: "not the same", Created: base + 600_000, Ref: "r2"}
	twin2 := proto.Message{Origin: "aaaaaaaaaaaa", Seq: 2, Room: "lobby", Sender: "ann", Text: "another text", Created: base + 700_000, Ref: "r2"}
	quiet := proto.Message{Origin: "aaaaaaaaaaaa", Seq: 3, Room: "dev", Sender: "ann", Text: "hi", Created: base + 800_000}
	dir := t.TempDir()
	s := openStore(t, dir)
	for _, m := range []proto.Message{first, second, twin, twin2, quiet} {
		if _, err := s.Insert(ctx, []proto.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store, when string) {
		t.Helper()
		all := s.Vector()
		for _, tc := range []struct {
			room   string
			cursor proto.Vector
			want   []string
		}{
			{"lobby", all, []string{second.ID()}},
			{"lobby", proto.Vector{"aaaaaaaaaaaa": 2}, nil}, // the hidden copy is not covered
			{"dev", all, nil},
		} {
			p, err := s.Since(ctx, tc.room, tc.cursor, 100, true)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.Hidden, tc.want) {
				t.Errorf("%s: Since(%s, %v) names hidden %v, want %v", when, tc.room, tc.cursor, p.Hidden, tc.want)
			}
		}
		if p, _ := s.Latest(ctx, "lobby", 10); len(p.Messages) != 3 {
			t.Errorf("%s: lobby lists %d messages, want 3 (copies with another text are both shown)", when, len(p.Messages))
		}
	}
	check(s, "before a restart")
	s.Close()
	check(openStore(t, dir), "after a restart")
}
