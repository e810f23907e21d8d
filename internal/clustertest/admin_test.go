package clustertest

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"chatr/internal/proto"
)

// The admin listener of each node lists every member with its gossip
// address; the public listener lists none. A node's pages may connect
// (CSP connect-src) to every alive member, over http and ws.
func TestClusterViewAddresses(t *testing.T) {
	t.Parallel()
	c := Start(t, 2)
	hc := &http.Client{Timeout: requestTimeout}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	for i := range c.N() {
		public, err := c.API(i).Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		admin, err := API{Base: "http://" + c.Node(i).AdminAddr(), Fetch: HTTPFetch(hc)}.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(public.Members) != 2 || len(admin.Members) != 2 {
			t.Fatalf("node %d lists %d members publicly, %d on the admin listener; want 2", i, len(public.Members), len(admin.Members))
		}
		for j := range c.N() {
			var p, a proto.MemberView
			for k := range 2 {
				if public.Members[k].ID == c.ID(j) {
					p = public.Members[k]
				}
				if admin.Members[k].ID == c.ID(j) {
					a = admin.Members[k]
				}
			}
			if a.Gossip != c.GossipAddr(j) || a.HTTP != c.HTTPAddr(j) {
				t.Errorf("node %d's admin view of node %d: gossip %q http %q, want %q and %q", i, j, a.Gossip, a.HTTP, c.GossipAddr(j), c.HTTPAddr(j))
			}
			if p.Gossip != "" || p.HTTP != c.HTTPAddr(j) {
				t.Errorf("node %d's public view of node %d: gossip %q http %q, want none and %q", i, j, p.Gossip, p.HTTP, c.HTTPAddr(j))
			}
		}
	}
	resp, err := hc.Get("http://" + c.HTTPAddr(0) + "/chatr/chatr.html")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	policy := resp.Header.Get("Content-Security-Policy")
	for _, src := range []string{"http://" + c.HTTPAddr(1), "ws://" + c.HTTPAddr(1)} {
		if !strings.Contains(policy, " "+src) {
			t.Errorf("node 0's page policy %q does not let it connect to %s", policy, src)
		}
	}
}
