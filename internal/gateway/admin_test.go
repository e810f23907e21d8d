package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"chatr/internal/proto"
)

// The admin listener serves metrics, probes and the whole cluster view;
// the public one no metrics. The admin listener has no GET limit.
func TestAdminListener(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--get-rate", "0.001", "--get-burst", "1")
	ts.appendN(t, "lobby", 1)
	if status, _, _ := ts.do(t, "GET", "/metrics", "", nil); status != http.StatusNotFound {
		t.Errorf("GET /metrics on the public listener: %d, want 404", status)
	}
	for range 3 { // past --get-burst 1, which the public GET above spent
		status, hdr, body := ts.adminGet(t, "/metrics")
		if status != 200 || !strings.Contains(string(body), "chatr_store_messages_total") || !strings.Contains(string(body), "chatr_ws_sessions") {
			t.Fatalf("GET /metrics on the admin listener: %d %.200s", status, body)
		}
		if hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("admin /metrics: X-Content-Type-Options %q, want nosniff", hdr.Get("X-Content-Type-Options"))
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/chatr/api/cluster"} {
		if status, _, body := ts.adminGet(t, path); status != 200 {
			t.Errorf("GET %s on the admin listener: %d %s", path, status, body)
		}
	}
	// What the public listener serves that the admin one does not.
	for _, path := range []string{"/chatr/chatr.html", "/chatr/api/rooms", "/"} {
		if status, _, _ := ts.adminGet(t, path); status != http.StatusNotFound {
			t.Errorf("GET %s on the admin listener: %d, want 404", path, status)
		}
	}
}

// The admin listener answers requests to an IP address, localhost or its
// own name only: a page of a DNS name rebound to 127.0.0.1 cannot read it
// as its own origin.
func TestAdminListenerRefusesOtherHosts(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	port := ts.admin[strings.LastIndex(ts.admin, ":")+1:]
	for _, tc := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:" + port, 200},
		{"localhost:" + port, 200},
		{"LocalHost.:" + port, 200},
		{"[::1]:" + port, 200},
		{"10.1.2.3", 200},
		{"evil.example:" + port, http.StatusMisdirectedRequest},
		{"127.0.0.1.evil.example:" + port, http.StatusMisdirectedRequest},
		{"localhost.evil.example", http.StatusMisdirectedRequest},
	} {
		req, _ := http.NewRequest("GET", ts.admin+"/metrics", nil)
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET /metrics with Host %q: %d, want %d", tc.host, resp.StatusCode, tc.want)
		}
	}
}

// testView is a cluster of three: this node, a peer alive and one that
// is gone, each with its gossip address.
func testView(self string) proto.ClusterView {
	return proto.ClusterView{Self: self, Cluster: "chatr", Members: []proto.MemberView{
		{ID: self, Name: "a", HTTP: "10.0.0.1:5080", Gossip: "10.0.0.1:7946", State: "alive", Since: "2026-01-01T00:00:00.000000Z"},
		{ID: "peer-b", Name: "b", HTTP: "10.0.0.2:5080", Gossip: "10.0.0.2:7946", State: "alive", Since: "2026-01-01T00:00:00.000000Z"},
		{ID: "peer-c", Name: "c", HTTP: "10.0.0.3:5080", Gossip: "10.0.0.3:7946", State: "dead", Since: "2026-01-01T00:00:00.000000Z"},
	}}
}

// GET /chatr/api/cluster on the public listener lists the members without
// internal addresses (no gossip address, no HTTP address of a member that
// is gone: only what welcome.nodes gives every client), unless IsAdmin
// says the request is an admin's; the admin listener lists them whole.
func TestClusterViewPublicAndAdmin(t *testing.T) {
	t.Parallel()
	var self string
	ts := startTestServerWith(t, func(o *Options) {
		self = o.NodeID
		o.ClusterView = func() proto.ClusterView { return testView(self) }
		o.IsAdmin = func(r *http.Request) bool { return r.Header.Get("X-Test-Admin") == "yes" }
	}, nil)
	whole := testView(self)
	public := proto.ClusterView{Self: self, Cluster: "chatr", Members: []proto.MemberView{
		{ID: self, Name: "a", HTTP: "10.0.0.1:5080", State: "alive", Since: "2026-01-01T00:00:00.000000Z"},
		{ID: "peer-b", Name: "b", HTTP: "10.0.0.2:5080", State: "alive", Since: "2026-01-01T00:00:00.000000Z"},
		{ID: "peer-c", Name: "c", State: "dead", Since: "2026-01-01T00:00:00.000000Z"},
	}}
	get := func(url string, admin bool) (proto.ClusterView, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+"/chatr/api/cluster", nil)
		if admin {
			req.Header.Set("X-Test-Admin", "yes")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var raw json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s/chatr/api/cluster: %s %v", url, resp.Status, err)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("GET %s/chatr/api/cluster: Cache-Control %q, want no-store", url, cc)
		}
		var v proto.ClusterView
		json.Unmarshal(raw, &v)
		return v, raw
	}
	for _, tc := range []struct {
		name  string
		url   string
		admin bool
		want  proto.ClusterView
	}{
		{"public", ts.url, false, public},
		{"public, IsAdmin true", ts.url, true, whole},
		{"admin listener", ts.admin, false, whole},
	} {
		got, raw := get(tc.url, tc.admin)
		if !slices.Equal(got.Members, tc.want.Members) || got.Self != tc.want.Self {
			t.Errorf("%s: %s\nwant %+v", tc.name, raw, tc.want)
		}
		if !tc.admin && tc.url == ts.url && strings.Contains(string(raw), "7946") {
			t.Errorf("%s: a gossip address in %s", tc.name, raw)
		}
	}

	// Without IsAdmin nobody is an admin on the public listener.
	ts = startTestServerWith(t, func(o *Options) {
		id := o.NodeID
		o.ClusterView = func() proto.ClusterView { return testView(id) }
	}, nil)
	if got, raw := get(ts.url, true); strings.Contains(string(raw), "gossip") || got.Members[2].HTTP != "" {
		t.Errorf("public, no IsAdmin: %s, want no internal address", raw)
	}
}
