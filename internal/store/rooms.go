package store

import "sort"

// HasRoom reports whether room has messages.
func (s *Store) HasRoom(room string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.heads[room]
	return ok
}

// RoomsAfter lists, by name, at most limit rooms with messages whose names
// sort after after ("" for the first), and whether more follow. Only the
// rooms listed are summed up, so a page of a node with many rooms stays
// cheap.
func (s *Store) RoomsAfter(after string, limit int) ([]RoomInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, min(len(s.heads), limit+1))
	for room := range s.heads {
		if room > after {
			names = append(names, room)
		}
	}
	sort.Strings(names)
	more := len(names) > limit
	names = names[:min(len(names), limit)]
	out := make([]RoomInfo, 0, len(names))
	for _, room := range names {
		ri := RoomInfo{Room: room}
		for _, h := range s.heads[room] {
			ri.Messages += h.count
			ri.Last = max(ri.Last, h.created)
		}
		out = append(out, ri)
	}
	return out, more
}
