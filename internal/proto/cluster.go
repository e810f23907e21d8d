package proto

import (
	"fmt"
	"strings"
)

// ClusterView answers GET /chatr/api/cluster: this node, its cluster and
// every member it knows.
type ClusterView struct {
	Self    string       `json:"self"`
	Cluster string       `json:"cluster"`
	Members []MemberView `json:"members"`
}

// MemberView is one member in a ClusterView.
type MemberView struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	HTTP  string `json:"http"`
	State string `json:"state"` // alive, dead or left
	Since string `json:"since"` // when this node saw the state begin
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
