package cluster

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the cluster's counters and gauges; they exist (unregistered)
// when no Registerer is given, so the code never checks.
type metrics struct {
	members      *prometheus.GaugeVec
	joinAttempts prometheus.Counter
	joinFailures prometheus.Counter
	refused      *prometheus.CounterVec
	dropped      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chatr_cluster_members",
			Help: "Cluster members known to this node, itself included, by state.",
		}, []string{"state"}),
		joinAttempts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatr_cluster_join_attempts_total",
			Help: "Attempts to contact a join address, a discovered node or a failed member.",
		}),
		joinFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatr_cluster_join_failures_total",
			Help: "Join attempts that reached no node.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatr_cluster_refused_total",
			Help: "Peers or gossip refused, by reason: cluster (another cluster's label), secret (wrong or missing key), meta (another cluster or protocol in node meta).",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatr_cluster_dropped_events_total",
			Help: "Membership events dropped because a subscriber was full.",
		}),
	}
	for _, s := range []State{StateAlive, StateDead, StateLeft} {
		m.members.WithLabelValues(string(s))
	}
	for _, r := range []string{"cluster", "secret", "meta"} {
		m.refused.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.members, m.joinAttempts, m.joinFailures, m.refused, m.dropped} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("cluster: register metrics: %w", err)
		}
	}
	return m, nil
}

func (c *Cluster) updateGauges() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updateGaugesLocked()
}

func (c *Cluster) updateGaugesLocked() {
	n := map[State]int{c.self.State: 1}
	for _, e := range c.members {
		n[e.State]++
	}
	for _, s := range []State{StateAlive, StateDead, StateLeft} {
		c.metrics.members.WithLabelValues(string(s)).Set(float64(n[s]))
	}
}
