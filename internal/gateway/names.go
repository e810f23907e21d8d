package gateway

import (
	"chatr/internal/names"
	"chatr/internal/proto"
)

// Why a cleaned name may not speak, the label of chatr_names_refused_total.
const (
	nameReserved  = "reserved"
	nameLookalike = "lookalike"
)

// reservedName refuses a name that looks like a reserved one (names.IsReserved):
// at hello, and for an HTTP sender.
func (s *Server) reservedName(name string) *proto.Error {
	if !names.IsReserved(name) {
		return nil
	}
	s.metrics.namesRefused.WithLabelValues(nameReserved).Inc()
	return proto.Errorf(proto.CodeBadRequest, "name %q looks like a reserved name; choose another name", name)
}

// lookalikeName refuses a name that looks like another person's present in
// room, here or on a peer (hub.Lookalike): at join, and for an HTTP sender.
func (s *Server) lookalikeName(room, name string) *proto.Error {
	other, ok := s.hub.Lookalike(room, name)
	if !ok {
		return nil
	}
	s.metrics.namesRefused.WithLabelValues(nameLookalike).Inc()
	return proto.Errorf(proto.CodeBadRequest, "name %q looks like %q, already here; choose another name", name, other)
}
