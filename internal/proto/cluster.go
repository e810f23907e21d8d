package proto

import (
	"fmt"
	"strings"
)

// ClusterView answers GET /chatr/api/cluster: this node, its cluster and
// every member it knows. The admin listener, and an admin on the public
// one, get it whole; everyone else gets Public.
type ClusterView struct {
	Self    string       `json:"self"`
	Cluster string       `json:"cluster"`
	Members []MemberView `json:"members"`
	// NATS lists the NATS servers this node knows of (--engine nats):
	// internal addresses, never in Public.
	NATS []string `json:"nats,omitempty"`
}

// MemberView is one member in a ClusterView.
type MemberView struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	HTTP  string `json:"http,omitempty"` // its HTTP listener, host:port (in Public, alive members only)
	State string `json:"state"`          // alive, dead or left
	Since string `json:"since"`          // when this node saw the state begin
	// Gossip is its gossip address, ip:port: internal, never in Public.
	Gossip string `json:"gossip,omitempty"`
}

// Public is the view for anyone: only the addresses that clients are
// given anyway, in welcome.nodes (the HTTP listeners of the alive
// members); no gossip address, and no address of a member that is gone.
func (v ClusterView) Public() ClusterView {
	out := v
	out.NATS = nil
	out.Members = make([]MemberView, len(v.Members))
	for i, m := range v.Members {
		m.Gossip = ""
		if m.State != "alive" {
			m.HTTP = ""
		}
		out.Members[i] = m
	}
	return out
}

// Alive is the set of ids of the alive members.
func (v ClusterView) Alive() map[string]bool {
	out := map[string]bool{}
	for _, m := range v.Members {
		if m.State == "alive" {
			out[m.ID] = true
		}
	}
	return out
}

// State is member id's state, or "" when it is not listed.
func (v ClusterView) State(id string) string {
	for _, m := range v.Members {
		if m.ID == id {
			return m.State
		}
	}
	return ""
}

func (v ClusterView) String() string {
	var parts []string
	for _, m := range v.Members {
		parts = append(parts, fmt.Sprintf("%s/%s=%s", m.Name, m.ID, m.State))
	}
	return fmt.Sprintf("self %s: [%s]", v.Self, strings.Join(parts, " "))
}
