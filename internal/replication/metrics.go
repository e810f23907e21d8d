package replication

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	following, leading   prometheus.Gauge
	received, sentMsgs   prometheus.Counter
	catchUpMsgs          prometheus.Counter
	catchUpBytes         prometheus.Counter
	linkErrors, refused  prometheus.Counter
	dropped, ackTimeouts prometheus.Counter
	routedAround         prometheus.Counter
	violations           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, r *Replicator) *metrics {
	m := &metrics{
		following:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "chatr_replication_links_following", Help: "Peer links this node follows that are connected."}),
		leading:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "chatr_replication_links_serving", Help: "Peer links this node serves to followers."}),
		received:     prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_received_total", Help: "Messages of other origins stored from peer links."}),
		sentMsgs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_sent_total", Help: "Messages sent to followers."}),
		catchUpMsgs:  prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_catchup_messages_total", Help: "Messages sent to followers from the store (catch-up)."}),
		catchUpBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_catchup_bytes_total", Help: "Bytes sent to followers from the store (catch-up)."}),
		linkErrors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_link_errors_total", Help: "Peer links lost or ended on bad input."}),
		refused:      prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_refused_total", Help: "Peer links refused in the handshake: not an alive member's key, wrong secret or cluster name, or not TLS at all."}),
		dropped:      prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_stream_overflows_total", Help: "Times an outgoing link fell a whole commit stream behind and caught up from the store."}),
		ackTimeouts:  prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_ack_timeouts_total", Help: "Sends not replicated to --ack-replicas peers in time."}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatr_replication_peer_violations_total",
			Help: "Links ended because the peer sent what it cannot know or must not send (own origin, an origin it does not relay, a date far ahead, bad input), by reason."}, []string{"reason"}),
		routedAround: prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_replication_routed_around_total", Help: "Times the link to an alive peer stopped working and its messages were fetched through the other peers."}),
	}
	if reg != nil {
		lag := prometheus.NewDesc("chatr_replication_lag_messages", "Messages of an origin that the furthest peer holds and this node does not.", []string{"origin"}, nil)
		reg.MustRegister(m.following, m.leading, m.received, m.sentMsgs, m.catchUpMsgs, m.catchUpBytes,
			m.linkErrors, m.refused, m.dropped, m.ackTimeouts, m.routedAround, m.violations, lagCollector{desc: lag, r: r})
	}
	return m
}

// lagCollector reports the lag per origin when scraped.
type lagCollector struct {
	desc *prometheus.Desc
	r    *Replicator
}

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	for origin, n := range c.r.Lag() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), origin)
	}
}
