package store

// HasRoom reports whether room has messages.
func (s *Store) HasRoom(room string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.heads[room]
	return ok
}
