package clienttest

import (
	"testing"

	"chatr/internal/proto"
)

func TestRawAgainstFakeNode(t *testing.T) {
	n := NewFakeNode(t)
	c := DialRaw(t, n.URL, nil)
	c.Send(`{"type":"ping","ref":"p"}`)
	c.ExpectError(proto.CodeHelloRequired, "p")
	if w := c.Hello("ann"); w.Name != "ann" || w.Node == "" {
		t.Fatalf("welcome %s", w)
	}
	c.Send(`{"type":"send","room":"lobby","text":"hi","ref":"r0"}`)
	c.ExpectError(proto.CodeNotJoined, "r0")
	joined, msgs, _ := c.Join("lobby", nil)
	if len(msgs) != 0 || joined.Room != "lobby" {
		t.Fatalf("joined %s with %v", joined, msgs)
	}
	ack, msg, other := c.Say("lobby", "hi", "r1")
	if ack.ID == "" || msg.Text != "hi" || len(other) != 0 {
		t.Fatalf("say: ack %s, message %s, other %v", ack, msg, other)
	}
	if got := msg.Keys(); len(got) == 0 || got[0] != "created" {
		t.Fatalf("keys of %s: %v", msg, got)
	}
	c.Quiet()

	// A second session sees the first one's message live.
	d := DialRaw(t, n.URL, nil)
	d.Hello("bob")
	d.Join("lobby", map[string]any{"history": 0})
	c.Expect("presence")
	c.Say("lobby", "again", "r2")
	if f, _ := d.Until("message"); f.Text != "again" {
		t.Fatalf("bob got %s", f)
	}
	// Both are cut off; a client that reads answers the close at once.
	go n.DropAll()
	for _, r := range []*Raw{c, d} {
		if got := r.CloseStatus(); got != proto.CloseSlowClient {
			t.Fatalf("closed with %d, want %d", got, proto.CloseSlowClient)
		}
	}
}
