package clustertest

import (
	"errors"
	"strings"
	"testing"

	"chatr/internal/client"
	"chatr/internal/proto"
)

func TestViewCompare(t *testing.T) {
	msg := func(id, text string) proto.MessageJSON {
		origin, _, _ := proto.ParseMessageID(id)
		return proto.MessageJSON{Room: "lobby", ID: id, Sender: "ann", Text: text, Created: "2026-01-01T00:00:00.000000Z", Node: origin}
	}
	show := func(m proto.MessageJSON) client.Frame {
		return client.Frame{Type: client.TypeMessage, Room: m.Room, ID: m.ID, Sender: m.Sender, Text: m.Text, Created: m.Created, Node: m.Node}
	}
	replacing := func(m proto.MessageJSON, id string) client.Frame {
		f := show(m)
		f.Replaces = id
		return f
	}
	hidden := func(id string) client.Frame { return client.Frame{Type: client.TypeHidden, Room: "lobby", ID: id} }
	a1, a2, b1 := msg("aaaaaaaaaaaa-1", "one"), msg("aaaaaaaaaaaa-2", "two"), msg("bbbbbbbbbbbb-1", "three")
	copyOfA1 := msg("bbbbbbbbbbbb-2", "one") // a second copy of a1's send
	changed := a1
	changed.Text = "other"
	cases := []struct {
		name    string
		frames  []client.Frame
		history []proto.MessageJSON
		want    string // "" for no error, else part of it
		wrong   bool   // a WrongDelivery
	}{
		{"exact", []client.Frame{show(a1), show(b1), show(a2)}, []proto.MessageJSON{a1, a2, b1}, "", false},
		{"missing", []client.Frame{show(a1)}, []proto.MessageJSON{a1, a2}, "lacks [aaaaaaaaaaaa-2]", false},
		{"not listed", []client.Frame{show(a1), show(b1)}, []proto.MessageJSON{a1}, "do not list", false},
		{"shown twice", []client.Frame{show(a1), show(a1)}, []proto.MessageJSON{a1}, "2 times", true},
		{"shown twice, then dropped", []client.Frame{show(copyOfA1), show(copyOfA1), replacing(a1, "bbbbbbbbbbbb-2")}, []proto.MessageJSON{a1}, "2 times", true},
		{"out of order", []client.Frame{show(a2), show(a1)}, []proto.MessageJSON{a1, a2}, "origin's order", true},
		{"not as listed", []client.Frame{show(changed)}, []proto.MessageJSON{a1}, "the nodes list", true},
		{"dropped by replaces", []client.Frame{show(copyOfA1), replacing(a1, "bbbbbbbbbbbb-2")}, []proto.MessageJSON{a1}, "", false},
		{"dropped by a hidden frame", []client.Frame{show(a1), show(copyOfA1), hidden("bbbbbbbbbbbb-2")}, []proto.MessageJSON{a1}, "", false},
		{"dropped before it came", []client.Frame{hidden("bbbbbbbbbbbb-2"), show(a1), show(copyOfA1)}, []proto.MessageJSON{a1}, "", false},
		{"a copy never dropped", []client.Frame{show(a1), show(copyOfA1)}, []proto.MessageJSON{a1}, `shows "one" of lobby 2 times`, false},
		{"two copies the nodes list too", []client.Frame{show(a1), show(copyOfA1)}, []proto.MessageJSON{a1, copyOfA1}, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := NewView()
			for _, f := range c.frames {
				v.Take(f)
			}
			err := v.Compare("ann", "lobby", c.history)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Compare: %v, want nil", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Compare: %v, want an error with %q", err, c.want)
			case c.want != "" && errors.As(err, new(WrongDelivery)) != c.wrong:
				t.Fatalf("Compare: %v: a WrongDelivery %v, want %v", err, !c.wrong, c.wrong)
			}
		})
	}
}
