package cluster

import (
	"context"
	"net"
	"reflect"
	"testing"

	"github.com/miekg/dns"
)

// fakeDNS answers A and SRV questions for a few names on 127.0.0.1.
func fakeDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	records := map[string][]string{
		"chatr.test. A":       {"chatr.test. 5 IN A 127.0.0.5", "chatr.test. 5 IN A 127.0.0.4"},
		"chatr.test. SRV":     {"chatr.test. 5 IN SRV 0 0 7000 node2.chatr.test.", "chatr.test. 5 IN SRV 0 0 7001 127.0.0.7." /* refused by Go */},
		"node2.chatr.test. A": {"node2.chatr.test. 5 IN A 127.0.0.6"},
		"plain.test. A":       {"plain.test. 5 IN A 127.0.0.8"},
		"plain.test. SRV":     {"plain.test. 5 IN SRV 0 0 7002 node2.chatr.test."},
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			for _, s := range records[qq.Name+" "+dns.TypeToString[qq.Qtype]] {
				rr, err := dns.NewRR(s)
				if err != nil {
					t.Errorf("bad test record %q: %v", s, err)
					continue
				}
				m.Answer = append(m.Answer, rr)
			}
		}
		if len(m.Answer) == 0 {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestResolveJoin(t *testing.T) {
	addr := fakeDNS(t)
	old := resolver
	resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
	t.Cleanup(func() { resolver = old })

	cases := []struct {
		spec string
		want []string
	}{
		{"127.0.0.1", []string{"127.0.0.1:7946"}},
		{"127.0.0.1:8000", []string{"127.0.0.1:8000"}},
		{"[::1]:8000", []string{"[::1]:8000"}},
		{"::1", []string{"[::1]:7946"}},
		{"plain.test:9000", []string{"127.0.0.8:9000"}}, // not dns: no SRV
		{"dns:chatr.test", []string{"127.0.0.4:7946", "127.0.0.5:7946", "127.0.0.6:7000"}},
		{"dns:chatr.test:8000", []string{"127.0.0.4:8000", "127.0.0.5:8000", "127.0.0.6:7000"}},
		{"dns:plain.test", []string{"127.0.0.6:7002", "127.0.0.8:7946"}},
	}
	for _, tc := range cases {
		got, err := resolveJoin(context.Background(), tc.spec)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("resolveJoin(%q) = %v, %v; want %v", tc.spec, got, err, tc.want)
		}
	}
	if got, err := resolveJoin(context.Background(), "dns:missing.test"); err == nil {
		t.Errorf("resolveJoin of an unknown name = %v, want an error", got)
	}
}
