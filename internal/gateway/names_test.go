package gateway

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"chatr/internal/client/clienttest"
	"chatr/internal/proto"
)

// A name that looks like another person's present in the room, here or on
// a peer, joins nothing there; one that looks like a reserved name gets no
// welcome. The impostors of the issue "Who is who".
func TestNamesThatLookAlike(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	alice := ts.hello(t, "alice")
	alice.Join("lobby", nil)
	present := func() []string {
		var out []string
		for _, p := range ts.hub.Presence("lobby") {
			out = append(out, p.Name)
		}
		return out
	}

	// Fullwidth alice is alice (Clean maps it): the same name, so the
	// same person to a node without auth.
	same := ts.dial(t)
	if w := same.Hello("ａｌｉｃｅ"); w.Name != "alice" {
		t.Fatalf("welcome name %+q, want alice", w.Name)
	}
	same.Join("lobby", nil)

	for _, name := range []string{"Alice", "ALICE", "aIice", "a1ice"} {
		t.Run(name, func(t *testing.T) {
			c := ts.hello(t, name)
			c.Send(`{"type":"join","room":"lobby","ref":"j"}`)
			e := c.ExpectError(proto.CodeBadRequest, "j")
			if want := `name "` + name + `" looks like "alice", already here`; !strings.Contains(e.Message, want) {
				t.Fatalf("refusal %q, want it to say %q", e.Message, want)
			}
			c.Send(`{"type":"send","room":"lobby","text":"I am alice","ref":"s"}`)
			c.ExpectError(proto.CodeNotJoined, "s")
			if got := present(); !slices.Equal(got, []string{"alice"}) {
				t.Fatalf("present %q, want alice alone", got)
			}
			// Rooms alice is not in are open to the name. (It leaves,
			// so that the next lookalike finds dev as this one did: a
			// closed connection leaves its rooms only some time after.)
			c.Join("dev", nil)
			c.Send(`{"type":"leave","room":"dev"}`)
			c.Expect("left")
		})
	}
	if got := ts.metric(t, `chatr_names_refused_total{reason="lookalike"}`); got != 4 {
		t.Errorf("chatr_names_refused_total{reason=lookalike} = %v, want 4", got)
	}

	// Refused by Clean before a room is named.
	for _, name := range []string{"\u0430lice", "alice\u3164", "alice\u200d", "alice\u115f"} {
		c := ts.dial(t)
		c.Send(map[string]any{"type": "hello", "name": name, "ref": "h"})
		c.ExpectError(proto.CodeBadRequest, "h")
	}

	// A peer's people count.
	ts.hub.SetRemote("bbbbbbbbbbbb", map[string][]proto.Person{"lobby": {{Name: "carol"}}})
	c := ts.hello(t, "CAROL")
	c.Send(`{"type":"join","room":"lobby","ref":"j"}`)
	if e := c.ExpectError(proto.CodeBadRequest, "j"); !strings.Contains(e.Message, `looks like "carol"`) {
		t.Fatalf("refusal %q, want it to name carol", e.Message)
	}

	// Once alice is gone (both her sessions), the name is free.
	for _, c := range []*clienttest.Raw{alice, same} {
		c.Send(`{"type":"leave","room":"lobby"}`)
		c.Until("left")
	}
	ts.hello(t, "Alice").Join("lobby", nil)
}

func TestReservedNames(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	for _, name := range []string{"admin", "Admin", "adrnin", "System", "r00t"} {
		c := ts.dial(t)
		c.Send(map[string]any{"type": "hello", "name": name, "ref": "h"})
		if e := c.ExpectError(proto.CodeBadRequest, "h"); !strings.Contains(e.Message, "looks like a reserved name") {
			t.Fatalf("hello %+q: refusal %q, want it to say why", name, e.Message)
		}
		c.Send(`{"type":"ping"}`)
		c.ExpectError(proto.CodeHelloRequired, "") // still not greeted
	}
	ts.hello(t, "adm1n") // TR39: 1 looks like l, not i
	if got := ts.metric(t, `chatr_names_refused_total{reason="reserved"}`); got != 5 {
		t.Errorf("chatr_names_refused_total{reason=reserved} = %v, want 5", got)
	}
}

// An HTTP sender is held to the same rules: cleaned, not reserved, not
// like another person's name in the room.
func TestPostSenderLookalike(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ts.hello(t, "alice").Join("lobby", nil)
	post := func(sender string) (int, []byte) {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"sender": sender, "text": "hi"})
		status, _, data := ts.do(t, "POST", "/chatr/api/rooms/lobby/messages", "application/json", body)
		return status, data
	}
	for _, tc := range []struct{ sender, says string }{
		{"Alice", `sender: name "Alice" looks like "alice", already here`},
		{"admin", "sender: name \"admin\" looks like a reserved name"},
		{"alice\u3164", "sender: name may hold"},
		{"\u0430lice", "sender: name mixes scripts"},
	} {
		status, data := post(tc.sender)
		var e struct{ Error proto.Error }
		if status != 400 || checkErrorBody(t, data) != proto.CodeBadRequest || json.Unmarshal(data, &e) != nil || !strings.Contains(e.Error.Message, tc.says) {
			t.Errorf("post as %+q: %d %s, want 400 bad_request saying %q", tc.sender, status, data, tc.says)
		}
	}
	if p := ts.getPage(t, "lobby", ""); len(p.Messages) != 0 {
		t.Fatalf("refused posts stored %+v", p.Messages)
	}
	for sender, want := range map[string]string{"alice": "alice", "ａｌｉｃｅ": "alice", "bob": "bob"} {
		status, data := post(sender)
		var m proto.MessageJSON
		if status != 201 || json.Unmarshal(data, &m) != nil || m.Sender != want {
			t.Errorf("post as %+q: %d %s, want 201 from %q", sender, status, data, want)
		}
	}
}
