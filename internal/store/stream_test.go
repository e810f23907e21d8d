package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"chatr/internal/proto"
)

// drain reads what f holds until the stream is closed or has nothing new.
func drain(t *testing.T, f *Follower) []Committed {
	t.Helper()
	var out []Committed
	for {
		b, err := f.Take()
		switch {
		case errors.Is(err, ErrClosed):
			return out
		case err != nil:
			t.Fatalf("take: %v", err)
		case len(b) == 0:
			return out
		}
		out = append(out, b...)
	}
}

func openStream(t *testing.T, streamLen int) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{StreamLen: streamLen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A follower reads from where it started, every batch once, several at a
// time when it comes late.
func TestFollowerReadsFromItsPlace(t *testing.T) {
	ctx := context.Background()
	s := openStream(t, 100)
	mustAppend(t, s, "lobby", "before")
	s.Flush(ctx) // Append answers before its batch enters the stream
	f := s.Follow(false)
	if b := drain(t, f); len(b) != 0 {
		t.Fatalf("a new follower read %d messages committed before it", len(b))
	}
	for i := range 3 {
		mustAppend(t, s, "lobby", fmt.Sprint(i))
	}
	s.Flush(ctx)
	got := drain(t, f)
	if len(got) != 3 || got[0].Msg.Text != "0" || got[2].Msg.Text != "2" {
		t.Fatalf("read %d messages %v, want 0, 1, 2", len(got), got)
	}
	select {
	case <-f.Ready():
		t.Fatal("Ready with nothing new")
	default:
	}
	mustAppend(t, s, "lobby", "3")
	s.Flush(ctx)
	select {
	case <-f.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("Ready not closed after a commit")
	}
	if b, err := f.Next(ctx); err != nil || len(b) != 1 || b[0].Msg.Text != "3" {
		t.Fatalf("Next = %v, %v", b, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.Next(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context = %v", err)
	}
}

// A follower a whole stream behind is told so and goes on from the oldest
// batch held; what it missed is in the store.
func TestFollowerBehind(t *testing.T) {
	ctx := context.Background()
	s := openStream(t, 4)
	f := s.Follow(false)
	var sent []proto.Message
	for i := range 10 {
		sent = append(sent, mustAppend(t, s, "lobby", fmt.Sprint(i)))
	}
	s.Flush(ctx)
	if _, err := f.Take(); !errors.Is(err, ErrBehind) {
		t.Fatalf("Take a whole stream behind = %v, want ErrBehind", err)
	}
	got := drain(t, f)
	if len(got) == 0 || len(got) > 4 || got[len(got)-1].Msg.ID() != sent[9].ID() {
		t.Fatalf("after ErrBehind read %d messages, want the newest (at most 4)", len(got))
	}
	missed, err := s.Range(ctx, s.NodeID(), 1, 10)
	if err != nil || len(missed) != 10 {
		t.Fatalf("the store holds %d, %v", len(missed), err)
	}
}

// A holder (the hub) never loses its place: the writer waits for it, and
// goes on once it reads or closes.
func TestHolderHoldsTheWriter(t *testing.T) {
	ctx := context.Background()
	s := openStream(t, 2)
	f := s.Follow(true)
	for i := range 2 {
		mustAppend(t, s, "lobby", fmt.Sprint(i))
	}
	done := make(chan proto.Message, 1)
	if err := s.AppendAsync(ctx, draft("lobby", "a", "third"), func(m proto.Message, err error) { done <- m }); err != nil {
		t.Fatal(err)
	}
	// The third commit is stored and answered; it waits to enter the
	// stream, and the writer with it, until the holder reads.
	<-done
	fourth := make(chan error, 1)
	go func() { _, err := s.Append(ctx, "lobby", "a", "fourth"); fourth <- err }()
	select {
	case err := <-fourth:
		t.Fatalf("a commit went through while the holder had not read a full stream (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	got := drain(t, f)
	if len(got) < 2 || got[0].Msg.Text != "0" {
		t.Fatalf("the holder read %v, want every message from the first", got)
	}
	if err := <-fourth; err != nil {
		t.Fatal(err)
	}
	s.Flush(ctx)
	got = append(got, drain(t, f)...)
	if len(got) != 4 {
		t.Fatalf("the holder read %d messages, want 4", len(got))
	}
	// A closed holder holds nothing back.
	f.Close()
	for i := range 5 {
		mustAppend(t, s, "lobby", fmt.Sprint("after ", i))
	}
}

// Once the store is closed, a follower reads what is left, then ErrClosed.
func TestFollowerAfterClose(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := s.Follow(true)
	mustAppend(t, s, "lobby", "last")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := f.Next(context.Background())
	if err != nil || len(b) != 1 {
		t.Fatalf("Next after Close = %v, %v; want the last message", b, err)
	}
	if _, err := f.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after everything was read = %v, want ErrClosed", err)
	}
}

// A replicated message (durable on its origin) is in the stream and seen
// by readers while its batch's sync runs; this node's own message is
// neither until its sync returns. The durable vector waits for the sync
// in both cases.
func TestReplicatedDeliveredBeforeTheSync(t *testing.T) {
	ctx := context.Background()
	s := openStream(t, 0)
	f := s.Follow(false)
	defer f.Close()
	syncing, release := make(chan struct{}), make(chan struct{})
	s.beforeSync = func() {
		syncing <- struct{}{}
		<-release
	}
	inLatest := func(id string) bool {
		page, err := s.Latest(ctx, "lobby", 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			if m.ID() == id {
				return true
			}
		}
		return false
	}

	peer := peerMsg(peerA, 1, "lobby", 100)
	inserted := make(chan error, 1)
	if err := s.InsertAsync(ctx, []proto.Message{peer}, func(_ []proto.Message, err error) { inserted <- err }); err != nil {
		t.Fatal(err)
	}
	<-syncing
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	b, err := f.Next(wait)
	cancel()
	if err != nil || len(b) != 1 || b[0].Msg.ID() != peer.ID() {
		t.Fatalf("during the sync the stream gave %v, %v; want %s", b, err, peer.ID())
	}
	if !inLatest(peer.ID()) {
		t.Fatal("during the sync a reader does not see the replicated message the stream gave out")
	}
	if s.Vector()[peerA] != 0 {
		t.Fatal("the durable vector holds the message before its sync")
	}
	release <- struct{}{}
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}

	appended := make(chan proto.Message, 1)
	if err := s.AppendAsync(ctx, proto.Message{Room: "lobby", Sender: "ann", Text: "mine"}, func(m proto.Message, err error) {
		if err != nil {
			t.Error(err)
		}
		appended <- m
	}); err != nil {
		t.Fatal(err)
	}
	<-syncing
	own := proto.MessageID(s.NodeID(), 1)
	if b, _ := f.Take(); len(b) != 0 {
		t.Fatalf("during its sync the stream gave this node's own message: %v", b)
	}
	if inLatest(own) {
		t.Fatal("during its sync a reader sees this node's own message")
	}
	release <- struct{}{}
	m := <-appended
	if m.ID() != own {
		t.Fatalf("appended %s, want %s", m.ID(), own)
	}
	wait, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if b, err := f.Next(wait); err != nil || len(b) != 1 || b[0].Msg.ID() != own {
		t.Fatalf("after the sync the stream gave %v, %v; want %s", b, err, own)
	}
	if !inLatest(own) || s.Vector()[s.NodeID()] != 1 || s.Vector()[peerA] != 1 {
		t.Fatalf("after the syncs: in Latest %v, vector %v", inLatest(own), s.Vector())
	}
}
