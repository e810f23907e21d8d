package store

import (
	"slices"
	"testing"
)

// RoomsAfter pages the rooms by name, each with its count, and HasRoom
// knows the rooms with messages.
func TestRoomsAfter(t *testing.T) {
	s := openStore(t, t.TempDir())
	for _, room := range []string{"c", "a", "b", "a", "d"} {
		mustAppend(t, s, room, "x")
	}
	names := func(rs []RoomInfo) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Room)
		}
		return out
	}
	for _, tc := range []struct {
		after string
		limit int
		want  []string
		more  bool
	}{
		{"", 2, []string{"a", "b"}, true},
		{"b", 2, []string{"c", "d"}, false},
		{"", 10, []string{"a", "b", "c", "d"}, false},
		{"bb", 1, []string{"c"}, true},
		{"d", 5, nil, false},
	} {
		got, more := s.RoomsAfter(tc.after, tc.limit)
		if !slices.Equal(names(got), tc.want) || more != tc.more {
			t.Errorf("RoomsAfter(%q, %d) = %v, %v; want %v, %v", tc.after, tc.limit, names(got), more, tc.want, tc.more)
		}
	}
	if got, _ := s.RoomsAfter("", 1); got[0].Messages != 2 || got[0].Last == 0 {
		t.Errorf("room a: %+v, want 2 messages and a time", got[0])
	}
	if !s.HasRoom("a") || s.HasRoom("zzz") {
		t.Errorf("HasRoom(a) = %v, HasRoom(zzz) = %v", s.HasRoom("a"), s.HasRoom("zzz"))
	}
}
